//! What both sides of the queue must agree on: configuration, the Redis key
//! layout, the stream entry format, the Bot API client and the stats model.
//!
//! `ingress` and `worker` never depend on each other; they meet only through
//! the Redis stream, so everything that shapes that meeting point lives here.

pub mod botapi;
pub mod config;
pub mod envelope;
pub mod instance;
pub mod keys;
pub mod redis_conn;
pub mod secret;
pub mod signals;
pub mod stats;
pub mod store;
pub mod telemetry;

pub use config::{Config, ConfigError};
