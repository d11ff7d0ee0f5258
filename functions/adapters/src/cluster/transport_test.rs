//! The classification from typed errors built the way the TLS and HTTP stacks build them.
//! The same failures provoked on real sockets are in `tests/kube_transport.rs` (loopback)
//! and `tests/kube_apiserver.rs` (an untrusted apiserver certificate).
#![allow(clippy::unwrap_used)]

use std::io::{Error, ErrorKind};

use rustls::{AlertDescription, CertificateError};

use super::*;

/// A client's error around its cause, as hyper-util and kube wrap theirs.
#[derive(Debug)]
struct Wrapped(&'static str, Error);

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

/// What tokio-rustls returns for a rustls verdict.
fn tls(error: rustls::Error) -> Error {
    Error::new(ErrorKind::InvalidData, error)
}

#[test]
fn only_certificate_problems_are_permanent_tls_failures() {
    let cases = [
        (
            tls(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
            TransportErrorKind::Tls,
        ),
        (
            tls(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )),
            TransportErrorKind::Tls,
        ),
        (
            tls(rustls::Error::InvalidCertificate(CertificateError::Expired)),
            TransportErrorKind::Tls,
        ),
        (
            tls(rustls::Error::AlertReceived(
                AlertDescription::BadCertificate,
            )),
            TransportErrorKind::Tls,
        ),
        (
            tls(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
            TransportErrorKind::Tls,
        ),
        // Not about a certificate: a TLS failure that may pass (retried; inside a connect
        // error it is Connect, see tests/kube_transport.rs).
        (
            tls(rustls::Error::AlertReceived(
                AlertDescription::HandshakeFailure,
            )),
            TransportErrorKind::Other,
        ),
        (tls(rustls::Error::DecryptError), TransportErrorKind::Other),
        // The words are no longer what decides: a certificate mentioned in the text of an
        // error that is not rustls's is not a TLS failure.
        (
            Error::new(
                ErrorKind::InvalidData,
                "invalid peer certificate: UnknownIssuer",
            ),
            TransportErrorKind::Other,
        ),
        (
            Error::new(ErrorKind::UnexpectedEof, "tls handshake eof"),
            TransportErrorKind::Connect,
        ),
        (
            Error::from(ErrorKind::ConnectionReset),
            TransportErrorKind::Connect,
        ),
        (
            Error::from(ErrorKind::ConnectionRefused),
            TransportErrorKind::Connect,
        ),
        (
            Error::from(ErrorKind::HostUnreachable),
            TransportErrorKind::Connect,
        ),
        (
            Error::from(ErrorKind::TimedOut),
            TransportErrorKind::Timeout,
        ),
        (
            Error::other("connection timed out, connect failed"),
            TransportErrorKind::Other,
        ),
    ];
    for (inner, expected) in cases {
        let text = format!("{inner:?}");
        assert_eq!(
            transport_kind(&Wrapped("client error (Connect)", inner)),
            expected,
            "{text}"
        );
    }
}

#[test]
fn the_error_an_io_error_wraps_is_part_of_the_chain() {
    let error = Wrapped(
        "client error (Connect)",
        tls(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )),
    );
    // std's own `source` skips it: what `chain` exists for.
    assert!(error.1.source().is_none());
    let links: Vec<_> = chain(&error).collect();
    assert_eq!(links.len(), 3, "{links:?}");
    assert!(links[2].downcast_ref::<rustls::Error>().is_some());
    assert_eq!(
        error_chain(&error),
        "client error (Connect): invalid peer certificate: UnknownIssuer"
    );
}
