//! Outbound messages: what the app sends on its own (notifications,
//! reminders) and broadcasts to an audience. They go through the same
//! durable queue and the same shared send budget as replies, so an app
//! that messages its users can neither cause a 429 storm nor lose a
//! message to a 429 or a crash.
//!
//! This module is the one definition of the request format (the HTTP API
//! and the operator CLI parse with it) and of what a stored outbound
//! message looks like.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The Bot API methods the outbox takes: sends of one message to one chat.
pub const SEND_METHODS: &[&str] = &[
    "sendMessage",
    "sendPhoto",
    "copyMessage",
    "forwardMessage",
    "sendDocument",
    "sendVideo",
    "sendAnimation",
    "sendAudio",
    "sendVoice",
    "sendSticker",
    "sendLocation",
    "sendPoll",
];

/// One Bot API send: a method and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutMessage {
    pub method: String,
    pub params: Value,
}

/// Why a request is refused; each maps to a 400 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct BadOutbound {
    pub field: String,
    pub reason: String,
}

fn bad(field: &str, reason: &str) -> BadOutbound {
    BadOutbound {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Who a broadcast goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every user in the directory who has not blocked the bot.
    All,
    /// These chats (in the directory or not), except those known to have
    /// blocked the bot.
    Chats(Vec<i64>),
}

/// A broadcast's state and progress, as `GET /api/broadcasts/<id>` and
/// `worker broadcast status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BroadcastStatus {
    pub id: String,
    /// `queued`, `running`, `paused`, `done` or `cancelled`.
    pub state: String,
    pub total: u64,
    pub sent: u64,
    pub failed: u64,
    pub blocked: u64,
    /// Recipients not reached yet (waiting or being sent to).
    pub left: u64,
    pub method: String,
    pub created_at_ms: i64,
    /// When it ended (done or cancelled), else 0.
    pub finished_at_ms: i64,
}

/// What an operator or the app asks of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
}

/// How a broadcast's send to one recipient ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientOutcome {
    Sent,
    /// Refused for good (chat not found, bad request) or failing after
    /// retries.
    Failed,
    /// 403: blocked, deactivated, kicked. Marks the user.
    Blocked,
    /// Not sent yet (a chat's own flood wait): back in the queue.
    Again,
}

impl RecipientOutcome {
    pub fn field(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Blocked => "blocked",
            Self::Again => "again",
        }
    }
}

/// A recipient a worker took from a broadcast, leased to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub broadcast: String,
    pub chat_id: i64,
}

fn object<'a>(
    v: &'a Value,
    field: &str,
) -> Result<&'a serde_json::Map<String, Value>, BadOutbound> {
    v.as_object()
        .ok_or_else(|| bad(field, "must be a JSON object"))
}

/// Checks a message's method and parameters; `with_chat`: whether
/// `params.chat_id` must be there (one message) or must not (a broadcast
/// sets it per recipient).
fn message(
    body: &serde_json::Map<String, Value>,
    with_chat: bool,
) -> Result<OutMessage, BadOutbound> {
    let method = body
        .get("method")
        .ok_or_else(|| bad("method", "missing"))?
        .as_str()
        .ok_or_else(|| bad("method", "must be a string"))?;
    if !SEND_METHODS.contains(&method) {
        return Err(bad(
            "method",
            &format!("must be one of {}", SEND_METHODS.join(", ")),
        ));
    }
    let params = object(
        body.get("params").ok_or_else(|| bad("params", "missing"))?,
        "params",
    )?;
    match (params.get("chat_id"), with_chat) {
        (None, true) => return Err(bad("params.chat_id", "missing")),
        (Some(c), true) if !(c.is_i64() || c.as_str().is_some_and(|s| s.starts_with('@'))) => {
            return Err(bad(
                "params.chat_id",
                "must be an integer or an @channel name",
            ))
        }
        (Some(_), false) => {
            return Err(bad(
                "params.chat_id",
                "set per recipient; use \"to\" instead",
            ))
        }
        _ => {}
    }
    let need_str = |field: &str| -> Result<(), BadOutbound> {
        match params.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(()),
            Some(_) => Err(bad(
                &format!("params.{field}"),
                "must be a non-empty string",
            )),
            None => Err(bad(&format!("params.{field}"), "missing")),
        }
    };
    let need_int = |field: &str| -> Result<(), BadOutbound> {
        match params.get(field) {
            Some(v) if v.is_i64() => Ok(()),
            Some(_) => Err(bad(&format!("params.{field}"), "must be an integer")),
            None => Err(bad(&format!("params.{field}"), "missing")),
        }
    };
    match method {
        "sendMessage" => need_str("text")?,
        "sendPhoto" => need_str("photo")?,
        "copyMessage" | "forwardMessage" => {
            need_int("from_chat_id")?;
            need_int("message_id")?;
        }
        _ => {}
    }
    Ok(OutMessage {
        method: method.to_owned(),
        params: Value::Object(params.clone()),
    })
}

