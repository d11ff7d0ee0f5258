//! GitLab events.
