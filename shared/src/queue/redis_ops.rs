//! The Redis commands and scripts behind [`super::RedisStore`]: group
//! membership, reading, claiming, finishing and dead-lettering entries.
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

/// Creates the group if missing - also when the stream does not exist yet -
/// and adds `consumer` to it. The group starts at the beginning of the
/// stream: updates accepted before the first worker ever ran are handled
/// too. The consumer is added explicitly because Redis 7.0 adds one only
/// when it is first handed entries: a replica that has had no work yet
/// would be missing from `worker queue stats`.
///
/// A full Redis (`maxmemory`, `noeviction`) refuses both XGROUP commands
/// with OOM, even when the group exists - which is exactly when more
/// workers are needed to drain it. Then an existing group is enough:
/// reading needs no memory, and XREADGROUP adds the consumer as it hands
/// it its first entries (the worker's periodic rejoin lists it once Redis
/// has room). Only a missing group is an error: it cannot be made.
pub async fn join_group(conn: &mut Conn, keys: &Keys, consumer: &str) -> RedisResult<()> {
    for stream in all_streams(keys) {
        join_stream(conn, &stream, consumer).await?;
    }
    Ok(())
}

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

async fn join_stream(conn: &mut Conn, stream: &str, consumer: &str) -> RedisResult<()> {
    let r: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(keys::GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => {}
        Err(e) if is_oom(&e) => {
            if !group_exists(conn, stream).await? {
                return Err(e);
            }
        }
        other => other?,
    }
    let r = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(stream)
        .arg(keys::GROUP)
        .arg(consumer)
        .query_async::<i64>(conn)
        .await;
    match r {
        Err(e) if is_oom(&e) => {
            tracing::info!(
                "Redis is full (maxmemory): consuming without listing this worker in the group; \
                 Redis lists it with its first entries"
            );
            Ok(())
        }
        other => other.map(drop),
    }
}

/// Redis refused a write because it is at its `maxmemory` limit.
pub fn is_oom(e: &redis::RedisError) -> bool {
    e.code() == Some("OOM")
}

async fn group_exists(conn: &mut Conn, stream: &str) -> RedisResult<bool> {
    let r: RedisResult<Vec<HashMap<String, Value>>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await;
    match r {
        Ok(groups) => Ok(groups
            .iter()
            .any(|g| g.get("name").and_then(value_string).as_deref() == Some(keys::GROUP))),
        // No stream at all: "ERR no such key".
        Err(e) if e.code() == Some("ERR") => Ok(false),
        Err(e) => Err(e),
    }
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

/// New entries for this consumer, waiting up to `block_ms` for some.
pub async fn read_new(
    conn: &mut Conn,
    keys: &Keys,
    consumer: &str,
    lane: Lane,
    shard: u16,
    count: usize,
    block_ms: u64,
) -> RedisResult<(Vec<Entry>, Vec<(String, String)>)> {
    let v: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(keys::GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(lane_stream(keys, lane, shard))
        .arg(">")
        .query_async(conn)
        .await?;
    // Reply: [[stream, [entries...]]] or nil on timeout (a map under RESP3).
    let entries = match v {
        Value::Array(streams) => streams
            .into_iter()
            .find_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => Some(kv.remove(1)),
                _ => None,
            })
            .unwrap_or(Value::Nil),
        Value::Map(m) => m.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Nil),
        _ => Value::Nil,
    };
    Ok(in_lane(lane, shard, parse_entries(&entries)))
}

/// Tags entries read from a lane's stream with their lane and shard.
fn in_lane(
    lane: Lane,
    shard: u16,
    (mut good, mut bad): (Vec<Entry>, Vec<(String, String)>),
) -> (Vec<Entry>, Vec<(String, String)>) {
    if lane != Lane::Ordinary || shard != 0 {
        for e in &mut good {
            e.id = entry_id(lane, shard, &e.id);
        }
        for (id, _) in &mut bad {
            *id = entry_id(lane, shard, id);
        }
    }
    for e in &mut good {
        e.lane = lane;
    }
    (good, bad)
}

