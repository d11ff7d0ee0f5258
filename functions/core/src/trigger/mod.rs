//! What fluxrelay sends to a cluster (what the answer means is `outcome`'s business).

pub mod request;
