//! Adapters: the core ports on real systems. Filled in by the AWS function set and `fluxrelay serve`.
