//! Secrets Manager: webhook auth secret and the cluster registry, cached per warm container.
