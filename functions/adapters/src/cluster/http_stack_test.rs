use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{ApiserverHttp, ConnectionPool, client};

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
        .body(kube::client::Body::empty())
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
    let apiserver = client(kube::Config::new(url.parse().unwrap()), pool).unwrap();
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
