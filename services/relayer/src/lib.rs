//! The outbox relayer (being built).
