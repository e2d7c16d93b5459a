//! cprkit's engine.
pub mod adapter;
pub mod plan;
