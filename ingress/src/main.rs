use std::process::ExitCode;

use clap::{Parser, Subcommand};

use shared::Config;

/// jemalloc: a profile of the worker under load showed a quarter of its
/// time in glibc's malloc and free; jemalloc cut its CPU per update by
/// about a sixth for under 1 MiB more peak RSS (README, Performance). One
/// arena (the services run one thread), no background purge thread.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] =
    b"narenas:1,background_thread:false,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// The public side of the bot: receives Telegram's webhook, stores every
/// update in the Redis stream, answers 200. With no arguments it serves.
#[derive(Parser)]
#[command(name = "ingress", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect or change the webhook Telegram calls.
    Webhook {
        #[command(subcommand)]
        action: WebhookAction,
    },
}

#[derive(Subcommand)]
enum WebhookAction {
    /// Show getWebhookInfo readably: URL, pending updates, last error.
    Info {
        /// Print the raw WebhookInfo as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register the configured webhook URL and secret now.
    Set {
        /// Drop the updates Telegram is holding for the bot.
        #[arg(long)]
        drop_pending_updates: bool,
    },
    /// Remove the webhook (the bot then receives nothing until set again).
    Delete {
        /// Drop the updates Telegram is holding for the bot.
        #[arg(long)]
        drop_pending_updates: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, rt, _logs) = match shared::telemetry::bootstrap(Config::from_env) {
        Ok(started) => started,
        Err(code) => return code,
    };
    rt.block_on(async move {
        match cli.command {
            None => {
                shared::signals::run_service("ingress", |cancel| ingress::serve(config, cancel))
                    .await
            }
            Some(Command::Webhook { action }) => {
                let result = match action {
                    WebhookAction::Info { json } => ingress::cli::info(&config, json).await,
                    WebhookAction::Set {
                        drop_pending_updates,
                    } => ingress::cli::set(&config, drop_pending_updates).await,
                    WebhookAction::Delete {
                        drop_pending_updates,
                    } => ingress::cli::delete(&config, drop_pending_updates).await,
                };
                match result {
                    Ok(out) => {
                        print!("{out}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        shared::telemetry::print_line(&format!("ingress webhook: {e}"));
                        // A missing URL is configuration (2), like every
                        // other configuration error; Telegram's errors are 1.
                        if e.is_configuration() {
                            ExitCode::from(2)
                        } else {
                            ExitCode::FAILURE
                        }
                    }
                }
            }
        }
    })
}
