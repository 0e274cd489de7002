//! Two bots on one Redis (SPEC.md, `REDIS_KEY_PREFIX`): each complete
//! stack - ingress, worker, its own token and fake Bot API - keeps to its
//! own prefix, so neither sees the other's queue, dedupe marks, users,
//! counters or locks.

use std::time::Duration;

use e2e::stack::Stack;
use e2e::updates::{next_update_id, private_command};
use e2e::RedisServer;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// The second bot's token (the first uses [`e2e::TOKEN`]).
const B_TOKEN: &str = "987654321:BBF_second-bot-DO-NOT-LEAK_abc";

/// Every key in Redis, as `redis-cli --scan` lists them.
async fn all_keys(redis: &RedisServer) -> Vec<String> {
    let mut c = redis.conn().await;
    let mut cursor = 0u64;
    let mut out = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .expect("SCAN");
        out.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    out.sort();
    out
}

/// `worker queue stats --json` with the stack's own environment.
async fn queue_stats(s: &Stack) -> Value {
    let (st, out, err) = s.worker_command(&["queue", "stats", "--json"]).await;
    assert!(st.success(), "queue stats --json: {st}\n{out}\n{err}");
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("queue stats --json prints JSON ({e}):\n{out}\n{err}"))
}

async fn users_total(redis: &RedisServer, s: &Stack) -> u64 {
    let mut c = redis.conn().await;
    redis::cmd("ZCARD")
        .arg(s.keys.users_first_seen())
        .query_async(&mut c)
        .await
        .expect("ZCARD")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_bots_share_one_redis_without_crossing() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let a = Stack::builder()
        .shared_redis(&redis)
        .key_prefix("a:")
        .start()
        .await
        .expect("stack a");
    let b = Stack::builder()
        .shared_redis(&redis)
        .key_prefix("b:")
        .token(B_TOKEN)
        .start()
        .await
        .expect("stack b");

    // The same update ids reach both bots (each bot's Telegram numbers its
    // own updates, so they do collide): a shared dedupe mark would answer
    // the second bot's updates as resends and never handle them.
    let a_users = [361_001, 361_002, 361_003];
    let b_users = [362_001, 362_002];
    let ids: Vec<i64> = (0..a_users.len()).map(|_| next_update_id()).collect();
    for (id, uid) in ids.iter().zip(a_users) {
        a.post_ok(&private_command(*id, uid, "Ann", Some("en"), "/start"))
            .await;
    }
    for (id, uid) in ids.iter().zip(b_users) {
        b.post_ok(&private_command(*id, uid, "Bob", Some("en"), "/start"))
            .await;
    }
    for uid in a_users {
        a.wait_nth_reply(uid, 1, T).await;
    }
    for uid in b_users {
        b.wait_nth_reply(uid, 1, T).await;
    }
    a.wait_drained(T).await;
    b.wait_drained(T).await;

    // Each bot answered its own users through its own API, and only them.
    let a_sent = a.api.count("sendMessage");
    let b_sent = b.api.count("sendMessage");
    println!("replies: bot a {a_sent} (of 3 updates), bot b {b_sent} (of 2 updates)");
    assert_eq!(a_sent, a_users.len(), "bot a replies once per update");
    assert_eq!(b_sent, b_users.len(), "bot b replies once per update");
    for uid in b_users {
        assert!(
            a.api.sent_to(uid).is_empty(),
            "bot a wrote to b's user {uid}"
        );
    }
    for uid in a_users {
        assert!(
            b.api.sent_to(uid).is_empty(),
            "bot b wrote to a's user {uid}"
        );
    }
    // Stats, users and locks are per bot: each registered its own webhook.
    assert_eq!(a.counter("updates_handled").await, 3);
    assert_eq!(b.counter("updates_handled").await, 2);
    assert_eq!(users_total(&redis, &a).await, 3);
    assert_eq!(users_total(&redis, &b).await, 2);
    assert!(a.api.count("setWebhook") >= 1, "bot a set its webhook");
    assert!(b.api.count("setWebhook") >= 1, "bot b set its webhook");

    // Every key in Redis belongs to one of the two bots.
    let keys = all_keys(&redis).await;
    let (in_a, in_b) = (
        keys.iter().filter(|k| k.starts_with("a:")).count(),
        keys.iter().filter(|k| k.starts_with("b:")).count(),
    );
    let other: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with("a:") && !k.starts_with("b:"))
        .collect();
    println!(
        "keys on the shared Redis: {} (a: {in_a}, b: {in_b}, other: {})",
        keys.len(),
        other.len()
    );
    println!("{keys:?}");
    assert!(other.is_empty(), "keys outside both prefixes: {other:?}");
    assert!(in_a > 0 && in_b > 0, "both bots have keys: {keys:?}");
    assert!(
        keys.contains(&"a:updates".to_owned()) && keys.contains(&"b:updates".to_owned()),
        "each bot has its stream: {keys:?}"
    );

    // The operator CLI under each prefix sees only its own queue.
    for (s, stream) in [(&a, "a:updates"), (&b, "b:updates")] {
        let v = queue_stats(s).await;
        println!("queue stats under {}: {v}", s.keys.prefix());
        assert_eq!(v["stream"], stream, "{v}");
        assert_eq!(v["length"], 0, "{v}");
        assert_eq!(v["dead_letters"], 0, "{v}");
        let consumers = v["consumers"].as_array().expect("consumers array");
        let pid = s.workers[0].pid();
        assert_eq!(consumers.len(), 1, "only its own worker: {v}");
        assert!(
            consumers[0]["name"]
                .as_str()
                .is_some_and(|n| n.contains(&format!("-{pid}-"))),
            "the consumer is this stack's worker (pid {pid}): {v}"
        );
    }
    a.assert_clean();
    b.assert_clean();
    e2e::harness::assert_secret_absent(&b.all_logs(), B_TOKEN);
}
