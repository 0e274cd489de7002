//! Inline buttons: `/start` shows a counter with a "+1" button; pressing it
//! answers the callback query (the button stops spinning) and edits the
//! message with the new count. One counter per chat, kept in Redis through
//! exactly-once writes: a press redelivered after a crash is not counted
//! twice, and every worker sees the same count.

use worker::types::{CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message};
use worker::{Bot, Ctx, HandlerError, Reply};

/// The button's callback data (at most 64 bytes, Telegram's limit).
pub const PLUS_ONE: &str = "plus_one";

/// The bot's own hash: chat id -> presses.
const COUNTS: &str = "counts";

/// No state of its own: the counts live in the queue's store.
#[derive(Default)]
pub struct Counters;

pub fn bot() -> Bot<Counters> {
    Bot::new(Counters)
        .command("start", "Show the counter", start)
        .on_callback_query(press)
}

fn keyboard() -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new([[InlineKeyboardButton::callback("+1", PLUS_ONE)]])
}

fn text(count: u64) -> String {
    format!("Count: {count}")
}

async fn count(ctx: &Ctx<Counters>, chat: i64) -> Result<u64, HandlerError> {
    Ok(ctx
        .get(COUNTS, chat)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

async fn start(ctx: Ctx<Counters>, _msg: Message) -> Result<Reply, HandlerError> {
    let chat = ctx.chat_id().unwrap_or_default();
    Ok(Reply::text(text(count(&ctx, chat).await?)).markup(keyboard()))
}

async fn press(ctx: Ctx<Counters>, query: CallbackQuery) -> Result<Reply, HandlerError> {
    let Some(chat) = ctx
        .chat_id()
        .filter(|_| query.data.as_deref() == Some(PLUS_ONE))
    else {
        // A button of an older version of the bot: stop the spinner only.
        return Ok(Reply::answer_callback());
    };
    // Presses of one chat run one at a time (per-chat order), so the count
    // read here plus one is what the write below makes it; the write is
    // applied with the update's completion, once.
    let next = count(&ctx, chat).await? + 1;
    ctx.incr(COUNTS, chat, 1);
    Ok(Reply::answer_callback().then(Reply::edit_text(text(next)).markup(keyboard())))
}
