//! `/help`, and every unknown command meant for this bot: the command list.

use worker::types::Message;
use worker::{Bot, Ctx, Description, HandlerError, Reply};

use crate::texts::{self, Lang};
use crate::App;

pub fn register(bot: Bot<App>) -> Bot<App> {
    bot.command(
        "help",
        Description::new("List of commands").lang("ru", "Список команд"),
        run,
    )
}

pub async fn run(ctx: Ctx<App>, _msg: Message) -> Result<Reply, HandlerError> {
    Ok(Reply::text(texts::help(Lang::of(&ctx), &ctx.help_lines())))
}
