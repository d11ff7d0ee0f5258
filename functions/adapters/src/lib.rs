//! Adapters: the core's ports on real systems. They do I/O and nothing else; every rule
//! they need (classification, matching) is called from `fluxrelay-core`.

pub mod cluster;
pub mod eks;
pub mod embedded;
pub mod lambda;
pub mod secrets;
pub mod sqs;
