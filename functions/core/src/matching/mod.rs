//! Does a push concern a GitRepository, and which Receivers would trigger it.

pub mod artifacts;
pub mod receiver;
pub mod refs;
pub mod select;
pub mod semver_range;
pub mod url;

#[cfg(test)]
#[path = "matcher_prop_test.rs"]
mod matcher_prop_tests;
