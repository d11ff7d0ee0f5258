//! A stand-in for aws-iam-authenticator: a TokenReview webhook (`authentication.k8s.io/v1`)
//! that the test kube-apiserver calls for bearer tokens it does not know.
//!
//! It makes the checks aws-iam-authenticator's `Verify()` makes on a `k8s-aws-v1.` token
//! (kube-testenv.md Q3 (c)), then, instead of replaying the URL to STS, recomputes the
//! SigV4 signature itself with the test secret of the token's access key and with ITS OWN
//! cluster id as `x-k8s-aws-id` — so a token for another cluster, from an unknown key, with
//! a wrong secret or past its 15 minutes is refused, as STS would refuse it. The signature
//! is computed here by hand (hmac + sha2), independently of the minting code under test.
// A test harness: a broken webhook fails the test that started it.
#![allow(clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TOKEN_PREFIX: &str = "k8s-aws-v1.";
const MAX_TOKEN_BYTES: usize = 4096;
const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// STS accepts a presigned GetCallerIdentity URL this long after its X-Amz-Date.
const VALID_FOR: Duration = Duration::from_secs(15 * 60);
const MAX_EXPIRES_SECS: u64 = 900;
/// aws-iam-authenticator's `parameterWhitelist`, lower-cased.
const ALLOWED_PARAMETERS: &[&str] = &[
    "action",
    "version",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-signedheaders",
];
/// The path the apiserver posts TokenReviews to.
const REVIEW_PATH: &str = "/authenticate";

/// One IAM identity the webhook knows.
#[derive(Debug, Clone)]
pub struct TestAccount {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The Kubernetes user it maps to (as an EKS access entry's `--username`).
    pub username: String,
    pub arn: String,
}

#[derive(Debug, Clone)]
pub struct IamAuthnConfig {
    /// This cluster's id: the only `x-k8s-aws-id` a token may be signed for.
    pub cluster_id: String,
    /// The STS region whose endpoint tokens must name (the global endpoint is accepted too).
    pub region: String,
    pub accounts: Vec<TestAccount>,
}

/// Who a valid token authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub username: String,
    pub arn: String,
    pub access_key_id: String,
}

/// One TokenReview the webhook answered.
#[derive(Debug, Clone)]
pub struct Review {
    /// `X-Amz-Date` and `X-Amz-Signature` of the token, when it had them: tell tokens apart
    /// without keeping them.
    pub amz_date: Option<String>,
    pub signature: Option<String>,
    /// The username, or why the token was refused.
    pub result: Result<String, String>,
}

/// The running webhook; stops when dropped.
pub struct IamAuthn {
    address: SocketAddr,
    reviews: Arc<Mutex<Vec<Review>>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    config: Arc<IamAuthnConfig>,
    reviews: Arc<Mutex<Vec<Review>>>,
}

impl IamAuthn {
    /// Serves on a free port of 127.0.0.1 in the current tokio runtime.
    pub async fn start(config: IamAuthnConfig) -> IamAuthn {
        let socket = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(socket) => socket,
            Err(error) => panic!("iam-authn webhook: cannot bind 127.0.0.1: {error}"),
        };
        let address = match socket.local_addr() {
            Ok(address) => address,
            Err(error) => panic!("iam-authn webhook: no local address: {error}"),
        };
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            config: Arc::new(config),
            reviews: reviews.clone(),
        };
        let app = axum::Router::new()
            .route(REVIEW_PATH, axum::routing::post(review))
            .with_state(shared);
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(socket, app).await {
                eprintln!("iam-authn webhook stopped: {error}");
            }
        });
        IamAuthn {
            address,
            reviews,
            server,
        }
    }

    /// The `--authentication-token-webhook-config-file` for the apiserver (kubeconfig
    /// format). Plain HTTP on loopback inside the test's private network namespace.
    pub fn webhook_kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: iam-authn\n  cluster:\n    server: \"http://{}{REVIEW_PATH}\"\nusers:\n- name: kube-apiserver\n  user: {{}}\ncontexts:\n- name: webhook\n  context: {{cluster: iam-authn, user: kube-apiserver}}\ncurrent-context: webhook\n",
            self.address
        )
    }

    /// Every review so far, oldest first.
    pub fn reviews(&self) -> Vec<Review> {
        self.reviews
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for IamAuthn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn review(State(shared): State<Shared>, Json(request): Json<Value>) -> Json<Value> {
    let token = request
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (amz_date, signature) = match token_query(token) {
        Ok(query) => (
            query.get("x-amz-date").cloned(),
            query.get("x-amz-signature").cloned(),
        ),
        Err(_) => (None, None),
    };
    let verdict = verify(&shared.config, token, SystemTime::now());
    shared
        .reviews
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Review {
            amz_date,
            signature,
            result: verdict
                .as_ref()
                .map(|who| who.username.clone())
                .map_err(Clone::clone),
        });
    // Always 200: a refusal is `authenticated: false`, which the apiserver turns into 401.
    let status = match verdict {
        Ok(who) => json!({
            "authenticated": true,
            "user": {
                "username": who.username,
                "uid": format!("aws-iam-authenticator:{}", who.access_key_id),
                "groups": [],
                "extra": { "arn": [who.arn], "accessKeyId": [who.access_key_id] },
            },
        }),
        Err(reason) => json!({ "authenticated": false, "error": reason }),
    };
    Json(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "status": status,
    }))
}

