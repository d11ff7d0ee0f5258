//! Listeners that prove where requests do *not* go: each counts the connections it accepts
//! and keeps what it was sent, and answers with a scripted HTTP response (200, a redirect,
//! or anything a closure builds), over plain TCP or TLS.
//!
//! Only inside the test's private network namespace ([`crate::netns::enter`]) may a test
//! add addresses such as 192.0.2.11 or 169.254.169.254 to `lo` ([`add_loopback_address`]).
// A test harness: a missing or broken environment fails the test that asked for it.
#![allow(clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Adds `ip`/32 to `lo` of the private network namespace, so listeners can bind it.
pub fn add_loopback_address(ip: &str) {
    assert!(
        crate::netns::in_private_namespace(),
        "add_loopback_address({ip}) must run inside a private network namespace"
    );
    let status = std::process::Command::new("ip")
        .args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"])
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("`ip addr replace {ip}/32 dev lo` failed: {status}"),
        Err(error) => panic!("could not run `ip` (install iproute2): {error}"),
    }
}

/// One request as the listener read it: request line, headers (names lower-cased), body.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Every byte received on the connection.
    pub raw: Vec<u8>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What the listener answers to a request: the whole HTTP response, bytes.
pub type Answer = Arc<dyn Fn(&SeenRequest) -> Vec<u8> + Send + Sync>;

#[derive(Clone)]
pub struct Decoy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

/// A complete HTTP/1.1 response that closes the connection.
pub fn http_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A 302 to `location`.
pub fn redirect_to(location: &str) -> Answer {
    let location = location.to_string();
    Arc::new(move |_| http_response(302, &[("location", &location)], b"moved"))
}

impl Decoy {
    /// Plain HTTP on `addr`, answering 200 with an empty body.
    pub async fn start(addr: &str) -> Decoy {
        Self::serve(addr, Arc::new(|_| http_response(200, &[], b"")), None).await
    }

    /// Plain HTTP on `addr`, answering what `answer` builds.
    pub async fn answering(addr: &str, answer: Answer) -> Decoy {
        Self::serve(addr, answer, None).await
    }

    /// HTTPS on `addr` with this certificate chain and key (PEM), answering what `answer`
    /// builds.
    pub async fn tls(addr: &str, cert_pem: &str, key_pem: &str, answer: Answer) -> Decoy {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            match CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect() {
                Ok(certs) => certs,
                Err(error) => panic!("decoy certificate: {error}"),
            };
        let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
            Ok(key) => key,
            Err(error) => panic!("decoy key: {error}"),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key));
        let config = match config {
            Ok(config) => config,
            Err(error) => panic!("decoy TLS configuration: {error}"),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::serve(addr, answer, Some(acceptor)).await
    }

    async fn serve(addr: &str, answer: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> Decoy {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => panic!("decoy cannot listen on {addr}: {error}"),
        };
        let decoy = Decoy {
            addr: listener
                .local_addr()
                .unwrap_or_else(|error| panic!("{error}")),
            connections: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let state = decoy.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let answer = answer.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                state.converse(stream, answer).await;
                            }
                        }
                        None => state.converse(stream, answer).await,
                    }
                });
            }
        });
        decoy
    }

    /// Reads one request (headers, then `content-length` bytes; at most 1 MiB, 5 s),
    /// records it, answers and closes.
    async fn converse<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S, answer: Answer) {
        let mut raw = Vec::new();
        let mut buffer = [0u8; 8192];
        let read = async {
            loop {
                let header_end = raw.windows(4).position(|w| w == b"\r\n\r\n");
                if let Some(end) = header_end {
                    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|value| value.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if raw.len() >= end + 4 + length {
                        return true;
                    }
                }
                if raw.len() > 1 << 20 {
                    return true;
                }
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => raw.extend_from_slice(&buffer[..n]),
                }
            }
        };
        let complete = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap_or(false);
        let request = parse(&raw);
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.clone());
        if complete {
            let _ = stream.write_all(&answer(&request)).await;
            let _ = stream.shutdown().await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far (a TLS handshake that failed counts too).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn parse(raw: &[u8]) -> SeenRequest {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let body = raw.get(end + 4..).unwrap_or_default().to_vec();
    SeenRequest {
        method,
        target,
        headers,
        body,
        raw: raw.to_vec(),
    }
}
