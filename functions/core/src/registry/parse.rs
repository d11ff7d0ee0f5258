//! Registry entry parsing and validation.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cluster registry entry")]
pub struct RegistryError {
    pub errors: Vec<FieldError>,
}
