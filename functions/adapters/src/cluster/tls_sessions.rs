//! The TLS session store of one cluster's client: what resuming a session with its one
//! apiserver needs, and no more.
//!
//! rustls' in-memory store (`Resumption::in_memory_sessions`) is built for a client that
//! talks to many servers: a map of servers allocated up front, and room for eight TLS 1.3
//! tickets per server (~1.8 KB per client before any ticket). A cluster's client talks to
//! one apiserver, which sends one ticket per connection, and keeps at most one idle
//! connection ([`super::http_stack::ConnectionPool`]): one ticket is all a reconnect can
//! use. With a thousand clusters the difference was ~1.8 MiB of `serve`'s memory
//! (`BENCHMARKS.md`, "Fleet memory").
//!
//! The store remembers one server (the last one it was told about; a client only ever has
//! one): its key-exchange group, its TLS 1.2 session and its newest TLS 1.3 ticket. A
//! ticket is taken once, as rustls' own store does (RFC 8446 §C.4: a client should not
//! reuse a ticket).

use std::fmt;
use std::sync::{Mutex, PoisonError};

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;

/// A [`ClientSessionStore`] for a client of one server.
#[derive(Default)]
pub struct OneServerSessions(Mutex<Option<Remembered>>);

struct Remembered {
    server: ServerName<'static>,
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: Option<Tls13ClientSessionValue>,
}

impl Remembered {
    fn new(server: ServerName<'static>) -> Self {
        Self {
            server,
            kx_hint: None,
            tls12: None,
            tls13: None,
        }
    }
}

impl OneServerSessions {
    /// Reads what is remembered for `server`, if it is the server remembered.
    fn read<T>(
        &self,
        server: &ServerName<'_>,
        read: impl FnOnce(&mut Remembered) -> T,
    ) -> Option<T> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot.as_mut()
            .filter(|remembered| remembered.server == *server)
            .map(read)
    }

    /// Changes what is remembered for `server`, forgetting any other server first.
    fn write(&self, server: ServerName<'static>, write: impl FnOnce(&mut Remembered)) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let remembered = match slot.as_mut() {
            Some(remembered) if remembered.server == server => remembered,
            _ => slot.insert(Remembered::new(server)),
        };
        write(remembered);
    }
}

impl ClientSessionStore for OneServerSessions {
    fn set_kx_hint(&self, server: ServerName<'static>, group: NamedGroup) {
        self.write(server, |remembered| remembered.kx_hint = Some(group));
    }

    fn kx_hint(&self, server: &ServerName<'_>) -> Option<NamedGroup> {
        self.read(server, |remembered| remembered.kx_hint).flatten()
    }

    fn set_tls12_session(&self, server: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.write(server, |remembered| remembered.tls12 = Some(value));
    }

    fn tls12_session(&self, server: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.read(server, |remembered| remembered.tls12.clone())
            .flatten()
    }

    fn remove_tls12_session(&self, server: &ServerName<'static>) {
        self.read(server, |remembered| remembered.tls12 = None);
    }

    fn insert_tls13_ticket(&self, server: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.write(server, |remembered| remembered.tls13 = Some(value));
    }

    fn take_tls13_ticket(&self, server: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.read(server, |remembered| remembered.tls13.take())
            .flatten()
    }
}

impl fmt::Debug for OneServerSessions {
    /// Names the type only: sessions hold secrets.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OneServerSessions")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "tls_sessions_test.rs"]
mod tests;
