//! The HTTP side: the shared state behind the handle, the axum handler
//! that parses, checks, delays and records each call, and the answers in
//! Telegram's envelope (`{"ok": ..., "result" | "error_code", ...}`).

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use crate::faults::Faults;
use crate::limits::Limits;
use crate::params::{parse_params, validate};
use crate::record::{chat_i64, Call, EarlyRetry, RateLimitWindow, WebhookState};
use crate::spec::Spec;

#[derive(Default)]
pub(crate) struct UpdateQueue {
    pub(crate) items: VecDeque<Value>,
    pub(crate) next_id: i64,
}

#[derive(Default)]
pub(crate) struct PollState {
    pub(crate) active: Option<u64>,
    pub(crate) next: u64,
}

pub(crate) struct Inner {
    pub(crate) token: String,
    pub(crate) bot_id: i64,
    pub(crate) spec: &'static Spec,
    pub(crate) calls: Mutex<Vec<Call>>,
    pub(crate) violations: Mutex<Vec<String>>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) webhook: Mutex<WebhookState>,
    pub(crate) commands: Mutex<Option<Value>>,
    pub(crate) message_id: AtomicI64,
    pub(crate) send_seq: AtomicU64,
    pub(crate) blocked_until: Mutex<HashMap<String, Instant>>,
    pub(crate) windows: Mutex<Vec<RateLimitWindow>>,
    pub(crate) early: Mutex<Vec<EarlyRetry>>,
    pub(crate) limits: Mutex<Limits>,
    pub(crate) updates: Mutex<UpdateQueue>,
    pub(crate) poll: Mutex<PollState>,
    pub(crate) poll_notify: Notify,
    pub(crate) conflicts: AtomicU64,
}

/// Locks, shrugging off poisoning: a panicking test thread must not turn
/// every later assertion into a confusing PoisonError.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) enum Answer {
    Ok(Value),
    OkDesc(Value, &'static str),
    Err {
        code: u16,
        description: String,
        parameters: Option<Value>,
    },
    /// A non-JSON answer (an nginx error page).
    Html(u16, &'static str),
}

pub(crate) fn err(code: u16, description: impl Into<String>) -> Answer {
    Answer::Err {
        code,
        description: description.into(),
        parameters: None,
    }
}

pub(crate) fn too_many(retry_after: u64) -> Answer {
    Answer::Err {
        code: 429,
        description: format!("Too Many Requests: retry after {retry_after}"),
        parameters: Some(json!({ "retry_after": retry_after })),
    }
}

const BAD_GATEWAY_PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n";

impl Answer {
    pub(crate) fn status(&self) -> u16 {
        match self {
            Answer::Ok(_) | Answer::OkDesc(..) => 200,
            Answer::Err { code, .. } => *code,
            Answer::Html(code, _) => *code,
        }
    }

    fn body(&self) -> Value {
        match self {
            Answer::Ok(r) => json!({ "ok": true, "result": r }),
            Answer::OkDesc(r, d) => json!({ "ok": true, "result": r, "description": d }),
            Answer::Err {
                code,
                description,
                parameters,
            } => {
                let mut b = json!({ "ok": false, "error_code": code, "description": description });
                if let Some(p) = parameters {
                    b["parameters"] = p.clone();
                }
                b
            }
            Answer::Html(..) => Value::Null,
        }
    }
}

pub(crate) fn server_error(status: u16) -> Answer {
    if status == 502 {
        Answer::Html(502, BAD_GATEWAY_PAGE)
    } else {
        err(status, "Internal Server Error")
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Chance in [0,1].
pub(crate) fn chance(p: f64) -> bool {
    p > 0.0 && rand::random::<f64>() < p
}

pub(crate) async fn handle(
    State(st): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let path = uri.path().to_owned();
    let (method_name, answer, params) = route(&st, at, &path, &uri, &headers, &body).await;
    let status = answer.status();
    let body_json = answer.body();
    // Decided before the record: the call is carried out (recorded) even
    // if its answer then comes late or never.
    let (hold, cut) = {
        let f = lock(&st.faults);
        let send = method_name == "sendMessage";
        let chat = params.get("chat_id").and_then(chat_i64);
        (
            if send {
                f.send_answer_delay
            } else {
                Duration::ZERO
            },
            send && chat.is_some_and(|c| f.cut_send_answers.contains(&c)),
        )
    };
    lock(&st.calls).push(Call {
        method: method_name,
        params: Value::Object(params),
        at,
        status,
        response: body_json.clone(),
    });
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if cut {
        // Headers and half the body, then the stream fails: hyper aborts
        // the connection, as a reset mid-answer would.
        let text = body_json.to_string();
        let half = Bytes::from(text.as_bytes()[..text.len() / 2].to_vec());
        let parts: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::other("connection cut"))];
        return (
            code,
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::CONTENT_LENGTH, text.len().to_string()),
            ],
            axum::body::Body::from_stream(futures::stream::iter(parts)),
        )
            .into_response();
    }
    match answer {
        Answer::Html(_, page) => {
            (code, [(header::CONTENT_TYPE, "text/html")], page).into_response()
        }
        _ => (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            body_json.to_string(),
        )
            .into_response(),
    }
}

async fn route(
    st: &Arc<Inner>,
    at: Instant,
    path: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> (String, Answer, Map<String, Value>) {
    let Some(rest) = path.strip_prefix("/bot") else {
        return (path.to_owned(), err(404, "Not Found"), Map::new());
    };
    let (token, method) = rest.split_once('/').unwrap_or((rest, ""));
    if token != st.token {
        return (method.to_owned(), err(401, "Unauthorized"), Map::new());
    }
    let Some(m) = st.spec.method(method) else {
        st.violation(format!("call to unknown method {method:?}"));
        return (
            method.to_owned(),
            err(404, "Not Found: method not found"),
            Map::new(),
        );
    };
    let parsed = match parse_params(uri, headers, body) {
        Ok(p) => p,
        Err(e) => {
            st.violation(format!("{}: {e}", m.name));
            return (
                m.name.clone(),
                err(400, format!("Bad Request: {e}")),
                Map::new(),
            );
        }
    };
    let raw = parsed.params.clone();
    let params = match validate(st.spec, m, parsed) {
        Ok(p) => p,
        Err(e) => {
            st.violation(format!(
                "{}: {e}; params: {}",
                m.name,
                Value::Object(raw.clone())
            ));
            return (m.name.clone(), err(400, format!("Bad Request: {e}")), raw);
        }
    };
    if let Some(answer) = st.check_limits(&m.name, &params, at) {
        // A flood answer skips the other faults but not the network delay.
        let delay = lock(&st.faults).delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        return (m.name.clone(), answer, params);
    }
    let (delay, jitter, stall) = {
        let mut f = lock(&st.faults);
        let chat = params.get("chat_id").and_then(chat_i64);
        let stall = m.name == "sendMessage" && chat.is_some_and(|c| f.stalled_chats.contains(&c));
        if stall {
            f.stalled_calls += 1;
        }
        (f.delay, f.send_jitter, stall)
    };
    if stall {
        // Longer than any test; the caller is killed long before.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if !delay.is_zero() && m.name != "getUpdates" {
        tokio::time::sleep(delay).await;
    }
    if !jitter.is_zero() && m.name == "sendMessage" {
        let us = rand::random_range(0..=jitter.as_micros() as u64);
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
    let answer = st.dispatch(&m.name, &params).await;
    st.flood_release(&m.name, at, answer.status());
    (m.name.clone(), answer, params)
}
