//! GitRepository ref rules.
