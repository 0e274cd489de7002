//! One file per command; each exports `run`, registered in `lib.rs`.

pub mod app;
pub mod help;
pub mod start;
pub mod stats;
