//! Operator commands: `worker queue stats|dead|replay-dead`.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

use redis::Value;
use serde::Serialize;
use shared::redis_conn::Conn;

use shared::envelope::{now_ms, NewEntry};
use shared::keys::{self, Keys};
use shared::queue::Lane;

use crate::human;

use shared::queue::redis_ops::{self as stream, value_i64, value_string, value_u64};
use shared::queue::scripts::scripts;

#[derive(Debug, Serialize)]
pub struct ConsumerStats {
    pub name: String,
    pub pending: u64,
    pub idle_ms: u64,
    /// A running worker renews this name's alive mark every claim period;
    /// false for a name whose worker is gone (removed by the workers once
    /// it owns nothing). The mark itself lives ten periods (so one slow
    /// Redis moment does not get a live worker's name removed), but the
    /// operator is told "gone" once it missed two renewals: see
    /// [`apply_liveness`].
    pub alive: bool,
    /// Milliseconds since the alive mark was last renewed; `None` once the
    /// mark expired (or before the first renewal was read).
    pub renewed_ms_ago: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct QueueStats {
    /// Which Redis these numbers come from, password redacted: with
    /// `REDIS_URL` unset the command reads the default local Redis, and
    /// "0 consumers" from the wrong Redis looks like an outage.
    pub redis: String,
    pub stream: String,
    /// `QUEUE_SHARDS`: the ordinary lane's streams (the totals below add
    /// them up; `lanes` lists each).
    pub shards: u16,
    pub length: u64,
    /// Entries not yet delivered to any consumer.
    pub lag: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    pub oldest_pending_ms: Option<u64>,
    pub consumers: Vec<ConsumerStats>,
    pub dead_letters: u64,
    /// Each lane's stream (`ordinary`: the fields above; `fast`: updates
    /// with a deadline).
    pub lanes: Vec<LaneStats>,
    /// Replies waiting out a 429 or pause, and when the first is due (ms
    /// since epoch).
    pub delayed_replies: u64,
    pub next_due_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct LaneStats {
    pub lane: &'static str,
    /// The ordinary lane's shard, when there are several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u16>,
    pub stream: String,
    pub length: u64,
    pub lag: u64,
    pub pending: u64,
    /// Age of the oldest entry not yet ended.
    pub oldest_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub update_id: Option<i64>,
    pub error: String,
    pub deliveries: u64,
    pub failed_at: i64,
}

fn field_map(fields: &Value) -> HashMap<String, Value> {
    let mut m = HashMap::new();
    if let Value::Array(kv) = fields {
        for pair in kv.chunks(2) {
            if let [k, v] = pair {
                if let Some(k) = value_string(k) {
                    m.insert(k, v.clone());
                }
            }
        }
    }
    m
}

fn entries(v: &Value) -> Vec<(String, HashMap<String, Value>)> {
    let Value::Array(items) = v else {
        return vec![];
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::Array(p) if p.len() == 2 => Some((value_string(&p[0])?, field_map(&p[1]))),
            _ => None,
        })
        .collect()
}

pub async fn stats(conn: &mut Conn, keys: &Keys) -> redis::RedisResult<QueueStats> {
    let fast = stream::depth(conn, keys, Lane::Fast).await?;
    let mut lanes = vec![LaneStats {
        lane: Lane::Fast.label(),
        shard: None,
        stream: stream::lane_stream(keys, Lane::Fast, 0),
        length: fast.length,
        lag: fast.lag,
        pending: fast.pending,
        oldest_ms: fast.oldest_age_ms,
    }];
    // The ordinary lane: one line per shard when there are several, and
    // the totals in the top-level fields.
    let (mut length, mut lag, mut pending, mut dead_letters) = (0, 0, 0, 0);
    let mut exists = false;
    let mut oldest_pending_ms: Option<u64> = None;
    for s in 0..keys.shards() {
        let home = keys.shard(s);
        let d = stream::stream_depth(conn, &home.stream()).await?;
        length += d.length;
        lag += d.lag;
        pending += d.pending;
        let dead: u64 = redis::cmd("XLEN")
            .arg(home.dead())
            .query_async(conn)
            .await?;
        dead_letters += dead;
        let here: bool = redis::cmd("EXISTS")
            .arg(home.stream())
            .query_async(conn)
            .await?;
        exists |= here;
        if d.pending > 0 {
            let oldest = oldest_pending(conn, &home.stream()).await?;
            oldest_pending_ms = match (oldest_pending_ms, oldest) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        lanes.push(LaneStats {
            lane: Lane::Ordinary.label(),
            shard: (keys.shards() > 1).then_some(s),
            stream: home.stream(),
            length: d.length,
            lag: d.lag,
            pending: d.pending,
            oldest_ms: d.oldest_age_ms,
        });
    }
    let (delayed_replies, next_due_ms) = stream::delayed_replies(conn, keys).await?;
    let mut consumers = if exists {
        match stream::consumers(conn, keys).await {
            Ok(c) => c,
            Err(e) if stream::is_nogroup(&e) => vec![],
            Err(e) => return Err(e),
        }
    } else {
        vec![]
    };
    stream::fill_alive(conn, keys, &mut consumers).await?;
    Ok(QueueStats {
        redis: String::new(),
        stream: keys.stream(),
        shards: keys.shards(),
        length,
        lag,
        pending,
        oldest_pending_ms,
        consumers: consumers
            .into_iter()
            .map(|c| ConsumerStats {
                name: c.name,
                pending: c.pending,
                idle_ms: c.idle_ms,
                alive: c.alive,
                renewed_ms_ago: None,
            })
            .collect(),
        dead_letters,
        lanes,
        delayed_replies,
        next_due_ms,
    })
}

/// The oldest pending entry's age, from its id's timestamp.
async fn oldest_pending(conn: &mut Conn, stream: &str) -> redis::RedisResult<Option<u64>> {
    let v: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(keys::GROUP)
        .arg("-")
        .arg("+")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(v.first()
        .and_then(|(id, ..)| id.split('-').next()?.parse::<i64>().ok())
        .map(|ts| (now_ms() - ts).max(0) as u64))
}

/// Tells apart a running worker from one killed without a goodbye (SIGKILL,
/// OOM, a lost host) within about two claim periods, where the alive mark
/// alone takes ten. The worker renews the mark every `claim_idle` with a
/// lifetime of ten periods, so its remaining lifetime says when it was last
/// renewed. `claim_idle` is this command's `WORKER_CLAIM_IDLE_MS`: run it
/// with the workers' environment.
pub async fn apply_liveness(
    conn: &mut Conn,
    keys: &Keys,
    s: &mut QueueStats,
    claim_idle: Duration,
) -> redis::RedisResult<()> {
    if s.consumers.is_empty() {
        return Ok(());
    }
    let mut p = redis::pipe();
    for c in &s.consumers {
        p.cmd("PTTL").arg(keys.alive(&c.name));
    }
    let ttls: Vec<i64> = p.query_async(conn).await?;
    for (c, ttl) in s.consumers.iter_mut().zip(ttls) {
        (c.alive, c.renewed_ms_ago) = liveness(ttl, claim_idle);
    }
    Ok(())
}

/// Missed renewals after which a worker is reported gone: one period of
/// slack for a slow reclaim pass or a Redis blip.
const GONE_AFTER_PERIODS: u32 = 2;

/// `(alive, ms since the last renewal)` from the alive mark's remaining
/// lifetime (`PTTL`: -2 missing, -1 no expiry).
fn liveness(pttl_ms: i64, claim_idle: Duration) -> (bool, Option<u64>) {
    let full = (claim_idle * crate::consumer::DEAD_AFTER_PERIODS).as_millis() as u64;
    let gone_after = (claim_idle * GONE_AFTER_PERIODS).as_millis() as u64;
    match pttl_ms {
        -1 => (true, None),
        t if t < 0 => (false, None),
        t => {
            let ago = full.saturating_sub(t as u64);
            (ago <= gone_after, Some(ago))
        }
    }
}

pub fn render_stats(s: &QueueStats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Redis:         {}", s.redis);
    let _ = writeln!(out, "Stream:        {}", s.stream);
    let _ = writeln!(out, "Length:        {}", s.length);
    let _ = writeln!(out, "Lag:           {} (not yet delivered)", s.lag);
    let _ = writeln!(
        out,
        "Pending:       {} (delivered, not acknowledged)",
        s.pending
    );
    match s.oldest_pending_ms {
        Some(ms) => {
            let _ = writeln!(out, "Oldest pending: {} old", human::duration_ms(ms));
        }
        None => {
            let _ = writeln!(out, "Oldest pending: -");
        }
    }
    let _ = writeln!(out, "Dead letters:  {}", s.dead_letters);
    for l in &s.lanes {
        let name = match l.shard {
            Some(k) => format!("{} {k}", l.lane),
            None => l.lane.to_owned(),
        };
        let _ = writeln!(
            out,
            "Lane {:<9} {} entries ({} not yet delivered, {} in flight), oldest {}",
            name,
            l.length,
            l.lag,
            l.pending,
            if l.length == 0 {
                "-".to_owned()
            } else {
                format!("{} old", human::duration_ms(l.oldest_ms))
            },
        );
    }
    match s.next_due_ms {
        Some(due) => {
            let _ = writeln!(
                out,
                "Delayed:       {} replies waiting out a 429, next due {} ({})",
                s.delayed_replies,
                match due - now_ms() {
                    d if d > 0 => format!("in {}", human::duration_ms(d as u64)),
                    _ => "now".to_owned(),
                },
                human::utc_ms(due),
            );
        }
        None => {
            let _ = writeln!(out, "Delayed:       0 replies");
        }
    }
    let _ = writeln!(out, "Consumers:     {}", s.consumers.len());
    for c in &s.consumers {
        let state = match (c.alive, c.renewed_ms_ago) {
            (true, _) => "running".to_owned(),
            (false, Some(ago)) => format!("gone (last seen {} ago)", human::duration_ms(ago)),
            (false, None) => "gone".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<48} pending {:>6}  idle {:<12}  {state}",
            c.name,
            c.pending,
            human::duration_ms(c.idle_ms),
        );
    }
    out
}

/// Every shard's dead letters, oldest first within each shard.
pub async fn dead(conn: &mut Conn, keys: &Keys) -> redis::RedisResult<Vec<DeadLetter>> {
    let mut all = Vec::new();
    for s in 0..keys.shards() {
        let v: Value = redis::cmd("XRANGE")
            .arg(keys.shard(s).dead())
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await?;
        all.extend(entries(&v));
    }
    Ok(all
        .into_iter()
        .map(|(_, m)| DeadLetter {
            id: m.get("id").and_then(value_string).unwrap_or_default(),
            update_id: m.get("update_id").and_then(value_i64),
            error: m.get("error").and_then(value_string).unwrap_or_default(),
            deliveries: m.get("deliveries").and_then(value_u64).unwrap_or(0),
            failed_at: m.get("failed_at").and_then(value_i64).unwrap_or(0),
        })
        .collect())
}

pub fn render_dead(list: &[DeadLetter]) -> String {
    if list.is_empty() {
        return "No dead letters.\n".into();
    }
    let mut out = String::new();
    for d in list {
        let uid = d
            .update_id
            .map(|u| u.to_string())
            .unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "{}  update_id {}  deliveries {}  failed at {}\n    {}",
            d.id,
            uid,
            d.deliveries,
            human::utc_ms(d.failed_at),
            d.error
        );
    }
    out
}

