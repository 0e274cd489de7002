//! Several workers on one stream: every update answered exactly once;
//! crashed workers' entries reclaimed; graceful shutdown loses nothing
//! (SPEC.md "Worker behaviour").

use std::collections::HashMap;
use std::time::Duration;

use e2e::stack::Stack;
use e2e::updates::{group_command, message_id, next_update_id, private_command, supergroup_id};
use futures::StreamExt;
use serde_json::Value;
use shared::keys;

/// Posts all updates with some concurrency, requiring 200 for each.
async fn post_all(s: &Stack, updates: &[Value]) {
    let results: Vec<u16> = futures::stream::iter(updates.iter())
        .map(|u| async move { s.post(u).await.status })
        .buffer_unordered(32)
        .collect()
        .await;
    let bad: Vec<&u16> = results.iter().filter(|st| **st != 200).collect();
    assert!(
        bad.is_empty(),
        "non-200 answers: {bad:?}\n{}",
        s.logs_tail()
    );
}

async fn dead_letters(s: &Stack) -> u64 {
    let mut c = s.redis_conn().await;
    redis::cmd("XLEN")
        .arg(keys::Keys::default().dead())
        .query_async(&mut c)
        .await
        .unwrap_or(0)
}

/// Successful sends per chat.
fn per_chat(s: &Stack) -> HashMap<i64, usize> {
    let mut m = HashMap::new();
    for p in s.api.sent_messages() {
        if let Some(c) = p["chat_id"].as_i64() {
            *m.entry(c).or_insert(0) += 1;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_answer_every_update_exactly_once() {
    let Some(s) = Stack::builder().workers(2).start().await else {
        return;
    };
    // 500 private /start from 500 users, 500 group /help in 10 groups.
    let users: Vec<i64> = (0..500).map(|i| 400_000 + i).collect();
    let groups: Vec<i64> = (0..10).map(|g| supergroup_id(400_100 + g)).collect();
    let mut updates = Vec::new();
    for (i, uid) in users.iter().enumerate() {
        let lang = if i % 3 == 0 { Some("ru") } else { Some("en") };
        updates.push(private_command(
            next_update_id(),
            *uid,
            &format!("User{i}"),
            lang,
            "/start",
        ));
    }
    let mut group_cmds = HashMap::new();
    for i in 0..500 {
        let chat = groups[i % groups.len()];
        let u = group_command(
            next_update_id(),
            chat,
            410_000 + i as i64,
            "Grouper",
            Some("en"),
            "/help",
        );
        group_cmds.insert(message_id(&u), chat);
        updates.push(u);
    }
    post_all(&s, &updates).await;

    let ok = s
        .api
        .wait_for_sent(updates.len(), Duration::from_secs(120))
        .await;
    assert!(
        ok,
        "{} of {} updates answered\n{}",
        s.api.sent_count(),
        updates.len(),
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(30)).await;

    let counts = per_chat(&s);
    for (i, uid) in users.iter().enumerate() {
        assert_eq!(
            counts.get(uid).copied().unwrap_or(0),
            1,
            "user {uid} (User{i}) got {} replies",
            counts.get(uid).copied().unwrap_or(0)
        );
    }
    // Each group command is quoted by exactly one reply.
    let mut quoted: HashMap<i64, usize> = HashMap::new();
    for p in s.api.sent_messages() {
        if p["chat_id"].as_i64().is_some_and(|c| c < 0) {
            let mid = p["reply_parameters"]["message_id"]
                .as_i64()
                .unwrap_or_else(|| panic!("group reply without reply_parameters: {p}"));
            *quoted.entry(mid).or_insert(0) += 1;
        }
    }
    for (mid, chat) in &group_cmds {
        assert_eq!(
            quoted.get(mid).copied().unwrap_or(0),
            1,
            "group {chat} command message {mid}"
        );
    }
    assert_eq!(s.api.sent_count(), updates.len(), "no extra messages");
    assert_eq!(dead_letters(&s).await, 0);
    for (i, w) in s.workers.iter().enumerate() {
        assert!(w.logs().lines().count() > 0, "worker {i} logged nothing");
    }
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_workers_entries_are_reclaimed() {
    let Some(mut s) = Stack::builder()
        .workers(2)
        .worker_env("WORKER_CLAIM_IDLE_MS", "1000")
        .worker_env("WORKER_CONCURRENCY", "4")
        .start()
        .await
    else {
        return;
    };
    // Slow sends keep entries in flight when the worker dies.
    s.api.set_delay(Duration::from_millis(100));
    let users: Vec<i64> = (0..120).map(|i| 420_000 + i).collect();
    let updates: Vec<Value> = users
        .iter()
        .map(|u| private_command(next_update_id(), *u, "Reclaim", Some("en"), "/start"))
        .collect();
    post_all(&s, &updates).await;
    assert!(
        s.api.wait_for_sent(20, Duration::from_secs(60)).await,
        "no progress\n{}",
        s.logs_tail()
    );
    let killed = s.workers[0].kill().await;
    assert!(killed.is_some());

    let ok = s
        .api
        .wait_for(Duration::from_secs(120), |calls| {
            let mut answered = std::collections::HashSet::new();
            for c in calls.iter().filter(|c| c.ok() && c.method == "sendMessage") {
                if let Some(id) = c.chat_id() {
                    answered.insert(id);
                }
            }
            users.iter().all(|u| answered.contains(u))
        })
        .await;
    assert!(
        ok,
        "after a worker was killed, {} of {} users were answered: its entries must be reclaimed\n{}",
        per_chat(&s).len(),
        users.len(),
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(60)).await;
    let counts = per_chat(&s);
    let dups: usize = counts.values().map(|n| n - 1).sum();
    // At-least-once: only what the dead worker had in flight (at most its
    // concurrency) may have been sent twice.
    assert!(
        dups <= 4,
        "{dups} duplicate replies; at most the killed worker's 4 in-flight updates may repeat"
    );
    assert_eq!(dead_letters(&s).await, 0);
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_work_and_exits_zero() {
    let Some(mut s) = Stack::builder()
        .workers(1)
        .worker_env("WORKER_CONCURRENCY", "4")
        .start()
        .await
    else {
        return;
    };
    s.api.set_delay(Duration::from_millis(300));
    let users: Vec<i64> = (0..24).map(|i| 430_000 + i).collect();
    let updates: Vec<Value> = users
        .iter()
        .map(|u| private_command(next_update_id(), *u, "Term", Some("en"), "/start"))
        .collect();
    post_all(&s, &updates).await;
    assert!(
        s.api.wait_for_sent(1, Duration::from_secs(30)).await,
        "no progress\n{}",
        s.logs_tail()
    );
    s.workers[0].terminate();
    let st = s.workers[0].wait_exit(Duration::from_secs(30)).await;
    assert!(
        st.success(),
        "SIGTERM: exit 0 after finishing in-flight work, got {st}\n{}",
        s.workers[0].logs_tail()
    );
    let sent_by_first = s.api.sent_count();
    assert!(
        sent_by_first < users.len(),
        "the first worker should not have had time to do everything"
    );
    // Nothing it took may be left pending: in-flight work was finished.
    let state = e2e::stack::queue_state(&s.redis.url()).await.unwrap();
    assert_eq!(
        state.pending, 0,
        "SIGTERM must finish (or hand back) everything the worker took: entries left pending by a graceful stop wait WORKER_CLAIM_IDLE_MS for another worker to reclaim them, on every deploy. {state:?}\n{}",
        s.workers[0].logs_tail()
    );

    s.api.set_delay(Duration::ZERO);
    s.spawn_worker(&[]);
    assert!(
        s.api
            .wait_for_sent(users.len(), Duration::from_secs(60))
            .await,
        "the next worker answers the rest\n{}",
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(30)).await;
    let counts = per_chat(&s);
    for u in &users {
        assert_eq!(counts.get(u), Some(&1), "user {u}");
    }
    s.assert_clean();
}
