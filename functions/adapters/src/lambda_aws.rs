//! The AWS configuration of a Lambda function, from the variables the Lambda runtime sets.
//!
//! Lambda gives every function its region (`AWS_REGION`) and its execution role's
//! credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) as
//! environment variables, and that is where `aws-config`'s default chain finds them too,
//! first. Reading exactly those keeps the rest of the chain (profiles, SSO, web identity
//! through STS, the ECS and IMDS endpoints) out of the Lambda binaries: about 0.3 MB of
//! dispatch and confirm (BENCHMARKS.md, "Lambda binary sizes"). `serve` and the CLI run
//! anywhere and keep the whole chain.
//!
//! `AWS_ENDPOINT_URL` is honoured as `aws-config` honours it (the benchmark points the
//! functions at moto with it). The other settings `aws-config` would read (a profile, retry
//! mode, per-service endpoint URLs, FIPS or dual-stack endpoints) are not read here; the
//! SDK's own defaults for the behaviour version apply (standard retries, 3.1 s connect
//! timeout).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

/// Why a function has no AWS configuration. Names variables, never their values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LambdaAwsError {
    #[error(
        "{0} is not set: the Lambda runtime sets it for every function, so this is not running in Lambda (or the variable was overwritten)"
    )]
    Missing(&'static str),
}

/// The configuration from the process's environment.
pub fn from_process_env() -> Result<SdkConfig, LambdaAwsError> {
    from_variables(|name| std::env::var(name).ok())
}

/// The configuration from `variable` (a name → value lookup; an empty value counts as unset).
pub fn from_variables(
    variable: impl Fn(&str) -> Option<String>,
) -> Result<SdkConfig, LambdaAwsError> {
    let set = |name: &str| variable(name).filter(|value| !value.trim().is_empty());
    let required = |name: &'static str| set(name).ok_or(LambdaAwsError::Missing(name));
    // aws-config's order: AWS_REGION, then AWS_DEFAULT_REGION (Lambda sets both).
    let region = set("AWS_REGION")
        .or_else(|| set("AWS_DEFAULT_REGION"))
        .ok_or(LambdaAwsError::Missing("AWS_REGION"))?;
    let credentials = Credentials::new(
        required("AWS_ACCESS_KEY_ID")?,
        required("AWS_SECRET_ACCESS_KEY")?,
        // Absent for long-term keys (a test, or a function run by hand); Lambda sets it.
        set("AWS_SESSION_TOKEN"),
        // No expiry: Lambda's variables hold for the execution environment's life, as the
        // default chain's environment provider assumes.
        None,
        "lambda-environment",
    );
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials));
    if let Some(endpoint) = set("AWS_ENDPOINT_URL") {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(builder.build())
}

#[cfg(test)]
#[path = "lambda_aws_test.rs"]
mod tests;
