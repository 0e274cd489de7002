//! A thin Bot API client: `POST <api>/bot<token>/<method>` with a JSON body,
//! `{"ok":..}` envelope decoded into [`BotApiError`] variants that keep the
//! HTTP `error_code`.
//!
//! Why not teloxide-core's `Bot`: its `ApiError` is keyed on description
//! strings and drops `error_code`, yet the worker's policy is decided by the
//! code (400/403 end an update, 5xx retries, 429 waits). And its network
//! errors carry the request URL - which holds the token. Here every error
//! is built from `reqwest::Error::without_url()` and scrubbed again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::BotToken;

#[derive(Debug, thiserror::Error)]
pub enum BotApiError {
    #[error("Bot API {method} failed: {code} {description}")]
    Api {
        method: String,
        code: u16,
        description: String,
        retry_after: Option<u64>,
        migrate_to_chat_id: Option<i64>,
    },
    /// No answer came. `maybe_sent` says whether the request may have
    /// reached Telegram (see [`BotApiError::outcome_unknown`]).
    #[error("Bot API {method} network error: {message}")]
    Network {
        method: String,
        message: String,
        maybe_sent: bool,
    },
    #[error("Bot API {method} answered HTTP {status} with an unreadable body: {detail}")]
    InvalidResponse {
        method: String,
        status: u16,
        detail: String,
    },
}

impl BotApiError {
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Api { code, .. } => Some(*code),
            Self::InvalidResponse { status, .. } => Some(*status),
            Self::Network { .. } => None,
        }
    }

    /// The token was rejected: nothing will work until an operator fixes it.
    pub fn is_unauthorized(&self) -> bool {
        self.code() == Some(401)
    }

    /// Telegram refuses `getUpdates` because a webhook is set: something
    /// else registered one with this token.
    pub fn is_webhook_active(&self) -> bool {
        matches!(self, Self::Api { code: 409, description, .. } if description.contains("webhook is active"))
    }

    /// Telegram asked us to wait (429 with `parameters.retry_after`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api {
                code: 429,
                retry_after,
                ..
            } => Some(Duration::from_secs(retry_after.unwrap_or(1))),
            _ => None,
        }
    }

    /// Transient: network trouble or a server-side failure. Worth retrying.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network { .. } => true,
            Self::Api { code, .. } | Self::InvalidResponse { status: code, .. } => *code >= 500,
        }
    }

    /// The request may have been carried out although no verdict came
    /// back: it was sent and then the answer timed out or the connection
    /// broke mid-answer, or a gateway (504) gave up waiting for Telegram's
    /// back end, which may still act on it. Telegram has no idempotency key
    /// for sends, so a caller whose request is not idempotent (a message)
    /// must not resend it blindly: the user may already have it. A connect
    /// failure (refused, DNS, TLS, connect timeout) never reached Telegram
    /// and is not unknown.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Network { maybe_sent, .. } => *maybe_sent,
            Self::Api { code, .. } | Self::InvalidResponse { status: code, .. } => *code == 504,
        }
    }

    /// A verdict about this request (bad request, blocked by the user, chat
    /// not found): retrying cannot help, so the update ends here.
    pub fn is_final_for_request(&self) -> bool {
        matches!(self.code(), Some(400 | 403 | 404))
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    ok: bool,
    result: Option<T>,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

#[derive(Deserialize, Default)]
struct ResponseParameters {
    retry_after: Option<u64>,
    migrate_to_chat_id: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    pub first_name: String,
    pub username: Option<String>,
    pub language_code: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct WebhookInfo {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub has_custom_certificate: bool,
    #[serde(default)]
    pub pending_update_count: u64,
    pub ip_address: Option<String>,
    pub last_error_date: Option<i64>,
    pub last_error_message: Option<String>,
    pub last_synchronization_error_date: Option<i64>,
    pub max_connections: Option<u32>,
    pub allowed_updates: Option<Vec<String>>,
}

#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    /// `<api>/bot<token>/`; never formatted into anything that leaves here.
    base: String,
    /// Each method's parsed URL, so a send does not parse `base` + method
    /// again (URL parsing was ~4 % of a busy worker). Shared by clones;
    /// bounded by [`URL_CACHE_MAX`].
    urls: Arc<Mutex<HashMap<String, Url>>>,
    /// `host:port` of the API, named in network errors so an operator sees
    /// where the bot tried to go. Never the path: that holds the token.
    host: String,
    token: BotToken,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApi")
            .field("host", &self.host)
            .field("token", &self.token)
            .finish()
    }
}

/// Default per-request timeout; long polls add their own `timeout` on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Timeout for sends (messages). Longer than [`REQUEST_TIMEOUT`] because a
/// send that times out has an unknown outcome and is not resent (see
/// [`BotApiError::outcome_unknown`]): waiting out a slow Telegram (stalls of
/// 30 s have been seen) gets a known answer, where giving up early leaves
/// the user with a reply nobody can confirm. Still bounded, so a hung
/// connection frees its handler slot within a minute.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Methods whose URL is kept parsed: far more than a bot calls, and a
/// method name from outside (the outbox) cannot grow the cache past it.
const URL_CACHE_MAX: usize = 64;

