//! Baseline servers, each run as its own process (`bench baseline-*`) so
//! it competes for the CPU the way the ingress does. Same stack as the
//! ingress (tokio multi-thread runtime, axum 0.8 HTTP/1), same routes.
//!
//! - bare: reads the body and answers 200. The ceiling of the HTTP stack.
//! - xadd: reads the body, one `XADD` (multiplexed connection) of it, 200.
//!   The ceiling of "one Redis round trip per update".
//! - inline: reads the body, answers 200 and, in a spawned task, POSTs a
//!   sendMessage to the Bot API (reqwest, pooled keep-alive). No queue: the
//!   end-to-end ceiling of this machine without Redis.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

/// The webhook paths the ingress serves, so the same load hits them.
const PATHS: [&str; 2] = ["/telegram/webhook/", "/telegram/webhook"];

async fn serve(port: u16, app: Router) -> anyhow::Result<()> {
    let app = app.route("/readyz", get(|| async { "ready\n" }));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

pub async fn bare(port: u16) -> anyhow::Result<()> {
    async fn handler(_body: Bytes) -> StatusCode {
        StatusCode::OK
    }
    let mut app = Router::new();
    for p in PATHS {
        app = app.route(p, post(handler));
    }
    serve(port, app).await
}

pub async fn xadd(port: u16, redis_url: &str) -> anyhow::Result<()> {
    let conn = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    async fn handler(
        State(conn): State<redis::aio::MultiplexedConnection>,
        body: Bytes,
    ) -> StatusCode {
        let mut conn = conn.clone();
        let r: redis::RedisResult<String> = redis::cmd("XADD")
            .arg("bench:stream")
            .arg("*")
            .arg("update")
            .arg(&body[..])
            .query_async(&mut conn)
            .await;
        match r {
            Ok(_) => StatusCode::OK,
            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    let mut app = Router::new();
    for p in PATHS {
        app = app.route(p, post(handler));
    }
    serve(port, app.with_state(conn)).await
}

struct Inline {
    http: reqwest::Client,
    send_url: String,
}

#[derive(Deserialize)]
struct Id {
    id: i64,
}
#[derive(Deserialize)]
struct Msg {
    chat: Id,
}
#[derive(Deserialize)]
struct Upd {
    message: Option<Msg>,
}

pub async fn inline(port: u16, api_url: &str, token: &str) -> anyhow::Result<()> {
    let st = Arc::new(Inline {
        http: reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .build()?,
        send_url: format!("{}/bot{token}/sendMessage", api_url.trim_end_matches('/')),
    });
    async fn handler(State(st): State<Arc<Inline>>, body: Bytes) -> StatusCode {
        let Ok(Upd { message: Some(m) }) = serde_json::from_slice::<Upd>(&body) else {
            return StatusCode::OK;
        };
        let chat = m.chat.id;
        tokio::spawn(async move {
            let params = serde_json::json!({
                "chat_id": chat,
                "text": "Hello! This is the inline baseline: no queue, no Redis.",
            });
            for _ in 0..3 {
                if let Ok(r) = st.http.post(&st.send_url).json(&params).send().await {
                    if r.status().is_success() {
                        let _ = r.bytes().await;
                        return;
                    }
                }
            }
        });
        StatusCode::OK
    }
    let mut app = Router::new();
    for p in PATHS {
        app = app.route(p, post(handler));
    }
    serve(port, app.with_state(st)).await
}
