//! Adapters: the core's ports on real systems. They do I/O and nothing else; every rule
//! they need (classification, matching) is called from `fluxrelay-core`.

pub mod clock;
pub mod cluster;
pub mod cluster_check;
pub mod dispatcher_identity;
pub mod eks;
pub mod embedded;
pub mod emf;
pub mod file_registry;
pub mod gitlab;
pub mod gitlab_secret;
pub mod lambda;
pub mod lambda_aws;
pub mod log_writer;
pub mod outcome_log;
pub mod registry_aws;
pub mod request_id;
pub mod secrets;
pub mod sqs;
pub mod sqs_dlq;

#[cfg(test)]
mod build_environment_test {
    /// AWS-LC's jitter entropy source cost every process about 25 ms of CPU before its
    /// first TLS connection (BENCHMARKS.md, "The first randomness of a process");
    /// `.cargo/config.toml` builds AWS-LC without it. The variable reaches this crate's
    /// compilation from the same cargo configuration that aws-lc-sys's build script reads,
    /// so a build without it fails here.
    #[test]
    fn aws_lc_is_built_without_its_jitter_entropy_source() {
        assert_eq!(
            option_env!("AWS_LC_SYS_NO_JITTER_ENTROPY"),
            Some("1"),
            "build from the workspace, whose .cargo/config.toml sets AWS_LC_SYS_NO_JITTER_ENTROPY"
        );
    }
}