/// Takes over entries idle for `min_idle_ms` (their consumer died or
/// stalled). One page per call; the caller loops on the returned cursor.
#[allow(clippy::too_many_arguments)]
pub async fn autoclaim(
    conn: &mut Conn,
    keys: &Keys,
    consumer: &str,
    lane: Lane,
    shard: u16,
    min_idle_ms: u64,
    cursor: &str,
    count: usize,
) -> RedisResult<(String, Vec<Entry>, Vec<(String, String)>)> {
    let v: Value = redis::cmd("XAUTOCLAIM")
        .arg(lane_stream(keys, lane, shard))
        .arg(keys::GROUP)
        .arg(consumer)
        .arg(min_idle_ms)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    let Value::Array(parts) = v else {
        return Ok(("0-0".into(), vec![], vec![]));
    };
    let next = match parts.first() {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => "0-0".into(),
    };
    let (good, bad) = in_lane(
        lane,
        shard,
        parts.get(1).map(parse_entries).unwrap_or_default(),
    );
    Ok((next, good, bad))
}

/// How many times each of these entries has been delivered.
pub async fn delivery_counts(
    conn: &mut Conn,
    keys: &Keys,
    ids: &[&str],
) -> RedisResult<HashMap<String, u64>> {
    // One pipelined round trip per stream (a cluster pipelines only
    // within one slot): claimed entries are not yet covered by the
    // heartbeat, so the time between claim and dispatch must stay short.
    let mut by_stream: HashMap<String, Vec<(&str, &str)>> = HashMap::new();
    for id in ids {
        let (stream, raw) = stream_of_id(keys, id);
        by_stream.entry(stream).or_default().push((id, raw));
    }
    let mut out = HashMap::new();
    for (stream, ids) in by_stream {
        let mut pipe = redis::pipe();
        for (_, raw) in &ids {
            pipe.cmd("XPENDING")
                .arg(&stream)
                .arg(keys::GROUP)
                .arg(*raw)
                .arg(*raw)
                .arg(1);
        }
        let replies: Vec<Vec<(String, String, u64, u64)>> = pipe.query_async(conn).await?;
        for ((id, _), v) in ids.iter().zip(replies) {
            if let Some((_, _, _, n)) = v.first() {
                out.insert(id.to_string(), *n);
            }
        }
    }
    Ok(out)
}

/// Resets the idle time of entries this consumer is still working on, so
/// that a slow handler (a long 429 wait, say) is not mistaken for a dead
/// one. JUSTID: the delivery count is not incremented.
pub async fn heartbeat(
    conn: &mut Conn,
    keys: &Keys,
    consumer: &str,
    ids: &[String],
) -> RedisResult<()> {
    let mut by_stream: HashMap<String, Vec<&str>> = HashMap::new();
    for id in ids {
        let (stream, raw) = stream_of_id(keys, id);
        by_stream.entry(stream).or_default().push(raw);
    }
    for (stream, raw) in by_stream {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(stream).arg(keys::GROUP).arg(consumer).arg(0);
        for id in raw {
            cmd.arg(id);
        }
        cmd.arg("JUSTID");
        let _: Value = cmd.query_async(conn).await?;
    }
    Ok(())
}

/// A kept reply went out: forget it, let its chat go on
/// (`lua/reply_sent.lua`). Returns the chat's next entry id.
pub async fn reply_sent(
    conn: &mut Conn,
    keys: &Keys,
    entry_id: &str,
    key: &str,
) -> RedisResult<Option<String>> {
    let keys = &home_of(keys, entry_id);
    let mut inv = scripts().reply_sent.prepare_invoke();
    inv.key(keys.replies())
        .key(keys.replies_due())
        .key(keys.failures())
        .key(keys.order(key))
        .arg(entry_id)
        .arg(key);
    let head: String = inv.invoke_async(conn).await?;
    Ok(Some(head).filter(|h| !h.is_empty()))
}

/// Replies whose lease ran out, leased anew to the caller
/// (`lua/orphan_replies.lua`), from every shard's home.
pub async fn orphan_replies(
    conn: &mut Conn,
    keys: &Keys,
    until_ms: i64,
    count: usize,
) -> RedisResult<Vec<super::OrphanReply>> {
    let mut out = Vec::new();
    for s in 0..keys.shards() {
        out.extend(orphan_replies_in(conn, &keys.shard(s), until_ms, count).await?);
    }
    Ok(out)
}

