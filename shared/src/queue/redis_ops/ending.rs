//! How an entry ends: completion, kept replies, dead letters, failures
//! and the per-chat heads that decide when the next one may start.

use super::*;

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
) -> RedisResult<Vec<crate::queue::OrphanReply>> {
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
) -> RedisResult<Vec<crate::queue::OrphanReply>> {
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
            Some(crate::queue::OrphanReply {
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
    done_: crate::queue::Completion<'_>,
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
    write_keys(&mut inv, keys, done_.writes);
    inv.arg(keys::DONE_TTL_SECS).arg(now_ms());
    user_args(&mut inv, user);
    inv.arg(keys::GROUP)
        .arg(&entry.id)
        .arg(&entry.key)
        .arg(done.bit)
        .arg(done_.reply.unwrap_or(""))
        .arg(done_.reply_lease_until_ms);
    write_args(&mut inv, done_.writes);
    let (fresh, head): (i64, String) = inv.invoke_async(conn).await?;
    Ok((fresh == 1, Some(head).filter(|h| !h.is_empty())))
}

/// The bot-wide half of a two-step finish (`lua/apply.lua`).
async fn apply(
    conn: &mut Conn,
    keys: &Keys,
    update_id: i64,
    done_: &crate::queue::Completion<'_>,
) -> RedisResult<()> {
    let u = done_.user.cloned().unwrap_or_default();
    let mark = keys.applied(update_id);
    let mut inv = scripts().apply.prepare_invoke();
    inv.key(&mark.key)
        .key(keys.user(u.id))
        .key(keys.users_first_seen())
        .key(keys.users_last_seen())
        .key(keys.users_blocked());
    write_keys(&mut inv, keys, done_.writes);
    inv.arg(keys::DONE_TTL_SECS).arg(now_ms());
    user_args(&mut inv, done_.user);
    inv.arg(mark.bit);
    write_args(&mut inv, done_.writes);
    let _: i64 = inv.invoke_async(conn).await?;
    Ok(())
}

/// The user record's ARGV, read alike by `finish.lua` and `apply.lua`: id
/// ('' = none), first_name, username, language_code, is message, start
/// payload.
fn user_args(inv: &mut redis::ScriptInvocation<'_>, user: Option<&crate::queue::UserTouch>) {
    let u = user.cloned().unwrap_or_default();
    inv.arg(user.map(|u| u.id.to_string()).unwrap_or_default())
        .arg(u.first_name)
        .arg(u.username)
        .arg(u.language_code)
        .arg(if u.is_message { "1" } else { "0" })
        .arg(u.start_payload);
}

/// One kv hash KEY per write.
fn write_keys(inv: &mut redis::ScriptInvocation<'_>, keys: &Keys, writes: &[crate::queue::Write]) {
    for w in writes {
        inv.key(keys.kv(w.hash()));
    }
}

/// How many writes, then an (op, field, value) triple per write: the
/// last ARGV of both scripts.
fn write_args(inv: &mut redis::ScriptInvocation<'_>, writes: &[crate::queue::Write]) {
    inv.arg(writes.len());
    for w in writes {
        let (op, field, value) = w.parts();
        inv.arg(op).arg(field).arg(value);
    }
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
