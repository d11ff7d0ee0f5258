//! Transport failures provoked on real loopback sockets, through the real `KubeClusters`
//! (the entry's apiserver client, and the URL client on the same stack for absolute receiver
//! URLs), each checked
//! for the class and reason the typed classification gives it. No apiserver is needed:
//! an untrusted certificate and a read timeout behind the service proxy are provoked
//! against the real kube-apiserver in `kube_apiserver.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fluxrelay_adapters::cluster::{KubeClusters, Timeouts};
use fluxrelay_core::outcome::classify::{FailureClass, Responder, TriggerFailure};
use fluxrelay_core::ports::{FluxDiscovery, TriggerSender};
use fluxrelay_core::registry::{ClusterEntry, Credentials, TriggerConfig};
use fluxrelay_core::secret::Secret;
use fluxrelay_core::trigger::request::{RequestTarget, TriggerRequest};
use http::{HeaderMap, Method};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const LIMIT: Duration = Duration::from_secs(1);

/// Connect 1 s, read and write 2 s. A receiver URL's total time (their sum) runs from the
/// start of the request, connecting included: were it not longer than the connect timeout,
/// a hung connect could be reported as either.
fn impatient() -> KubeClusters {
    KubeClusters::new(
        Timeouts {
            connect: LIMIT,
            read: 2 * LIMIT,
            write: 2 * LIMIT,
        },
        Duration::from_secs(30),
    )
    .unwrap()
}

fn entry(server: SocketAddr) -> ClusterEntry {
    ClusterEntry {
        name: "loopback".into(),
        server: url::Url::parse(&format!("https://{server}")).unwrap(),
        ca: None,
        credentials: Credentials::Token(Secret::new("token-for-a-loopback-test")),
        namespaces: vec!["flux-system".into()],
        host_aliases: BTreeMap::new(),
        subscriptions: Vec::new(),
        trigger: TriggerConfig::default(),
        confirm: None,
    }
}

fn post_to(url: &str) -> TriggerRequest {
    TriggerRequest {
        target: RequestTarget::Absolute(url::Url::parse(url).unwrap()),
        method: Method::POST,
        headers: HeaderMap::new(),
        body: b"{}".to_vec(),
    }
}

/// A port nothing listens on: bound, then closed.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Accepts every connection and never sends a byte; the connections stay open.
async fn silent_listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    address
}

/// Answers every connection with plain HTTP, whatever was asked (here: a TLS handshake).
async fn plain_http_listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    address
}

/// Reads until the end of a request's head; false if the connection ends first.
async fn read_request_head(socket: &mut TcpStream) -> bool {
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        match tokio::io::AsyncReadExt::read(socket, &mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(read) => request.extend_from_slice(&chunk[..read]),
        }
    }
    true
}

/// Answers every request with plain HTTP: a GitRepository list of about `body_bytes`,
/// under a head carrying one extra header of `head_padding` bytes.
async fn padded_answers(head_padding: usize, body_bytes: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let body = format!(
        r#"{{"apiVersion":"source.toolkit.fluxcd.io/v1","kind":"GitRepositoryList","metadata":{{"resourceVersion":"1"}},"items":[],"padding":"{}"}}"#,
        "b".repeat(body_bytes)
    );
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-padding: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        "h".repeat(head_padding),
        body.len()
    );
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                if !read_request_head(&mut socket).await {
                    return;
                }
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    address
}

/// A listening socket that is never accepted from, its one-place accept queue already
/// taken: Linux drops further SYNs, so a connect neither succeeds nor fails until the
/// client gives up. Both returned sockets must be held for as long as that should last.
async fn full_accept_queue() -> (SocketAddr, TcpListener, TcpStream) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = socket.local_addr().unwrap();
    let listener = socket.listen(0).unwrap();
    let filler = TcpStream::connect(address).await.unwrap();
    (address, listener, filler)
}

fn assert_transport(failure: &TriggerFailure, class: FailureClass, what: &str) {
    assert_eq!(failure.responder, Responder::Transport, "{failure:?}");
    assert_eq!(failure.class, class, "{failure:?}");
    let prefix = format!("could not reach the server: {what}");
    assert!(
        failure.reason.starts_with(&prefix),
        "expected {prefix:?}, got {:?}",
        failure.reason
    );
}

#[tokio::test]
async fn an_answer_is_read_whole_and_its_head_bounded() {
    let clusters = impatient();
    let plain = |address: SocketAddr| ClusterEntry {
        server: url::Url::parse(&format!("http://{address}")).unwrap(),
        ..entry(address)
    };
    // 3 KiB of headers and a body far larger than the read buffer: read whole.
    let address = padded_answers(3 * 1024, 200 * 1024).await;
    let listed = clusters
        .git_repositories(&plain(address), "flux-system", true)
        .await
        .unwrap();
    assert!(listed.is_empty());
    // 5 KiB of headers: not read, said so, and retried.
    let address = padded_answers(5 * 1024, 100).await;
    let failure = clusters
        .git_repositories(&plain(address), "flux-system", true)
        .await
        .unwrap_err();
    assert_eq!(failure.responder, Responder::Transport, "{failure:?}");
    assert_eq!(failure.class, FailureClass::Retryable, "{failure:?}");
    assert!(
        failure.reason.starts_with(
            "the server's answer could not be read: its status line and headers are longer than the client reads"
        ),
        "{}",
        failure.reason
    );
}

