//! EKS authentication without static secrets: a `k8s-aws-v1.` bearer token minted from the
//! function's own IAM role, exactly as `aws eks get-token` and aws-iam-authenticator make it.
//!
//! The token is a presigned STS `GetCallerIdentity` URL (SigV4 in the query string, service
//! `sts`, `X-Amz-Expires=60`) whose signed headers include `x-k8s-aws-id: <cluster>`, so it
//! is good for that one cluster only; base64url without padding, after the prefix. EKS
//! accepts it for 15 minutes after `X-Amz-Date`, whatever `X-Amz-Expires` says. Nothing is
//! sent to STS here: the cluster's authenticator replays the URL.
//!
//! Minting is sans-IO ([`mint`]: fixed credentials and a fixed time in, token out), so the
//! exact signature is pinned by a known-answer test; [`EksTokens`] adds the two inputs that
//! are I/O or state: credentials (the `aws-config` default chain in `serve`, the role's
//! environment variables in Lambda) and the clock.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use fluxrelay_core::secret::Secret;
use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;

pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The signed header that binds a token to one cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// What aws-iam-authenticator presigns with; the authenticator accepts 0..=900.
const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);
/// EKS honours a token this long after `X-Amz-Date`.
pub const ACCEPTED_FOR: Duration = Duration::from_secs(15 * 60);
/// How long a minted token (and the kube client holding it) is reused. `aws eks get-token`
/// says 14 minutes; one more minute of margin covers a request still in flight (connect +
/// read timeouts are 20 s) and clock skew between the function and the cluster.
pub const REUSE_FOR: Duration = Duration::from_secs(13 * 60);

/// Why no token could be minted. Every message names the cause; none holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum EksTokenError {
    #[error("auth.eks.region {0:?} is not an AWS region name")]
    InvalidRegion(String),
    #[error("auth.eks.cluster {0:?} is not an EKS cluster name")]
    InvalidCluster(String),
    /// The default chain found no credentials now (e.g. IMDS or the container endpoint
    /// did not answer): may work on the next attempt.
    #[error("no AWS credentials for the function's role: {0}")]
    CredentialsUnavailable(String),
    #[error("could not sign the STS GetCallerIdentity request: {0}")]
    Signing(String),
    /// The entry's server is not where EKS says the cluster is: whoever wrote the entry
    /// could otherwise have the function's token sent to a host of their choice.
    #[error(
        "server {server} is not the endpoint of EKS cluster {cluster} in {region} ({endpoint}, from DescribeCluster): no token is minted for it; fix the entry's server"
    )]
    NotTheClusterEndpoint {
        server: String,
        cluster: String,
        region: String,
        endpoint: String,
    },
    #[error(
        "EKS cluster {cluster} does not exist in {region} for this account (DescribeCluster), so its endpoint cannot be checked and no token is minted"
    )]
    ClusterNotFound { cluster: String, region: String },
    /// DescribeCluster failed for another reason (throttled, denied, unreachable).
    #[error("DescribeCluster of EKS cluster {cluster} in {region} failed: {message}")]
    DescribeFailed {
        cluster: String,
        region: String,
        message: String,
    },
}

impl EksTokenError {
    /// Missing credentials and a failed DescribeCluster can fix themselves; a bad entry, a
    /// server that is not the cluster's endpoint, or a signing failure cannot.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EksTokenError::CredentialsUnavailable(_) | EksTokenError::DescribeFailed { .. }
        )
    }
}

/// How long an endpoint DescribeCluster reported is trusted (an EKS cluster's endpoint does
/// not change in its life).
pub const ENDPOINT_TTL: Duration = Duration::from_secs(60 * 60);

/// Loads an AWS configuration. A function pointer, not a call in [`EksEndpoints`]'s own
/// code, so a binary that never asks for the default chain does not link it (the Lambda
/// functions: [`crate::lambda_aws`]).
type LoadConfig = fn() -> BoxFuture<'static, aws_config::SdkConfig>;

enum EndpointConfig {
    /// Loaded on first use, so a process that never meets an `eks` entry never looks.
    OnFirstUse(OnceCell<aws_config::SdkConfig>, LoadConfig),
    Given(aws_config::SdkConfig),
}

fn load_default_chain() -> BoxFuture<'static, aws_config::SdkConfig> {
    Box::pin(aws_config::load_defaults(
        aws_config::BehaviorVersion::latest(),
    ))
}

