//! The bot this repository ships, and the engine's first user: written
//! only against `worker`'s public API (a separate crate, so Cargo enforces
//! it). Adding a command is one file under `commands/` plus its name in the
//! list in `commands/mod.rs`.
//!
//! # Layout
//!
//! - [`commands`]: one file per command (`/start`, `/app`, `/stats`, `/help`);
//! - [`texts`]: every text the bot sends, per language;
//! - `bin/worker.rs`: the `worker` binary (beside the stock `ingress`);
//! - `bin/bot.rs`: the all-in-one `bot` (ingress or poller plus worker).

pub mod commands;
pub mod texts;

use url::Url;
use worker::Bot;

/// What the handlers share: the Mini App's URL (`TELEGRAM_WEBAPP_URL`).
pub struct App {
    pub webapp_url: Option<Url>,
}

/// The shipped bot, ready to run.
pub fn bot() -> Bot<App> {
    let bot = Bot::from_config(|config| App {
        webapp_url: config.webapp_url.clone(),
    });
    commands::register(bot)
        // Counted, not answered (SPEC: edits, member changes...): received
        // so the statistics and the user directory see them.
        .receive(&[
            "edited_message",
            "channel_post",
            "edited_channel_post",
            "my_chat_member",
            "chat_member",
            "chat_join_request",
            "message_reaction",
        ])
}
