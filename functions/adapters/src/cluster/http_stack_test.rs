use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::super::Timeouts;
use super::super::config::ApiserverConfig;
use super::{ApiserverHttp, ConnectionPool, client, full, join};

/// A plain-HTTP server on loopback that answers every request `{}` and counts the
/// connections open at its end.
async fn counting_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let counter = counter.clone();
            tokio::spawn(async move {
                let answer = service_fn(|_request| async {
                    // The client's requests overlap only if the server is slow enough.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"{}"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), answer)
                    .await;
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, open)
}

async fn wait_for_open(open: &AtomicUsize, wanted: usize, within: Duration) -> usize {
    let start = Instant::now();
    loop {
        let now = open.load(Ordering::SeqCst);
        if now == wanted || start.elapsed() > within {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(apiserver: &ApiserverHttp) {
    let request = http::Request::get("/version")
        .body(full(Bytes::new()))
        .unwrap();
    let response = apiserver.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"{}");
}

async fn get_through_kube(client: &kube::Client) {
    let request = http::Request::get("/version").body(Vec::new()).unwrap();
    assert_eq!(client.request_text(request).await.unwrap(), "{}");
}

#[tokio::test]
async fn the_pool_keeps_at_most_max_idle_connections_and_closes_them_after_the_idle_timeout() {
    let (url, open) = counting_server().await;
    let pool = ConnectionPool {
        idle_timeout: Duration::from_millis(500),
        max_idle: 1,
    };
    let config = ApiserverConfig::new(&url.parse().unwrap()).unwrap();
    let apiserver = client(&config, Timeouts::default(), pool).unwrap();
    // Three requests at once open three connections.
    tokio::join!(get(&apiserver), get(&apiserver), get(&apiserver));
    // One is kept for reuse, the others are closed.
    assert_eq!(wait_for_open(&open, 1, Duration::from_secs(3)).await, 1);
    // Reused: no new connection, from a clone or from a kube client on the same stack.
    get(&apiserver.clone()).await;
    get_through_kube(&apiserver.kube_client()).await;
    assert_eq!(open.load(Ordering::SeqCst), 1);
    // And closed once idle for longer than the timeout.
    assert_eq!(wait_for_open(&open, 0, Duration::from_secs(5)).await, 0);
}

#[tokio::test]
async fn kube_defaults_would_keep_every_connection() {
    // The counter-check: the same three requests through kube's own builder leave three
    // connections open, which is what the bounded pool is for.
    let (url, open) = counting_server().await;
    let kube_client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    tokio::join!(
        get_through_kube(&kube_client),
        get_through_kube(&kube_client),
        get_through_kube(&kube_client)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(open.load(Ordering::SeqCst), 3);
}

#[test]
fn the_default_pool_keeps_one_connection_per_cluster_for_30_seconds() {
    assert_eq!(
        ConnectionPool::default(),
        ConnectionPool {
            idle_timeout: Duration::from_secs(30),
            max_idle: 1,
        }
    );
}

#[test]
fn a_path_is_joined_under_the_servers_own_path() {
    for (server, path, joined) in [
        (
            "https://10.0.0.1:6443",
            "/api/v1/nodes?limit=1",
            "https://10.0.0.1:6443/api/v1/nodes?limit=1",
        ),
        (
            "https://10.0.0.1:6443/",
            "/version",
            "https://10.0.0.1:6443/version",
        ),
        // A proxy in front of the apiserver (Rancher): its path stays in front.
        (
            "https://rancher.example/k8s/clusters/c-1",
            "/version",
            "https://rancher.example/k8s/clusters/c-1/version",
        ),
        (
            "https://rancher.example/k8s/clusters/c-1/",
            "/version",
            "https://rancher.example/k8s/clusters/c-1/version",
        ),
        ("http://127.0.0.1:8080", "/", "http://127.0.0.1:8080/"),
    ] {
        let server: http::Uri = server.parse().unwrap();
        assert_eq!(
            join(&server, path).unwrap().to_string(),
            joined,
            "{server} {path}"
        );
    }
}

/// A plain-HTTP server on loopback that answers `{}` and keeps each request's URI and
/// headers.
async fn recording_server() -> (
    String,
    Arc<std::sync::Mutex<Vec<(String, http::HeaderMap)>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let answer = service_fn(move |request: hyper::Request<_>| {
                    record
                        .lock()
                        .unwrap()
                        .push((request.uri().to_string(), request.headers().clone()));
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"{}"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), answer)
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn every_request_goes_under_the_servers_path_with_the_entrys_headers_ours_and_kubes() {
    let (url, seen) = recording_server().await;
    let config = ApiserverConfig::new(&format!("{url}/k8s/clusters/c-1").parse().unwrap())
        .unwrap()
        .bearer("token-of-the-entry")
        .unwrap()
        .impersonate(
            Some("relay"),
            None,
            &["ops".to_string(), "deployers".to_string()],
        )
        .unwrap();
    let apiserver = client(&config, Timeouts::default(), ConnectionPool::default()).unwrap();
    // A request's own Authorization is replaced: credentials are the entry's.
    let request = http::Request::get("/version?x=1")
        .header("authorization", "Bearer someone-else")
        .body(full(Bytes::new()))
        .unwrap();
    assert_eq!(apiserver.send(request).await.unwrap().status(), 200);
    get_through_kube(&apiserver.kube_client()).await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "/k8s/clusters/c-1/version?x=1");
    assert_eq!(seen[1].0, "/k8s/clusters/c-1/version");
    for (_, headers) in &seen {
        let all = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|value| value.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("authorization"), ["Bearer token-of-the-entry"]);
        assert_eq!(all("impersonate-user"), ["relay"]);
        assert_eq!(all("impersonate-group"), ["ops", "deployers"]);
    }
}
