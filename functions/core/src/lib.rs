//! fluxrelay core: everything that decides, nothing that does I/O.
//!
//! GitLab webhook → [`gitlab`] parse → [`push::Push`] → [`routing`] → [`push::Dispatch`] →
//! [`matching`] against Flux objects → [`trigger`] request → classified outcome. The
//! [`handlers`] run that flow against the [`ports`], which the adapters implement. Registry
//! notifications, Harbor webhooks and ECR events ([`artifacts`]) become the same `Push`,
//! matched against OCI sources by [`matching::artifacts`] over [`oci`] locations. After a
//! delivery, [`confirm`] follows the commit in the cluster and reports it to GitLab
//! ([`gitlab_api`]).

pub mod access;
pub mod artifacts;
pub mod auth;
pub mod confirm;
pub mod flux;
pub mod gitlab;
pub mod gitlab_api;
pub mod handlers;
pub mod ingest;
pub mod matching;
pub mod oci;
pub mod outcome;
pub mod ports;
pub mod push;
pub mod registry;
pub mod routing;
pub mod secret;
pub mod subscriptions;
pub mod trigger;

#[cfg(test)]
mod testing;

pub use push::{Dispatch, Push, PushEvent};
pub use secret::Secret;

#[cfg(test)]
#[path = "redaction_test.rs"]
mod redaction_tests;
