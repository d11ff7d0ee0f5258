//! On AWS, the GitLab API URL and token per instance live in one Secrets Manager secret
//! (`GITLAB_SECRET_ID`, JSON `{"instances": [{"url", "token", "api_url"?}]}`), read at
//! start and again every 5 minutes, so a rotated token is used without a new container.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use fluxrelay_core::gitlab_api::instances::GitLabInstances;
use fluxrelay_core::gitlab_api::{ApiError, ApiRequest, ApiResponse};
use fluxrelay_core::ports::GitLabApi;
use tokio::sync::RwLock;

use crate::gitlab::GitLabClient;

pub const REFRESH: Duration = Duration::from_secs(300);

/// Reads and validates the secret; the error names the secret and the fields, never a
/// token.
pub async fn load_gitlab_instances(
    client: &Client,
    secret_id: &str,
) -> Result<GitLabInstances, String> {
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .map_err(|error| {
            format!(
                "the GitLab secret {secret_id} could not be read: {}",
                DisplayErrorContext(&error)
            )
        })?;
    let text = output
        .secret_string()
        .ok_or_else(|| format!("the GitLab secret {secret_id} has no secret string"))?;
    GitLabInstances::from_json(text).map_err(|errors| {
        let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!(
            "the GitLab secret {secret_id} is invalid: {}",
            problems.join("; ")
        )
    })
}

/// A [`GitLabClient`] whose configuration is re-read from Secrets Manager every
/// [`REFRESH`]; an unreadable refresh keeps the last good one.
pub struct RefreshingGitLab {
    secrets: Client,
    secret_id: String,
    current: RwLock<(Arc<GitLabClient>, Instant)>,
}

impl RefreshingGitLab {
    pub async fn load(secrets: Client, secret_id: impl Into<String>) -> Result<Self, String> {
        let secret_id = secret_id.into();
        let instances = load_gitlab_instances(&secrets, &secret_id).await?;
        let client = Arc::new(GitLabClient::new(instances)?);
        Ok(Self {
            secrets,
            secret_id,
            current: RwLock::new((client, Instant::now())),
        })
    }

    async fn client(&self) -> Arc<GitLabClient> {
        let (client, loaded) = self.current.read().await.clone();
        if loaded.elapsed() < REFRESH {
            return client;
        }
        let fresh = match load_gitlab_instances(&self.secrets, &self.secret_id).await {
            Ok(instances) => GitLabClient::new(instances).map(Arc::new),
            Err(error) => Err(error),
        };
        let client = match fresh {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(outcome = "gitlab_secret_refresh_failed", error = %error);
                client
            }
        };
        *self.current.write().await = (client.clone(), Instant::now());
        client
    }
}

impl GitLabApi for RefreshingGitLab {
    fn configured(&self, instance: &str) -> bool {
        // The configuration in hand; a refresh happens on the next call.
        self.current
            .try_read()
            .map(|current| current.0.configured(instance))
            .unwrap_or(true)
    }

    async fn call(&self, instance: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        self.client().await.call(instance, request).await
    }
}

/// The GitLab API of a function: none when `GITLAB_SECRET_ID` is unset (no statuses are
/// posted, changed paths come from the payload).
pub enum FunctionGitLab {
    None,
    Secret(RefreshingGitLab),
}

impl FunctionGitLab {
    pub async fn from_env(secrets: &Client) -> Result<Self, String> {
        match std::env::var("GITLAB_SECRET_ID")
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            None => Ok(Self::None),
            Some(secret_id) => RefreshingGitLab::load(secrets.clone(), secret_id)
                .await
                .map(Self::Secret),
        }
    }
}

impl GitLabApi for FunctionGitLab {
    fn configured(&self, instance: &str) -> bool {
        match self {
            Self::None => false,
            Self::Secret(gitlab) => gitlab.configured(instance),
        }
    }

    async fn call(&self, instance: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        match self {
            Self::None => Err(ApiError::NotConfigured {
                instance: instance.to_string(),
            }),
            Self::Secret(gitlab) => gitlab.call(instance, request).await,
        }
    }
}