async fn orphan_replies_in(
    conn: &mut Conn,
    keys: &Keys,
    until_ms: i64,
    count: usize,
) -> RedisResult<Vec<super::OrphanReply>> {
    let mut inv = scripts().orphan_replies.prepare_invoke();
    inv.key(keys.replies_due())
        .key(keys.replies())
        .key(keys.failures())
        .key(keys.replies_delayed())
        .arg(now_ms())
        .arg(until_ms)
        .arg(count);
    let flat: Vec<Value> = inv.invoke_async(conn).await?;
    Ok(flat
        .chunks(3)
        .filter_map(|c| {
            Some(super::OrphanReply {
                id: value_string(c.first()?)?,
                body: value_string(c.get(1)?)?,
                takeovers: value_u64(c.get(2)?)?,
            })
        })
        .collect())
}

/// Marks the update handled (once) and ends its entry, atomically
/// (`lua/finish.lua`, which says why it frees memory first). Returns
/// whether the update was fresh and its chat's next entry id.
pub async fn finish(
    conn: &mut Conn,
    keys: &Keys,
    entry: &Entry,
    done_: super::Completion<'_>,
) -> RedisResult<(bool, Option<String>)> {
    let (lane, shard, _) = locate(&entry.id);
    let stream = lane_stream(keys, lane, shard);
    let bot = keys;
    let keys = &keys.shard(shard);
    let mut done_ = done_;
    if keys != bot {
        // The shard's keys live in another slot than the bot's: the user
        // record and writes go first, in their own step (`lua/apply.lua`).
        apply(conn, bot, entry.update_id, &done_).await?;
        done_.user = None;
        done_.writes = &[];
    }
    let user = done_.user;
    let u = user.cloned().unwrap_or_default();
    let done = keys.done(entry.update_id);
    let mut inv = scripts().finish.prepare_invoke();
    inv.key(&done.key)
        .key(keys.user(u.id))
        .key(keys.users_first_seen())
        .key(keys.users_last_seen())
        .key(keys.counters())
        .key(stream)
        .key(keys.failures())
        .key(keys.order(&entry.key))
        .key(keys.replies())
        .key(keys.replies_due())
        .key(keys.users_blocked());
    for w in done_.writes {
        inv.key(keys.kv(w.hash()));
    }
    inv.arg(keys::DONE_TTL_SECS)
        .arg(now_ms())
        .arg(if user.is_some() {
            u.id.to_string()
        } else {
            String::new()
        })
        .arg(&u.first_name)
        .arg(&u.username)
        .arg(&u.language_code)
        .arg(if u.is_message { "1" } else { "0" })
        .arg(&u.start_payload)
        .arg(keys::GROUP)
        .arg(&entry.id)
        .arg(&entry.key)
        .arg(done.bit)
        .arg(done_.reply.unwrap_or(""))
        .arg(done_.reply_lease_until_ms)
        .arg(done_.writes.len());
    for w in done_.writes {
        let (op, field, value) = w.parts();
        inv.arg(op).arg(field).arg(value);
    }
    let (fresh, head): (i64, String) = inv.invoke_async(conn).await?;
    Ok((fresh == 1, Some(head).filter(|h| !h.is_empty())))
}

/// The bot-wide half of a two-step finish (`lua/apply.lua`).
async fn apply(
    conn: &mut Conn,
    keys: &Keys,
    update_id: i64,
    done_: &super::Completion<'_>,
) -> RedisResult<()> {
    let u = done_.user.cloned().unwrap_or_default();
    let mark = keys.applied(update_id);
    let mut inv = scripts().apply.prepare_invoke();
    inv.key(&mark.key)
        .key(keys.user(u.id))
        .key(keys.users_first_seen())
        .key(keys.users_last_seen())
        .key(keys.users_blocked());
    for w in done_.writes {
        inv.key(keys.kv(w.hash()));
    }
    inv.arg(keys::DONE_TTL_SECS)
        .arg(now_ms())
        .arg(if done_.user.is_some() {
            u.id.to_string()
        } else {
            String::new()
        })
        .arg(&u.first_name)
        .arg(&u.username)
        .arg(&u.language_code)
        .arg(if u.is_message { "1" } else { "0" })
        .arg(&u.start_payload)
        .arg(mark.bit)
        .arg(done_.writes.len());
    for w in done_.writes {
        let (op, field, value) = w.parts();
        inv.arg(op).arg(field).arg(value);
    }
    let _: i64 = inv.invoke_async(conn).await?;
    Ok(())
}

