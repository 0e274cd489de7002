//! `/start [payload]`: greets by first name; a returning user is welcomed
//! back. The engine records the user (and the deep-link payload) in its
//! directory when the update completes.

use worker::types::Message;
use worker::{Ctx, HandlerError, Reply};

use crate::texts::{self, Lang};
use crate::App;

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
    let text = match ctx.user(from.id).await? {
        Some(u) => texts::welcome_back(lang, &from.first_name, u.first_seen, &commands),
        None => texts::greeting(lang, &from.first_name, &commands),
    };
    Ok(Reply::text(text))
}
