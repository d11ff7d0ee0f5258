//! What fluxrelay sends to a cluster, and what the answer means.

pub mod classify;
pub mod request;
