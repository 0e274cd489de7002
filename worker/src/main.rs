use std::process::ExitCode;

use clap::{Parser, Subcommand};

use shared::Config;

/// Consumes the update stream and runs the bot's commands. With no
/// arguments it works; `queue` subcommands inspect the queue.
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
}

#[derive(Subcommand)]
enum QueueAction {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Operator commands need only Redis: a missing bot token must not stop
    // someone from reading the queue.
    let operator = cli.command.is_some();
    let load = move || {
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
    };
    let (config, rt, _logs) = match shared::telemetry::bootstrap(load) {
        Ok(started) => started,
        Err(code) => return code,
    };
    rt.block_on(async move {
        match cli.command {
            None => {
                shared::signals::run_service("worker", |cancel| worker::run(config, cancel)).await
            }
            Some(Command::Queue { action }) => queue(config, action).await,
        }
    })
}

async fn queue(config: Config, action: QueueAction) -> ExitCode {
    let url = config.redis_url_or_default().to_owned();
    let mut conn = match shared::redis_conn::manager(&url) {
        Ok(c) => c,
        Err(e) => {
            shared::telemetry::print_line(&format!("worker queue: REDIS_URL is not usable: {e}"));
            return ExitCode::from(2);
        }
    };
    let result: Result<String, redis::RedisError> = async {
        Ok(match action {
            QueueAction::Stats { json } => {
                let s = worker::admin::stats(&mut conn).await?;
                if json {
                    serde_json::to_string_pretty(&s).unwrap_or_default() + "\n"
                } else {
                    worker::admin::render_stats(&s)
                }
            }
            QueueAction::Dead { json } => {
                let d = worker::admin::dead(&mut conn).await?;
                if json {
                    serde_json::to_string_pretty(&d).unwrap_or_default() + "\n"
                } else {
                    worker::admin::render_dead(&d)
                }
            }
            QueueAction::ReplayDead => {
                let r = worker::admin::replay_dead(&mut conn).await?;
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
            shared::telemetry::print_line(&format!("worker queue: Redis error: {e}"));
            ExitCode::FAILURE
        }
    }
}
