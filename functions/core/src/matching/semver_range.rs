//! Does a pushed tag satisfy a Flux semver range?
//!
//! Flux evaluates ranges with Masterminds/semver (v3): `||` between alternatives, comparators
//! joined by spaces or commas, `a - b` hyphen ranges, `=`, `!=`, `>`, `<`, `>=`, `<=`, `~`
//! (`~>`), `^`, wildcards `x`, `X`, `*`, a leading `v` anywhere, and a bare version meaning
//! `=` (a partial one, like `1.2`, meaning `1.2.x`). Each alternative is translated into
//! Cargo's syntax and evaluated by the `semver` crate, whose operators mean the same. Where
//! the two could disagree the answer is [`RangeCheck::Unknown`], which triggers: a needless
//! fetch costs a registry round trip, a wrong "no" costs a missed deploy.
//!
//! Tags are parsed as Flux parses them (`fluxcd/pkg/version.ParseVersion`): strict semver,
//! optionally with a leading `v`. A tag that is not one can never be selected by a range.

use semver::{Version, VersionReq};

/// Longest range evaluated; longer ones are [`RangeCheck::Unknown`].
const MAX_RANGE_BYTES: usize = 512;

/// The answer for one tag and one range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeCheck {
    Satisfied,
    NotSatisfied,
    /// fluxrelay cannot tell (syntax it does not translate, or a pre-release where the two
    /// libraries differ); the reason says which.
    Unknown(String),
}

/// Flux's reading of a tag as a version: strict semver after one optional leading `v`.
pub fn parse_tag(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// Whether `tag` satisfies `range` (an empty range is `*`).
pub fn check(range: &str, tag: &str) -> RangeCheck {
    let Some(version) = parse_tag(tag) else {
        return RangeCheck::NotSatisfied;
    };
    check_version(range, &version)
}

/// [`check`] for a version already parsed.
pub fn check_version(range: &str, version: &Version) -> RangeCheck {
    if range.len() > MAX_RANGE_BYTES {
        return RangeCheck::Unknown("the range is too long to evaluate".to_string());
    }
    let mut unknown = None;
    for alternative in range.split("||") {
        match check_alternative(alternative, version) {
            RangeCheck::Satisfied => return RangeCheck::Satisfied,
            RangeCheck::NotSatisfied => {}
            RangeCheck::Unknown(why) => unknown = unknown.or(Some(why)),
        }
    }
    match unknown {
        Some(why) => RangeCheck::Unknown(why),
        None => RangeCheck::NotSatisfied,
    }
}

fn check_alternative(alternative: &str, version: &Version) -> RangeCheck {
    let comparators = match comparators(alternative) {
        Ok(comparators) => comparators,
        Err(why) => return RangeCheck::Unknown(why),
    };
    let Ok(requirement) = VersionReq::parse(&comparators.join(", ")) else {
        return RangeCheck::Unknown(format!(
            "the range {:?} is not one fluxrelay can evaluate",
            alternative.trim()
        ));
    };
    if !version.pre.is_empty() {
        // Masterminds refuses a pre-release against any comparator without one, as Cargo
        // does; with one on every comparator the two compare differently.
        let all_pre = requirement.comparators.iter().all(|c| !c.pre.is_empty());
        if !all_pre || requirement.comparators.is_empty() {
            return RangeCheck::NotSatisfied;
        }
        return RangeCheck::Unknown(
            "a pre-release tag against a pre-release range is compared differently by Flux"
                .to_string(),
        );
    }
    if requirement.matches(version) {
        RangeCheck::Satisfied
    } else {
        RangeCheck::NotSatisfied
    }
}

/// The comparators of one alternative in Cargo's syntax: operators attached, `v` dropped,
/// a bare version made `=`, a hyphen range made two comparators.
fn comparators(alternative: &str) -> Result<Vec<String>, String> {
    // Operators may stand apart from their version (`>= 1.2`): join them first.
    let mut tokens: Vec<String> = Vec::new();
    let mut pending_operator: Option<String> = None;
    for token in alternative
        .split([' ', ',', '\t'])
        .filter(|t| !t.is_empty())
    {
        let operator_only = !token.is_empty() && token.chars().all(|c| "=<>!~^".contains(c));
        match pending_operator.take() {
            Some(operator) => tokens.push(format!("{operator}{token}")),
            None if operator_only => pending_operator = Some(token.to_string()),
            None => tokens.push(token.to_string()),
        }
    }
    if let Some(operator) = pending_operator {
        return Err(format!("the range ends with the operator {operator:?}"));
    }
    let mut out = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        if tokens.get(index + 1).is_some_and(|t| t == "-") {
            let (Some(low), Some(high)) = (tokens.get(index), tokens.get(index + 2)) else {
                return Err("a hyphen range has no upper end".to_string());
            };
            out.push(comparator(&format!(">={low}"))?);
            out.push(comparator(&format!("<={high}"))?);
            index += 3;
        } else {
            out.push(comparator(&tokens[index])?);
            index += 1;
        }
    }
    if out.is_empty() {
        out.push("*".to_string());
    }
    Ok(out)
}

fn comparator(token: &str) -> Result<String, String> {
    let split = token
        .find(|c: char| !"=<>!~^".contains(c))
        .unwrap_or(token.len());
    let (operator, version) = token.split_at(split);
    let operator = match operator {
        "" | "=" => "=",
        ">" | "<" | ">=" | "<=" | "~" | "^" => operator,
        "=>" => ">=",
        "=<" => "<=",
        "~>" => "~",
        other => {
            return Err(format!(
                "the operator {other:?} is not evaluated by fluxrelay"
            ));
        }
    };
    let version = version
        .strip_prefix(['v', 'V'])
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(version);
    if version.is_empty() {
        return Err(format!("the comparator {token:?} has no version"));
    }
    if matches!(version, "*" | "x" | "X") {
        // Any version; Cargo writes it without an operator.
        return Ok("*".to_string());
    }
    Ok(format!("{operator}{version}"))
}

#[cfg(test)]
#[path = "semver_range_test.rs"]
mod tests;
