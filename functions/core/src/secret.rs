//! A string that must never reach a log line, an error body or a `Debug` dump.

use std::fmt;

use subtle::ConstantTimeEq;

/// Holds a credential (webhook token, signing key, kube token, client key, receiver token).
///
/// `Debug` and `Display` print `<redacted>`; the only way to the bytes is [`Secret::expose`],
/// so every use of the raw value is greppable.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison with untrusted input: the time taken does not depend on
    /// how many leading bytes match.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }

    #[test]
    fn matches_only_the_exact_bytes() {
        let secret = Secret::new("token");
        assert!(secret.matches(b"token"));
        assert!(!secret.matches(b"toke"));
        assert!(!secret.matches(b"token "));
        assert!(!secret.matches(b"TOKEN"));
        assert!(!secret.matches(b""));
        assert!(Secret::new("").matches(b""));
    }
}
