//! `/start [payload]`: greets by first name; a returning user is welcomed
//! back. The engine records the user (and the deep-link payload) in its
//! directory when the update completes.
//!
//! "Returning" means "has been greeted before", not "is in the directory":
//! someone first seen in a group is in the directory but has never started
//! the bot. The first greeting is recorded with an exactly-once write, so
//! a redelivered `/start` does not turn a newcomer into a returning user.

use worker::types::Message;
use worker::{Bot, Ctx, Description, HandlerError, Reply};

use crate::texts::{self, Lang};
use crate::App;

/// The bot's own hash: user id -> when they were first greeted (ms).
const GREETED: &str = "greeted";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn register(bot: Bot<App>) -> Bot<App> {
    bot.command(
        "start",
        Description::new("Start the bot").lang("ru", "Начать"),
        run,
    )
}

pub async fn run(ctx: Ctx<App>, msg: Message) -> Result<Reply, HandlerError> {
    // `/start app` comes from the group button that sends people to the
    // private chat: open the app right away.
    if ctx.args() == "app" {
        return super::app::run(ctx, msg).await;
    }
    let lang = Lang::of(&ctx);
    let Some(from) = ctx.from() else {
        return Ok(Reply::text(texts::help(lang, &ctx.help_lines())));
    };
    let commands = ctx.help_lines();
    let greeted = ctx.get(GREETED, from.id).await?;
    let text = match greeted.and_then(|ms| ms.parse::<i64>().ok()) {
        Some(since) => texts::welcome_back(lang, &from.first_name, since, &commands),
        None => texts::greeting(lang, &from.first_name, &commands),
    };
    ctx.set_once(GREETED, from.id, now_ms());
    Ok(Reply::text(text))
}
