//! Helpers shared by the sitegen tests and benchmarks.
pub mod fixture;
pub mod geometry;
pub mod published;
