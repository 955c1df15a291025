//! The order service (being built).
