//! The ingress: the public HTTP service Telegram calls. It checks the secret,
//! makes each update durable in the Redis stream and answers at once; in
//! polling mode it runs the single leased poller instead of waiting for
//! webhooks. It never handles updates itself, and it is generic: it stores
//! any bot's updates and is never rebuilt when handlers change.
//!
//! # Layout
//!
//! An update's path: [`server`] accepts connections with bounded header,
//! body, idle and drain times; [`http`] checks the secret and the body and
//! enqueues (200 only once stored), and serves the health endpoints;
//! [`metrics`] counts; [`lanes`] picks the fast lane for updates with a
//! deadline. Alongside: [`registration`] sets and watches the
//! webhook once per configuration change, [`poller`] is the single leased
//! `getUpdates` loop when no public URL exists, [`miniapp`] is the optional
//! Mini App (page and initData-checked `/api/me`), [`outbound`] is the
//! app's own HTTP API for messages and broadcasts (`OUTBOX_API_KEY`), and
//! [`cli`] holds `ingress webhook info|set|delete`.

pub mod cli;
pub mod http;
pub mod lanes;
pub mod metrics;
pub mod miniapp;
pub mod outbound;
pub mod poller;
pub mod registration;
pub mod server;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use shared::config::redact_url;
use shared::queue::{RedisStore, Store};
use shared::telegram::BotApi;
use shared::Config;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot listen on {addr} (check HOST and PORT): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("configuration error: REDIS_URL is not usable: {0}")]
    Redis(redis::RedisError),
    #[error("configuration error: {0}")]
    Layout(#[from] shared::queue::LayoutChanged),
    #[error(transparent)]
    Setup(#[from] registration::SetupError),
}

/// Serves until `cancel` fires (then drains in-flight requests, for at most
/// [`server::DRAIN_TIMEOUT`]) or a fatal Telegram error (a rejected token)
/// ends the process.
pub async fn serve(config: Config, cancel: CancellationToken) -> Result<(), IngressError> {
    let redis_url = config.redis_url_or_default().to_owned();
    let store = RedisStore::for_config(&config)
        .await
        .map_err(IngressError::Redis)?;
    store.check_layout().await?;
    info!(redis = %redact_url(&redis_url), "using Redis");
    store.spawn_durability_report();
    let store: Arc<dyn Store> = Arc::new(store);
    let pages = mini_app(&config, store.clone());
    serve_with(config, store, pages, cancel).await
}

/// The shipped Mini App's routes (`/app/`, `/api/me`): what the stock
/// `ingress` serves beside the webhook. Empty with the bot disabled: the
/// API checks initData signatures with the token, so with no token there
/// is nothing to sign against.
pub fn mini_app(config: &Config, store: Arc<dyn Store>) -> axum::Router {
    match config.token.clone() {
        Some(token) => miniapp::router(miniapp::MiniAppState {
            store,
            token,
            max_age: config.initdata_max_age,
        }),
        None => axum::Router::new(),
    }
}

/// Serves with any store (the all-in-one passes its embedded one) and any
/// extra routes merged beside the webhook and health endpoints: the
/// shipped Mini App ([`mini_app`]), a team's own pages, or none
/// (`axum::Router::new()`) - without forking the ingress.
pub async fn serve_with(
    config: Config,
    store: Arc<dyn Store>,
    pages: axum::Router,
    cancel: CancellationToken,
) -> Result<(), IngressError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| IngressError::Bind {
            addr: config.listen,
            source,
        })?;
    info!("listening on {}", config.listen);

    let lanes = Arc::new(lanes::Lanes::default());
    lanes.spawn_refresh(store.clone(), cancel.clone());
    let state = Arc::new(http::AppState {
        store: store.clone(),
        lanes: lanes.clone(),
        secret: (!config.disabled).then(|| config.webhook_secret.clone()),
        metrics: Arc::new(metrics::Metrics::default()),
        outbox_key: config.outbox_api_key.clone(),
    });
    let app = http::router(state.clone()).merge(pages);

    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<registration::SetupError>(1);
    match (&config.token, config.disabled) {
        (_, true) | (None, _) => {
            info!("Telegram bot disabled (DISABLE_TELEGRAM_BOT): no webhook, no polling; health endpoints serve");
        }
        (Some(token), false) => {
            let api = BotApi::new(&config.api_url, token);
            let cfg = config.clone();
            let cancel = cancel.clone();
            let store = store.clone();
            let metrics = state.metrics.clone();
            tokio::spawn(async move {
                let result = async {
                    registration::identify(&api).await?;
                    match &cfg.webhook_url {
                        Some(url) => {
                            registration::configure_webhook(
                                &api,
                                store.as_ref(),
                                url,
                                &cfg.webhook_secret,
                                cfg.drop_pending_updates,
                                cfg.instance.as_str(),
                            )
                            .await?;
                            match cfg.webhook_check {
                                Some(every) => {
                                    registration::watch_webhook(
                                        &api,
                                        store.as_ref(),
                                        url,
                                        &cfg.webhook_secret,
                                        every,
                                        cfg.instance.as_str(),
                                        &cancel,
                                    )
                                    .await
                                }
                                None => Ok(()),
                            }
                        }
                        None => {
                            let poller = poller::Poller {
                                api: api.clone(),
                                store: store.clone(),
                                lanes,
                                metrics,
                                instance: cfg.instance.to_string(),
                            };
                            poller.run(cancel).await
                        }
                    }
                }
                .await;
                if let Err(e) = result {
                    let _ = fatal_tx.send(e).await;
                }
            });
        }
    }

    let server = server::run(listener, app, state.metrics.clone(), cancel.clone());
    tokio::select! {
        () = server => {}
        Some(e) = fatal_rx.recv() => {
            error!("{e}");
            return Err(e.into());
        }
    }
    info!("ingress stopped");
    Ok(())
}