#[tokio::test]
async fn a_closed_port_is_a_retried_connection_failure() {
    let clusters = impatient();
    let address = closed_port().await;
    let failure = clusters
        .git_repositories(&entry(address), "flux-system", true)
        .await
        .unwrap_err();
    assert_transport(&failure, FailureClass::Retryable, "connection failed");
    let failure = clusters
        .send(
            &entry(address),
            &post_to(&format!("http://{address}/hook/x")),
        )
        .await
        .unwrap_err();
    assert_transport(&failure, FailureClass::Retryable, "connection failed");
}

#[tokio::test]
async fn a_server_that_never_completes_the_handshake_times_out_connecting() {
    let clusters = impatient();
    let address = silent_listener().await;
    let started = Instant::now();
    let failure = clusters
        .git_repositories(&entry(address), "flux-system", true)
        .await
        .unwrap_err();
    assert_transport(&failure, FailureClass::Retryable, "timed out connecting");
    assert!(started.elapsed() < 5 * LIMIT, "{:?}", started.elapsed());
    // The URL client too, for an https receiver URL.
    let failure = clusters
        .send(
            &entry(address),
            &post_to(&format!("https://{address}/hook/x")),
        )
        .await
        .unwrap_err();
    assert_transport(&failure, FailureClass::Retryable, "timed out connecting");
}

#[tokio::test]
async fn a_dropped_syn_times_out_connecting() {
    let clusters = impatient();
    let (address, _listener, _filler) = full_accept_queue().await;
    let started = Instant::now();
    let failure = clusters
        .git_repositories(&entry(address), "flux-system", true)
        .await
        .unwrap_err();
    assert_transport(&failure, FailureClass::Retryable, "timed out connecting");
    assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
    let failure = clusters
        .send(
            &entry(address),
            &post_to(&format!("http://{address}/hook/x")),
        )
        .await
        .unwrap_err();
    assert_transport(&failure, FailureClass::Retryable, "timed out connecting");
}

#[tokio::test]
async fn a_receiver_that_takes_the_request_and_never_answers_times_out_waiting() {
    let clusters = impatient();
    let address = silent_listener().await;
    let started = Instant::now();
    let failure = clusters
        .send(
            &entry(address),
            &post_to(&format!("http://{address}/hook/x")),
        )
        .await
        .unwrap_err();
    assert_transport(
        &failure,
        FailureClass::Retryable,
        "timed out waiting for the answer",
    );
    assert!(started.elapsed() < 5 * LIMIT, "{:?}", started.elapsed());
}

/// Answers each request's head at once, then its body a byte every 500 ms, never ending:
/// no single read waits long enough for a read timeout.
async fn dripping_answers() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_request_head(&mut socket).await {
                    return;
                }
                let head = b"HTTP/1.1 202 Accepted\r\ncontent-length: 1000000\r\n\r\n";
                if socket.write_all(head).await.is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if socket.write_all(b"x").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn a_receiver_url_whose_body_never_ends_is_answered_within_the_total_time() {
    let clusters = impatient();
    let address = dripping_answers().await;
    let started = Instant::now();
    let answer = tokio::time::timeout(
        20 * LIMIT,
        clusters.send(
            &entry(address),
            &post_to(&format!("http://{address}/hook/x")),
        ),
    )
    .await
    .expect("the total time (connect + read + write) ends the body")
    .unwrap();
    assert_eq!(answer.status, 202);
    assert!(!answer.body.is_empty(), "what arrived is kept");
    // The total (5 s here) ended it, not a read timeout (2 s), which never fires.
    let elapsed = started.elapsed();
    assert!(elapsed >= 4 * LIMIT && elapsed < 7 * LIMIT, "{elapsed:?}");
}

#[tokio::test]
async fn a_tls_failure_that_is_not_about_a_certificate_is_retried() {
    let clusters = impatient();
    let address = plain_http_listener().await;
    let failure = clusters
        .git_repositories(&entry(address), "flux-system", true)
        .await
        .unwrap_err();
    assert_transport(&failure, FailureClass::Retryable, "connection failed");
    let failure = clusters
        .send(
            &entry(address),
            &post_to(&format!("https://{address}/hook/x")),
        )
        .await
        .unwrap_err();
    assert_transport(&failure, FailureClass::Retryable, "connection failed");
}