fn json_body(body: &[u8]) -> Result<Value, BadOutbound> {
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("body", "not valid JSON"))?;
    object(&v, "body")?;
    Ok(v)
}

/// `POST /api/outbox`: one message and when it may go (unix seconds).
pub fn parse_outbox(body: &[u8]) -> Result<(OutMessage, Option<i64>), BadOutbound> {
    let v = json_body(body)?;
    let obj = object(&v, "body")?;
    let msg = message(obj, true)?;
    let not_before = match obj.get("not_before") {
        None | Some(Value::Null) => None,
        Some(n) => Some(n.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
            bad(
                "not_before",
                "must be unix seconds (a non-negative integer)",
            )
        })?),
    };
    Ok((msg, not_before))
}

/// `POST /api/broadcasts`: the message (no `chat_id`) and its audience.
pub fn parse_broadcast(body: &[u8]) -> Result<(OutMessage, Audience), BadOutbound> {
    let v = json_body(body)?;
    let obj = object(&v, "body")?;
    let msg = message(obj, false)?;
    let to = match obj.get("to") {
        None => return Err(bad("to", "missing (\"all\" or a list of chat ids)")),
        Some(Value::String(s)) if s == "all" => Audience::All,
        Some(Value::Array(list)) if !list.is_empty() => Audience::Chats(
            list.iter()
                .map(|c| {
                    c.as_i64()
                        .ok_or_else(|| bad("to", "chat ids must be integers"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(bad("to", "must be \"all\" or a non-empty list of chat ids")),
    };
    Ok((msg, to))
}

/// The stored form of an outbox message: a kept reply (the worker's
/// `replies::Kept` layout) with no update behind it, sent by whichever
/// worker takes it once due - with the replies' budget, 429 and
/// dead-letter rules, at the lower priority of outbound sends.
pub fn kept_body(msg: &OutMessage) -> String {
    json!({
        "update_id": 0,
        "key": "",
        "chat_id": msg.params.get("chat_id").and_then(Value::as_i64),
        "calls": [{"method": msg.method, "params": msg.params}],
        "outbound": true,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_outbox_body_parses_and_bad_ones_name_their_field() {
        let (m, nb) = parse_outbox(
            br#"{"method":"sendMessage","params":{"chat_id":1,"text":"hi"},"not_before":5}"#,
        )
        .unwrap();
        assert_eq!((m.method.as_str(), nb), ("sendMessage", Some(5)));
        let field = |b: &[u8]| parse_outbox(b).unwrap_err().field;
        assert_eq!(field(b"nope"), "body");
        assert_eq!(field(b"[]"), "body");
        assert_eq!(field(br#"{"params":{}}"#), "method");
        assert_eq!(field(br#"{"method":"getMe","params":{}}"#), "method");
        assert_eq!(field(br#"{"method":"sendMessage"}"#), "params");
        assert_eq!(
            field(br#"{"method":"sendMessage","params":{"text":"x"}}"#),
            "params.chat_id"
        );
        assert_eq!(
            field(br#"{"method":"sendMessage","params":{"chat_id":1}}"#),
            "params.text"
        );
        assert_eq!(
            field(br#"{"method":"sendPhoto","params":{"chat_id":1}}"#),
            "params.photo"
        );
        assert_eq!(
            field(br#"{"method":"copyMessage","params":{"chat_id":1,"from_chat_id":2}}"#),
            "params.message_id"
        );
        assert_eq!(
            field(br#"{"method":"sendMessage","params":{"chat_id":1,"text":"x"},"not_before":"soon"}"#),
            "not_before"
        );
    }

    #[test]
    fn a_broadcast_takes_an_audience_and_no_chat() {
        let (m, to) =
            parse_broadcast(br#"{"method":"sendMessage","params":{"text":"x"},"to":"all"}"#)
                .unwrap();
        assert_eq!((m.method.as_str(), to), ("sendMessage", Audience::All));
        let (_, to) =
            parse_broadcast(br#"{"method":"sendMessage","params":{"text":"x"},"to":[1,2]}"#)
                .unwrap();
        assert_eq!(to, Audience::Chats(vec![1, 2]));
        let field = |b: &[u8]| parse_broadcast(b).unwrap_err().field;
        assert_eq!(
            field(br#"{"method":"sendMessage","params":{"text":"x"}}"#),
            "to"
        );
        assert_eq!(
            field(br#"{"method":"sendMessage","params":{"text":"x"},"to":[]}"#),
            "to"
        );
        assert_eq!(
            field(br#"{"method":"sendMessage","params":{"text":"x","chat_id":1},"to":"all"}"#),
            "params.chat_id"
        );
    }

    #[test]
    fn the_kept_body_names_its_chat_and_call() {
        let (m, _) =
            parse_outbox(br#"{"method":"sendMessage","params":{"chat_id":7,"text":"hi"}}"#)
                .unwrap();
        let v: Value = serde_json::from_str(&kept_body(&m)).unwrap();
        assert_eq!(v["chat_id"], 7);
        assert_eq!(v["calls"][0]["method"], "sendMessage");
        assert_eq!(v["outbound"], true);
    }
}
