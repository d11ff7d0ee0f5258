//! Response classification.
