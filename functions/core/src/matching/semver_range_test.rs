use super::*;

use RangeCheck::{NotSatisfied, Satisfied};

fn unknown(check: &RangeCheck) -> bool {
    matches!(check, RangeCheck::Unknown(_))
}

#[test]
fn masterminds_ranges_as_flux_evaluates_them() {
    // (range, tag, satisfied) — each agrees with Masterminds/semver v3's documentation.
    for (range, tag, expected) in [
        // Bare versions are exact; partial ones cover their level.
        ("1.2.3", "1.2.3", Satisfied),
        ("1.2.3", "1.2.4", NotSatisfied),
        ("1.2", "1.2.9", Satisfied),
        ("1.2", "1.3.0", NotSatisfied),
        ("=1", "1.9.9", Satisfied),
        ("v1.2.3", "1.2.3", Satisfied),
        // Comparisons, joined by spaces or commas (AND), alternatives by ||.
        (">=1.0.0 <2.0.0", "1.5.0", Satisfied),
        (">=1.0.0 <2.0.0", "2.0.0", NotSatisfied),
        (">=1.0.0, <2.0.0", "0.9.0", NotSatisfied),
        (">= 1.0.0, < 2.0.0", "1.0.0", Satisfied),
        ("=>1.0 =<1.4", "1.4.7", Satisfied),
        ("<1.0.0 || >=3.0.0", "3.1.0", Satisfied),
        ("<1.0.0 || >=3.0.0", "2.0.0", NotSatisfied),
        (">1.2", "1.2.9", NotSatisfied),
        (">1.2", "1.3.0", Satisfied),
        ("<=1.2", "1.2.9", Satisfied),
        // Tilde, caret, wildcards and hyphen ranges.
        ("~1.2.3", "1.2.9", Satisfied),
        ("~1.2.3", "1.3.0", NotSatisfied),
        ("~>1.2", "1.2.0", Satisfied),
        ("^1.2.3", "1.9.0", Satisfied),
        ("^1.2.3", "2.0.0", NotSatisfied),
        ("^0.2.3", "0.3.0", NotSatisfied),
        ("^0.0.3", "0.0.4", NotSatisfied),
        ("1.2.x", "1.2.7", Satisfied),
        ("1.X", "1.7.0", Satisfied),
        ("1.*", "2.0.0", NotSatisfied),
        ("*", "9.9.9", Satisfied),
        ("", "0.0.1", Satisfied),
        (">=1.x", "1.0.0", Satisfied),
        ("1.2 - 1.4.5", "1.4.5", Satisfied),
        ("1.2 - 1.4.5", "1.4.6", NotSatisfied),
        ("1.2 - 1.4", "1.4.9", Satisfied),
        ("1.2 - 1.4", "1.1.9", NotSatisfied),
        // Tags: a leading v is fine; anything else that is not strict semver never matches.
        (">=1.0.0", "v1.2.3", Satisfied),
        ("*", "latest", NotSatisfied),
        ("*", "1.2", NotSatisfied),
        ("*", "1.2.3.4", NotSatisfied),
        ("*", "V1.2.3", NotSatisfied),
        ("*", "", NotSatisfied),
        // Build metadata does not take part.
        (">=1.2.3", "1.2.3+build.5", Satisfied),
        // A pre-release never satisfies a comparator without one.
        ("*", "1.2.3-rc.1", NotSatisfied),
        (">=1.0.0", "1.2.3-rc.1", NotSatisfied),
        (">=1.0.0-0 <2.0.0", "1.2.3-rc.1", NotSatisfied),
    ] {
        assert_eq!(check(range, tag), expected, "{range:?} vs {tag:?}");
    }
}

#[test]
fn what_fluxrelay_cannot_evaluate_is_unknown_and_so_triggers() {
    for (range, tag) in [
        ("!=1.2.3", "1.2.4"),
        (">=1.0.0 !=1.2.3", "1.2.4"),
        (">=", "1.0.0"),
        ("1.2 -", "1.2.0"),
        ("not a range", "1.0.0"),
        ("1.2.3.4", "1.2.3"),
        ("=<>1", "1.0.0"),
        (">=1.0.0-rc.1", "1.0.0-rc.2"),
    ] {
        assert!(
            unknown(&check(range, tag)),
            "{range:?} vs {tag:?}: {:?}",
            check(range, tag)
        );
    }
    assert!(unknown(&check(&"1".repeat(600), "1.0.0")));
    // An alternative that cannot be evaluated does not hide one that is satisfied.
    assert_eq!(check("!=1.0.0 || >=2.0.0", "2.1.0"), Satisfied);
    assert!(unknown(&check("!=1.0.0 || >=2.0.0", "1.5.0")));
}

#[test]
fn ranges_and_tags_of_any_text_never_panic() {
    for text in [
        "",
        " ",
        "||",
        "|| ||",
        "-",
        "- -",
        "v",
        "vv1",
        "^",
        "~>",
        "=",
        ",,,",
        "1.2.3-",
        "\u{0}",
        "é",
        "1 - 2 - 3",
        ">1 <",
        "x.x.x",
    ] {
        let _ = check(text, "1.2.3");
        let _ = check("*", text);
        let _ = parse_tag(text);
    }
}
