//! A counting SQS stand-in for route's own time at fleet sizes moto cannot hold: it speaks
//! the AWS JSON protocol of `SendMessageBatch` and `SendMessage` (the only calls route makes
//! on the dispatch queue), accepts every entry at once and counts the calls. Nothing is
//! stored, so its time per call does not grow with what a queue holds (moto's does).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

/// The MD5 of an empty body: the SDK deserialises the field and checks nothing.
const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

#[derive(Clone, Default)]
pub struct SqsStub {
    calls: Arc<Mutex<BTreeMap<String, usize>>>,
    pub addr: Option<SocketAddr>,
}

impl SqsStub {
    pub async fn start() -> SqsStub {
        let mut stub = SqsStub::default();
        let app = Router::new()
            .route("/", post(answer))
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("SQS stub");
        stub.addr = Some(listener.local_addr().expect("SQS stub address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        stub
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr.expect("a started stub"))
    }

    /// A queue URL on the stub (the SDK sends it in the body; the stub ignores it).
    pub fn queue_url(&self, name: &str) -> String {
        format!("{}/123456789012/{name}", self.endpoint())
    }

    /// Calls answered so far, of every operation.
    pub fn calls(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }
}

async fn answer(State(stub): State<SqsStub>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let target = headers
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    *stub
        .calls
        .lock()
        .unwrap()
        .entry(target.clone())
        .or_default() += 1;
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let reply = match target.as_str() {
        "AmazonSQS.SendMessageBatch" => {
            let successful: Vec<Value> = request["Entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| {
                    json!({"Id": entry["Id"], "MessageId": format!("stub-{}", entry["Id"].as_str().unwrap_or_default()), "MD5OfMessageBody": MD5})
                })
                .collect();
            json!({"Successful": successful, "Failed": []})
        }
        "AmazonSQS.SendMessage" => json!({"MessageId": "stub", "MD5OfMessageBody": MD5}),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
                json!({"__type": "com.amazonaws.sqs#UnsupportedOperation", "message": target})
                    .to_string(),
            );
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
        reply.to_string(),
    )
}
