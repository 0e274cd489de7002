//! The stream entry: what the ingress writes and the worker reads.
//!
//! Fields: `update_id`, `received_at` (ms since epoch), `key` (the ordering
//! key: `c<chat_id>`, `u<user_id>` or empty) and `update` (the raw JSON
//! exactly as Telegram sent it - the worker parses it, so the ingress stays
//! small and never rejects an update type it does not know). [`NewEntry`]
//! writes them, for every script that adds an entry; [`Entry`] reads them.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::queue::Lane;

pub const F_UPDATE_ID: &str = "update_id";
pub const F_RECEIVED_AT: &str = "received_at";
pub const F_KEY: &str = "key";
pub const F_UPDATE: &str = "update";
/// Present (`1`) when the entry was its chat's first listed one when
/// stored: it is the chat's head until it ends (`lua/enqueue_many.lua`).
pub const F_FIRST: &str = "first";

/// Why a request body is not an update. Each maps to a 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadUpdate {
    #[error("body is not valid JSON")]
    NotJson,
    #[error("body is not a JSON object")]
    NotObject,
    #[error("update_id is missing or not an integer")]
    NoUpdateId,
}

/// What the ingress needs to know about an update, read in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub update_id: i64,
    /// Updates with the same key are one conversation (see worker ordering).
    pub key: String,
    /// The update's kind (`message`, `callback_query`...; `unknown` for
    /// one this version does not know): it picks the lane.
    pub kind: &'static str,
}

#[derive(Deserialize)]
struct Id {
    id: i64,
}
#[derive(Deserialize)]
struct HasChat {
    chat: Option<Id>,
    from: Option<Id>,
    user: Option<Id>,
}
#[derive(Deserialize)]
struct Callback {
    from: Option<Id>,
    message: Option<HasChat>,
}

#[derive(Deserialize)]
struct RawUpdate {
    update_id: Option<serde_json::Value>,
    message: Option<HasChat>,
    edited_message: Option<HasChat>,
    channel_post: Option<HasChat>,
    edited_channel_post: Option<HasChat>,
    business_message: Option<HasChat>,
    edited_business_message: Option<HasChat>,
    message_reaction: Option<HasChat>,
    message_reaction_count: Option<HasChat>,
    my_chat_member: Option<HasChat>,
    chat_member: Option<HasChat>,
    chat_join_request: Option<HasChat>,
    chat_boost: Option<HasChat>,
    removed_chat_boost: Option<HasChat>,
    callback_query: Option<Callback>,
    inline_query: Option<HasChat>,
    chosen_inline_result: Option<HasChat>,
    shipping_query: Option<HasChat>,
    pre_checkout_query: Option<HasChat>,
    purchased_paid_media: Option<HasChat>,
    poll_answer: Option<HasChat>,
    poll: Option<IgnoredAny>,
    business_connection: Option<IgnoredAny>,
    deleted_business_messages: Option<IgnoredAny>,
}

/// The fallback when an update's known parts have an unexpected shape: it
/// is still an update (and stored), it just has no ordering key.
#[derive(Deserialize)]
struct MinimalUpdate {
    update_id: Option<serde_json::Value>,
}

/// Validates an update body and extracts its id and ordering key.
///
/// The body must be one JSON object with an integer `update_id`; the rest
/// of its shape is the worker's business. Never panics, whatever the bytes.
pub fn probe(body: &[u8]) -> Result<Probe, BadUpdate> {
    // JSON is UTF-8, but serde_json skips the strings of fields it ignores
    // without validating them, so such a body would be stored as an update:
    // check the whole body first (a linear scan, cheap next to the parse).
    if std::str::from_utf8(body).is_err() {
        return Err(BadUpdate::NotJson);
    }
    // serde would happily read a struct from a JSON array; refuse that first.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let is_object = first == Some(&b'{');
    let raw: RawUpdate = match serde_json::from_slice(body) {
        Ok(r) if is_object => r,
        Ok(_) => return Err(BadUpdate::NotObject),
        Err(_) => {
            // The shaped parse failed: tell bad JSON from JSON whose known
            // fields have an unexpected shape (still an update, stored
            // without an ordering key). serde's own error category cannot:
            // a shape mismatch inside an array reads as a syntax error.
            if serde_json::from_slice::<IgnoredAny>(body).is_err() {
                return Err(BadUpdate::NotJson);
            }
            if !is_object {
                return Err(BadUpdate::NotObject);
            }
            let min: MinimalUpdate =
                serde_json::from_slice(body).map_err(|_| BadUpdate::NoUpdateId)?;
            return Ok(Probe {
                update_id: int_id(min.update_id.as_ref())?,
                key: String::new(),
                kind: "unknown",
            });
        }
    };
    Ok(Probe {
        update_id: int_id(raw.update_id.as_ref())?,
        key: order_key(&raw),
        kind: kind_of(&raw),
    })
}

