//! `bot`: ingress (or the poller) and a worker in one process, for a laptop
//! or a single small service. It composes the two libraries and adds
//! nothing of its own: with `REDIS_URL` the queue between them is the same
//! Redis stream production uses; without it, the embedded in-process store
//! (same dedupe, ack and ordering semantics; nothing survives a restart).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use shared::store::{MemoryStore, RedisStore, Store};
use shared::Config;

/// The whole bot in one process: webhook ingress (or the single poller when
/// no public URL is set) and a worker. Needs only TELEGRAM_BOT_TOKEN; with
/// REDIS_URL it queues through Redis, without it through an embedded
/// in-process queue. Configuration is read from the environment (see the
/// README's table).
#[derive(Parser)]
#[command(name = "bot", version)]
struct Cli {}

fn main() -> ExitCode {
    Cli::parse();
    let (config, rt, _logs) = match shared::telemetry::bootstrap(Config::from_env) {
        Ok(started) => started,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        shared::signals::cancel_on_signal(cancel.clone());
        let store: Arc<dyn Store> = match &config.redis_url {
            Some(url) => match RedisStore::open(url) {
                Ok(s) => {
                    tracing::info!(redis = %shared::config::redact_url(url), "queue: Redis");
                    s.spawn_durability_report();
                    Arc::new(s)
                }
                Err(e) => {
                    shared::telemetry::print_line(&format!("configuration error: REDIS_URL is not usable: {e}"));
                    return ExitCode::from(2);
                }
            },
            None => {
                tracing::info!(
                    "queue: embedded in-process (REDIS_URL not set); updates accepted but not yet handled are lost if the process dies"
                );
                Arc::new(MemoryStore::new())
            }
        };
        let ingress = tokio::spawn(ingress::serve_with(config.clone(), store.clone(), cancel.clone()));
        let worker = tokio::spawn(worker::run_with(config, store, cancel.clone()));
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
    })
}
