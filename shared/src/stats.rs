//! The statistics model: per-user records and bot-wide numbers, read by the
//! worker's `/stats` and the ingress's Mini App API. Writes happen in the
//! worker, atomically with the "handled" marker, so a redelivered update is
//! never counted twice.

use std::collections::HashMap;

use crate::redis_conn::Conn;
use serde::Serialize;

use crate::keys::Keys;

const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct UserRecord {
    pub id: i64,
    pub first_name: String,
    pub username: Option<String>,
    pub language_code: Option<String>,
    /// Milliseconds since the epoch.
    pub first_seen: i64,
    pub last_seen: i64,
    pub start_payload: Option<String>,
    pub messages: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct BotStats {
    pub users_total: u64,
    pub users_new_24h: u64,
    pub users_active_24h: u64,
    pub updates_handled: u64,
    pub queue_depth: u64,
    /// Users whose last send from the bot got a 403 (blocked it,
    /// deactivated, kicked it), who have not written since.
    pub users_blocked: u64,
}

pub async fn user(
    conn: &mut Conn,
    keys: &Keys,
    user_id: i64,
) -> redis::RedisResult<Option<UserRecord>> {
    let map: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.user(user_id))
        .query_async(conn)
        .await?;
    Ok(user_from_map(user_id, &map))
}

fn user_from_map(id: i64, map: &HashMap<String, String>) -> Option<UserRecord> {
    let first_seen = map.get("first_seen")?.parse().ok()?;
    let opt = |k: &str| map.get(k).filter(|v| !v.is_empty()).cloned();
    Some(UserRecord {
        id,
        first_name: map.get("first_name").cloned().unwrap_or_default(),
        username: opt("username"),
        language_code: opt("language_code"),
        first_seen,
        last_seen: map
            .get("last_seen")
            .and_then(|v| v.parse().ok())
            .unwrap_or(first_seen),
        start_payload: opt("start_payload"),
        messages: map
            .get("messages")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}

pub async fn bot(conn: &mut Conn, keys: &Keys, now_ms: i64) -> redis::RedisResult<BotStats> {
    let since = now_ms - DAY_MS;
    let (total, new, active, handled, depth, blocked): (u64, u64, u64, Option<u64>, u64, u64) =
        redis::pipe()
            .cmd("ZCARD")
            .arg(keys.users_first_seen())
            .cmd("ZCOUNT")
            .arg(keys.users_first_seen())
            .arg(since)
            .arg("+inf")
            .cmd("ZCOUNT")
            .arg(keys.users_last_seen())
            .arg(since)
            .arg("+inf")
            .cmd("HGET")
            .arg(keys.counters())
            .arg("updates_handled")
            .cmd("XLEN")
            .arg(keys.stream())
            .cmd("ZCARD")
            .arg(keys.users_blocked())
            .query_async(conn)
            .await?;
    // Each further shard counts its own handled updates and holds its own
    // backlog: added up here.
    let (mut handled, mut depth) = (handled.unwrap_or(0), depth);
    for s in 1..keys.shards() {
        let home = keys.shard(s);
        let (h, d): (Option<u64>, u64) = redis::pipe()
            .cmd("HGET")
            .arg(home.counters())
            .arg("updates_handled")
            .cmd("XLEN")
            .arg(home.stream())
            .query_async(conn)
            .await?;
        handled += h.unwrap_or(0);
        depth += d;
    }
    Ok(BotStats {
        users_total: total,
        users_new_24h: new,
        users_active_24h: active,
        updates_handled: handled,
        queue_depth: depth,
        users_blocked: blocked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_record_needs_first_seen() {
        let mut m = HashMap::new();
        assert_eq!(user_from_map(1, &m), None);
        m.insert("first_seen".to_string(), "10".to_string());
        m.insert("messages".to_string(), "3".to_string());
        m.insert("username".to_string(), String::new());
        let u = user_from_map(1, &m).unwrap();
        assert_eq!(
            (u.first_seen, u.last_seen, u.messages, u.username),
            (10, 10, 3, None)
        );
    }
}
