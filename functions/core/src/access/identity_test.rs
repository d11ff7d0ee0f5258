use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

use super::*;

fn jwt(claims: &str) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

#[test]
fn identity_names_are_dns_labels_named_after_the_entry() {
    let long = "c".repeat(63);
    let long_expected = format!("fluxrelay-{}", "c".repeat(53));
    let cut_at_underscore = format!("{}_y", "c".repeat(52));
    let cut_expected = format!("fluxrelay-{}", "c".repeat(52));
    for (entry, expected) in [
        ("prod", "fluxrelay-prod"),
        ("Prod_EU.1", "fluxrelay-prod-eu-1"),
        ("a--b", "fluxrelay-a--b"),
        ("edge-", "fluxrelay-edge"),
        ("x_", "fluxrelay-x"),
        (long.as_str(), long_expected.as_str()),
        (cut_at_underscore.as_str(), cut_expected.as_str()),
    ] {
        let name = identity_name(entry);
        assert_eq!(name, expected, "{entry}");
        assert!(name.len() <= 63);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(name.ends_with(|c: char| c.is_ascii_alphanumeric()));
    }
}

#[test]
fn a_token_expiry_is_read_from_its_exp_claim_and_nothing_else() {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let day = 86_400;
    let exp = |seconds: i64| jwt(&format!(r#"{{"exp":{}}}"#, 1_800_000_000 + seconds));
    for (token, expected) in [
        (exp(365 * day), Expiry::Fine { days: 365 }),
        (exp(14 * day), Expiry::Fine { days: 14 }),
        (exp(13 * day + 5), Expiry::RenewSoon { days: 13 }),
        (exp(60), Expiry::RenewSoon { days: 0 }),
        (exp(0), Expiry::Expired),
        (jwt(r#"{"exp":1}"#), Expiry::Expired),
        // No exp, a string exp, not JSON, not three parts, a static token: nothing to read.
        (
            jwt(r#"{"sub":"system:serviceaccount:flux-system:x"}"#),
            Expiry::Unknown,
        ),
        (jwt(r#"{"exp":"1900000000"}"#), Expiry::Unknown),
        (
            format!("a.{}.c", URL_SAFE_NO_PAD.encode("not json")),
            Expiry::Unknown,
        ),
        ("a.b".to_string(), Expiry::Unknown),
        ("a.b.c.d".to_string(), Expiry::Unknown),
        ("static-token-123".to_string(), Expiry::Unknown),
        (String::new(), Expiry::Unknown),
        (jwt(&format!(r#"{{"exp":{}}}"#, i64::MAX)), Expiry::Unknown),
    ] {
        assert_eq!(expiry(&token, now), expected, "{token}");
    }
}
