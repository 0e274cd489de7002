//! The ingress: the public HTTP service Telegram calls. It checks the secret,
//! makes each update durable in the Redis stream and answers at once; in
//! polling mode it runs the single leased poller instead of waiting for
//! webhooks. It never handles updates itself.

pub mod cli;
pub mod http;
pub mod metrics;
pub mod miniapp;
pub mod poller;
pub mod registration;
pub mod server;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use shared::botapi::BotApi;
use shared::config::redact_url;
use shared::store::{RedisStore, Store};
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
    #[error(transparent)]
    Setup(#[from] registration::SetupError),
}

/// Serves until `cancel` fires (then drains in-flight requests, for at most
/// [`server::DRAIN_TIMEOUT`]) or a fatal Telegram error (a rejected token)
/// ends the process.
pub async fn serve(config: Config, cancel: CancellationToken) -> Result<(), IngressError> {
    let redis_url = config.redis_url_or_default().to_owned();
    let store =
        RedisStore::open(&redis_url, config.redis_keys.clone()).map_err(IngressError::Redis)?;
    info!(redis = %redact_url(&redis_url), "using Redis");
    store.spawn_durability_report();
    serve_with(config, Arc::new(store), cancel).await
}

/// Serves with any store: the all-in-one passes its embedded one.
pub async fn serve_with(
    config: Config,
    store: Arc<dyn Store>,
    cancel: CancellationToken,
) -> Result<(), IngressError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| IngressError::Bind {
            addr: config.listen,
            source,
        })?;
    info!("listening on {}", config.listen);

    let state = Arc::new(http::AppState {
        store: store.clone(),
        secret: (!config.disabled).then(|| config.webhook_secret.clone()),
        metrics: Arc::new(metrics::Metrics::default()),
    });
    let mut app = http::router(state.clone());
    // The Mini App API checks initData signatures with the token; with the
    // bot disabled there is nothing to sign against, so it is not served.
    if let Some(token) = config.token.clone() {
        app = app.merge(miniapp::router(miniapp::MiniAppState {
            store: store.clone(),
            token,
            max_age: config.initdata_max_age,
        }));
    }

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
