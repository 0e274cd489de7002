//! The Redis commands and scripts behind [`super::RedisStore`]:
//!
//! - `group`: the consumer group - joining, reading, claiming, heartbeats,
//!   membership and liveness;
//! - `ending`: how an entry ends - completion (one script, or two when the
//!   shard lives in another slot than the bot's keys), kept replies, dead
//!   letters, failures, per-chat heads;
//! - `end_many`: the same for many entries in one script call (group
//!   commit);
//! - `intake`: storing the ingress's updates, many per script call;
//! - `budget`: the send budget, many sends per script call;
//! - `depth`: backlog figures and the server's durability settings;
//! - here: where an entry's keys live (lane, shard, home) and reply parsing.
//!
//! Stream growth: an entry is XACKed and XDELeted in the same script that
//! marks its update handled, so the stream holds the backlog (undelivered
//! and in-flight entries), never history. We deliberately do not use
//! `XADD MAXLEN`/`XTRIM`: trimming by length or age cuts from the head
//! whether or not the entries there were handled, and a slow or stalled
//! worker fleet would lose updates. Deleting exactly what was handled cannot.

use std::collections::HashMap;
use std::time::Duration;

use crate::redis_conn::Conn;
use redis::Value;

use super::scripts::scripts;
use super::{entry_id, locate, ConsumerInfo, Head, Lane};
use crate::envelope::{now_ms, Entry};
use crate::keys::{self, Keys};

pub type RedisResult<T> = redis::RedisResult<T>;

/// One entry as XRANGE answers it: id and fields.
type StreamEntry = (String, HashMap<String, Value>);

mod budget;
mod depth;
pub mod end_many;
mod ending;
mod group;
mod intake;

pub use budget::*;
pub use depth::*;
pub use ending::*;
pub use group::*;
pub use intake::*;

/// The stream of a lane's shard (the fast lane has one, in shard 0's home).
pub fn lane_stream(keys: &Keys, lane: Lane, shard: u16) -> String {
    match lane {
        Lane::Ordinary => keys.shard(shard).stream(),
        Lane::Fast => keys.bot().fast_stream(),
    }
}

/// Every stream workers consume: the fast lane, then each shard's.
pub fn all_streams(keys: &Keys) -> Vec<String> {
    std::iter::once(keys.bot().fast_stream())
        .chain((0..keys.shards()).map(|s| keys.shard(s).stream()))
        .collect()
}

/// The names of the home an entry id belongs to (its shard's; the fast
/// lane's and the outbox's are shard 0's).
pub fn home_of(keys: &Keys, id: &str) -> Keys {
    keys.shard(locate(id).1)
}

/// The stream an entry id was read from, and its id there.
fn stream_of_id<'a>(keys: &Keys, id: &'a str) -> (String, &'a str) {
    let (lane, shard, raw) = locate(id);
    (lane_stream(keys, lane, shard), raw)
}

/// A batch script's answer must hold one result per item it was given:
/// anything else is a script and caller out of step, never guessed at.
pub(crate) fn answered_each(got: usize, given: usize, script: &'static str) -> RedisResult<()> {
    if got == given {
        return Ok(());
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "a batch script answered a different number of items than it was given",
        format!("{script}: {got} answers for {given} items"),
    )))
}

/// Redis refused a write because it is at its `maxmemory` limit.
pub fn is_oom(e: &redis::RedisError) -> bool {
    e.code() == Some("OOM")
}

/// Whether Redis accepts writes now, without writing anything: SETRANGE
/// with an empty value on a missing key changes nothing, yet Redis runs
/// every check a write must pass before it - the memory limit
/// (`noeviction`), a failed snapshot (`MISCONF`), a read-only replica, too
/// few replicas (`NOREPLICAS`) - and answers that check's error.
pub async fn write_probe(conn: &mut Conn, keys: &Keys) -> RedisResult<()> {
    redis::cmd("SETRANGE")
        .arg(keys.write_probe())
        .arg(0)
        .arg("")
        .query_async::<i64>(conn)
        .await
        .map(drop)
}

pub fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// Parses the reply of XREADGROUP / XRANGE / XCLAIM into entries. Entries
/// that cannot be read are returned separately so the caller can
/// dead-letter them instead of leaving them pending forever.
pub fn parse_entries(v: &Value) -> (Vec<Entry>, Vec<(String, String)>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let Value::Array(items) = v else {
        return (good, bad);
    };
    for item in items {
        let Value::Array(pair) = item else { continue };
        if pair.len() != 2 {
            continue;
        }
        let id = match &pair[0] {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => continue,
        };
        let mut map = HashMap::new();
        match &pair[1] {
            Value::Array(fields) => {
                for kv in fields.chunks(2) {
                    if let [Value::BulkString(k), v] = kv {
                        map.insert(String::from_utf8_lossy(k).into_owned(), v.clone());
                    }
                }
            }
            Value::Map(fields) => {
                for (k, v) in fields {
                    if let Value::BulkString(k) = k {
                        map.insert(String::from_utf8_lossy(k).into_owned(), v.clone());
                    }
                }
            }
            // A nil body: the entry was deleted while still pending.
            _ => continue,
        }
        match Entry::from_map(id.clone(), &map) {
            Ok(e) => good.push(e),
            Err(reason) => bad.push((id, reason)),
        }
    }
    (good, bad)
}

pub fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub fn value_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => value_string(other)?.parse().ok(),
    }
}

pub fn value_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => value_string(other)?.parse().ok(),
    }
}
