//! Trigger requests.
