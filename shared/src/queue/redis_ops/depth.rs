//! Backlog figures (per stream, per lane) and the server settings that
//! can lose acknowledged updates.

use super::*;

/// A lane's depth over all its shards: lengths, lags and pendings add up,
/// the oldest is the oldest of any.
pub async fn depth(conn: &mut Conn, keys: &Keys, lane: Lane) -> RedisResult<crate::queue::Depth> {
    let shards = if lane == Lane::Fast { 1 } else { keys.shards() };
    let mut total = crate::queue::Depth::default();
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
pub async fn stream_depth(conn: &mut Conn, stream: &str) -> RedisResult<crate::queue::Depth> {
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
        .map(|(id, _)| (now_ms() as u64).saturating_sub(crate::queue::id_order(id).0))
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
    Ok(crate::queue::Depth {
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