/// The URL inside a token, parsed; the token shape checks come first.
fn token_url(token: &str) -> Result<url::Url, String> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("token is too large".into());
    }
    let Some(encoded) = token.strip_prefix(TOKEN_PREFIX) else {
        return Err(format!("token does not start with {TOKEN_PREFIX}"));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| "token is not base64url without padding".to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "token URL is not UTF-8".to_string())?;
    url::Url::parse(&text).map_err(|_| "token holds no URL".to_string())
}

/// The query with lower-cased names; only whitelisted names, each once.
fn query_of(url: &url::Url) -> Result<BTreeMap<String, String>, String> {
    let mut query = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        let name = name.to_ascii_lowercase();
        if !ALLOWED_PARAMETERS.contains(&name.as_str()) {
            return Err(format!("non-whitelisted query parameter {name:?}"));
        }
        if query.insert(name.clone(), value.into_owned()).is_some() {
            return Err(format!("query parameter {name:?} appears more than once"));
        }
    }
    Ok(query)
}

fn token_query(token: &str) -> Result<BTreeMap<String, String>, String> {
    query_of(&token_url(token)?)
}

/// aws-iam-authenticator's checks, then the SigV4 signature STS would check.
pub fn verify(
    config: &IamAuthnConfig,
    token: &str,
    now: SystemTime,
) -> Result<Authenticated, String> {
    let url = token_url(token)?;
    if url.scheme() != "https" {
        return Err(format!("unexpected scheme {:?}", url.scheme()));
    }
    let host = url.host_str().unwrap_or_default().to_string();
    let regional = format!("sts.{}.amazonaws.com", config.region);
    if host != regional && host != "sts.amazonaws.com" {
        return Err(format!("unexpected hostname {host:?}"));
    }
    if url.path() != "/" {
        return Err("unexpected path".into());
    }
    let query = query_of(&url)?;
    let get = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    if get("action") != "GetCallerIdentity" {
        return Err("unexpected action".into());
    }
    let signed_headers: Vec<&str> = get("x-amz-signedheaders").split(';').collect();
    if !signed_headers.contains(&CLUSTER_ID_HEADER) {
        return Err(format!("{CLUSTER_ID_HEADER} is not a signed header"));
    }
    let expires: u64 = get("x-amz-expires")
        .parse()
        .map_err(|_| "X-Amz-Expires is not a number".to_string())?;
    if expires > MAX_EXPIRES_SECS {
        return Err("X-Amz-Expires is out of range".into());
    }
    let signed_at = parse_amz_date(get("x-amz-date"))?;
    if now > signed_at + VALID_FOR {
        return Err("X-Amz-Date parameter is expired".into());
    }

    // What STS does with the replayed request.
    if get("x-amz-algorithm") != "AWS4-HMAC-SHA256" {
        return Err("unexpected X-Amz-Algorithm".into());
    }
    let credential = get("x-amz-credential");
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, day, region, "sts", "aws4_request"] = scope[..] else {
        return Err("malformed X-Amz-Credential".into());
    };
    if !get("x-amz-date").starts_with(day) {
        return Err("credential scope date is not the X-Amz-Date".into());
    }
    let Some(account) = config
        .accounts
        .iter()
        .find(|account| account.access_key_id == access_key_id)
    else {
        return Err("unknown access key".into());
    };
    let mut headers = Vec::new();
    for name in &signed_headers {
        let value = match *name {
            "host" => host.as_str(),
            CLUSTER_ID_HEADER => config.cluster_id.as_str(),
            other => return Err(format!("cannot replay signed header {other:?}")),
        };
        headers.push(format!("{name}:{value}\n"));
    }
    let mut canonical_query: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("x-amz-signature"))
        .map(|(name, value)| (uri_encode(&name), uri_encode(&value)))
        .collect();
    canonical_query.sort();
    let canonical_query = canonical_query
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "GET\n/\n{canonical_query}\n{}\n{}\n{}",
        headers.concat(),
        signed_headers.join(";"),
        hex::encode(Sha256::digest(b""))
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{day}/{region}/sts/aws4_request\n{}",
        get("x-amz-date"),
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = format!("AWS4{}", account.secret_access_key).into_bytes();
    for part in [day, region, "sts", "aws4_request"] {
        key = hmac(&key, part.as_bytes()).to_vec();
    }
    let signature =
        hex::decode(get("x-amz-signature")).map_err(|_| "signature is not hex".to_string())?;
    let mut mac = match Hmac::<Sha256>::new_from_slice(&key) {
        Ok(mac) => mac,
        Err(error) => panic!("HMAC takes any key length: {error}"),
    };
    mac.update(string_to_sign.as_bytes());
    // Constant time, as STS would compare.
    mac.verify_slice(&signature).map_err(|_| {
        "SignatureDoesNotMatch: the request signature we calculated does not match".to_string()
    })?;
    Ok(Authenticated {
        username: account.username.clone(),
        arn: account.arn.clone(),
        access_key_id: account.access_key_id.clone(),
    })
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(error) => panic!("HMAC takes any key length: {error}"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SigV4's URI encoding: RFC 3986 unreserved characters stay, every other byte is `%XX`.
fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` as a time.
fn parse_amz_date(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("X-Amz-Date {text:?} is not YYYYMMDDTHHMMSSZ");
    let format =
        time::format_description::parse_borrowed::<2>("[year][month][day]T[hour][minute][second]Z")
            .map_err(|_| bad())?;
    let parsed = time::PrimitiveDateTime::parse(text, &format).map_err(|_| bad())?;
    Ok(SystemTime::from(parsed.assume_utc()))
}

#[cfg(test)]
#[path = "iam_authn_test.rs"]
mod tests;
