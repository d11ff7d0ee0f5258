#![allow(clippy::unwrap_used)]

use super::*;

#[derive(Debug)]
struct Wrapped(&'static str, std::io::Error);
impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl StdError for Wrapped {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.1)
    }
}

#[test]
fn only_certificate_problems_are_permanent_tls_failures() {
    use std::io::{Error, ErrorKind};
    let cases = [
        (
            "client error (Connect)",
            Error::new(
                ErrorKind::InvalidData,
                "invalid peer certificate: UnknownIssuer",
            ),
            TransportErrorKind::Tls,
        ),
        (
            "client error (Connect)",
            Error::new(ErrorKind::UnexpectedEof, "tls handshake eof"),
            TransportErrorKind::Connect,
        ),
        (
            "client error (Connect)",
            Error::new(ErrorKind::ConnectionReset, "connection reset by peer"),
            TransportErrorKind::Connect,
        ),
        (
            "client error (Connect)",
            Error::new(ErrorKind::ConnectionRefused, "connection refused"),
            TransportErrorKind::Connect,
        ),
        (
            "operation timed out",
            Error::new(ErrorKind::TimedOut, "deadline"),
            TransportErrorKind::Timeout,
        ),
        (
            "something else",
            Error::other("odd"),
            TransportErrorKind::Other,
        ),
    ];
    for (outer, inner, expected) in cases {
        let text = inner.to_string();
        assert_eq!(
            transport_kind(&Wrapped(outer, inner)),
            expected,
            "{outer}: {text}"
        );
    }
}
