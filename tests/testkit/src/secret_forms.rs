//! What a secret looks like when it leaks: as it is, base64 or base64url encoded, or as one
//! base64 line of a PEM. The secret-hygiene tests search every captured output for these.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Each named secret in every form, as `(description, text)`.
pub fn forbidden_forms(secrets: &[(&str, String)]) -> Vec<(String, String)> {
    let mut forms = Vec::new();
    for (name, secret) in secrets {
        forms.push((name.to_string(), secret.clone()));
        forms.push((format!("{name} (base64)"), STANDARD.encode(secret)));
        forms.push((
            format!("{name} (base64url)"),
            URL_SAFE_NO_PAD.encode(secret),
        ));
        for line in secret.lines().filter(|line| !line.starts_with("-----")) {
            if line.len() >= 16 {
                forms.push((format!("{name} (a PEM line)"), line.to_string()));
            }
        }
    }
    forms
}
