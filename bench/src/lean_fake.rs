//! A bench-only fake Bot API that does as little as possible per call, so
//! it is never what limits an end-to-end run.
//!
//! The e2e fake (`e2e::FakeBotApi`) checks every call against the Bot API
//! spec and records it with its parameters; that is right for tests and
//! costs CPU the services under test need on a small machine. This one
//! answers the methods the ingress and worker call at startup (getMe,
//! setWebhook, getWebhookInfo, setMyCommands, deleteWebhook) and
//! sendMessage, with minimal but well-formed `{"ok":true,...}` envelopes,
//! and only counts sendMessage calls.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Deserialize;

struct Inner {
    token: String,
    sent: AtomicU64,
    message_id: AtomicI64,
    webhook_url: Mutex<String>,
}

/// A running lean fake; stops when dropped.
pub struct LeanFake {
    inner: Arc<Inner>,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LeanFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LeanFake {
    pub async fn start(token: &str) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner {
            token: token.to_owned(),
            sent: AtomicU64::new(0),
            message_id: AtomicI64::new(1000),
            webhook_url: Mutex::new(String::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            inner,
            url: format!("http://{addr}"),
            server,
        })
    }

    /// Base URL for `TELEGRAM_API_URL`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// sendMessage calls answered so far.
    pub fn sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.inner.sent.store(0, Ordering::Relaxed);
    }
}

#[derive(Deserialize)]
struct SendParams {
    chat_id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WebhookParams {
    url: Option<String>,
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn handle(State(st): State<Arc<Inner>>, uri: Uri, body: Bytes) -> Response {
    let Some(rest) = uri.path().strip_prefix("/bot") else {
        return json(
            StatusCode::NOT_FOUND,
            r#"{"ok":false,"error_code":404,"description":"Not Found"}"#.into(),
        );
    };
    let (token, method) = rest.split_once('/').unwrap_or((rest, ""));
    if token != st.token {
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#.into(),
        );
    }
    let ok = |result: String| {
        json(
            StatusCode::OK,
            format!(r#"{{"ok":true,"result":{result}}}"#),
        )
    };
    match method.to_ascii_lowercase().as_str() {
        "sendmessage" => {
            let chat = serde_json::from_slice::<SendParams>(&body)
                .ok()
                .and_then(|p| p.chat_id)
                .unwrap_or(serde_json::Value::from(0));
            let id = st.message_id.fetch_add(1, Ordering::Relaxed);
            st.sent.fetch_add(1, Ordering::Relaxed);
            ok(format!(
                r#"{{"message_id":{id},"date":1700000000,"chat":{{"id":{chat},"type":"private"}},"text":""}}"#
            ))
        }
        "getme" => ok(format!(
            r#"{{"id":{},"is_bot":true,"first_name":"Bench Bot","username":"{}"}}"#,
            st.token.split(':').next().unwrap_or("1"),
            e2e::BOT_USERNAME
        )),
        "setwebhook" => {
            if let Ok(WebhookParams { url: Some(u) }) = serde_json::from_slice(&body) {
                *st.webhook_url.lock().unwrap_or_else(|e| e.into_inner()) = u;
            }
            ok("true".into())
        }
        "deletewebhook" => {
            st.webhook_url
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            ok("true".into())
        }
        "getwebhookinfo" => {
            let url = st
                .webhook_url
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            ok(format!(
                r#"{{"url":{},"has_custom_certificate":false,"pending_update_count":0}}"#,
                serde_json::Value::String(url)
            ))
        }
        _ => ok("true".into()),
    }
}
