//! The worker: consumes the update stream through the consumer group,
//! deduplicates by `update_id`, runs the bot's commands and replies through
//! the Bot API. Any number of replicas; they share nothing but Redis.

pub mod admin;
pub mod consumer;
pub mod handlers;
pub mod health;
pub mod metrics;
pub mod sender;
pub mod texts;
pub mod update;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use shared::botapi::BotApi;
use shared::config::redact_url;
use shared::signals::Backoff;
use shared::store::{RedisStore, Store};
use shared::Config;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("configuration error: REDIS_URL is not usable: {0}")]
    Redis(redis::RedisError),
    #[error("Telegram rejected the bot token (401 Unauthorized): check TELEGRAM_BOT_TOKEN")]
    Unauthorized,
    #[error("cannot listen on METRICS_PORT {port}: {source}")]
    MetricsBind { port: u16, source: std::io::Error },
}

/// How long in-flight handlers may run after SIGTERM. Railway waits a few
/// seconds more before killing; what does not finish stays pending and is
/// reclaimed by another worker.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

pub fn consumer_name() -> String {
    let host = std::env::var("RAILWAY_REPLICA_ID")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "worker".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &id[..8])
}

/// Runs against the Redis at `REDIS_URL` (the production path).
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), WorkerError> {
    let redis_url = config.redis_url_or_default().to_owned();
    let store = RedisStore::open(&redis_url).map_err(WorkerError::Redis)?;
    info!(redis = %redact_url(&redis_url), "using Redis");
    run_with(config, Arc::new(store), cancel).await
}

/// Runs against any store: the all-in-one passes its embedded one.
pub async fn run_with(
    config: Config,
    store: Arc<dyn Store>,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let metrics = Arc::new(metrics::Metrics::default());

    let health = match config.metrics_port {
        Some(port) => {
            let addr = std::net::SocketAddr::new(config.listen.ip(), port);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| WorkerError::MetricsBind { port, source })?;
            info!("metrics on {addr}");
            Some(tokio::spawn(health::serve(
                listener,
                metrics.clone(),
                store.clone(),
                cancel.clone(),
            )))
        }
        None => None,
    };

    let token = match (&config.token, config.disabled) {
        (Some(t), false) => t.clone(),
        _ => {
            info!("Telegram bot disabled (DISABLE_TELEGRAM_BOT): no handlers run; waiting for shutdown");
            cancel.cancelled().await;
            if let Some(h) = health {
                let _ = h.await;
            }
            return Ok(());
        }
    };
    let api = BotApi::new(&config.api_url, &token);
    let me = {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            let attempt = tokio::select! {
                r = api.get_me() => r,
                _ = cancel.cancelled() => return Ok(()),
            };
            match attempt {
                Ok(me) => break me,
                Err(e) if e.is_unauthorized() => return Err(WorkerError::Unauthorized),
                Err(e) => {
                    let wait = e.retry_after().unwrap_or_else(|| backoff.next_delay());
                    warn!(
                        error = %e,
                        wait_ms = wait.as_millis() as u64,
                        "worker cannot reach the Bot API (getMe); retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return Ok(()),
                    }
                }
            }
        }
    };
    let username = me.username.clone().unwrap_or_default();
    info!("Telegram bot initialized: @{username}");

    let bot = handlers::Bot {
        username,
        webapp_url: config.webapp_url.clone(),
        sender: sender::Sender::new(api, store.clone(), config.send_rate),
        store: store.clone(),
        metrics: metrics.clone(),
    };
    let consumer = consumer::Consumer::new(
        consumer::Settings {
            name: consumer_name(),
            concurrency: config.worker_concurrency,
            max_deliveries: config.max_deliveries,
            claim_idle: config.claim_idle,
            shutdown_grace: SHUTDOWN_GRACE,
            per_chat_order: config.per_chat_order,
        },
        store,
        Arc::new(bot),
        metrics,
    );
    consumer.run(cancel.clone()).await;
    cancel.cancel();
    if let Some(h) = health {
        let _ = h.await;
    }
    info!("worker stopped");
    Ok(())
}
