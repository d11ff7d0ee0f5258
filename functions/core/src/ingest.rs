//! Ingest outcomes.
