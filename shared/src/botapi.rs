//! A thin Bot API client: `POST <api>/bot<token>/<method>` with a JSON body,
//! `{"ok":..}` envelope decoded into [`BotApiError`] variants that keep the
//! HTTP `error_code`.
//!
//! Why not teloxide-core's `Bot`: its `ApiError` is keyed on description
//! strings and drops `error_code`, yet the worker's policy is decided by the
//! code (400/403 end an update, 5xx retries, 429 waits). And its network
//! errors carry the request URL - which holds the token. Here every error
//! is built from `reqwest::Error::without_url()` and scrubbed again.

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
    #[error("Bot API {method} network error: {message}")]
    Network { method: String, message: String },
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

    /// Telegram asked us to wait (429 with `parameters.retry_after`).
    /// Telegram refuses `getUpdates` because a webhook is set: something
    /// else registered one with this token.
    pub fn is_webhook_active(&self) -> bool {
        matches!(self, Self::Api { code: 409, description, .. } if description.contains("webhook is active"))
    }

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
    token: BotToken,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApi")
            .field("token", &self.token)
            .finish()
    }
}

/// Default per-request timeout; long polls add their own `timeout` on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

impl BotApi {
    pub fn new(api_url: &Url, token: &BotToken) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("tgbot-queue/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("reqwest client with static settings");
        let api = api_url.as_str().trim_end_matches('/');
        Self {
            http,
            base: format!("{api}/bot{}/", token.expose()),
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
        let resp = self
            .http
            .post(format!("{}{method}", self.base))
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

    fn network(&self, method: &str, e: reqwest::Error) -> BotApiError {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "request failed"
        };
        let mut message = kind.to_owned();
        let detail = e.without_url().to_string();
        if !detail.is_empty() {
            message = format!("{kind}: {detail}");
        }
        BotApiError::Network {
            method: method.to_owned(),
            message: self.scrub(&message),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn network_errors_never_carry_the_token() {
        let token = BotToken::parse("999:SECRETsecretSECRET").unwrap();
        // Port 9 on localhost: nothing listens, the connect fails at once.
        let api = BotApi::new(&Url::parse("http://127.0.0.1:9").unwrap(), &token);
        let err = api.get_me().await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, BotApiError::Network { .. }), "{text}");
        assert!(!text.contains("SECRETsecretSECRET"), "{text}");
        assert!(err.is_transient());
    }

    #[test]
    fn classification() {
        let e = |code| BotApiError::Api {
            method: "sendMessage".into(),
            code,
            description: String::new(),
            retry_after: Some(3),
            migrate_to_chat_id: None,
        };
        assert_eq!(e(429).retry_after(), Some(Duration::from_secs(3)));
        assert!(e(403).is_final_for_request() && !e(403).is_transient());
        assert!(e(502).is_transient());
        assert!(e(401).is_unauthorized());
    }
}
