//! Kubernetes: discovery, service-proxy trigger and annotate, one client per registry entry.
