//! The consumer group: joining, reading, claiming, heartbeats, membership
//! and liveness - on every stream (the fast lane and each shard).

use super::*;

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
