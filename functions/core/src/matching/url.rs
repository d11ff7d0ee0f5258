//! Git URL normalisation.
