//! A stand-in for Flux notification-controller's webhook receiver.
