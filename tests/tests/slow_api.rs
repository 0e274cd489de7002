//! A slow or flaky Bot API must not multiply replies. Telegram has no
//! idempotency key for sends, and a send whose answer was lost may or may
//! not have been delivered; the worker waits out a slow answer (up to 60 s)
//! and never resends one whose outcome is unknown. Bound: at most one copy
//! of a reply per update (a worker dying mid-send aside).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::harness::{eventually, free_port, http_get};
use e2e::stack::{queue_state, Stack};
use e2e::updates::{next_update_id, private_command};
use shared::keys;

async fn dead_letters(s: &Stack) -> u64 {
    let mut c = s.redis_conn().await;
    redis::cmd("XLEN")
        .arg(keys::Keys::default().dead())
        .query_async(&mut c)
        .await
        .unwrap_or(0)
}

/// Copies each chat received (sendMessage calls the fake carried out,
/// whether or not the worker got their answer).
fn copies(s: &Stack) -> HashMap<i64, usize> {
    let mut m = HashMap::new();
    for p in s.api.sent_messages() {
        if let Some(c) = p["chat_id"].as_i64() {
            *m.entry(c).or_insert(0) += 1;
        }
    }
    m
}

async fn metric(port: u16, name: &str) -> f64 {
    let text = http_get(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// Telegram takes 30 s to answer every send (the message itself goes out
/// at once). Before: the 20 s client timeout fired, the send was retried
/// as if never sent - 3 tries per delivery, times the deliveries - and each
/// user got several copies. Now the answer is waited out: one copy each.
#[tokio::test(flavor = "multi_thread")]
async fn a_bot_api_taking_30s_per_send_gives_each_user_one_copy() {
    let port = free_port();
    let Some(s) = Stack::builder()
        .worker_env("METRICS_PORT", &port.to_string())
        .start()
        .await
    else {
        return;
    };
    let stall = Duration::from_secs(30);
    s.api.slow_send_answers(stall);
    let users: Vec<i64> = (0..8).map(|i| 560_000 + i).collect();
    let started = Instant::now();
    for &u in &users {
        s.post_ok(&private_command(
            next_update_id(),
            u,
            "Slow",
            Some("en"),
            "/help",
        ))
        .await;
    }
    // Until every update ended, or some user already has a second copy
    // (the old behaviour shows within one client timeout).
    let url = s.redis.url();
    let settled = eventually(Duration::from_secs(120), || async {
        copies(&s).values().any(|&n| n > 1) || queue_state(&url).await.is_some_and(|q| q.drained())
    })
    .await;
    let elapsed = started.elapsed();
    let got = copies(&s);
    let max = got.values().copied().max().unwrap_or(0);
    let total: usize = got.values().sum();
    let replied = metric(port, "worker_updates_handled_total{outcome=\"replied\"}").await;
    let unknown = metric(port, "worker_bot_api_sends_unknown_total").await;
    println!(
        "slow API ({stall:?} per send), {} users in parallel: {total} copies, at most {max} per user, \
         {replied} replied, {unknown} sends with unknown outcome, settled after {elapsed:.1?}",
        users.len()
    );
    assert!(settled, "not settled within 120 s\n{}", s.logs_tail());
    for u in &users {
        assert_eq!(got.get(u), Some(&1), "user {u}: {got:?}\n{}", s.logs_tail());
    }
    assert_eq!(replied, users.len() as f64, "each send waited out");
    assert_eq!(dead_letters(&s).await, 0);
    s.assert_clean();
}

/// The answer to a send is cut mid-way (the message went out; the worker
/// cannot know). Before: retried 3 times per delivery and redelivered - a
/// copy each time. Now: one copy, the update ends with outcome "unknown",
/// logged at warn and counted; a neighbour chat is answered normally.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_whose_answer_is_lost_is_not_resent() {
    let port = free_port();
    let Some(s) = Stack::builder()
        .worker_env("METRICS_PORT", &port.to_string())
        .worker_env("WORKER_MAX_DELIVERIES", "3")
        .worker_env("WORKER_CLAIM_IDLE_MS", "500")
        .start()
        .await
    else {
        return;
    };
    let (lost, fine) = (561_001, 561_002);
    s.api.cut_send_answers(lost);
    for chat in [lost, fine] {
        s.post_ok(&private_command(
            next_update_id(),
            chat,
            "Cut",
            Some("en"),
            "/help",
        ))
        .await;
    }
    s.wait_drained(Duration::from_secs(60)).await;
    let got = copies(&s);
    let unknown = metric(port, "worker_bot_api_sends_unknown_total").await;
    let ended_unknown = metric(port, "worker_updates_handled_total{outcome=\"unknown\"}").await;
    let dead = dead_letters(&s).await;
    println!(
        "answer cut after sending: {} copies to that user ({} to the neighbour), \
         {unknown} sends with unknown outcome, {ended_unknown} updates ended 'unknown', {dead} dead letters",
        got.get(&lost).copied().unwrap_or(0),
        got.get(&fine).copied().unwrap_or(0),
    );
    assert_eq!(
        got.get(&lost),
        Some(&1),
        "not resent: {got:?}\n{}",
        s.logs_tail()
    );
    assert_eq!(got.get(&fine), Some(&1), "{got:?}");
    assert_eq!(unknown, 1.0);
    assert_eq!(ended_unknown, 1.0, "ended as handled, outcome unknown");
    assert_eq!(dead, 0, "an unknown outcome is not a failure to redeliver");
    let logs = s.all_logs();
    let unknown_line = logs
        .lines()
        .find(|l| l.contains("outcome unknown") && l.contains(&lost.to_string()))
        .unwrap_or_else(|| panic!("no warn line for the unknown outcome\n{}", s.logs_tail()));
    assert!(unknown_line.contains("WARN"), "{unknown_line}");
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("command answered") && l.contains(&lost.to_string())),
        "an unconfirmed reply is not logged as answered"
    );
    s.assert_clean();
}
