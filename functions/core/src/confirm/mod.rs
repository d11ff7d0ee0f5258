//! Confirmation: after a trigger is delivered, follow the pushed commit in the cluster
//! until it is applied, fails, is superseded or times out — each confirmation ends in
//! exactly one of these — and report it to GitLab as a commit status per cluster.
//!
//! - [`revision`]: which commit a Flux revision names (every format Flux writes).
//! - [`objects`]: Kustomizations and HelmReleases, the fields the rule reads.
//! - [`rule`]: one look at a cluster → pending, running, success, failed, superseded.
//! - [`schedule`]: when to look again (backoff, deadline, apiserver request budget).
//! - [`message`]: the confirmation message that travels on the confirm queue.
//! - [`report`]: which GitLab status to post, and when.

pub mod message;
pub mod objects;
pub mod report;
pub mod revision;
pub mod rule;
pub mod schedule;
