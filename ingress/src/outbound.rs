//! The app's own HTTP API for outbound messages (see SPEC "Outbound
//! messages"): a backend asks the bot to message a user, now or later, or
//! to send one message to many. Requests are checked here and made durable
//! in the store; the workers send them with the replies' budget and retry
//! rules, so the caller gets its answer before Telegram is involved.
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/outbox` | `202 {"id"}` once stored; a repeated `Idempotency-Key` answers the first id and stores nothing (`Idempotent-Replayed: true`) |
//! | `POST /api/broadcasts` | `202 {"id"}` once the job exists |
//! | `GET /api/broadcasts/<id>` | `200` the job's progress; `404` unknown id |
//!
//! Every route needs `Authorization: Bearer <OUTBOX_API_KEY>` (401
//! otherwise, nothing stored) and answers 404 when no key is configured, so
//! an ingress without the variable exposes nothing. 400 names the bad
//! field, 413 is a body over 1 MiB, 503 + `Retry-After` a store that does
//! not answer, 501 an operation the embedded queue lacks (broadcasts). The
//! key and the messages' contents are never logged.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;
use tracing::{debug, info, warn};

use shared::envelope::now_ms;
use shared::outbound::{parse_broadcast, parse_outbox, Audience, BadOutbound};
use shared::queue::StoreError;
use shared::secret::ct_eq;

use crate::http::{error, read_body, unavailable, AppState};

/// The header that makes a repeated `POST /api/outbox` store nothing.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on an answer that repeats an earlier request's id.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest accepted `Idempotency-Key` (a UUID is 36; room for a prefix).
pub const MAX_IDEMPOTENCY_KEY: usize = 200;
/// The latest `not_before` that still fits the queue's millisecond scores
/// exactly (a double's integer range): far past any real schedule.
const MAX_DUE_MS: i64 = 1 << 53;

type St = Arc<AppState>;

/// The routes, for an ingress with `OUTBOX_API_KEY` set.
pub fn router() -> Router<St> {
    Router::new()
        .route("/api/outbox", post(outbox))
        .route("/api/broadcasts", post(create_broadcast))
        .route("/api/broadcasts/{id}", get(broadcast_status))
}

/// The same paths answering 404 to every method: without a key the API
/// does not exist (and a GET learns nothing a POST would not).
pub fn disabled() -> Router<St> {
    Router::new()
        .route("/api/outbox", any(off))
        .route("/api/broadcasts", any(off))
        .route("/api/broadcasts/{id}", any(off))
}

async fn off() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "the outbound API is off (OUTBOX_API_KEY is not set)",
    )
}

/// Checks `Authorization: Bearer <key>` (scheme case-insensitive, RFC
/// 6750) in constant time; the refusal, if any. A missing and a wrong key
/// get the same answer.
fn refusal(st: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(key) = st.outbox_key.as_deref().filter(|k| !k.is_empty()) else {
        return Some(error(
            StatusCode::NOT_FOUND,
            "the outbound API is off (OUTBOX_API_KEY is not set)",
        ));
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    if given.is_some_and(|g| ct_eq(g.as_bytes(), key.as_bytes())) {
        return None;
    }
    debug!("outbound API request without the right key");
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong key: expected `Authorization: Bearer <OUTBOX_API_KEY>`",
    );
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

/// The token of a `Bearer` credential.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// 400 naming the field, as `{"ok": false, "error": "<field>: <reason>",
/// "field": "<field>"}`.
fn bad_request(e: &BadOutbound) -> Response {
    let body = json!({ "ok": false, "error": e.to_string(), "field": e.field });
    (StatusCode::BAD_REQUEST, no_store(), Json(body)).into_response()
}

fn bad_field(field: &str, reason: &str) -> Response {
    bad_request(&BadOutbound {
        field: field.to_owned(),
        reason: reason.to_owned(),
    })
}

fn no_store() -> [(HeaderName, HeaderValue); 1] {
    [(CACHE_CONTROL, HeaderValue::from_static("no-store"))]
}

fn accepted(id: &str) -> Response {
    (StatusCode::ACCEPTED, no_store(), Json(json!({ "id": id }))).into_response()
}

/// What a store failure tells the caller: come back later (503, the
/// request was not stored), or this deployment cannot do it (501).
fn store_failed(e: &StoreError, what: &str) -> Response {
    match e {
        StoreError::Unsupported(why) => error(StatusCode::NOT_IMPLEMENTED, why),
        e if e.is_out_of_memory() => {
            warn!("Redis is full (maxmemory); {what} refused with 503");
            unavailable("queue full, retry later")
        }
        e => {
            warn!(error = %e, "{what} failed; answering 503");
            unavailable("queue unavailable, retry later")
        }
    }
}

/// The optional `Idempotency-Key`: 1 to [`MAX_IDEMPOTENCY_KEY`] visible
/// ASCII characters, given once.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, BadOutbound> {
    let bad = |reason: String| BadOutbound {
        field: "Idempotency-Key".to_owned(),
        reason,
    };
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad("given more than once".to_owned()));
    }
    let ok = (1..=MAX_IDEMPOTENCY_KEY).contains(&v.len())
        && v.as_bytes().iter().all(u8::is_ascii_graphic);
    if !ok {
        return Err(bad(format!(
            "must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(v.to_str().ok())
}

/// When the message becomes due: `not_before` (unix seconds) in ms, or now.
pub fn due_ms(not_before: Option<i64>, now_ms: i64) -> Result<i64, BadOutbound> {
    match not_before {
        None => Ok(now_ms),
        Some(s) => s
            .checked_mul(1000)
            .filter(|ms| *ms <= MAX_DUE_MS)
            .ok_or_else(|| BadOutbound {
                field: "not_before".to_owned(),
                reason: "too far in the future".to_owned(),
            }),
    }
}

async fn outbox(State(st): State<St>, headers: HeaderMap, body: Body) -> Response {
    if let Some(r) = refusal(&st, &headers) {
        return r;
    }
    let idem = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(e) => return bad_request(&e),
    };
    let bytes = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let now = now_ms();
    let (msg, due) = match parse_outbox(&bytes).and_then(|(m, nb)| Ok((m, due_ms(nb, now)?))) {
        Ok(parsed) => parsed,
        Err(e) => return bad_request(&e),
    };
    match st.store.outbox_put(&msg, due, idem).await {
        Ok((id, stored)) => {
            info!(
                id = %id,
                method = %msg.method,
                due_in_ms = (due - now).max(0),
                replayed = !stored,
                "outbox message accepted"
            );
            let mut r = accepted(&id);
            if !stored {
                r.headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            }
            r
        }
        Err(e) => store_failed(&e, "storing an outbox message"),
    }
}

async fn create_broadcast(State(st): State<St>, headers: HeaderMap, body: Body) -> Response {
    if let Some(r) = refusal(&st, &headers) {
        return r;
    }
    // Refused rather than ignored: a client retrying on the strength of
    // the key would otherwise start a second broadcast to everyone.
    if headers.contains_key(IDEMPOTENCY_KEY) {
        return bad_field(
            "Idempotency-Key",
            "not supported on /api/broadcasts: a repeated request creates another broadcast",
        );
    }
    let bytes = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let (msg, audience) = match parse_broadcast(&bytes) {
        Ok(parsed) => parsed,
        Err(e) => return bad_request(&e),
    };
    match st.store.broadcast_create(&msg, &audience).await {
        Ok(id) => {
            let to = match &audience {
                Audience::All => "all".to_owned(),
                Audience::Chats(c) => format!("{} chats", c.len()),
            };
            info!(id = %id, method = %msg.method, to = %to, "broadcast created");
            accepted(&id)
        }
        Err(e) => store_failed(&e, "creating a broadcast"),
    }
}

async fn broadcast_status(
    State(st): State<St>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refusal(&st, &headers) {
        return r;
    }
    match st.store.broadcast_status(&id).await {
        Ok(Some(status)) => (StatusCode::OK, no_store(), Json(status)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no broadcast with this id"),
        Err(e) => store_failed(&e, "reading a broadcast's status"),
    }
}

#[cfg(test)]
mod tests;
