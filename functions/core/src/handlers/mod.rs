//! The three handlers, written against the ports: ingest lives in [`crate::ingest`],
//! route and dispatch here. Entry points (Lambda, `fluxrelay serve`) only adapt events.

pub mod confirm;
pub mod dispatch;
pub mod plan;
pub mod route;
