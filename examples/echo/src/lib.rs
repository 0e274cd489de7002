//! The smallest useful bot on the engine: `/start` greets, `/ping` answers
//! `pong`, any other text comes back. Copy this crate to start your own.

use worker::types::Message;
use worker::{Bot, Ctx, HandlerError, Reply};

/// The bot: its state (none here), its commands (routing, `/help` and the
/// menu come from these lines) and its handler for other messages.
pub fn bot() -> Bot<()> {
    Bot::new(())
        .command("start", "Say hello", start)
        .command("ping", "Is the bot alive?", ping)
        .on_message(echo)
}

async fn start(ctx: Ctx<()>, _msg: Message) -> Result<Reply, HandlerError> {
    let name = ctx.from().map_or("there", |u| u.first_name.as_str());
    let commands = ctx.help_lines();
    Ok(Reply::text(format!(
        "Hello, {name}! Send me a text and I send it back.\n\n{commands}"
    )))
}

async fn ping(_ctx: Ctx<()>, _msg: Message) -> Result<Reply, HandlerError> {
    Ok(Reply::text("pong"))
}

async fn echo(_ctx: Ctx<()>, msg: Message) -> Result<Reply, HandlerError> {
    // Photos, stickers...: nothing to echo; the update still ends handled.
    Ok(msg.text().map_or_else(Reply::none, Reply::text))
}