/// Moves an entry to the dead letters with the reason, atomically
/// (`lua/dead_letter.lua`).
#[allow(clippy::too_many_arguments)]
pub async fn dead_letter(
    conn: &mut Conn,
    keys: &Keys,
    id: &str,
    update_id: Option<i64>,
    key: &str,
    update: &[u8],
    error: &str,
    deliveries: u64,
    reply: &str,
) -> RedisResult<()> {
    let (stream, _) = stream_of_id(keys, id);
    let keys = &home_of(keys, id);
    let mut inv = scripts().dead_letter.prepare_invoke();
    inv.key(stream)
        .key(keys.dead())
        .key(keys.failures())
        .key(keys.counters())
        .key(keys.order(key))
        .key(keys.replies())
        .key(keys.replies_due())
        .arg(keys::GROUP)
        .arg(id)
        .arg(update_id.map(|u| u.to_string()).unwrap_or_default())
        .arg(key)
        .arg(update)
        .arg(error)
        .arg(deliveries)
        .arg(now_ms())
        .arg(reply);
    let _: i64 = inv.invoke_async(conn).await?;
    Ok(())
}

/// Pushes the lease ends of replies still being sent (only those still kept).
pub async fn renew_replies(
    conn: &mut Conn,
    keys: &Keys,
    ids: &[String],
    until_ms: i64,
) -> RedisResult<()> {
    let mut by_home: HashMap<String, Vec<&str>> = HashMap::new();
    for id in ids {
        by_home
            .entry(home_of(keys, id).replies_due())
            .or_default()
            .push(id);
    }
    for (due, ids) in by_home {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(due).arg("XX");
        for id in ids {
            cmd.arg(until_ms).arg(id);
        }
        cmd.query_async::<i64>(conn).await?;
    }
    Ok(())
}

pub async fn kv_get(
    conn: &mut Conn,
    keys: &Keys,
    hash: &str,
    field: &str,
) -> RedisResult<Option<String>> {
    redis::cmd("HGET")
        .arg(keys.kv(hash))
        .arg(field)
        .query_async(conn)
        .await
}

/// Counts a failed delivery; returns the failures so far.
pub async fn count_failure(conn: &mut Conn, keys: &Keys, entry_id: &str) -> RedisResult<u64> {
    redis::cmd("HINCRBY")
        .arg(home_of(keys, entry_id).failures())
        .arg(entry_id)
        .arg(1)
        .query_async(conn)
        .await
}

pub async fn is_done(
    conn: &mut Conn,
    keys: &Keys,
    entry_id: &str,
    update_id: i64,
) -> RedisResult<bool> {
    let done = home_of(keys, entry_id).done(update_id);
    let bit: u8 = redis::cmd("GETBIT")
        .arg(&done.key)
        .arg(done.bit)
        .query_async(conn)
        .await?;
    Ok(bit == 1)
}

/// The group's consumers, as the ordinary lane lists them, with what each
/// holds in the fast lane added (every worker reads both).
pub async fn consumers(conn: &mut Conn, keys: &Keys) -> RedisResult<Vec<ConsumerInfo>> {
    let mut list = lane_consumers(conn, &keys.stream()).await?;
    for stream in all_streams(keys).iter().filter(|s| **s != keys.stream()) {
        let more = match lane_consumers(conn, stream).await {
            Ok(f) => f,
            // No fast lane yet (workers of an older version), a shard not
            // joined yet: nothing held there.
            Err(e) if e.code() == Some("NOGROUP") || e.code() == Some("ERR") => Vec::new(),
            Err(e) => return Err(e),
        };
        for f in more {
            match list.iter_mut().find(|c| c.name == f.name) {
                Some(c) => {
                    c.pending += f.pending;
                    c.idle_ms = c.idle_ms.min(f.idle_ms);
                }
                None => list.push(f),
            }
        }
    }
    Ok(list)
}

