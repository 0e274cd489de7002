//! The Bot API misbehaving: 429 honoured and not counted as a failure, 5xx
//! retried, 400/403 end the update, persistent failures dead-lettered with
//! a reason and replayable, an update that wedges or kills every worker
//! that takes it dead-lettered too (SPEC.md "Worker behaviour", "Operator
//! commands").

use std::collections::HashMap;
use std::time::Duration;

use e2e::stack::{json_i64, Stack};
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

fn per_chat(s: &Stack) -> HashMap<i64, usize> {
    let mut m = HashMap::new();
    for p in s.api.sent_messages() {
        if let Some(c) = p["chat_id"].as_i64() {
            *m.entry(c).or_insert(0) += 1;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_are_honoured_and_not_failures() {
    // One delivery allowed: if a 429 counted as a failed delivery, the
    // update would be dead-lettered.
    let Some(s) = Stack::builder()
        .worker_env("WORKER_MAX_DELIVERIES", "1")
        .start()
        .await
    else {
        return;
    };
    s.api.rate_limit_every(3, 2);
    let users: Vec<i64> = (0..15).map(|i| 510_000 + i).collect();
    for u in &users {
        s.post_ok(&private_command(
            next_update_id(),
            *u,
            "Rate",
            Some("en"),
            "/start",
        ))
        .await;
    }
    let ok = s
        .api
        .wait_for_sent(users.len(), Duration::from_secs(90))
        .await;
    assert!(
        ok,
        "{} of {} answered under 429s\n{}",
        s.api.sent_count(),
        users.len(),
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(30)).await;
    assert!(
        !s.api.rate_limit_windows().is_empty(),
        "the fake did answer 429s"
    );
    let early = s.api.early_retries();
    assert!(
        early.is_empty(),
        "{} sendMessage call(s) came before retry_after had passed, e.g. {:?} too early",
        early.len(),
        early.first().map(|e| e.early_by())
    );
    let counts = per_chat(&s);
    for u in &users {
        assert_eq!(counts.get(u), Some(&1), "user {u}");
    }
    assert_eq!(dead_letters(&s).await, 0, "a 429 is not a failure");
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried() {
    let Some(s) = Stack::start().await else {
        return;
    };
    s.api.server_errors_every(2, 502);
    let users: Vec<i64> = (0..10).map(|i| 520_000 + i).collect();
    for u in &users {
        s.post_ok(&private_command(
            next_update_id(),
            *u,
            "Retry",
            Some("en"),
            "/start",
        ))
        .await;
    }
    let ok = s
        .api
        .wait_for_sent(users.len(), Duration::from_secs(90))
        .await;
    assert!(
        ok,
        "{} of {} answered while every 2nd call got 502\n{}",
        s.api.sent_count(),
        users.len(),
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(60)).await;
    let counts = per_chat(&s);
    for u in &users {
        assert_eq!(counts.get(u), Some(&1), "user {u}");
    }
    assert_eq!(dead_letters(&s).await, 0);
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn blocked_and_missing_chats_end_the_update() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let (blocked, missing, fine) = (530_001, 530_002, 530_003);
    s.api.block_chat(blocked);
    s.api.chat_not_found(missing);
    for u in [blocked, missing, fine] {
        s.post_ok(&private_command(
            next_update_id(),
            u,
            "Gone",
            Some("en"),
            "/start",
        ))
        .await;
    }
    s.wait_nth_reply(fine, 1, Duration::from_secs(20)).await;
    s.wait_drained(Duration::from_secs(30)).await;
    for chat in [blocked, missing] {
        let attempts = s
            .api
            .calls_to("sendMessage")
            .iter()
            .filter(|c| c.chat_id() == Some(chat))
            .count();
        assert_eq!(
            attempts, 1,
            "chat {chat}: a 400/403 is final, not retried ({attempts} attempts)"
        );
    }
    assert_eq!(
        dead_letters(&s).await,
        0,
        "400/403 end the update as handled"
    );
    let logs = s.all_logs();
    assert!(
        logs.contains("blocked") || logs.contains("403"),
        "the reason is logged"
    );
    // "command answered" means the user got the reply: only for `fine`.
    let lines = |needle: &str, chat: i64| {
        logs.lines()
            .filter(|l| l.contains(needle) && l.contains(&format!("chat_id={chat}")))
            .count()
    };
    let answered: Vec<usize> = [blocked, missing, fine]
        .iter()
        .map(|&c| lines("command answered", c))
        .collect();
    println!("'command answered' lines for blocked/missing/fine chats: {answered:?}");
    assert_eq!(answered, [0, 0, 1], "refused replies are not 'answered'");
    for chat in [blocked, missing] {
        assert_eq!(
            lines("reply refused", chat),
            1,
            "chat {chat}: the refusal is logged"
        );
    }
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_failures_are_dead_lettered_and_replayable() {
    let Some(s) = Stack::builder()
        .worker_env("WORKER_MAX_DELIVERIES", "2")
        .worker_env("WORKER_CLAIM_IDLE_MS", "500")
        .start()
        .await
    else {
        return;
    };
    s.api.server_errors_every(1, 500);
    let uid = 540_001;
    let u = private_command(next_update_id(), uid, "Dead", Some("en"), "/start");
    s.post_ok(&u).await;

    let redis_url = s.redis.url();
    let ok = e2e::harness::eventually(Duration::from_secs(120), || {
        let url = redis_url.clone();
        async move {
            let Ok(c) = redis::Client::open(url) else {
                return false;
            };
            let Ok(mut c) = c.get_multiplexed_async_connection().await else {
                return false;
            };
            redis::cmd("XLEN")
                .arg(keys::Keys::default().dead())
                .query_async::<u64>(&mut c)
                .await
                .is_ok_and(|n| n == 1)
        }
    })
    .await;
    assert!(
        ok,
        "an update failing every time ends in the dead letters\n{}",
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(30)).await;
    assert!(s.api.sent_messages().is_empty());

    let dead = s.queue_dead().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    for f in ["id", "update_id", "error", "deliveries", "failed_at"] {
        assert!(d.get(f).is_some(), "dead letter field {f}: {d}");
    }
    assert_eq!(json_i64(&d["update_id"]), u["update_id"].as_i64(), "{d}");
    assert!(
        d["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the reason is kept: {d}"
    );

    // The Bot API recovers; the operator replays; the user gets the reply.
    s.api.clear_faults();
    let (st, out, err) = s.worker_command(&["queue", "replay-dead"]).await;
    assert!(st.success(), "queue replay-dead: {st}\n{out}\n{err}");
    let r = s.wait_nth_reply(uid, 1, Duration::from_secs(30)).await;
    assert!(r.shown_text().contains("Dead"), "{:?}", r.shown_text());
    s.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(s.api.sent_count(), 1);
    s.assert_clean();
}

/// Poison of the kind no error handling sees: the update wedges (or kills)
/// the worker handling it, every time. Each worker is killed while stuck
/// on it; the next one reclaims it; once it has been delivered more than
/// `WORKER_MAX_DELIVERIES` times without ever finishing, it goes to the
/// dead letters with that reason - and its chat's later update, and every
/// other chat, are answered meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_that_kills_its_worker_every_time_is_dead_lettered() {
    let Some(mut s) = Stack::builder()
        .worker_env("WORKER_MAX_DELIVERIES", "2")
        .worker_env("WORKER_CLAIM_IDLE_MS", "300")
        .start()
        .await
    else {
        return;
    };
    let poison_chat = 545_000;
    s.api.stall_chat(poison_chat);
    let poison = private_command(next_update_id(), poison_chat, "Wedge", Some("en"), "/help");
    let poison_id = poison["update_id"].as_i64().expect("update_id");
    s.post_ok(&poison).await;
    let others: Vec<i64> = (1..=10).map(|i| poison_chat + i).collect();
    for &chat in &others {
        s.post_ok(&private_command(
            next_update_id(),
            chat,
            "Fine",
            Some("en"),
            "/help",
        ))
        .await;
    }

    // Kill whichever worker is stuck on the poison, start the next, until
    // the poison is dead-lettered. Two deliveries are allowed, so the third
    // worker must dead-letter it without handling it: two kills.
    let mut kills = 0;
    while dead_letters(&s).await == 0 {
        assert!(
            kills < 4,
            "still not dead-lettered after {kills} kills\n{}",
            s.logs_tail()
        );
        // The current worker (the kills-th replacement) is stuck once it
        // made the kills+1-th hung call.
        let stuck = e2e::harness::eventually(Duration::from_secs(15), || async {
            s.api.stalled_calls() > kills || dead_letters(&s).await > 0
        })
        .await;
        assert!(stuck, "no worker took the poison\n{}", s.logs_tail());
        if dead_letters(&s).await > 0 {
            break;
        }
        // Only the poison is in flight when the worker dies: the other
        // chats were answered and finished first (no duplicate replies to
        // explain away).
        let others_done = e2e::harness::eventually(Duration::from_secs(30), || async {
            let sent = per_chat(&s);
            let state = e2e::stack::queue_state(&s.redis.url()).await;
            others.iter().all(|c| sent.contains_key(c))
                // The poison in flight: a pending entry, or (once handled)
                // its reply kept until sent.
                && state.is_some_and(|q| q.length + q.kept == 1 && q.pending + q.kept == 1)
        })
        .await;
        assert!(others_done, "the other chats flow\n{}", s.logs_tail());
        let last = s.workers.len() - 1;
        assert!(s.workers[last].kill().await.is_some());
        kills += 1;
        s.spawn_worker(&[]);
    }
    assert_eq!(kills, 2, "dead-lettered after exactly two deaths");
    assert_eq!(
        s.api.stalled_calls(),
        2,
        "one hung call per delivery\n{}",
        s.logs_tail()
    );

    // Where every update went: the poison in the dead letters with the
    // reason, every other chat answered once, nothing left in the stream.
    s.wait_drained(Duration::from_secs(60)).await;
    let sent = per_chat(&s);
    for chat in &others {
        assert_eq!(sent.get(chat), Some(&1), "chat {chat}: {sent:?}");
    }
    assert_eq!(sent.get(&poison_chat), None);

    let dead = s.queue_dead().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(json_i64(&d["update_id"]), Some(poison_id), "{d}");
    let error = d["error"].as_str().unwrap_or("");
    assert!(error.contains("without finishing"), "{d}");
    let last = s.workers.len() - 1;
    assert!(
        s.workers[last].has_exited().is_none(),
        "the worker that dead-lettered it runs on"
    );
    s.assert_clean();
}

/// Redis restarted without its data (no AOF, or an operator's FLUSHALL):
/// what it held is gone - the ingress warned about exactly this at start -
/// but the system must not stay broken. The workers find the consumer
/// group missing, recreate it and rejoin; updates accepted afterwards are
/// answered, with nobody restarted.
#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_empty_the_workers_recreate_the_group_and_go_on() {
    let Some(mut s) = Stack::builder()
        .workers(2)
        .worker_env("WORKER_CLAIM_IDLE_MS", "500")
        .start()
        .await
    else {
        return;
    };
    let before = 548_000;
    s.post_ok(&private_command(
        next_update_id(),
        before,
        "Before",
        Some("en"),
        "/help",
    ))
    .await;
    s.wait_nth_reply(before, 1, Duration::from_secs(30)).await;
    s.wait_drained(Duration::from_secs(30)).await;

    // Stopped and started on the same port: no AOF, nothing kept.
    s.redis.restart().await;
    {
        let mut c = s.redis_conn().await;
        let n: u64 = redis::cmd("DBSIZE")
            .query_async(&mut c)
            .await
            .expect("DBSIZE");
        assert_eq!(n, 0, "Redis came back empty");
    }

    // The ingress's connection broke with the restart; its first store
    // retries on the new connection instead of answering 503 (which would
    // hold the chat back for Telegram's retry delay).
    let first = before + 1;
    s.post_ok(&private_command(
        next_update_id(),
        first,
        "First",
        Some("en"),
        "/help",
    ))
    .await;
    // The rest posted as Telegram does: whatever is not answered 200 is
    // sent again.
    let after: Vec<i64> = (2..=5).map(|i| before + i).collect();
    let updates = after
        .iter()
        .map(|&chat| private_command(next_update_id(), chat, "After", Some("en"), "/help"))
        .collect();
    e2e::accounting::post_all_until_accepted(
        s.webhook_url(),
        updates,
        1,
        Duration::from_secs(60),
        Default::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail()));
    for &chat in std::iter::once(&first).chain(&after) {
        s.wait_nth_reply(chat, 1, Duration::from_secs(60)).await;
    }
    s.wait_drained(Duration::from_secs(30)).await;
    let sent = per_chat(&s);
    for chat in [before, first].iter().chain(&after) {
        assert_eq!(sent.get(chat), Some(&1), "chat {chat}: {sent:?}");
    }
    // Both workers are back in the group, and still the same processes.
    let names = e2e::accounting::consumers(&s.redis.url()).await;
    for w in s.workers.iter_mut() {
        assert!(w.has_exited().is_none(), "worker exited\n{}", w.logs_tail());
        let pid = w.pid();
        let joined = e2e::harness::eventually(Duration::from_secs(30), || async {
            e2e::accounting::consumer_of_pid(&e2e::accounting::consumers(&s.redis.url()).await, pid)
                .is_some()
        })
        .await;
        assert!(joined, "worker {pid} rejoined the group: {names:?}");
    }
    let recreated = s
        .workers
        .iter()
        .any(|w| w.logs().contains("consumer group missing; recreating it"));
    assert!(recreated, "{}", s.logs_tail());
    s.assert_clean();
}