/// The update's kind: the one field besides `update_id` Telegram sets.
fn kind_of(u: &RawUpdate) -> &'static str {
    let chat_like = [
        ("message", &u.message),
        ("edited_message", &u.edited_message),
        ("channel_post", &u.channel_post),
        ("edited_channel_post", &u.edited_channel_post),
        ("business_message", &u.business_message),
        ("edited_business_message", &u.edited_business_message),
        ("message_reaction", &u.message_reaction),
        ("message_reaction_count", &u.message_reaction_count),
        ("my_chat_member", &u.my_chat_member),
        ("chat_member", &u.chat_member),
        ("chat_join_request", &u.chat_join_request),
        ("chat_boost", &u.chat_boost),
        ("removed_chat_boost", &u.removed_chat_boost),
        ("inline_query", &u.inline_query),
        ("chosen_inline_result", &u.chosen_inline_result),
        ("shipping_query", &u.shipping_query),
        ("pre_checkout_query", &u.pre_checkout_query),
        ("purchased_paid_media", &u.purchased_paid_media),
        ("poll_answer", &u.poll_answer),
    ];
    if let Some((k, _)) = chat_like.iter().find(|(_, v)| v.is_some()) {
        return k;
    }
    if u.callback_query.is_some() {
        "callback_query"
    } else if u.poll.is_some() {
        "poll"
    } else if u.business_connection.is_some() {
        "business_connection"
    } else if u.deleted_business_messages.is_some() {
        "deleted_business_messages"
    } else {
        "unknown"
    }
}

/// The kind of a stored update (the worker reads it only for the fast
/// lane, where deadlines depend on it).
pub fn kind(body: &[u8]) -> &'static str {
    probe(body).map(|p| p.kind).unwrap_or("unknown")
}

fn int_id(v: Option<&serde_json::Value>) -> Result<i64, BadUpdate> {
    v.and_then(|v| v.as_i64()).ok_or(BadUpdate::NoUpdateId)
}

fn order_key(u: &RawUpdate) -> String {
    let chat_like = [
        &u.message,
        &u.edited_message,
        &u.channel_post,
        &u.edited_channel_post,
        &u.business_message,
        &u.edited_business_message,
        &u.message_reaction,
        &u.message_reaction_count,
        &u.my_chat_member,
        &u.chat_member,
        &u.chat_join_request,
        &u.chat_boost,
        &u.removed_chat_boost,
    ];
    for h in chat_like.into_iter().flatten() {
        if let Some(c) = &h.chat {
            return format!("c{}", c.id);
        }
    }
    if let Some(cb) = &u.callback_query {
        if let Some(Id { id }) = cb.message.as_ref().and_then(|m| m.chat.as_ref()) {
            return format!("c{id}");
        }
        if let Some(f) = &cb.from {
            return format!("u{}", f.id);
        }
    }
    let user_like = [
        &u.inline_query,
        &u.chosen_inline_result,
        &u.shipping_query,
        &u.pre_checkout_query,
        &u.purchased_paid_media,
        &u.poll_answer,
    ];
    for h in user_like.into_iter().flatten() {
        if let Some(f) = h.from.as_ref().or(h.user.as_ref()) {
            return format!("u{}", f.id);
        }
    }
    String::new()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored as a new entry with this stream id.
    Stored(String),
    /// This update_id was stored before (Telegram resent it): nothing added.
    Duplicate,
}

/// A stream entry about to be written. [`NewEntry::fields`] is the
/// one writer of the entry layout (the fields [`Entry::from_map`] reads):
/// both scripts that add entries - the ingress's enqueue and the
/// operator's replay of dead letters - take the field list from it as
/// their trailing ARGV and pass it to XADD unread, so no script names a
/// field.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    /// `None` only for a replayed dead letter that had none (an entry that
    /// could not be read); the worker then takes it from the update.
    pub update_id: Option<i64>,
    pub received_at_ms: i64,
    pub key: &'a str,
    pub update: &'a [u8],
}

impl NewEntry<'_> {
    /// The entry's fields, in XADD order.
    pub fn fields(&self) -> [(&'static str, Vec<u8>); 4] {
        [
            (
                F_UPDATE_ID,
                self.update_id
                    .map(|u| u.to_string())
                    .unwrap_or_default()
                    .into_bytes(),
            ),
            (F_RECEIVED_AT, self.received_at_ms.to_string().into_bytes()),
            (F_KEY, self.key.as_bytes().to_vec()),
            (F_UPDATE, self.update.to_vec()),
        ]
    }

    /// Appends the entry's `field value ...` list to a script's ARGV.
    pub fn push_fields(&self, inv: &mut redis::ScriptInvocation<'_>) {
        for (field, value) in self.fields() {
            inv.arg(field).arg(value);
        }
    }
}

/// A stream entry as the worker sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Tagged with its lane ([`Lane::tag`]).
    pub id: String,
    pub update_id: i64,
    pub received_at_ms: i64,
    pub key: String,
    pub update: Vec<u8>,
    pub lane: Lane,
    /// Stored when its chat had no other entry waiting: its chat's head
    /// until it ends, so a first delivery needs no head lookup (and, the
    /// ingress storing each update once, no dedupe lookup either).
    pub first_in_chat: bool,
}

