//! Test harness shared by the adapter and end-to-end tests. It starts real things (a
//! `moto_server`, a kube-apiserver with etcd inside a private network namespace) and
//! stands in for Flux's webhook receiver exactly as notification-controller answers.
//! A missing component is a test failure that says how to install it, never a skip.

// A harness fails loudly: a panic with a message is how a test says what is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chaos;
pub mod chaos_fleet;
pub mod confirm_world;
pub mod decoy;
pub mod eks_api;
pub mod fault_proxy;
pub mod fixtures;
pub mod flux_controller;
pub mod gitlab;
pub mod iam_authn;
pub mod kube_env;
pub mod kube_faults;
pub mod moto;
pub mod netns;
pub mod receiver;
pub mod secret_forms;
