//! The HTTP surface Telegram and operators see (see SPEC "Ingress HTTP
//! surface"). The webhook handler does the minimum that makes an update
//! durable - check, parse the id, one atomic Redis write - and answers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use tracing::{debug, warn, Instrument};

use shared::envelope::{self, BadUpdate, Enqueued};
use shared::queue::{Store, StoreError};
use shared::secret::ct_eq;

use crate::metrics::Metrics;
use crate::server::BODY_TIMEOUT;

/// Telegram's own limit is far lower; anything bigger is not an update.
pub const MAX_BODY: usize = 1024 * 1024;
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// What we ask Telegram to wait when Redis is down. It keeps retrying an
/// undelivered update for up to 24 h, so a short wait loses nothing.
pub const RETRY_AFTER_SECS: u64 = 5;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub lanes: Arc<crate::lanes::Lanes>,
    /// `None` when the bot is disabled: the webhook path then answers 404.
    pub secret: Option<String>,
    pub metrics: Arc<Metrics>,
    /// `OUTBOX_API_KEY`; `None`: the outbound API's routes answer 404.
    pub outbox_key: Option<String>,
}

pub fn router(state: Arc<AppState>) -> Router {
    let outbound = match state.outbox_key {
        Some(_) => crate::outbound::router(),
        None => crate::outbound::disabled(),
    };
    Router::new()
        .route("/telegram/webhook/", post(webhook))
        .route("/telegram/webhook", post(webhook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(outbound)
        .with_state(state)
}

pub(crate) fn error(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::json!({ "ok": false, "error": msg }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn unavailable(msg: &str) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

/// Why a request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    TooLarge,
    Timeout,
    Unreadable,
}

impl BodyError {
    /// The `reason` label of the rejection metric.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Timeout => "body_timeout",
            Self::Unreadable => "body_read",
        }
    }

    pub(crate) fn response(self) -> Response {
        match self {
            Self::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB"),
            Self::Timeout => {
                let mut r = error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                );
                // The rest of the body may still come; the connection is not reusable.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
            Self::Unreadable => error(StatusCode::BAD_REQUEST, "could not read the request body"),
        }
    }
}

/// Reads a body of at most [`MAX_BODY`] within [`BODY_TIMEOUT`]; a declared
/// length over the limit is refused before a byte is read.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    let collect = http_body_util::Limited::new(body, MAX_BODY).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Unreadable),
    }
}

async fn webhook(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    st.metrics.received.inc();
    let Some(secret) = st.secret.as_deref() else {
        return error(
            StatusCode::NOT_FOUND,
            "the bot is disabled (DISABLE_TELEGRAM_BOT)",
        );
    };
    let authorized = headers
        .get(SECRET_HEADER)
        .is_some_and(|v| ct_eq(v.as_bytes(), secret.as_bytes()));
    if !authorized {
        st.metrics.reject("secret");
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Telegram-Bot-Api-Secret-Token",
        );
    }
    let bytes = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(e) => {
            st.metrics.reject(e.label());
            return e.response();
        }
    };
    let probe = match envelope::probe(&bytes) {
        Ok(p) => p,
        Err(e) => {
            st.metrics.reject(match e {
                BadUpdate::NotJson => "bad_json",
                BadUpdate::NotObject => "not_object",
                BadUpdate::NoUpdateId => "no_update_id",
            });
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let span = tracing::info_span!("update", update_id = probe.update_id);
    async move {
        match st
            .store
            .enqueue(&probe, st.lanes.lane(probe.kind), &bytes)
            .await
        {
            Ok(Enqueued::Stored(id)) => {
                st.metrics.enqueued.inc();
                debug!(entry = %id, "update stored");
                StatusCode::OK.into_response()
            }
            Ok(Enqueued::Duplicate) => {
                st.metrics.duplicates.inc();
                debug!("update already stored; resend acknowledged");
                StatusCode::OK.into_response()
            }
            Err(e) if e.is_out_of_memory() => {
                st.metrics.reject("redis_full");
                warn!("Redis is full (maxmemory); answering 503 until workers free memory");
                unavailable("queue full, retry later")
            }
            Err(e) => {
                st.metrics.reject("redis_unavailable");
                warn!(error = %e, "could not store update; answering 503");
                unavailable("queue unavailable, retry later")
            }
        }
    }
    .instrument(span)
    .await
}

/// Ready means "an update posted now would be stored": a full Redis
/// answers PING while refusing every update, so the write check counts too.
/// A write check refused by an ACL says nothing about the queue and is
/// ignored.
async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if st.store.ping().await.is_err() {
        return unavailable("redis unreachable");
    }
    match st.store.accepts_writes().await {
        Err(e) if e.is_out_of_memory() => {
            unavailable("redis is full (maxmemory): updates are refused")
        }
        Err(StoreError::Redis(e)) if e.code() == Some("NOPERM") => "ready\n".into_response(),
        Err(e) => {
            debug!(error = %e, "Redis refuses writes");
            unavailable("redis refuses writes")
        }
        Ok(()) => "ready\n".into_response(),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    if let Ok(Ok(d)) = tokio::time::timeout(
        Duration::from_secs(1),
        st.store.depth(shared::queue::Lane::Ordinary),
    )
    .await
    {
        st.metrics.queue_depth.set(d.length as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
