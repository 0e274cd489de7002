//! The engine as a library: a team writes its bot against [`Bot`], [`Ctx`],
//! [`Reply`] and [`HandlerError`]; the engine consumes the update stream
//! through the consumer group, deduplicates by `update_id`, keeps each
//! chat's order, runs the bot's handlers and sends their replies through
//! the shared budget. Any number of replicas; they share nothing but Redis.
//!
//! # Layout
//!
//! An update's path through this crate:
//!
//! - [`consumer`]: reads entries from the group, parks each until it is its
//!   chat's head, runs it in a handler slot, ends it (handled, duplicate or
//!   dead-lettered), reclaims entries of dead workers;
//! - [`dispatch`]: parses the entry's update (raw always, typed when
//!   teloxide-core can), routes it to the bot's handler, sends the reply;
//! - [`bot`], [`commands`], [`ctx`], [`reply`]: the public API - the
//!   builder, the command registry (routing, `/help`, menu), the handler's
//!   context and what a handler returns;
//! - [`sender`]: Bot API calls under the shared budget, 429 and retries;
//! - [`broadcaster`]: sends the running broadcasts, batch by leased batch;
//! - [`menu`]: publishes the command menu once per change;
//! - [`cli`], [`admin`]: the operator commands (`queue stats|dead|replay-dead`,
//!   `broadcast send|list|status|pause|resume|cancel`, `outbox send`);
//! - [`health`], [`metrics`]: `/healthz` and `/metrics` on `METRICS_PORT`;
//! - `testkit` (feature `testkit`): a bot's tests in-process, on the
//!   embedded queue against the spec-checked fake Bot API.

pub mod admin;
pub mod bot;
pub mod broadcaster;
pub mod cli;
pub mod commands;
pub mod consumer;
pub mod ctx;
pub mod dispatch;
pub mod health;
mod human;
pub mod menu;
pub mod metrics;
pub mod replies;
pub mod reply;
pub mod sender;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use bot::Bot;
pub use commands::{CommandInfo, Description};
pub use ctx::{Ctx, UserRef};
pub use reply::{HandlerError, Reply};
pub use shared::outbound::{Audience, OutMessage};
pub use shared::stats::{BotStats, UserRecord};
/// The typed Bot API model handlers receive (teloxide-core).
pub use teloxide_core::types;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use shared::config::redact_url;
use shared::queue::{RedisStore, Store};
use shared::signals::Backoff;
use shared::telegram::BotApi;
use shared::Config;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("configuration error: REDIS_URL is not usable: {0}")]
    Redis(redis::RedisError),
    #[error("Telegram rejected the bot token (401 Unauthorized): check TELEGRAM_BOT_TOKEN")]
    Unauthorized,
    #[error("configuration error: {0}")]
    Layout(#[from] shared::queue::LayoutChanged),
    #[error("cannot listen on METRICS_PORT {port}: {source}")]
    MetricsBind { port: u16, source: std::io::Error },
}

/// How long in-flight handlers may run after SIGTERM. Railway waits a few
/// seconds more before killing; what does not finish stays pending and is
/// reclaimed by another worker.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs `bot` against the Redis at `REDIS_URL` (the production path).
pub async fn run<S: Send + Sync + 'static>(
    config: Config,
    bot: Bot<S>,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let redis_url = config.redis_url_or_default().to_owned();
    let store = RedisStore::for_config(&config)
        .await
        .map_err(WorkerError::Redis)?;
    store.check_layout().await?;
    info!(redis = %redact_url(&redis_url), "using Redis");
    run_with(config, Arc::new(store), bot, cancel).await
}

/// Runs `bot` against any store: the all-in-one passes its embedded one.
pub async fn run_with<S: Send + Sync + 'static>(
    config: Config,
    store: Arc<dyn Store>,
    bot: Bot<S>,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let commands = bot.command_list();
    let allowed = bot.allowed_updates();
    let Bot { state, handlers } = bot;
    let mut deadlines = config.deadlines.clone();
    for (kind, deadline) in &handlers.urgent {
        deadlines.add(kind, *deadline);
    }
    let urgent: Vec<String> = deadlines.kinds().map(str::to_owned).collect();
    let state = match state {
        bot::StateInit::Ready(s) => s,
        bot::StateInit::FromConfig(make) => Arc::new(make(&config)),
    };
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

    let name = config.instance.to_string();
    let engine = Arc::new(ctx::Engine {
        username,
        api: api.clone(),
        store: store.clone(),
        commands,
    });
    {
        // In the background: a slow or rate-limited setMyCommands must not
        // hold up consuming.
        let (api, store, registry, holder) = (
            api.clone(),
            store.clone(),
            engine.commands.clone(),
            name.clone(),
        );
        tokio::spawn(async move {
            menu::publish_allowed_updates(store.as_ref(), &allowed).await;
            menu::publish_urgent_kinds(store.as_ref(), &urgent).await;
            menu::publish(&api, store.as_ref(), &registry, &holder).await
        });
    }
    let router = dispatch::Router {
        state,
        handlers,
        engine,
    };
    let broadcasts = {
        let sender = match config.paid_broadcast_rate {
            Some(rate) => sender::Sender::paid(api.clone(), store.clone(), rate),
            None => sender::Sender::new(api.clone(), store.clone(), config.send_rate),
        };
        let b = broadcaster::Broadcaster {
            store: store.clone(),
            sender: Arc::new(sender),
            metrics: metrics.clone(),
            lease: config.broadcast_lease,
        };
        tokio::spawn(b.run(cancel.clone()))
    };
    let consumer = consumer::Consumer::new(
        consumer::Settings {
            name,
            concurrency: config.worker_concurrency,
            max_deliveries: config.max_deliveries,
            claim_idle: config.claim_idle,
            shutdown_grace: SHUTDOWN_GRACE,
            per_chat_order: config.per_chat_order,
            deadlines,
        },
        store.clone(),
        Arc::new(router),
        sender::Sender::new(api, store, config.send_rate),
        metrics,
    );
    consumer.run(cancel.clone()).await;
    cancel.cancel();
    let _ = broadcasts.await;
    if let Some(h) = health {
        let _ = h.await;
    }
    info!("worker stopped");
    Ok(())
}
