//! Realistic Telegram updates, shaped after the real payloads in
//! `shared/telegram/updates/` (see its README): user and chat objects with
//! the fields Telegram sends, `bot_command` entities measured in UTF-16,
//! fresh ids that do not start at 1.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

static NEXT_UPDATE_ID: AtomicI64 = AtomicI64::new(0);
static NEXT_MESSAGE_ID: AtomicI64 = AtomicI64::new(0);

/// A fresh update id, unique within the test process. Starts at a random
/// base, as real ids do not start at 1.
pub fn next_update_id() -> i64 {
    let _ = NEXT_UPDATE_ID.compare_exchange(
        0,
        rand::random_range(100_000_000i64..800_000_000),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    NEXT_UPDATE_ID.fetch_add(1, Ordering::SeqCst)
}

/// A fresh message id.
pub fn next_message_id() -> i64 {
    let _ = NEXT_MESSAGE_ID.compare_exchange(0, 5_000, Ordering::SeqCst, Ordering::SeqCst);
    NEXT_MESSAGE_ID.fetch_add(1, Ordering::SeqCst)
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A Telegram `User` (not a bot).
pub fn user(user_id: i64, first_name: &str, lang: Option<&str>) -> Value {
    let mut u = json!({
        "id": user_id,
        "is_bot": false,
        "first_name": first_name,
        "username": format!("user{user_id}"),
    });
    if let Some(l) = lang {
        u["language_code"] = json!(l);
    }
    u
}

/// `bot_command` entities for a text starting with a command, offsets and
/// lengths in UTF-16 code units like Telegram's.
pub fn command_entities(text: &str) -> Vec<Value> {
    if !text.starts_with('/') {
        return Vec::new();
    }
    let cmd = text.split(char::is_whitespace).next().unwrap_or(text);
    vec![json!({
        "offset": 0,
        "length": cmd.encode_utf16().count(),
        "type": "bot_command",
    })]
}

pub fn message(message_id: i64, from: Value, chat: Value, text: &str) -> Value {
    let mut m = json!({
        "message_id": message_id,
        "from": from,
        "chat": chat,
        "date": unix_now(),
        "text": text,
    });
    let ents = command_entities(text);
    if !ents.is_empty() {
        m["entities"] = Value::Array(ents);
    }
    m
}

pub fn private_chat(user_id: i64, first_name: &str) -> Value {
    json!({
        "id": user_id,
        "first_name": first_name,
        "username": format!("user{user_id}"),
        "type": "private",
    })
}

pub fn supergroup_chat(chat_id: i64) -> Value {
    json!({
        "id": chat_id,
        "title": format!("Test group {}", chat_id.unsigned_abs() % 100_000),
        "type": "supergroup",
    })
}

/// A private-chat message with a command (`/start payload`), as in
/// `telemetree-private-start-command.json`.
pub fn private_command(
    update_id: i64,
    user_id: i64,
    first_name: &str,
    lang: Option<&str>,
    text: &str,
) -> Value {
    json!({
        "update_id": update_id,
        "message": message(
            next_message_id(),
            user(user_id, first_name, lang),
            private_chat(user_id, first_name),
            text,
        ),
    })
}

/// A private-chat plain text message, as in `teloxide-private-text.json`.
pub fn private_text(
    update_id: i64,
    user_id: i64,
    first_name: &str,
    lang: Option<&str>,
    text: &str,
) -> Value {
    let mut u = private_command(update_id, user_id, first_name, lang, text);
    if let Some(m) = u.get_mut("message").and_then(Value::as_object_mut) {
        m.remove("entities");
    }
    u
}

/// A supergroup message with a command (negative `-100...` chat id), as in
/// `teloxide-supergroup-command-reply-in-thread.json` (without the thread).
pub fn group_command(
    update_id: i64,
    chat_id: i64,
    user_id: i64,
    first_name: &str,
    lang: Option<&str>,
    text: &str,
) -> Value {
    json!({
        "update_id": update_id,
        "message": message(
            next_message_id(),
            user(user_id, first_name, lang),
            supergroup_chat(chat_id),
            text,
        ),
    })
}

/// A supergroup plain text message.
pub fn group_text(
    update_id: i64,
    chat_id: i64,
    user_id: i64,
    first_name: &str,
    lang: Option<&str>,
    text: &str,
) -> Value {
    let mut u = group_command(update_id, chat_id, user_id, first_name, lang, text);
    if let Some(m) = u.get_mut("message").and_then(Value::as_object_mut) {
        m.remove("entities");
    }
    u
}

/// A supergroup id in Telegram's `-100<id>` form.
pub fn supergroup_id(n: i64) -> i64 {
    -1_000_000_000_000 - n
}

/// `update.message.message_id`.
pub fn message_id(update: &Value) -> i64 {
    update["message"]["message_id"]
        .as_i64()
        .expect("update has message.message_id")
}

/// `update.update_id`.
pub fn update_id(update: &Value) -> i64 {
    update["update_id"].as_i64().expect("update has update_id")
}

/// A press of an inline button under `message` (a message the bot sent,
/// as the Bot API returned it), as in `litegram-callback-query.json`. The
/// query id is fresh and numeric-looking, like Telegram's.
pub fn callback_query(
    update_id: i64,
    user_id: i64,
    first_name: &str,
    lang: Option<&str>,
    message: &Value,
    data: &str,
) -> Value {
    json!({
        "update_id": update_id,
        "callback_query": {
            "id": format!("{}{:06}", 1_874_464_818_486u64, update_id.rem_euclid(1_000_000)),
            "from": user(user_id, first_name, lang),
            "message": message,
            "chat_instance": format!("{}", 5_665_609_217_735_090_123i64.wrapping_add(user_id)),
            "data": data,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_entity_counts_utf16() {
        let u = private_command(1, 42, "Zoë", Some("en"), "/start ref_1");
        assert_eq!(u["message"]["entities"][0]["length"], 6);
        assert_eq!(u["message"]["chat"]["type"], "private");
        let g = group_command(2, supergroup_id(5), 42, "Zoë", None, "/help@test_queue_bot");
        assert_eq!(g["message"]["entities"][0]["length"], 20);
        assert!(g["message"]["chat"]["id"].as_i64().unwrap() < -1_000_000_000_000);
        assert!(private_text(3, 1, "a", None, "hi")["message"]
            .get("entities")
            .is_none());
    }

    #[test]
    fn callback_query_carries_the_message_and_data() {
        let msg =
            json!({"message_id": 9, "chat": {"id": 5, "type": "private"}, "date": 1, "text": "x"});
        let u = callback_query(3, 5, "A", None, &msg, "plus");
        assert_eq!(u["callback_query"]["message"]["message_id"], 9);
        assert_eq!(u["callback_query"]["data"], "plus");
        assert!(u["callback_query"]["id"].is_string());
    }
}
