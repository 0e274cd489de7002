//! `/help`, and every unknown command meant for this bot: the command list.

use worker::types::Message;
use worker::{Ctx, HandlerError, Reply};

use crate::texts::{self, Lang};
use crate::App;

pub async fn run(ctx: Ctx<App>, _msg: Message) -> Result<Reply, HandlerError> {
    Ok(Reply::text(texts::help(Lang::of(&ctx), &ctx.help_lines())))
}
