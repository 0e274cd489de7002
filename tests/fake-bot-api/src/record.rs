//! What the fake remembers: every call with its parameters and answer,
//! the 429 windows it opened and the retries that came too early, the
//! bot-wide limits and the sends that met them, and the webhook setWebhook
//! stored.

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

/// A call that arrived for a chat before its 429 window ended: a
/// sendMessage after a scripted 429 (`rate_limit_every`, ...), or any call
/// the chat and bot-wide limits ([`crate::limits`]) would have refused.
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

/// A bot-wide limit opened by [`FakeBotApi::rate_limit_all_for`]: every
/// send-like call arriving in `from..until` was answered 429.
///
/// [`FakeBotApi::rate_limit_all_for`]: crate::FakeBotApi::rate_limit_all_for
#[derive(Debug, Clone)]
pub struct BotRateLimit {
    pub from: Instant,
    pub until: Instant,
    /// The `retry_after` every 429 in the window carried, seconds.
    pub retry_after: u64,
    /// Arrival of the first call answered 429 in the window: where a
    /// client's backing off starts to be measurable.
    pub first_429: Option<Instant>,
}

impl BotRateLimit {
    pub fn covers(&self, at: Instant) -> bool {
        self.from <= at && at < self.until
    }
}

/// A send-like call that reached the fake during a bot-wide limit (and was
/// answered 429).
#[derive(Debug, Clone)]
pub struct LimitedSend {
    /// Arrival, the same instant as the call's [`Call::at`].
    pub at: Instant,
    /// `chat_id` as a number; `None` for `@username` chats or calls that
    /// name no chat (an inline message's edit).
    pub chat: Option<i64>,
    pub method: String,
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