/// Where each EKS cluster really is, from `DescribeCluster` in the cluster's region with
/// the function's own role (so only clusters of its account), cached for [`ENDPOINT_TTL`].
/// [`EksEndpoints::check`] runs before any token is minted for an entry.
pub struct EksEndpoints {
    config: EndpointConfig,
    cache: std::sync::Mutex<std::collections::HashMap<(String, String), (String, Instant)>>,
}

impl EksEndpoints {
    pub fn from_default_chain() -> Self {
        Self {
            config: EndpointConfig::OnFirstUse(OnceCell::new(), load_default_chain),
            cache: Default::default(),
        }
    }

    /// This AWS configuration (its region is replaced by each entry's).
    pub fn from_config(config: aws_config::SdkConfig) -> Self {
        Self {
            config: EndpointConfig::Given(config),
            cache: Default::default(),
        }
    }

    async fn sdk_config(&self) -> &aws_config::SdkConfig {
        match &self.config {
            EndpointConfig::Given(config) => config,
            EndpointConfig::OnFirstUse(cell, load) => cell.get_or_init(load).await,
        }
    }

    /// The endpoint EKS reports for `cluster` in `region`.
    pub async fn endpoint(&self, cluster: &str, region: &str) -> Result<String, EksTokenError> {
        let key = (cluster.to_string(), region.to_string());
        if let Some((endpoint, at)) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            && at.elapsed() < ENDPOINT_TTL
        {
            return Ok(endpoint.clone());
        }
        let config = aws_sdk_eks::config::Builder::from(self.sdk_config().await)
            .region(aws_config::Region::new(region.to_string()))
            .build();
        let answer = aws_sdk_eks::Client::from_conf(config)
            .describe_cluster()
            .name(cluster)
            .send()
            .await;
        let endpoint = match answer {
            Ok(output) => output
                .cluster()
                .and_then(|described| described.endpoint())
                .map(str::to_string)
                .ok_or_else(|| EksTokenError::DescribeFailed {
                    cluster: cluster.to_string(),
                    region: region.to_string(),
                    message: "it reports no endpoint yet (still being created?)".into(),
                })?,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|service| service.is_resource_not_found_exception()) =>
            {
                return Err(EksTokenError::ClusterNotFound {
                    cluster: cluster.to_string(),
                    region: region.to_string(),
                });
            }
            Err(error) => {
                return Err(EksTokenError::DescribeFailed {
                    cluster: cluster.to_string(),
                    region: region.to_string(),
                    message: aws_sdk_eks::error::DisplayErrorContext(&error).to_string(),
                });
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, (endpoint.clone(), Instant::now()));
        Ok(endpoint)
    }

    /// `Ok` only when `server` is the EKS cluster's own endpoint (core's `same_endpoint`).
    /// A malformed cluster or region is refused before any call.
    pub async fn check(
        &self,
        server: &url::Url,
        cluster: &str,
        region: &str,
    ) -> Result<(), EksTokenError> {
        check_cluster(cluster)?;
        sts_host(region)?;
        let endpoint = self.endpoint(cluster, region).await?;
        if fluxrelay_core::registry::same_endpoint(server, &endpoint) {
            Ok(())
        } else {
            Err(EksTokenError::NotTheClusterEndpoint {
                server: server.to_string(),
                cluster: cluster.to_string(),
                region: region.to_string(),
                endpoint,
            })
        }
    }
}

/// When a minted token may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetime {
    /// The signing time, `X-Amz-Date`.
    pub minted_at: SystemTime,
    pub usable_until: SystemTime,
}

impl TokenLifetime {
    /// [`REUSE_FOR`] after minting, and never past the signing credentials' own expiry
    /// (a URL signed with expired session credentials is refused).
    pub fn new(minted_at: SystemTime, credentials_expiry: Option<SystemTime>) -> Self {
        let reuse_end = minted_at + REUSE_FOR;
        let usable_until = credentials_expiry.map_or(reuse_end, |expiry| expiry.min(reuse_end));
        Self {
            minted_at,
            usable_until,
        }
    }

    /// Usable from the signing time until `usable_until`, exclusive. A clock that went
    /// back before the signing time gets a fresh token rather than one dated in its future.
    pub fn usable_at(&self, now: SystemTime) -> bool {
        self.minted_at <= now && now < self.usable_until
    }
}

/// A bearer token and when it may be used.
#[derive(Debug, Clone)]
pub struct EksToken {
    pub token: Secret,
    pub lifetime: TokenLifetime,
}

