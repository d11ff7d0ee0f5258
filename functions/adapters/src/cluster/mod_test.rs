use super::*;

#[test]
fn object_names_cannot_change_the_path() {
    for (name, ok) in [
        ("podinfo", true),
        ("flux-system", true),
        ("a.b", true),
        ("", false),
        ("a/b", false),
        ("A", false),
        ("a?b", false),
        ("a%2f", false),
    ] {
        assert_eq!(is_object_name(name), ok, "{name}");
    }
}
