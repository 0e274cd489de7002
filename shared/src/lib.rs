//! What both sides of the queue must agree on: configuration, the Redis key
//! layout, the stream entry format, the Bot API client and the stats model.
//!
//! `ingress` and `worker` never depend on each other; they meet only through
//! the Redis stream, so everything that shapes that meeting point lives here.
//! Nothing here knows a service or a bot.
//!
//! # Layout
//!
//! An update's path through this crate: [`envelope`] checks a body and
//! shapes the stream entry; [`queue`] holds the queue ([`queue::RedisStore`]
//! for production, [`queue::MemoryStore`] embedded) - enqueue, consumer
//! group, completion, kept replies, dead letters, the send budget - under
//! the key names of [`keys`], over connections from [`redis_conn`];
//! [`telegram`] talks to Telegram (token scrubbed from every error);
//! [`stats`] reads the user directory; [`outbound`] defines the app's own
//! messages and broadcasts (request format, stored form). Around it: [`config`] (parsed once),
//! [`instance`] (one identity per process), [`secret`] (the derived webhook
//! secret, constant-time comparison), [`signals`] (SIGTERM/SIGINT, backoff)
//! and [`telemetry`] (logging that never blocks).

pub mod config;
pub mod envelope;
pub mod instance;
pub mod keys;
pub mod outbound;
pub mod queue;
pub mod redis_conn;
pub mod secret;
pub mod signals;
pub mod stats;
pub mod telegram;
pub mod telemetry;

pub use config::{Config, ConfigError};
