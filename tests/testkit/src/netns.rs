//! A private network namespace for tests that need the kube-apiserver environment.
