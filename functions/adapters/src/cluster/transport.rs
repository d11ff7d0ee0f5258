//! What went wrong below HTTP, read from the types in the error's chain (I/O error kinds,
//! rustls verdicts, the HTTP clients' own flags), never from its text: a message can be
//! reworded by any release, a type cannot change without the build noticing.
//!
//! Where each failure comes from (kube 5, hyper-util 0.1, hyper-timeout 0.5):
//! - the apiserver stack (`http_stack`) fails with hyper-util's
//!   `legacy::Error`, boxed (a `kube::Client` on it wraps that as `kube::Error::Service`);
//!   `legacy::Error::is_connect` tells a failure before the request was sent.
//! - the stack's connect timeout (hyper-timeout) covers TCP and the TLS handshake and fails with
//!   an `io::Error` of kind `TimedOut` inside a connect error; its read and write timeouts
//!   fail with the same kind inside a `hyper::Error`, once the request is under way.
//! - rustls puts its verdict (`rustls::Error`) inside an `io::Error` of kind `InvalidData`.
//! - absolute URLs (`http_stack::UrlClient`: receiver URLs, GitLab) go through the same
//!   client; past their total time they fail with an `io::Error` of kind `TimedOut` of
//!   their own, outside any connect error, so a `Timeout`.

use std::error::Error as StdError;
use std::io;

use fluxrelay_core::outcome::classify::TransportErrorKind;

/// More links than any client nests; a guard against a source chain that loops.
const MAX_CHAIN: usize = 32;

/// I/O error kinds of a connection that was refused, lost or cut short.
const CONNECTION_LOST: [io::ErrorKind; 9] = [
    io::ErrorKind::ConnectionRefused,
    io::ErrorKind::ConnectionReset,
    io::ErrorKind::ConnectionAborted,
    io::ErrorKind::NotConnected,
    io::ErrorKind::AddrNotAvailable,
    io::ErrorKind::HostUnreachable,
    io::ErrorKind::NetworkUnreachable,
    io::ErrorKind::UnexpectedEof,
    io::ErrorKind::BrokenPipe,
];

/// The error and its sources, outermost first. `io::Error::source` skips the error an
/// `io::Error` wraps (it returns that error's own source), so the wrapped error is taken
/// from `get_ref`: that is where rustls's verdicts and hyper-timeout's `Elapsed` are.
pub(super) fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&error| next_link(error)).take(MAX_CHAIN)
}

fn next_link<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    match error
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref)
    {
        Some(wrapped) => Some(wrapped as &(dyn StdError + 'static)),
        None => error.source(),
    }
}

/// What the chain says, link by link.
#[derive(Debug, Default)]
struct Findings {
    certificate_rejected: bool,
    timed_out: bool,
    /// The failure happened while connecting (TCP or TLS handshake), before any request.
    connecting: bool,
    connection_lost: bool,
    /// The answer's status line and headers did not fit what the client reads.
    answer_head_too_large: bool,
}

impl Findings {
    fn read(&mut self, link: &(dyn StdError + 'static)) {
        if let Some(tls) = link.downcast_ref::<rustls::Error>() {
            self.certificate_rejected |= is_certificate_problem(tls);
        } else if let Some(io) = link.downcast_ref::<io::Error>() {
            let kind = io.kind();
            self.timed_out |= kind == io::ErrorKind::TimedOut;
            self.connection_lost |= CONNECTION_LOST.contains(&kind);
        } else if let Some(client) = link.downcast_ref::<hyper_util::client::legacy::Error>() {
            self.connecting |= client.is_connect();
        } else if let Some(http) = link.downcast_ref::<hyper::Error>() {
            self.timed_out |= http.is_timeout();
            self.answer_head_too_large |= http.is_parse_too_large();
            // The server closed the connection before (or while) answering.
            self.connection_lost |=
                http.is_incomplete_message() || http.is_closed() || http.is_canceled();
        }
    }

    fn kind(&self) -> TransportErrorKind {
        if self.certificate_rejected {
            TransportErrorKind::Tls
        } else if self.answer_head_too_large {
            TransportErrorKind::AnswerHeadTooLarge
        } else if self.timed_out && self.connecting {
            TransportErrorKind::ConnectTimeout
        } else if self.timed_out {
            TransportErrorKind::Timeout
        } else if self.connecting || self.connection_lost {
            TransportErrorKind::Connect
        } else {
            TransportErrorKind::Other
        }
    }
}

/// Only a certificate problem is `Tls` (permanent: a wrong CA will not fix itself); a
/// handshake cut short, e.g. by an apiserver restarting or a load balancer dropping the
/// connection, is `Connect` (retried).
pub(super) fn transport_kind(error: &(dyn StdError + 'static)) -> TransportErrorKind {
    let mut findings = Findings::default();
    for link in chain(error) {
        findings.read(link);
    }
    findings.kind()
}

/// A certificate was rejected, by us (verification) or by the server (a fatal alert about
/// our client certificate).
fn is_certificate_problem(error: &rustls::Error) -> bool {
    use rustls::AlertDescription as Alert;
    match error {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::UnsupportedNameType
        | rustls::Error::InvalidCertRevocationList(_) => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            Alert::NoCertificate
                | Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::CertificateRequired
        ),
        _ => false,
    }
}

/// `outer: inner: innermost`, without repeats (many errors print their source too).
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for link in chain(error) {
        let text = link.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
#[path = "transport_test.rs"]
mod tests;
