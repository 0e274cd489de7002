//! Inline buttons: `/start` shows a counter with a "+1" button; pressing it
//! answers the callback query (the button stops spinning) and edits the
//! message with the new count. One counter per chat.

use std::collections::HashMap;
use std::sync::Mutex;

use worker::types::{CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message};
use worker::{Bot, Ctx, HandlerError, Reply};

/// The button's callback data (at most 64 bytes, Telegram's limit).
pub const PLUS_ONE: &str = "plus_one";

/// Counts per chat.
// TODO(exactly-once writes): in memory for now, so counts are lost on a
// restart and not shared between workers, and a redelivered press (the
// reply failed after the count went up) counts twice. The engine will
// apply `ctx` writes with the update's completion; move the count there.
#[derive(Default)]
pub struct Counters {
    by_chat: Mutex<HashMap<i64, u64>>,
}

pub fn bot() -> Bot<Counters> {
    Bot::new(Counters::default())
        .command("start", "Show the counter", start)
        .on_callback_query(press)
}

fn keyboard() -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new([[InlineKeyboardButton::callback("+1", PLUS_ONE)]])
}

fn text(count: u64) -> String {
    format!("Count: {count}")
}

async fn start(ctx: Ctx<Counters>, _msg: Message) -> Result<Reply, HandlerError> {
    let chat = ctx.chat_id().unwrap_or_default();
    let count = ctx
        .state()
        .by_chat
        .lock()
        .map_or(0, |m| *m.get(&chat).unwrap_or(&0));
    Ok(Reply::text(text(count)).markup(keyboard()))
}

async fn press(ctx: Ctx<Counters>, query: CallbackQuery) -> Result<Reply, HandlerError> {
    let Some(chat) = ctx
        .chat_id()
        .filter(|_| query.data.as_deref() == Some(PLUS_ONE))
    else {
        // A button of an older version of the bot: stop the spinner only.
        return Ok(Reply::answer_callback());
    };
    // TODO(exactly-once writes): see `Counters`.
    let count = {
        let mut counts = ctx
            .state()
            .by_chat
            .lock()
            .map_err(|_| HandlerError::retry("counter lock poisoned"))?;
        let c = counts.entry(chat).or_default();
        *c += 1;
        *c
    };
    Ok(Reply::answer_callback().then(Reply::edit_text(text(count)).markup(keyboard())))
}
