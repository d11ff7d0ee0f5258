use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;

use fluxrelay_testkit::kube_env::{KubeEnv, kubeconfig_yaml};
use fluxrelay_testkit::netns;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, HandshakeKind};

use super::super::http_stack::tls_config;
use super::OneServerSessions;

/// One request to the apiserver on a new connection with `tls`; how its handshake went. The
/// apiserver sends its session ticket after the handshake, so the answer is read in full.
fn handshake_of_one_request(tls: &Arc<rustls::ClientConfig>, server: &url::Url) -> HandshakeKind {
    let host = server.host_str().unwrap();
    let mut tcp = TcpStream::connect((host, server.port_or_known_default().unwrap())).unwrap();
    let name = ServerName::try_from(host.to_string()).unwrap();
    let mut connection = ClientConnection::new(Arc::clone(tls), name).unwrap();
    let mut stream = rustls::Stream::new(&mut connection, &mut tcp);
    stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: apiserver\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    // The apiserver may close without close_notify; what was read is enough.
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    connection.handshake_kind().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_second_connection_resumes_the_tls_session_of_its_first() {
    if !netns::enter(
        "cluster::tls_sessions::tests::a_clients_second_connection_resumes_the_tls_session_of_its_first",
    ) {
        return;
    }
    let env = KubeEnv::start().await;
    let user = serde_json::json!({ "token": env.dispatcher_token() });
    let kubeconfig = kubeconfig_yaml(&env.server(), &env.ca_pem(), &user, "test");
    let config = super::super::kubeconfig::select(&kubeconfig, None)
        .unwrap()
        .config;
    let server: url::Url = env.server().parse().unwrap();

    // The configuration every cluster client gets, with its one-server store.
    let ours = Arc::new(tls_config(&config).unwrap());
    let first = tokio::task::block_in_place(|| handshake_of_one_request(&ours, &server));
    let second = tokio::task::block_in_place(|| handshake_of_one_request(&ours, &server));
    let third = tokio::task::block_in_place(|| handshake_of_one_request(&ours, &server));
    assert_eq!(first, HandshakeKind::Full);
    assert_eq!(second, HandshakeKind::Resumed);
    // The ticket the second connection got replaced the one it used.
    assert_eq!(third, HandshakeKind::Resumed);

    // The counter-check: without a store, every connection is a full handshake.
    let mut without = tls_config(&config).unwrap();
    without.resumption = Resumption::disabled();
    let without = Arc::new(without);
    let kinds: Vec<HandshakeKind> = (0..2)
        .map(|_| tokio::task::block_in_place(|| handshake_of_one_request(&without, &server)))
        .collect();
    assert_eq!(kinds, [HandshakeKind::Full, HandshakeKind::Full]);
}

#[test]
fn the_store_remembers_one_server_and_says_nothing_of_its_secrets() {
    let store = OneServerSessions::default();
    let apiserver = ServerName::try_from("apiserver.example").unwrap();
    let other = ServerName::try_from("other.example").unwrap();
    use rustls::client::ClientSessionStore as _;
    store.set_kx_hint(apiserver.clone(), rustls::NamedGroup::X25519);
    assert_eq!(store.kx_hint(&apiserver), Some(rustls::NamedGroup::X25519));
    assert_eq!(store.kx_hint(&other), None);
    assert!(store.take_tls13_ticket(&other).is_none());
    // Another server replaces the one remembered.
    store.set_kx_hint(other.clone(), rustls::NamedGroup::secp256r1);
    assert_eq!(store.kx_hint(&apiserver), None);
    assert_eq!(store.kx_hint(&other), Some(rustls::NamedGroup::secp256r1));
    assert_eq!(format!("{store:?}"), "OneServerSessions { .. }");
}