async fn lane_consumers(conn: &mut Conn, stream: &str) -> RedisResult<Vec<ConsumerInfo>> {
    let v: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(keys::GROUP)
        .query_async(conn)
        .await?;
    Ok(v.into_iter()
        .map(|m| ConsumerInfo {
            name: m.get("name").and_then(value_string).unwrap_or_default(),
            pending: m.get("pending").and_then(value_u64).unwrap_or(0),
            idle_ms: m.get("idle").and_then(value_u64).unwrap_or(0),
            alive: false,
        })
        .collect())
}

/// Removes `consumer` from the group, unless it still owns pending
/// entries (`lua/leave_group.lua`). True when it left.
pub async fn leave_group(conn: &mut Conn, keys: &Keys, consumer: &str) -> RedisResult<bool> {
    // Shards in other slots first, each only if nothing is pending there
    // (the script checks and leaves in one step); shard 0's, the fast
    // lane's and the alive mark share the bot's slot and go last.
    for s in 1..keys.shards() {
        let shard = keys.shard(s);
        let left: i64 = scripts()
            .leave_group
            .key(shard.stream())
            .key(shard.alive(consumer))
            .key(shard.fast_stream())
            .arg(keys::GROUP)
            .arg(consumer)
            .invoke_async(conn)
            .await?;
        if left == 0 {
            return Ok(false);
        }
    }
    let bot = keys.bot();
    let left: i64 = scripts()
        .leave_group
        .key(bot.stream())
        .key(bot.alive(consumer))
        .key(bot.fast_stream())
        .arg(keys::GROUP)
        .arg(consumer)
        .invoke_async(conn)
        .await?;
    Ok(left == 1)
}

/// Fills in `alive` for each consumer: one pipelined EXISTS per name.
pub async fn fill_alive(
    conn: &mut Conn,
    keys: &Keys,
    consumers: &mut [ConsumerInfo],
) -> RedisResult<()> {
    if consumers.is_empty() {
        return Ok(());
    }
    let mut p = redis::pipe();
    for c in consumers.iter() {
        p.exists(keys.alive(&c.name));
    }
    let alive: Vec<bool> = p.query_async(conn).await?;
    for (c, a) in consumers.iter_mut().zip(alive) {
        c.alive = a;
    }
    Ok(())
}

pub async fn mark_alive(
    conn: &mut Conn,
    keys: &Keys,
    consumer: &str,
    ttl: Duration,
) -> RedisResult<()> {
    redis::cmd("SET")
        .arg(keys.alive(consumer))
        .arg(1)
        .arg("PX")
        .arg(ttl.as_millis().max(1) as u64)
        .query_async(conn)
        .await
}

pub async fn delete_consumer(conn: &mut Conn, keys: &Keys, name: &str) -> RedisResult<u64> {
    let n = redis::cmd("XGROUP")
        .arg("DELCONSUMER")
        .arg(keys.stream())
        .arg(keys::GROUP)
        .arg(name)
        .query_async(conn)
        .await?;
    // The fast lane (or a shard) may have no group yet: nothing to remove
    // there then.
    for stream in all_streams(keys).iter().filter(|s| **s != keys.stream()) {
        let _: RedisResult<u64> = redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(stream)
            .arg(keys::GROUP)
            .arg(name)
            .query_async(conn)
            .await;
    }
    Ok(n)
}

/// Puts a kept reply aside until due (`lua/delay_reply.lua`).
pub async fn delay_reply(
    conn: &mut Conn,
    keys: &Keys,
    entry_id: &str,
    body: &str,
    due_ms: i64,
) -> RedisResult<()> {
    let keys = &home_of(keys, entry_id);
    let mut inv = scripts().delay_reply.prepare_invoke();
    inv.key(keys.replies())
        .key(keys.replies_due())
        .key(keys.failures())
        .key(keys.replies_delayed())
        .arg(entry_id)
        .arg(body)
        .arg(due_ms);
    let _: i64 = inv.invoke_async(conn).await?;
    Ok(())
}

