//! Runs a bot built on the engine from one call: `run_from_env(bot)`.
//!
//! With no arguments, ingress (or the poller) and a worker in one process,
//! for a laptop or a single small service. It composes the two libraries
//! from above them and adds nothing of its own: with `REDIS_URL` the queue
//! between them is the same Redis stream production uses; without it, the
//! embedded in-process store (same dedupe, ack and ordering semantics;
//! nothing survives a restart). `worker` runs the worker alone (beside the
//! stock `ingress`); `queue ...` are the operator commands.
//!
//! # Layout
//!
//! One file: argument parsing, then [`run_all_in_one`].

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use shared::queue::{MemoryStore, RedisStore, Store};
use shared::Config;
use worker::cli::QueueAction;
use worker::Bot;

/// The whole bot in one process: webhook ingress (or the single poller when
/// no public URL is set) and a worker. Needs only TELEGRAM_BOT_TOKEN; with
/// REDIS_URL it queues through Redis, without it through an embedded
/// in-process queue. Configuration is read from the environment (see the
/// README's table).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run only the worker, against REDIS_URL (beside the stock `ingress`).
    Worker,
    /// Inspect the update queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
}

/// Runs `bot` as the arguments say: all-in-one (none), `worker`, or `queue ...`.
pub fn run_from_env<S: Send + Sync + 'static>(bot: Bot<S>) -> ExitCode {
    let cli = Cli::parse();
    let operator = matches!(cli.command, Some(Command::Queue { .. }));
    let (config, rt, _logs) =
        match shared::telemetry::bootstrap(|| worker::cli::load_config(operator)) {
            Ok(started) => started,
            Err(code) => return code,
        };
    rt.block_on(async move {
        match cli.command {
            None => run_all_in_one(config, bot).await,
            Some(Command::Worker) => {
                shared::signals::run_service("worker", |cancel| worker::run(config, bot, cancel))
                    .await
            }
            Some(Command::Queue { action }) => worker::cli::queue(config, action).await,
        }
    })
}

/// Ingress (or poller) and worker over one store, until SIGTERM/SIGINT.
pub async fn run_all_in_one<S: Send + Sync + 'static>(config: Config, bot: Bot<S>) -> ExitCode {
    {
        let cancel = CancellationToken::new();
        shared::signals::cancel_on_signal(cancel.clone());
        let store: Arc<dyn Store> = match &config.redis_url {
            Some(url) => match RedisStore::for_config(&config).await {
                Ok(s) => {
                    if let Err(e) = s.check_layout().await {
                        shared::telemetry::print_line(&format!("configuration error: {e}"));
                        return ExitCode::from(2);
                    }
                    tracing::info!(redis = %shared::config::redact_url(url), "queue: Redis");
                    s.spawn_durability_report();
                    Arc::new(s)
                }
                Err(e) => {
                    shared::telemetry::print_line(&format!(
                        "configuration error: REDIS_URL is not usable: {e}"
                    ));
                    return ExitCode::from(2);
                }
            },
            None => {
                tracing::info!(
                    "queue: embedded in-process (REDIS_URL not set); updates accepted but not yet handled are lost if the process dies"
                );
                Arc::new(MemoryStore::new(config.redis_keys.clone()))
            }
        };
        let pages = ingress::mini_app(&config, store.clone());
        let ingress = tokio::spawn(ingress::serve_with(
            config.clone(),
            store.clone(),
            pages,
            cancel.clone(),
        ));
        let worker = tokio::spawn(worker::run_with(config, store, bot, cancel.clone()));
        let (i, w) = tokio::join!(
            async {
                let r = ingress.await;
                cancel.cancel();
                r
            },
            worker
        );
        let mut code = ExitCode::SUCCESS;
        if let Ok(Err(e)) = i {
            shared::telemetry::print_line(&format!("bot: {e}"));
            code = ExitCode::FAILURE;
        }
        if let Ok(Err(e)) = w {
            shared::telemetry::print_line(&format!("bot: {e}"));
            code = ExitCode::FAILURE;
        }
        code
    }
}
