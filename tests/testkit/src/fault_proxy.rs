//! A TCP proxy that can be taken down and brought back: an outage of the service behind it
//! (moto's SQS and Secrets Manager) without losing that service's state, which killing
//! moto would (it keeps everything in memory). While down, every open connection is cut
//! and every new one is closed at once; clients see connection errors, as during a real
//! outage.
// A test harness: a proxy that cannot start is a test failure.
#![allow(clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FaultProxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target` (up) until dropped.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("fault proxy: cannot listen: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("fault proxy: {error}"));
        let (up, watcher) = watch::channel(true);
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !*watcher.borrow() {
                    counter.fetch_add(1, Ordering::SeqCst);
                    drop(inbound);
                    continue;
                }
                let mut watcher = watcher.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watcher.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        FaultProxy {
            addr,
            up,
            refused,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Down: cut every connection and refuse new ones. Up: forward again.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// Connections closed at once because the proxy was down.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
