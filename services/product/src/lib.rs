//! The product service (being built).