impl Entry {
    /// Reads an entry's field map. A malformed entry (written by hand, or by
    /// a future version) is reported, never a panic.
    pub fn from_map(id: String, map: &HashMap<String, redis::Value>) -> Result<Self, String> {
        let text = |f: &str| -> Option<Vec<u8>> {
            match map.get(f)? {
                redis::Value::BulkString(b) => Some(b.clone()),
                redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
                redis::Value::Int(i) => Some(i.to_string().into_bytes()),
                _ => None,
            }
        };
        let num = |f: &str| -> Option<i64> { String::from_utf8(text(f)?).ok()?.parse().ok() };
        let update = text(F_UPDATE).ok_or_else(|| format!("entry {id} has no `update` field"))?;
        let update_id = num(F_UPDATE_ID)
            .or_else(|| probe(&update).ok().map(|p| p.update_id))
            .ok_or_else(|| format!("entry {id} has no integer update_id"))?;
        Ok(Self {
            update_id,
            received_at_ms: num(F_RECEIVED_AT).unwrap_or(0),
            key: text(F_KEY)
                .and_then(|k| String::from_utf8(k).ok())
                .unwrap_or_default(),
            first_in_chat: text(F_FIRST).is_some_and(|f| f == b"1"),
            update,
            id,
            lane: Lane::Ordinary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_accepts_updates_and_finds_keys() {
        let p = probe(br#"{"update_id": 5, "message": {"message_id":1, "chat": {"id": -100}, "from": {"id": 7}}}"#).unwrap();
        assert_eq!(
            p,
            Probe {
                update_id: 5,
                key: "c-100".into(),
                kind: "message",
            }
        );
        let p =
            probe(br#"{"update_id": 6, "inline_query": {"id":"x", "from": {"id": 7}}}"#).unwrap();
        assert_eq!(p.key, "u7");
        assert_eq!(p.kind, "inline_query");
        let cb = br#"{"update_id": 8, "callback_query": {"id":"x", "from": {"id": 7}}}"#;
        assert_eq!(kind(cb), "callback_query");
        assert_eq!(kind(br#"{"update_id": 8, "poll": {"id":"x"}}"#), "poll");
        let p = probe(br#"{"update_id": 7, "something_new": {"x": 1}}"#).unwrap();
        assert_eq!(p.key, "");
        assert_eq!(p.kind, "unknown");
    }

    /// The one writer of the layout and its reader agree, also for a
    /// replayed dead letter without an update id.
    #[test]
    fn a_written_entry_reads_back() {
        let update = br#"{"update_id": 9, "message": {"chat": {"id": 3}}}"#;
        for update_id in [Some(9), None] {
            let new = NewEntry {
                update_id,
                received_at_ms: 1_700_000_000_123,
                key: "c3",
                update,
            };
            let map: HashMap<String, redis::Value> = new
                .fields()
                .into_iter()
                .map(|(f, v)| (f.to_owned(), redis::Value::BulkString(v)))
                .collect();
            let e = Entry::from_map("1-0".into(), &map).expect("readable");
            assert_eq!(e.update_id, 9);
            assert_eq!(e.received_at_ms, 1_700_000_000_123);
            assert_eq!(e.key, "c3");
            assert_eq!(e.update, update.to_vec());
        }
    }

    #[test]
    fn probe_rejects_bad_bodies() {
        assert_eq!(probe(b"not json"), Err(BadUpdate::NotJson));
        assert_eq!(probe(b""), Err(BadUpdate::NotJson));
        assert_eq!(probe(b"[1]"), Err(BadUpdate::NotObject));
        assert_eq!(probe(b"42"), Err(BadUpdate::NotObject));
        assert_eq!(probe(b"{}"), Err(BadUpdate::NoUpdateId));
        assert_eq!(probe(br#"{"update_id":"5"}"#), Err(BadUpdate::NoUpdateId));
        assert_eq!(probe(br#"{"update_id":5.5}"#), Err(BadUpdate::NoUpdateId));
        assert_eq!(probe(br#"{"update_id":5"#), Err(BadUpdate::NotJson));
        // Invalid UTF-8 in a field the probe ignores, and in one it reads.
        assert_eq!(
            probe(b"{\"update_id\":5,\"other\":\"\xff\xfe\"}"),
            Err(BadUpdate::NotJson)
        );
        assert_eq!(
            probe(b"{\"update_id\":5,\"message\":{\"text\":\"\xc3\"}}"),
            Err(BadUpdate::NotJson)
        );
        // Odd but integer-keyed: stored, just without an ordering key.
        assert_eq!(probe(br#"{"update_id":5, "message": 3}"#).unwrap().key, "");
    }

    #[test]
    fn probe_reads_real_updates() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/telegram/updates");
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for f in rd.flatten() {
            if f.path().extension().is_some_and(|e| e == "json") {
                let body = std::fs::read(f.path()).unwrap();
                let p = probe(&body).unwrap_or_else(|e| panic!("{:?}: {e}", f.path()));
                assert!(!p.key.is_empty(), "{:?} has no ordering key", f.path());
            }
        }
    }
}
