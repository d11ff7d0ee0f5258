//! GitRepository and Receiver selection.