impl BotApi {
    pub fn new(api_url: &Url, token: &BotToken) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("tgbot-queue/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("reqwest client with static settings");
        let api = api_url.as_str().trim_end_matches('/');
        let host = match (api_url.host_str(), api_url.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => "<no host>".to_owned(),
        };
        Self {
            http,
            base: format!("{api}/bot{}/", token.expose()),
            urls: Arc::default(),
            host,
            token: token.clone(),
        }
    }

    pub async fn call<P: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, BotApiError> {
        self.call_with_timeout(method, params, REQUEST_TIMEOUT)
            .await
    }

    pub async fn call_with_timeout<P: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<R, BotApiError> {
        let request = match self.url(method) {
            Some(url) => self.http.post(url),
            None => self.http.post(format!("{}{method}", self.base)),
        };
        let resp = request
            .timeout(timeout)
            .json(params)
            .send()
            .await
            .map_err(|e| self.network(method, e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| self.network(method, e))?;
        let env: Envelope<R> =
            serde_json::from_slice(&body).map_err(|e| BotApiError::InvalidResponse {
                method: method.to_owned(),
                status,
                detail: self.scrub(&e.to_string()),
            })?;
        if env.ok {
            if let Some(r) = env.result {
                return Ok(r);
            }
            return Err(BotApiError::InvalidResponse {
                method: method.to_owned(),
                status,
                detail: "ok without result".into(),
            });
        }
        let params = env.parameters.unwrap_or_default();
        Err(BotApiError::Api {
            method: method.to_owned(),
            code: env.error_code.unwrap_or(status),
            description: self.scrub(env.description.as_deref().unwrap_or("no description")),
            retry_after: params.retry_after,
            migrate_to_chat_id: params.migrate_to_chat_id,
        })
    }

    /// `<api>/bot<token>/<method>`, parsed once per method. `None` when
    /// it does not parse: the caller hands reqwest the text, whose builder
    /// error then says so (never sent, no URL in it).
    fn url(&self, method: &str) -> Option<Url> {
        // A poisoned lock only means another call panicked mid-insert; the
        // map is still a valid cache.
        let mut urls = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = urls.get(method) {
            return Some(u.clone());
        }
        let url = Url::parse(&format!("{}{method}", self.base)).ok()?;
        if urls.len() < URL_CACHE_MAX {
            urls.insert(method.to_owned(), url.clone());
        }
        Some(url)
    }

    fn network(&self, method: &str, e: reqwest::Error) -> BotApiError {
        // A connect error (refused, DNS, TLS, connect timeout) or a request
        // that could not be built never left this process; anything after
        // that (a timeout waiting for the answer, a reset mid-answer) may
        // have reached Telegram. Connect is checked first: a connect
        // timeout is both.
        let maybe_sent = !(e.is_connect() || e.is_builder());
        let kind = if e.is_connect() {
            "could not connect"
        } else if e.is_timeout() {
            "timed out waiting for the answer"
        } else {
            "connection broke before the answer"
        };
        let message = format!("{kind} to {}: {}", self.host, cause_chain(&e.without_url()));
        BotApiError::Network {
            method: method.to_owned(),
            message: self.scrub(&message),
            maybe_sent,
        }
    }

    /// Belt and braces: whatever text came back, the token is cut out.
    fn scrub(&self, s: &str) -> String {
        let t = self.token.expose();
        let secret_part = t.split_once(':').map(|(_, s)| s).unwrap_or(t);
        s.replace(t, "<token>").replace(secret_part, "<token>")
    }

    pub async fn get_me(&self) -> Result<User, BotApiError> {
        self.call("getMe", &serde_json::json!({})).await
    }

    pub async fn get_webhook_info(&self) -> Result<WebhookInfo, BotApiError> {
        self.call("getWebhookInfo", &serde_json::json!({})).await
    }

    pub async fn delete_webhook(&self, drop_pending_updates: bool) -> Result<bool, BotApiError> {
        self.call(
            "deleteWebhook",
            &serde_json::json!({ "drop_pending_updates": drop_pending_updates }),
        )
        .await
    }
}

/// The error and its sources, joined: reqwest's own text ("error sending
/// request") says nothing an operator can act on; the cause ("dns error:
/// failed to lookup address information", "Connection refused", a TLS
/// complaint) sits a few `source()`s down. A link whose text the previous
/// one already contains is skipped, as some wrappers repeat their inner
/// error.
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        let repeated = parts.last().is_some_and(|p| p.contains(&text));
        if !text.is_empty() && !repeated {
            parts.push(text);
        }
        next = err.source();
    }
    if parts.is_empty() {
        "no detail".to_owned()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
