//! Ending many entries in one script call (`lua/end_many.lua`): the
//! finishes and sent replies that arrive together ride in one batch (see
//! `queue::group_commit`). Only entries whose keys share the bot's home
//! (one server, or shard 0 of a sharded layout) batch: a shard in another
//! slot needs its two-step finish. When the send budget shares that home
//! (one shard), sends are budgeted in the same batches: a worker's
//! finishes, sent replies and sends cost one script call together.

use redis::Value;

use super::{answered_each, lane_stream, value_i64, value_string, AdmitItem, RedisResult};
use crate::envelope::Entry;
use crate::keys::{self, Keys};
use crate::queue::scripts::scripts;
use crate::queue::{locate, Completion, Head};

/// One entry's end, owned so it can wait in a batch: its KEYS and ARGV
/// as `end_many.lua` reads them.
#[derive(Debug)]
pub struct EndItem {
    keys: Vec<String>,
    args: Vec<String>,
}

/// One item's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndAnswer {
    /// A finish or sent reply: whether the update was fresh, and its
    /// chat's next entry.
    Ended { fresh: bool, head: Option<String> },
    /// A send's budget check: why it may not go yet (0 = go, booked) and
    /// the µs to wait.
    Admit { why: i64, wait_us: i64 },
    /// A chat's head, and whether the update asked about is done.
    Head(Head),
    /// Whether an update is handled.
    Done(bool),
}

/// Whether an entry's end may ride in a batch: its keys live in the bot's
/// home.
pub fn batches(entry_id: &str) -> bool {
    locate(entry_id).1 == 0
}

/// A finished entry (what `finish` does for one).
pub fn finished(keys: &Keys, entry: &Entry, done: &Completion<'_>) -> EndItem {
    let (lane, shard, _) = locate(&entry.id);
    let u = done.user;
    let mut item = EndItem {
        keys: Vec::with_capacity(4 + done.writes.len()),
        args: Vec::with_capacity(13 + 3 * done.writes.len()),
    };
    let mark = keys.done(entry.update_id);
    item.keys.push(mark.key);
    item.keys.push(keys.user(u.map_or(0, |u| u.id)));
    item.keys.push(lane_stream(keys, lane, shard));
    item.keys.push(keys.order(&entry.key));
    item.keys
        .extend(done.writes.iter().map(|w| keys.kv(w.hash())));
    item.args.extend([
        "f".to_owned(),
        entry.id.clone(),
        entry.key.clone(),
        mark.bit.to_string(),
        done.reply.unwrap_or("").to_owned(),
        done.reply_lease_until_ms.to_string(),
    ]);
    match u {
        Some(u) => item.args.extend([
            u.id.to_string(),
            u.first_name.clone(),
            u.username.clone(),
            u.language_code.clone(),
            if u.is_message { "1" } else { "0" }.to_owned(),
            u.start_payload.clone(),
        ]),
        None => item
            .args
            .extend(["", "", "", "", "0", ""].map(str::to_owned)),
    }
    item.args.push(done.writes.len().to_string());
    for w in done.writes {
        let (op, field, value) = w.parts();
        item.args.extend([op.to_owned(), field.to_owned(), value]);
    }
    item
}

/// A kept reply that went out (what `reply_sent` does for one).
pub fn sent(keys: &Keys, entry_id: &str, key: &str) -> EndItem {
    EndItem {
        keys: vec![keys.order(key)],
        args: vec!["s".to_owned(), entry_id.to_owned(), key.to_owned()],
    }
}

/// A send to budget (what `admit_many` does for one). Only where the
/// budget shares the bot's home: its keys go in the same call.
pub fn admit(keys: &Keys, item: AdmitItem) -> EndItem {
    let mut args = Vec::with_capacity(5);
    args.push("a".to_owned());
    args.extend(item.args.iter().map(u64::to_string));
    let mut all = Vec::with_capacity(4);
    all.push(keys.pause_bot());
    all.extend(item.keys);
    EndItem { keys: all, args }
}

/// A chat's head, with the done bit of the update that runs if it is
/// the head (what `heads` asks per chat).
pub fn head(keys: &Keys, chat: &str, update_id: i64) -> EndItem {
    let done = keys.done(update_id);
    EndItem {
        keys: vec![keys.order(chat), done.key],
        args: vec!["h".to_owned(), done.bit.to_string()],
    }
}

/// Whether the update of an entry of the bot's home is handled (what
/// `is_done` asks).
pub fn done(keys: &Keys, update_id: i64) -> EndItem {
    let done = keys.done(update_id);
    EndItem {
        keys: vec![done.key],
        args: vec!["d".to_owned(), done.bit.to_string()],
    }
}

/// Runs one batch; per item, its answer.
pub async fn end_many(
    conn: &mut crate::redis_conn::Conn,
    keys: &Keys,
    items: Vec<EndItem>,
) -> RedisResult<Vec<EndAnswer>> {
    let n = items.len();
    let mut inv = scripts().end_many.prepare_invoke();
    inv.key(keys.users_first_seen())
        .key(keys.users_last_seen())
        .key(keys.counters())
        .key(keys.failures())
        .key(keys.replies())
        .key(keys.replies_due())
        .key(keys.users_blocked());
    inv.arg(keys::DONE_TTL_SECS)
        .arg(crate::envelope::now_ms())
        .arg(keys::GROUP)
        .arg(n);
    for item in &items {
        for k in &item.keys {
            inv.key(k);
        }
        for a in &item.args {
            inv.arg(a);
        }
    }
    let flat: Vec<Value> = inv.invoke_async(conn).await?;
    answered_each(flat.len(), 2 * n, "end_many")?;
    Ok(flat
        .chunks(2)
        .zip(&items)
        .map(|(c, item)| match item.args.first().map(String::as_str) {
            Some("a") => EndAnswer::Admit {
                why: value_i64(&c[0]).unwrap_or(1),
                wait_us: value_i64(&c[1]).unwrap_or(0),
            },
            Some("d") => EndAnswer::Done(matches!(c[0], Value::Int(1))),
            Some("h") => EndAnswer::Head(Head {
                entry: value_string(&c[1]).filter(|h| !h.is_empty()),
                asked_done: matches!(c[0], Value::Int(1)),
            }),
            _ => EndAnswer::Ended {
                fresh: matches!(c[0], Value::Int(1)),
                head: value_string(&c[1]).filter(|h| !h.is_empty()),
            },
        })
        .collect())
}
