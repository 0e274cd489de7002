//! The command line of a bot built on the engine: no arguments runs the
//! worker; `queue ...` and `broadcast ...` (in [`broadcast`]) are the
//! operator commands, which need only Redis.

pub mod broadcast;
pub mod outbox;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use shared::Config;

use crate::Bot;

/// Consumes the update stream and runs the bot's commands. With no
/// arguments it works; `queue` subcommands inspect the queue, `broadcast`
/// ones send a message to many users.
#[derive(Parser)]
#[command(name = "worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect the update queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Send one message to every user or a list of chats, and steer it.
    Broadcast {
        #[command(subcommand)]
        action: broadcast::BroadcastAction,
    },
    /// One message to one chat through the outbox.
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum OutboxAction {
    /// Store a message for the workers to send (durable at once).
    Send(outbox::OutboxArgs),
}

#[derive(Subcommand, Debug, Clone)]
pub enum QueueAction {
    /// Stream length, group lag, pending per consumer, oldest pending age, dead letters.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// List dead letters with their errors.
    Dead {
        #[arg(long)]
        json: bool,
    },
    /// Put every dead letter back on the stream.
    ReplayDead,
}

/// Runs `bot` as the worker, or the operator command the arguments name.
pub fn main<S: Send + Sync + 'static>(bot: Bot<S>) -> ExitCode {
    let cli = Cli::parse();
    let operator = cli.command.is_some();
    let (config, rt, _logs) = match shared::telemetry::bootstrap(|| load_config(operator)) {
        Ok(started) => started,
        Err(code) => return code,
    };
    rt.block_on(async move {
        match cli.command {
            None => {
                shared::signals::run_service("worker", |cancel| crate::run(config, bot, cancel))
                    .await
            }
            Some(Command::Queue { action }) => queue(config, action).await,
            Some(Command::Broadcast { action }) => broadcast::run(config, action).await,
            Some(Command::Outbox {
                action: OutboxAction::Send(args),
            }) => outbox::send(config, args).await,
        }
    })
}

/// The configuration from the environment. Operator commands need only
/// Redis: a missing bot token must not stop someone from reading the queue.
pub fn load_config(operator: bool) -> Result<Config, shared::ConfigError> {
    if operator {
        Config::from_lookup(|k| {
            if k == "DISABLE_TELEGRAM_BOT" && std::env::var("TELEGRAM_BOT_TOKEN").is_err() {
                return Some("true".into());
            }
            std::env::var(k).ok()
        })
    } else {
        Config::from_env()
    }
}

/// Runs one operator command against `REDIS_URL`.
pub async fn queue(config: Config, action: QueueAction) -> ExitCode {
    let url = config.redis_url_or_default().to_owned();
    let target = shared::redis_conn::Target::resolve(&url, config.redis_layout.cluster).await;
    let keys = match &target {
        Ok(t) => config
            .redis_keys
            .laid_out(t.is_cluster(), config.redis_layout.shards),
        Err(_) => config.redis_keys.clone(),
    };
    let mut conn = match target.and_then(|t| t.manager()) {
        Ok(c) => c,
        Err(e) => {
            shared::telemetry::print_line(&format!("worker queue: REDIS_URL is not usable: {e}"));
            return ExitCode::from(2);
        }
    };
    let result: Result<String, redis::RedisError> = async {
        Ok(match action {
            QueueAction::Stats { json } => {
                let mut s = crate::admin::stats(&mut conn, &keys).await?;
                s.redis = shared::config::redact_url(&url);
                crate::admin::apply_liveness(&mut conn, &keys, &mut s, config.claim_idle).await?;
                if json {
                    serde_json::to_string_pretty(&s).unwrap_or_default() + "\n"
                } else {
                    crate::admin::render_stats(&s)
                }
            }
            QueueAction::Dead { json } => {
                let d = crate::admin::dead(&mut conn, &keys).await?;
                if json {
                    serde_json::to_string_pretty(&d).unwrap_or_default() + "\n"
                } else {
                    crate::admin::render_dead(&d)
                }
            }
            QueueAction::ReplayDead => {
                let r = crate::admin::replay_dead(&mut conn, &keys).await?;
                format!(
                    "Replayed {} dead letters onto the stream ({} without an update body kept).\n",
                    r.replayed, r.kept
                )
            }
        })
    }
    .await;
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let hint = shared::redis_conn::cluster_hint(&e)
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            shared::telemetry::print_line(&format!("worker queue: Redis error: {e}{hint}"));
            ExitCode::FAILURE
        }
    }
}
