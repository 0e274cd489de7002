//! Telegram's side: the Bot API client (token scrubbed from every error,
//! sends that tell "not delivered" from "outcome unknown").

pub mod client;

pub use client::*;
