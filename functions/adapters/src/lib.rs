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
pub mod log_writer;
pub mod outcome_log;
pub mod registry_aws;
pub mod request_id;
pub mod secrets;
pub mod sqs;
pub mod sqs_dlq;