/// STS's regional endpoint host (China regions live under `amazonaws.com.cn`).
pub fn sts_host(region: &str) -> Result<String, EksTokenError> {
    let valid = !region.is_empty()
        && region.len() <= 32
        && !region.starts_with('-')
        && !region.ends_with('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(EksTokenError::InvalidRegion(region.to_string()));
    }
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Ok(format!("sts.{region}.{domain}"))
}

/// EKS cluster names: 1-100 of letters, digits, `-` and `_`, starting alphanumeric. Also
/// what keeps the header value well-formed.
fn check_cluster(cluster: &str) -> Result<(), EksTokenError> {
    let valid = cluster.len() <= 100
        && cluster
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(EksTokenError::InvalidCluster(cluster.to_string()))
    }
}

/// The presigned `GetCallerIdentity` URL for `cluster`, signed at `at`. It is a credential
/// (it carries the session token and a signature), hence a [`Secret`].
pub fn presigned_url(
    cluster: &str,
    region: &str,
    credentials: &Credentials,
    at: SystemTime,
) -> Result<Secret, EksTokenError> {
    check_cluster(cluster)?;
    let url = format!(
        "https://{}/?Action=GetCallerIdentity&Version=2011-06-15",
        sts_host(region)?
    );
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(at)
        .settings(settings)
        .build()
        .map_err(|error| EksTokenError::Signing(error.to_string()))?
        .into();
    let signable = SignableRequest::new(
        "GET",
        &url,
        std::iter::once((CLUSTER_ID_HEADER, cluster)),
        SignableBody::Bytes(&[]),
    )
    .map_err(|error| EksTokenError::Signing(error.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|error| EksTokenError::Signing(error.to_string()))?
        .into_parts();
    let mut request = http::Request::get(&url)
        .body(())
        .map_err(|error| EksTokenError::Signing(error.to_string()))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(Secret::new(request.uri().to_string()))
}

/// `k8s-aws-v1.` + base64url (no padding) of the presigned URL.
pub fn token_for_url(presigned_url: &Secret) -> Secret {
    let encoded =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned_url.expose().as_bytes());
    Secret::new(format!("{TOKEN_PREFIX}{encoded}"))
}

/// A token for `cluster` from fixed credentials at a fixed time: the whole of minting,
/// without I/O.
pub fn mint(
    cluster: &str,
    region: &str,
    credentials: &Credentials,
    at: SystemTime,
) -> Result<EksToken, EksTokenError> {
    let url = presigned_url(cluster, region, credentials, at)?;
    Ok(EksToken {
        token: token_for_url(&url),
        lifetime: TokenLifetime::new(at, credentials.expiry()),
    })
}

/// The time tokens are signed with and judged by; injectable so tests can cross the
/// reuse window without sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The machine's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The `aws-config` default chain, built on first use, so a process that never meets an
/// `eks` entry never looks for AWS credentials. Behind the provider trait, so only a
/// binary that builds one links the chain.
#[derive(Debug, Default)]
struct DefaultChainOnFirstUse(OnceCell<DefaultCredentialsChain>);

impl ProvideCredentials for DefaultChainOnFirstUse {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            self.0
                .get_or_init(|| DefaultCredentialsChain::builder().build())
                .await
                .provide_credentials()
                .await
        })
    }
}

/// Mints tokens from the function's AWS credentials and a clock.
pub struct EksTokens {
    credentials: SharedCredentialsProvider,
    clock: Arc<dyn Clock>,
}

impl EksTokens {
    /// The `aws-config` default chain (environment, profile, web identity, ECS, IMDS) and
    /// the wall clock: what `fluxrelay serve` and the CLI use.
    pub fn from_default_chain() -> Self {
        Self::new(
            SharedCredentialsProvider::new(DefaultChainOnFirstUse::default()),
            Arc::new(SystemClock),
        )
    }

    /// Explicit credentials and clock (a Lambda function's role, tests).
    pub fn new(credentials: SharedCredentialsProvider, clock: Arc<dyn Clock>) -> Self {
        Self { credentials, clock }
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// A fresh token for `cluster`, signed now.
    pub async fn mint(&self, cluster: &str, region: &str) -> Result<EksToken, EksTokenError> {
        // A bad entry fails before any credential lookup.
        check_cluster(cluster)?;
        sts_host(region)?;
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|error| EksTokenError::CredentialsUnavailable(error_chain(&error)))?;
        mint(cluster, region, &credentials, self.clock.now())
    }
}

/// `outer: inner`, for the credential chain's nested errors (which name providers and
/// causes, never key material).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(source) = current {
        let text = source.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = source.source();
    }
    parts.join(": ")
}

#[cfg(test)]
#[path = "eks_test.rs"]
mod tests;
