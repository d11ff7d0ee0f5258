#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn servers_compare_by_origin_and_path() {
    let server = url::Url::parse("https://127.0.0.1:6443").unwrap();
    for (candidate, same) in [
        ("https://127.0.0.1:6443", true),
        ("https://127.0.0.1:6443/", true),
        ("https://127.0.0.1:6444", false),
        ("http://127.0.0.1:6443", false),
        ("https://localhost:6443", false),
        ("https://127.0.0.1:6443/other", false),
        ("not a url", false),
    ] {
        assert_eq!(same_server(candidate, &server), same, "{candidate}");
    }
}
