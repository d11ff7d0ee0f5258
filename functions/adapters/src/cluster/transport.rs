//! What went wrong below HTTP, from a transport error and its sources.

use std::error::Error as StdError;

use fluxrelay_core::outcome::classify::TransportErrorKind;

/// What went wrong below HTTP, from the error and its sources. Only a certificate problem
/// is `Tls` (permanent: a wrong CA will not fix itself); a handshake cut short, e.g. by an
/// apiserver restarting or a load balancer dropping the connection, is `Connect` (retried).
pub(super) fn transport_kind(error: &(dyn StdError + 'static)) -> TransportErrorKind {
    let mut chain: Vec<&(dyn StdError + 'static)> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        chain.push(error);
        current = error.source();
    }
    let texts: Vec<String> = chain
        .iter()
        .map(|e| e.to_string().to_ascii_lowercase())
        .collect();
    if texts.iter().any(|t| {
        t.contains("certificate") || t.contains("unknownissuer") || t.contains("unknown issuer")
    }) {
        return TransportErrorKind::Tls;
    }
    let io_kinds: Vec<std::io::ErrorKind> = chain
        .iter()
        .filter_map(|e| e.downcast_ref::<std::io::Error>().map(std::io::Error::kind))
        .collect();
    if io_kinds.contains(&std::io::ErrorKind::TimedOut)
        || texts
            .iter()
            .any(|t| t.contains("timed out") || t.contains("timeout") || t.contains("elapsed"))
    {
        return TransportErrorKind::Timeout;
    }
    let connection_kinds = [
        std::io::ErrorKind::ConnectionRefused,
        std::io::ErrorKind::ConnectionReset,
        std::io::ErrorKind::ConnectionAborted,
        std::io::ErrorKind::NotConnected,
        std::io::ErrorKind::AddrNotAvailable,
        std::io::ErrorKind::HostUnreachable,
        std::io::ErrorKind::NetworkUnreachable,
        std::io::ErrorKind::UnexpectedEof,
        std::io::ErrorKind::BrokenPipe,
    ];
    if io_kinds.iter().any(|kind| connection_kinds.contains(kind))
        || texts
            .iter()
            .any(|t| t.contains("connect") || t.contains("tls") || t.contains("handshake"))
    {
        return TransportErrorKind::Connect;
    }
    TransportErrorKind::Other
}

/// `outer: inner: innermost`, without repeats (many errors print their source too).
pub(super) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

#[cfg(test)]
#[path = "transport_test.rs"]
mod tests;