/// How many replies are put aside, and the earliest due time, over every
/// shard's home.
pub async fn delayed_replies(conn: &mut Conn, keys: &Keys) -> RedisResult<(u64, Option<i64>)> {
    let (mut n, mut first) = (0, None::<i64>);
    for s in 0..keys.shards() {
        let (k, f) = delayed_replies_in(conn, &keys.shard(s)).await?;
        n += k;
        first = match (first, f) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok((n, first))
}

/// Kept replies over every shard's home.
pub async fn kept_replies(conn: &mut Conn, keys: &Keys) -> RedisResult<u64> {
    let mut n = 0;
    for s in 0..keys.shards() {
        let k: u64 = redis::cmd("HLEN")
            .arg(keys.shard(s).replies())
            .query_async(conn)
            .await?;
        n += k;
    }
    Ok(n)
}

async fn delayed_replies_in(conn: &mut Conn, keys: &Keys) -> RedisResult<(u64, Option<i64>)> {
    let (n, first): (u64, Vec<(String, f64)>) = redis::pipe()
        .zcard(keys.replies_delayed())
        .cmd("ZRANGE")
        .arg(keys.replies_delayed())
        .arg(0)
        .arg(0)
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    Ok((n, first.first().map(|(_, due)| *due as i64)))
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

/// The first entry id of each conversation's order list (one round trip).
pub async fn heads(
    conn: &mut Conn,
    keys: &Keys,
    chats: &[(String, i64)],
) -> RedisResult<Vec<Head>> {
    // One round trip per shard (a cluster pipelines only within one
    // slot); the answers go back in the order asked.
    let mut by_shard: HashMap<u16, Vec<usize>> = HashMap::new();
    for (i, (k, _)) in chats.iter().enumerate() {
        by_shard.entry(keys.shard_of(k)).or_default().push(i);
    }
    let mut out = vec![Head::default(); chats.len()];
    for (shard, idx) in by_shard {
        let home = keys.shard(shard);
        let mut pipe = redis::pipe();
        for &i in &idx {
            let (k, update_id) = &chats[i];
            let done = home.done(*update_id);
            pipe.cmd("LINDEX").arg(home.order(k)).arg(0);
            pipe.cmd("GETBIT").arg(&done.key).arg(done.bit);
        }
        let replies: Vec<Value> = pipe.query_async(conn).await?;
        let mut it = replies.into_iter();
        for &i in &idx {
            let (Some(head), Some(bit)) = (it.next(), it.next()) else {
                break;
            };
            let entry: Option<String> = redis::from_redis_value(head)?;
            let bit: u8 = redis::from_redis_value(bit)?;
            out[i] = Head {
                entry,
                asked_done: bit == 1,
            };
        }
    }
    Ok(out)
}

/// Drops a chat's head if it is still the head and its entry is gone
/// (`lua/heal_head.lua`).
pub async fn heal_head(
    conn: &mut Conn,
    keys: &Keys,
    order_key: &str,
    head: &str,
) -> RedisResult<bool> {
    let keys = &keys.shard(keys.shard_of(order_key));
    let mut inv = scripts().heal_head.prepare_invoke();
    inv.key(keys.stream())
        .key(keys.order(order_key))
        .key(keys.replies())
        .arg(head);
    let n: i64 = inv.invoke_async(conn).await?;
    Ok(n == 1)
}

/// A lane's depth over all its shards: lengths, lags and pendings add up,
/// the oldest is the oldest of any.
pub async fn depth(conn: &mut Conn, keys: &Keys, lane: Lane) -> RedisResult<super::Depth> {
    let shards = if lane == Lane::Fast { 1 } else { keys.shards() };
    let mut total = super::Depth::default();
    for s in 0..shards {
        let d = stream_depth(conn, &lane_stream(keys, lane, s)).await?;
        total.length += d.length;
        total.lag += d.lag;
        total.pending += d.pending;
        total.oldest_age_ms = total.oldest_age_ms.max(d.oldest_age_ms);
    }
    Ok(total)
}

/// Length, lag and pending in two commands. Handled and dead entries are
/// deleted, so every entry in the stream is either pending (delivered, not
/// acknowledged) or not yet delivered: lag is length minus pending - exact,
/// where Redis's own `lag` field turns nil after deletions.
pub async fn stream_depth(conn: &mut Conn, stream: &str) -> RedisResult<super::Depth> {
    let (length, first): (u64, Vec<StreamEntry>) = redis::pipe()
        .cmd("XLEN")
        .arg(stream)
        .cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    // Every entry in the stream is one not yet ended: the first one's id
    // says when the oldest of them was stored (Redis's clock).
    let oldest_age_ms = first
        .first()
        .map(|(id, _)| (now_ms() as u64).saturating_sub(super::id_order(id).0))
        .unwrap_or(0);
    let summary: RedisResult<Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(keys::GROUP)
        .query_async(conn)
        .await;
    let pending = match summary {
        Ok(Value::Array(parts)) => parts.first().and_then(value_u64).unwrap_or(0),
        Ok(_) => 0,
        Err(e) if e.code() == Some("NOGROUP") => 0,
        Err(e) => return Err(e),
    };
    Ok(super::Depth {
        length,
        lag: length.saturating_sub(pending),
        pending,
        oldest_age_ms,
    })
}

/// Settings of the Redis server that can lose updates the ingress already
/// answered 200 for, each as one line an operator can act on. Read from
/// `INFO` (managed Redis services often refuse `CONFIG`).
pub async fn durability_risks(conn: &mut Conn) -> RedisResult<Vec<String>> {
    let (persistence, memory): (String, String) = redis::pipe()
        .cmd("INFO")
        .arg("persistence")
        .cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await?;
    Ok(risks_from_info(&persistence, &memory))
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.trim_end()
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

fn risks_from_info(persistence: &str, memory: &str) -> Vec<String> {
    let mut risks = Vec::new();
    if info_field(persistence, "aof_enabled") == Some("0") {
        risks.push(
            "Redis runs without AOF (appendonly no): if Redis restarts, updates already \
             acknowledged to Telegram since its last snapshot are lost (all of them if it \
             takes none); turn appendonly on"
                .to_owned(),
        );
    }
    let limited = info_field(memory, "maxmemory").is_some_and(|m| m != "0");
    match info_field(memory, "maxmemory_policy") {
        Some(p) if limited && p.starts_with("allkeys-") => risks.push(format!(
            "Redis may evict any key when it is full (maxmemory-policy {p}): queued \
             updates can be evicted and lost; use noeviction"
        )),
        Some(p) if limited && p.starts_with("volatile-") => risks.push(format!(
            "Redis may evict keys with a TTL when it is full (maxmemory-policy {p}): \
             dedupe marks and the poller lease can vanish (duplicate replies, a second \
             poller); use noeviction"
        )),
        _ => {}
    }
    risks
}

#[cfg(test)]
mod durability_tests {
    use super::risks_from_info;

    #[test]
    fn aof_off_is_a_risk_and_on_is_not() {
        let off = risks_from_info("# Persistence\r\nloading:0\r\naof_enabled:0\r\n", "");
        assert_eq!(off.len(), 1);
        assert!(off[0].contains("appendonly"));
        assert!(risks_from_info("aof_enabled:1\r\n", "").is_empty());
    }

    #[test]
    fn eviction_matters_only_with_a_memory_limit() {
        let mem = |limit: &str, policy: &str| {
            format!("used_memory:1\r\nmaxmemory:{limit}\r\nmaxmemory_human:x\r\nmaxmemory_policy:{policy}\r\n")
        };
        let p = "aof_enabled:1\r\n";
        assert!(risks_from_info(p, &mem("0", "allkeys-lru")).is_empty());
        assert!(risks_from_info(p, &mem("104857600", "noeviction")).is_empty());
        let all = risks_from_info(p, &mem("104857600", "allkeys-lru"));
        assert!(
            all.len() == 1 && all[0].contains("queued updates"),
            "{all:?}"
        );
        let vol = risks_from_info(p, &mem("104857600", "volatile-ttl"));
        assert!(vol.len() == 1 && vol[0].contains("dedupe"), "{vol:?}");
    }
}
