//! A stand-in for the EKS API's `DescribeCluster` (`GET /clusters/{name}`, REST-JSON, as the
//! Amazon EKS API reference gives it), answering from a table of cluster names and
//! endpoints, for tests whose EKS cluster is a local kube-apiserver (moto's EKS makes up a
//! random endpoint for each cluster it creates). Only what fluxrelay reads is answered:
//! `cluster.name`, `cluster.endpoint`, `cluster.status`, and `ResourceNotFoundException`
//! for a name it does not know. Records every name asked for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

#[derive(Clone, Default)]
struct Shared {
    endpoints: Arc<Mutex<BTreeMap<String, String>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

pub struct EksApi {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

async fn describe(State(shared): State<Shared>, Path(name): Path<String>) -> impl IntoResponse {
    shared
        .asked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name.clone());
    let endpoint = shared
        .endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&name)
        .cloned();
    match endpoint {
        Some(endpoint) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            json!({"cluster": {
                "name": name,
                "arn": format!("arn:aws:eks:eu-west-1:111122223333:cluster/{name}"),
                "endpoint": endpoint,
                "status": "ACTIVE",
                "certificateAuthority": {"data": ""},
            }})
            .to_string(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            [("x-amzn-errortype", "ResourceNotFoundException")],
            json!({"__type": "ResourceNotFoundException",
                   "message": format!("No cluster found for name: {name}.")})
            .to_string(),
        ),
    }
}

impl EksApi {
    /// Listening on a free loopback port, knowing `clusters` (name, endpoint).
    pub async fn start(clusters: &[(&str, &str)]) -> EksApi {
        let shared = Shared::default();
        shared
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(clusters.iter().map(|(n, e)| (n.to_string(), e.to_string())));
        let app = axum::Router::new()
            .route("/clusters/{name}", axum::routing::get(describe))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("EKS API stand-in: bind: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("EKS API stand-in: {error}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        EksApi { addr, shared, task }
    }

    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every cluster name DescribeCluster was asked for, in order.
    pub fn asked(&self) -> Vec<String> {
        self.shared
            .asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// An AWS configuration whose EKS calls come here (static test credentials).
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.endpoint_url())
            .region(Region::new("eu-west-1"))
            .credentials_provider(Credentials::new(
                "testing", "testing", None, None, "eks-api",
            ))
            .load()
            .await
    }
}

impl Drop for EksApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}
