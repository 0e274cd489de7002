//! The Mini App: the page Telegram opens from the bot's `/app` button, and
//! the API it calls with the launch data Telegram signed.
//!
//! | request | answer |
//! |---|---|
//! | `GET /app/`, `GET /app` | the page (`page.html`, embedded in the binary) |
//! | `GET`/`POST /api/me` + `Authorization: tma <initData>` | the caller's and the bot's statistics as JSON |
//!
//! `/api/me` answers 401 with `{"ok":false,"error":...}` and
//! `WWW-Authenticate: tma` when the launch data is missing, altered or older
//! than `TELEGRAM_INITDATA_MAX_AGE`, and 503 with `Retry-After` when Redis
//! does not answer within [`shared::redis_conn::COMMAND_TIMEOUT`]. Neither
//! the initData nor the token is ever logged.

pub mod initdata;

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    REFERRER_POLICY, RETRY_AFTER, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::config::BotToken;
use shared::queue::Store;
use shared::stats::{BotStats, UserRecord};

use self::initdata::WebAppUser;

/// The page, embedded so the binary is the whole deployment.
pub const PAGE: &str = include_str!("page.html");

/// Seconds a client should wait before retrying when Redis is down.
const RETRY_AFTER_SECS: &str = "5";

/// The page's only script is its own inline one plus Telegram's optional
/// SDK; it talks to this origin only. No `frame-ancestors`: Telegram Web
/// shows Mini Apps in an iframe.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline' https://telegram.org; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'";

static PAGE_ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    let digest = Sha256::digest(PAGE.as_bytes());
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
        .expect("hex is a valid header value")
});

/// What the Mini App routes need. Cheap to clone (the store is shared).
#[derive(Clone)]
pub struct MiniAppState {
    pub store: std::sync::Arc<dyn Store>,
    pub token: BotToken,
    /// `TELEGRAM_INITDATA_MAX_AGE`; zero disables the age check.
    pub max_age: Duration,
}

/// `GET /app`, `GET /app/` and `GET|POST /api/me`, ready to merge into the
/// ingress router.
pub fn router(state: MiniAppState) -> Router {
    Router::new()
        .route("/app", get(page))
        .route("/app/", get(page))
        .route("/api/me", get(me).post(me))
        .with_state(state)
}

async fn page(headers: HeaderMap) -> Response {
    let etag = PAGE_ETAG.clone();
    let common = [
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (ETAG, etag.clone()),
    ];
    if if_none_match(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        StatusCode::OK,
        common,
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP)),
        ],
        PAGE,
    )
        .into_response()
}

fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

async fn me(State(state): State<MiniAppState>, headers: HeaderMap) -> Response {
    let raw = match tma_credentials(&headers) {
        Ok(raw) => raw,
        Err(reason) => {
            tracing::debug!(reason, "mini app request without usable credentials");
            return unauthorized(reason);
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let now_ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);

    let user = match initdata::validate(raw, &state.token, state.max_age, now_secs)
        .and_then(initdata::InitData::require_user)
    {
        Ok(user) => user,
        Err(e) => {
            // The error text never contains the initData or the token.
            tracing::debug!(reason = %e, "mini app initData rejected");
            return unauthorized(&e.to_string());
        }
    };

    let fetched = tokio::time::timeout(shared::redis_conn::COMMAND_TIMEOUT, async {
        tokio::try_join!(state.store.user(user.id), state.store.bot_stats(now_ms))
    })
    .await;
    match fetched {
        Ok(Ok((record, bot))) => (
            StatusCode::OK,
            [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(me_body(&user, record.as_ref(), &bot)),
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "mini app stats unavailable: redis error");
            unavailable()
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = shared::redis_conn::COMMAND_TIMEOUT.as_millis() as u64,
                "mini app stats unavailable: redis timed out"
            );
            unavailable()
        }
    }
}

/// The initData from `Authorization: tma <initData>` (scheme
/// case-insensitive), or a message for the 401.
pub fn tma_credentials(headers: &HeaderMap) -> Result<&str, &'static str> {
    let value = headers.get(AUTHORIZATION).ok_or(
        "missing Authorization header: expected `Authorization: tma <initData>` \
         (open this page from Telegram)",
    )?;
    let value = value
        .to_str()
        .map_err(|_| "Authorization header is not valid text")?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("tma") {
        return Err("unsupported Authorization scheme: expected `tma <initData>`");
    }
    let raw = rest.trim();
    if raw.is_empty() {
        return Err("Authorization header has the tma scheme but no initData");
    }
    Ok(raw)
}

/// The `/api/me` success body. The profile comes from the launch data
/// (Telegram's current view of the user), the history from Redis; a user
/// the bot has not recorded yet has `first_seen: null` and no messages.
/// Times are milliseconds since the epoch.
pub fn me_body(user: &WebAppUser, record: Option<&UserRecord>, bot: &BotStats) -> Value {
    let first_name = if user.first_name.is_empty() {
        record.map(|r| r.first_name.clone()).unwrap_or_default()
    } else {
        user.first_name.clone()
    };
    let language_code = user
        .language_code
        .clone()
        .or_else(|| record.and_then(|r| r.language_code.clone()));
    json!({
        "ok": true,
        "user": {
            "id": user.id,
            "first_name": first_name,
            "last_name": user.last_name,
            "username": user.username,
            "language_code": language_code,
            "first_seen": record.map(|r| r.first_seen),
            "last_seen": record.map(|r| r.last_seen),
            "messages": record.map_or(0, |r| r.messages),
            "start_payload": record.and_then(|r| r.start_payload.clone()),
        },
        "bot": bot,
    })
}

fn error_body(message: &str) -> Json<Value> {
    Json(json!({ "ok": false, "error": message }))
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (WWW_AUTHENTICATE, HeaderValue::from_static("tma")),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        error_body(message),
    )
        .into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS)),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        error_body(
            "statistics are temporarily unavailable (storage not answering); try again shortly",
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
