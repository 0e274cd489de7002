//! `/app`: a button opening the Mini App. Telegram rejects `web_app`
//! buttons outside private chats (`BUTTON_TYPE_INVALID`), so in groups the
//! button leads to the bot's private chat instead.

use serde_json::json;
use worker::types::Message;
use worker::{Bot, Ctx, Description, HandlerError, Reply};

use crate::texts::{self, Lang};
use crate::App;

pub fn register(bot: Bot<App>) -> Bot<App> {
    bot.command(
        "app",
        Description::new("Open the Mini App").lang("ru", "Открыть мини-приложение"),
        run,
    )
}

pub async fn run(ctx: Ctx<App>, _msg: Message) -> Result<Reply, HandlerError> {
    let lang = Lang::of(&ctx);
    let Some(url) = &ctx.state().webapp_url else {
        tracing::warn!(
            "/app asked, but no Mini App URL is configured: set TELEGRAM_WEBAPP_URL or RAILWAY_PUBLIC_DOMAIN"
        );
        return Ok(Reply::text(texts::app_not_configured(lang)));
    };
    Ok(if ctx.is_private() {
        Reply::text(texts::app_prompt(lang)).markup(json!({
            "inline_keyboard": [[{ "text": texts::app_button(lang), "web_app": { "url": url.as_str() } }]]
        }))
    } else {
        Reply::text(texts::app_in_group(lang)).markup(json!({
            "inline_keyboard": [[{
                "text": texts::app_private_button(lang),
                "url": format!("https://t.me/{}?start=app", ctx.bot_username()),
            }]]
        }))
    })
}
