//! GitLab's REST API over HTTPS: the `GitLabApi` port. Each instance's API URL and token
//! come from the operator's configuration ([`GitLabInstances`]); a push only selects one.
//! The token travels in `PRIVATE-TOKEN` to that API URL and nowhere else: redirects are
//! never followed, and no error or log line carries it (it lives in a `Secret`).

use std::time::Duration;

use fluxrelay_core::gitlab_api::instances::GitLabInstances;
use fluxrelay_core::gitlab_api::{ApiError, ApiRequest, ApiResponse, Method};
use fluxrelay_core::ports::GitLabApi;

/// GitLab's answers fluxrelay reads are small (one page of statuses, a compare's paths);
/// more is cut.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Connect within this, and answer within [`REQUEST_TIMEOUT`]: a slow GitLab delays only
/// the confirm stage (and a route that compares, which then treats paths as unknown).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct GitLabClient {
    instances: GitLabInstances,
    http: reqwest::Client,
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
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("fluxrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("could not build the GitLab HTTP client: {error}"))?;
        Ok(Self { instances, http })
    }

    pub fn instances(&self) -> &GitLabInstances {
        &self.instances
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
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
        let builder = match request.method {
            Method::Get => self.http.get(url),
            Method::Post => self
                .http
                .post(url)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&request.form)
                        .finish(),
                ),
        };
        let mut response = builder
            .header("PRIVATE-TOKEN", entry.token.expose())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| ApiError::Transport(error.without_url().to_string()))?;
        let mut answer = ApiResponse {
            status: response.status().as_u16(),
            retry_after: header(&response, "retry-after"),
            ratelimit_reset: header(&response, "ratelimit-reset"),
            next_page: header(&response, "x-next-page"),
            body: Vec::new(),
        };
        while answer.body.len() < MAX_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        answer.body.truncate(MAX_BODY_BYTES);
        Ok(answer)
    }
}
