//! What the fake remembers: every call with its parameters and answer,
//! the 429 windows it opened and the retries that came too early, and the
//! webhook setWebhook stored.

use std::time::{Duration, Instant};

use serde_json::Value;

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct Call {
    /// The spec's spelling (`sendMessage`) when the method exists, else the
    /// path segment as sent.
    pub method: String,
    /// Parameters after parsing (form values converted to their types).
    pub params: Value,
    /// When the request arrived.
    pub at: Instant,
    /// HTTP status answered.
    pub status: u16,
    /// The JSON body answered (`Value::Null` for non-JSON answers).
    pub response: Value,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.status == 200
    }
    /// `params[key]`, or `Null`.
    pub fn param(&self, key: &str) -> &Value {
        self.params.get(key).unwrap_or(&Value::Null)
    }
    /// For a successful sendMessage: the text as the user sees it (after
    /// HTML/MarkdownV2 parsing), from the returned Message.
    pub fn shown_text(&self) -> &str {
        self.response["result"]["text"].as_str().unwrap_or("")
    }
    /// The chat id of a sendMessage-like call as a number (also from a
    /// numeric string).
    pub fn chat_id(&self) -> Option<i64> {
        chat_i64(self.param("chat_id"))
    }
}

pub(crate) fn chat_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

pub(crate) fn chat_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A 429 the fake answered: `chat` may not be sent to before `allowed_at`.
#[derive(Debug, Clone)]
pub struct RateLimitWindow {
    pub chat: String,
    pub issued_at: Instant,
    pub retry_after: u64,
    pub allowed_at: Instant,
}

/// A sendMessage that arrived for a chat before its 429 window ended.
#[derive(Debug, Clone)]
pub struct EarlyRetry {
    pub chat: String,
    pub at: Instant,
    pub allowed_at: Instant,
}

impl EarlyRetry {
    /// How much too early the call came.
    pub fn early_by(&self) -> Duration {
        self.allowed_at.saturating_duration_since(self.at)
    }
}

/// What setWebhook stored.
#[derive(Debug, Clone, Default)]
pub struct WebhookState {
    /// Empty when no webhook is set.
    pub url: String,
    pub secret_token: Option<String>,
    pub allowed_updates: Option<Value>,
    pub max_connections: Option<i64>,
    pub drop_pending_updates: Option<bool>,
    pub ip_address: Option<String>,
    /// Successful setWebhook calls with a non-empty url.
    pub set_count: u64,
    pub(crate) last_set: Option<Instant>,
}
