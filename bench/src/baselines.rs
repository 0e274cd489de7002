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
//! - consumer: with `xadd` in front, the floor of any design that stores
//!   the update before answering and replies from another process: reads
//!   the stream through a consumer group (`XREADGROUP`, batches of up to
//!   256 on a connection of its own), sends each reply as `inline` does,
//!   then acknowledges and deletes the batch in one pipeline. No dedupe, no
//!   chat order, no user directory, no kept reply, no send budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

/// The webhook paths the ingress serves, so the same load hits them.
const PATHS: [&str; 2] = ["/telegram/webhook/", "/telegram/webhook"];

/// The stream the `xadd` baseline writes and the `consumer` reads.
const STREAM: &str = "bench:stream";

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
            .arg(STREAM)
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
        tokio::spawn(async move { reply(&st.http, &st.send_url, chat).await });
        StatusCode::OK
    }
    let mut app = Router::new();
    for p in PATHS {
        app = app.route(p, post(handler));
    }
    serve(port, app.with_state(st)).await
}

/// The sendMessage of the inline baseline and of the consumer, with up to
/// three tries.
async fn reply(http: &reqwest::Client, send_url: &str, chat: i64) {
    let params = serde_json::json!({
        "chat_id": chat,
        "text": "Hello! This is a baseline: no dedupe, no order, no directory.",
    });
    for _ in 0..3 {
        if let Ok(r) = http.post(send_url).json(&params).send().await {
            if r.status().is_success() {
                let _ = r.bytes().await;
                return;
            }
        }
    }
}

pub async fn consumer(api_url: &str, redis_url: &str, token: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    // A blocked read holds its connection, past the default response
    // timeout: a connection of its own, without one.
    let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut read = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    let mut ack = client.get_multiplexed_async_connection().await?;
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg("floor")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut read)
        .await;
    if let Err(e) = created {
        if e.code() != Some("BUSYGROUP") {
            return Err(e.into());
        }
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()?;
    let send_url = format!("{}/bot{token}/sendMessage", api_url.trim_end_matches('/'));
    println!("floor consumer reading");
    loop {
        let batch: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("floor")
            .arg("c")
            .arg("COUNT")
            .arg(256)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query_async(&mut read)
            .await?;
        let Some(key) = batch.keys.into_iter().next() else {
            continue;
        };
        let mut ids = Vec::with_capacity(key.ids.len());
        let mut sends = Vec::with_capacity(key.ids.len());
        for e in key.ids {
            let body: Option<Vec<u8>> = e.get("update");
            let chat = body
                .and_then(|b| serde_json::from_slice::<Upd>(&b).ok())
                .and_then(|u| u.message)
                .map(|m| m.chat.id);
            if let Some(chat) = chat {
                let (http, url) = (http.clone(), send_url.clone());
                sends.push(tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(30), reply(&http, &url, chat)).await
                }));
            }
            ids.push(e.id);
        }
        for s in sends {
            let _ = s.await;
        }
        let _: () = redis::pipe()
            .cmd("XACK")
            .arg(STREAM)
            .arg("floor")
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(STREAM)
            .arg(&ids)
            .ignore()
            .query_async(&mut ack)
            .await?;
    }
}
