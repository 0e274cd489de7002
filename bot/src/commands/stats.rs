//! `/stats`: the bot's numbers and the caller's own, with a "Refresh"
//! button that answers its callback query and edits the message with
//! fresh numbers.

use serde_json::json;
use worker::types::{CallbackQuery, Message};
use worker::{Bot, Ctx, Description, HandlerError, Reply};

use crate::texts::{self, Lang};
use crate::App;

/// The Refresh button's callback data.
pub const REFRESH: &str = "stats:refresh";

pub fn register(bot: Bot<App>) -> Bot<App> {
    bot.command(
        "stats",
        Description::new("Statistics").lang("ru", "Статистика"),
        run,
    )
        .on_callback_query(press)
}

pub async fn run(ctx: Ctx<App>, _msg: Message) -> Result<Reply, HandlerError> {
    let lang = Lang::of(&ctx);
    Ok(Reply::text(text(&ctx).await?).markup(refresh_button(lang)))
}

/// Button presses: Refresh, or a button this version no longer knows
/// (only its spinner is stopped).
pub async fn press(ctx: Ctx<App>, query: CallbackQuery) -> Result<Reply, HandlerError> {
    if query.data.as_deref() != Some(REFRESH) {
        return Ok(Reply::answer_callback());
    }
    let lang = Lang::of(&ctx);
    let text = text(&ctx).await?;
    Ok(Reply::answer_callback().then(Reply::edit_text(text).markup(refresh_button(lang))))
}

async fn text(ctx: &Ctx<App>) -> Result<String, HandlerError> {
    let bot = ctx.stats().await?;
    let me = match ctx.from() {
        Some(u) => ctx.user(u.id).await?,
        None => None,
    };
    Ok(texts::stats(Lang::of(ctx), &bot, me.as_ref()))
}

fn refresh_button(lang: Lang) -> serde_json::Value {
    json!({ "inline_keyboard": [[{ "text": texts::refresh(lang), "callback_data": REFRESH }]] })
}