#[derive(Debug, Serialize, Default)]
pub struct ReplayReport {
    pub replayed: u64,
    /// Dead letters with no update body (unreadable entries): kept.
    pub kept: u64,
}

/// Puts every dead letter back on the stream, one at a time and
/// atomically (`shared/src/queue/lua/replay_dead.lua`), so an interrupted
/// replay loses or doubles nothing.
pub async fn replay_dead(conn: &mut Conn, keys: &Keys) -> redis::RedisResult<ReplayReport> {
    let mut report = ReplayReport::default();
    for s in 0..keys.shards() {
        replay_home(conn, &keys.shard(s), s, &mut report).await?;
    }
    Ok(report)
}

/// A shard's dead letters go back to that shard's stream (their chats
/// live there).
async fn replay_home(
    conn: &mut Conn,
    keys: &Keys,
    shard: u16,
    report: &mut ReplayReport,
) -> redis::RedisResult<()> {
    let v: Value = redis::cmd("XRANGE")
        .arg(keys.dead())
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await?;
    for (dead_id, fields) in entries(&v) {
        let key = fields.get("key").and_then(value_string).unwrap_or_default();
        let update = match fields.get("update") {
            Some(Value::BulkString(b)) => b.clone(),
            _ => Vec::new(),
        };
        let mut inv = scripts().replay_dead.prepare_invoke();
        inv.key(keys.stream())
            .key(keys.dead())
            .key(keys.order(&key))
            .key(keys.replies())
            .key(keys.replies_due())
            .arg(&dead_id)
            .arg(&key)
            .arg(shared::queue::id_tag(Lane::Ordinary, shard));
        NewEntry {
            update_id: fields.get("update_id").and_then(value_i64),
            received_at_ms: now_ms(),
            key: &key,
            update: &update,
        }
        .push_fields(&mut inv);
        match inv.invoke_async::<i64>(conn).await? {
            1 => report.replayed += 1,
            -1 => report.kept += 1,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_that_missed_two_renewals_reads_gone() {
        let claim = Duration::from_secs(30);
        // Lives 300 s; renewed 10 s ago.
        assert_eq!(liveness(290_000, claim), (true, Some(10_000)));
        assert_eq!(liveness(240_000, claim), (true, Some(60_000)));
        assert_eq!(liveness(239_000, claim), (false, Some(61_000)));
        assert_eq!(liveness(-2, claim), (false, None), "expired");
        assert_eq!(liveness(-1, claim), (true, None), "no expiry: trust it");
    }

    #[test]
    fn human_output_speaks_human() {
        let s = QueueStats {
            redis: "redis://:***@10.0.0.5:6379".into(),
            stream: "s".into(),
            length: 3,
            lag: 1,
            pending: 2,
            oldest_pending_ms: Some(3_240),
            consumers: vec![
                ConsumerStats {
                    name: "w-1".into(),
                    pending: 2,
                    idle_ms: 620_547,
                    alive: true,
                    renewed_ms_ago: Some(5_000),
                },
                ConsumerStats {
                    name: "w-2".into(),
                    pending: 0,
                    idle_ms: 75_000,
                    alive: false,
                    renewed_ms_ago: Some(75_000),
                },
            ],
            dead_letters: 0,
            shards: 1,
            lanes: vec![LaneStats {
                lane: "fast",
                shard: None,
                stream: "s:fast".into(),
                length: 2,
                lag: 2,
                pending: 0,
                oldest_ms: 1_500,
            }],
            delayed_replies: 1,
            next_due_ms: Some(now_ms() + 3_030_000),
        };
        let out = render_stats(&s);
        assert!(
            out.contains(
                "Lane fast      2 entries (2 not yet delivered, 0 in flight), oldest 1.5 s old"
            ),
            "{out}"
        );
        assert!(
            out.contains("Delayed:       1 replies waiting out a 429, next due in 50 min"),
            "{out}"
        );
        assert!(
            out.contains("Redis:         redis://:***@10.0.0.5:6379"),
            "{out}"
        );
        assert!(out.contains("Oldest pending: 3.2 s old"), "{out}");
        assert!(out.contains("idle 10 min 20 s "), "{out}");
        assert!(out.contains("gone (last seen 1 min 15 s ago)"), "{out}");

        let d = render_dead(&[DeadLetter {
            id: "1-0".into(),
            update_id: Some(7),
            error: "Bot API sendMessage failed: 400 Bad Request".into(),
            deliveries: 1,
            failed_at: 1_718_000_000_000,
        }]);
        assert!(d.contains("failed at 2024-06-10T06:13:20Z"), "{d}");
    }
}
