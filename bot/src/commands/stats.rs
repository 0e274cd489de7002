//! `/stats`: the bot's numbers and the caller's own.

use worker::types::Message;
use worker::{Ctx, HandlerError, Reply};

use crate::texts::{self, Lang};
use crate::App;

pub async fn run(ctx: Ctx<App>, _msg: Message) -> Result<Reply, HandlerError> {
    let lang = Lang::of(&ctx);
    let bot = ctx.stats().await?;
    let me = match ctx.from() {
        Some(u) => ctx.user(u.id).await?,
        None => None,
    };
    Ok(Reply::text(texts::stats(lang, &bot, me.as_ref())))
}
