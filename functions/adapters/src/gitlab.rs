//! GitLab's REST API over HTTPS: the `GitLabApi` port. Each instance's API URL and token
//! come from the operator's configuration ([`GitLabInstances`]); a push only selects one.
//! The token travels in `PRIVATE-TOKEN` to that API URL and nowhere else: redirects are
//! never followed, and no error or log line carries it (it lives in a `Secret`).

use std::time::Duration;

use fluxrelay_core::gitlab_api::instances::GitLabInstances;
use fluxrelay_core::gitlab_api::{ApiError, ApiRequest, ApiResponse, Method};
use fluxrelay_core::ports::GitLabApi;

use crate::cluster::http_stack::{UrlClient, full};
use crate::cluster::{ConnectionPool, Timeouts, error_chain};

/// GitLab's answers fluxrelay reads are small (one page of statuses, a compare's paths);
/// more is cut.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Connect within this, and answer within [`REQUEST_TIMEOUT`]: a slow GitLab delays only
/// the confirm stage (and a route that compares, which then treats paths as unknown).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A few idle connections per GitLab: the confirm stage reads several clusters' statuses at
/// once, and a connection kept saves a TLS handshake each.
const POOL: ConnectionPool = ConnectionPool {
    idle_timeout: Duration::from_secs(30),
    max_idle: 4,
};
const USER_AGENT: &str = concat!("fluxrelay/", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct GitLabClient {
    instances: GitLabInstances,
    http: UrlClient,
}

impl std::fmt::Debug for GitLabClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLabClient")
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

impl GitLabClient {
    pub fn new(instances: GitLabInstances) -> Result<Self, String> {
        let timeouts = Timeouts {
            connect: CONNECT_TIMEOUT,
            read: REQUEST_TIMEOUT,
            write: REQUEST_TIMEOUT,
        };
        let http = UrlClient::new(timeouts, REQUEST_TIMEOUT, POOL)
            .map_err(|error| format!("could not build the GitLab HTTP client: {error}"))?;
        Ok(Self { instances, http })
    }

    pub fn instances(&self) -> &GitLabInstances {
        &self.instances
    }
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

impl GitLabApi for GitLabClient {
    fn configured(&self, instance: &str) -> bool {
        self.instances.for_instance(instance).is_some()
    }

    async fn call(&self, instance: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let Some(entry) = self.instances.for_instance(instance) else {
            return Err(ApiError::NotConfigured {
                instance: instance.to_string(),
            });
        };
        let base = entry.api_url.as_str().trim_end_matches('/');
        let mut url = url::Url::parse(&format!("{base}{}", request.path))
            .map_err(|error| ApiError::Transport(format!("bad request path: {error}")))?;
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        // A POST carries its fields as a form; a GET carries nothing.
        let (method, form) = match request.method {
            Method::Get => (http::Method::GET, None),
            Method::Post => (
                http::Method::POST,
                Some(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&request.form)
                        .finish(),
                ),
            ),
        };
        let mut builder = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT);
        if form.is_some() {
            builder = builder.header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        let mut token = http::HeaderValue::from_str(entry.token.expose()).map_err(|_| {
            ApiError::Transport("the instance's token is not a valid header value".into())
        })?;
        token.set_sensitive(true);
        let outgoing = builder
            .header("PRIVATE-TOKEN", token)
            .body(full(form.unwrap_or_default()))
            .map_err(|_| ApiError::Transport("the request is not a valid HTTP request".into()))?;
        let answer = self
            .http
            .fetch(outgoing, MAX_BODY_BYTES)
            .await
            .map_err(|error| ApiError::Transport(error_chain(&*error)))?;
        Ok(ApiResponse {
            status: answer.status.as_u16(),
            retry_after: header(&answer.headers, "retry-after"),
            ratelimit_reset: header(&answer.headers, "ratelimit-reset"),
            next_page: header(&answer.headers, "x-next-page"),
            body: answer.body,
        })
    }
}
