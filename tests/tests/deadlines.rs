//! Deadlines and waits: updates with a deadline pass a backlog, expire
//! instead of being answered late; a long 429 holds no handler slot and
//! pauses the scope it applies to - one chat, or every worker at once.
//! Against the real binaries (the shipped bot plus a payments handler,
//! `test-bot`), real Redis and the fake Bot API's flood limits.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use e2e::harness::eventually;
use e2e::stack::Stack;
use e2e::updates::{callback_query, next_update_id, private_command, user};
use shared::queue::{Intake, Lane};

const T: Duration = Duration::from_secs(60);

/// A message the bot sent earlier (what a button press points at).
fn bot_message(chat_id: i64, message_id: i64) -> Value {
    json!({
        "message_id": message_id,
        "from": {"id": 1, "is_bot": true, "first_name": "Bot", "username": "test_queue_bot"},
        "chat": {"id": chat_id, "type": "private", "first_name": "U"},
        "date": 1_700_000_000,
        "text": "stats",
    })
}

fn refresh(user_id: i64) -> Value {
    callback_query(
        next_update_id(),
        user_id,
        "U",
        Some("en"),
        &bot_message(user_id, 7),
        "stats:refresh",
    )
}

fn pre_checkout(user_id: i64) -> Value {
    let update_id = next_update_id();
    json!({
        "update_id": update_id,
        "pre_checkout_query": {
            "id": format!("pcq{update_id}"),
            "from": user(user_id, "U", Some("en")),
            "currency": "XTR",
            "total_amount": 5,
            "invoice_payload": "order-1",
        },
    })
}

/// When the answer to a query went out: the first successful call of
/// `method` whose `param` is `id`.
fn answered_at(s: &Stack, method: &str, param: &str, id: &str) -> Option<Instant> {
    s.api
        .calls_to(method)
        .into_iter()
        .find(|c| c.ok() && c.param(param).as_str() == Some(id))
        .map(|c| c.at)
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

#[tokio::test(flavor = "multi_thread")]
async fn buttons_and_payments_pass_a_backlog_of_twenty_thousand() {
    const BACKLOG: i64 = 20_000;
    const ROUNDS: usize = 20;
    let Some(mut s) = Stack::builder()
        .workers(0)
        .worker_bin("test-bot", &[])
        .worker_env("TELEGRAM_SEND_RATE", "300")
        .start()
        .await
    else {
        return;
    };
    // The backlog: one /start from each of 20,000 users, queued with no
    // worker running - stored as the ingress stores them (the same store
    // call), without 20,000 HTTP round trips through a debug build.
    let posted = Instant::now();
    let store = shared::queue::RedisStore::open(&s.redis.url(), s.keys.clone()).unwrap();
    let users: Vec<i64> = (0..BACKLOG).map(|i| 1_000_000 + i).collect();
    for chunk in users.chunks(1_000) {
        let store = &store;
        let puts = chunk.iter().map(|u| async move {
            let raw = private_command(next_update_id(), *u, "U", Some("en"), "/start")
                .to_string()
                .into_bytes();
            let p = shared::envelope::probe(&raw).unwrap();
            store.enqueue(&p, Lane::Ordinary, &raw).await.unwrap();
        });
        futures::future::join_all(puts).await;
    }
    println!(
        "backlog: {BACKLOG} /start queued in {:.1} s",
        posted.elapsed().as_secs_f64()
    );
    let mut waits = Vec::new();
    for round in 0..ROUNDS {
        let cb = refresh(42);
        let cb_id = cb["callback_query"]["id"].as_str().unwrap().to_owned();
        let pay = pre_checkout(43);
        let pay_id = pay["pre_checkout_query"]["id"].as_str().unwrap().to_owned();
        s.post_ok(&cb).await;
        s.post_ok(&pay).await;
        let started = Instant::now();
        let w = s.spawn_worker(&[]);
        let ok = eventually(Duration::from_secs(20), || async {
            answered_at(&s, "answerCallbackQuery", "callback_query_id", &cb_id).is_some()
                && answered_at(
                    &s,
                    "answerPreCheckoutQuery",
                    "pre_checkout_query_id",
                    &pay_id,
                )
                .is_some()
        })
        .await;
        assert!(ok, "round {round}: queries not answered\n{}", s.logs_tail());
        let cb_at = answered_at(&s, "answerCallbackQuery", "callback_query_id", &cb_id).unwrap();
        let pay_at = answered_at(
            &s,
            "answerPreCheckoutQuery",
            "pre_checkout_query_id",
            &pay_id,
        )
        .unwrap();
        waits.push(cb_at.max(pay_at) - started);
        s.workers[w].terminate();
        s.workers[w].wait_exit(Duration::from_secs(30)).await;
    }
    let answered: Vec<i64> = s
        .api
        .calls_to("sendMessage")
        .into_iter()
        .filter(|c| c.ok())
        .filter_map(|c| c.chat_id())
        .filter(|c| *c >= 1_000_000)
        .collect();
    let p50 = percentile(waits.clone(), 0.5);
    let p99 = percentile(waits.clone(), 0.99);
    println!(
        "deadline updates behind a {BACKLOG}-update backlog, answered after the worker started: \
         p50 {} ms, p99 {} ms, max {} ms over {ROUNDS} rounds; backlog replies meanwhile: {}",
        p50.as_millis(),
        p99.as_millis(),
        waits.iter().max().unwrap().as_millis(),
        answered.len()
    );
    assert!(
        p99 <= Duration::from_secs(1),
        "p99 {p99:?} over 1 s: {waits:?}"
    );
    // The backlog drains from its front, in order: every user answered so
    // far is among the first ones queued (a worker reads ahead a bounded
    // window; nothing later overtakes it).
    assert!(!answered.is_empty(), "the backlog did not move");
    let furthest = answered.iter().max().unwrap() - 1_000_000;
    assert!(
        furthest < answered.len() as i64 + 200,
        "user #{furthest} answered with only {} replies sent: the backlog is not drained in order",
        answered.len()
    );
    s.api.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_past_its_deadline_expires_unanswered() {
    let Some(mut s) = Stack::builder()
        .workers(0)
        .worker_bin("test-bot", &[])
        .worker_env("WORKER_DEADLINES", "callback_query=2")
        .start()
        .await
    else {
        return;
    };
    let late = refresh(42);
    let late_id = late["callback_query"]["id"].as_str().unwrap().to_owned();
    s.post_ok(&late).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let in_time = refresh(43);
    let in_time_id = in_time["callback_query"]["id"].as_str().unwrap().to_owned();
    s.post_ok(&in_time).await;
    s.spawn_worker(&[]);
    s.wait_calls("the query reached in time answered", T, |calls| {
        calls.iter().any(|c| {
            c.method == "answerCallbackQuery"
                && c.param("callback_query_id").as_str() == Some(in_time_id.as_str())
        })
    })
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.all_logs().contains("ended as expired")
        })
        .await,
        "no expiry logged\n{}",
        s.logs_tail()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        answered_at(&s, "answerCallbackQuery", "callback_query_id", &late_id).is_none(),
        "the expired query was answered late"
    );
    // Both queries ended: nothing left in either lane, nothing dead.
    s.wait_drained(T).await;
    assert!(s.queue_dead().await.is_empty());
    let expired = s.all_logs().matches("ended as expired").count();
    println!("callback_query deadline 2 s: reached after 2.5 s -> expired ({expired}), reached in time -> answered");
    assert_eq!(expired, 1);
    s.api.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_in_flood_wait_holds_no_slot_and_its_reply_survives_a_restart() {
    let Some(mut s) = Stack::builder()
        .worker_env("WORKER_CONCURRENCY", "2")
        .worker_env("TELEGRAM_SEND_RATE", "0")
        .start()
        .await
    else {
        return;
    };
    const FLOODED: i64 = 5_000;
    s.api.rate_limit_chat(FLOODED, 3600);
    s.post_ok(&private_command(
        next_update_id(),
        FLOODED,
        "F",
        Some("en"),
        "/start",
    ))
    .await;
    s.post_ok(&private_command(
        next_update_id(),
        FLOODED,
        "F",
        Some("en"),
        "/help",
    ))
    .await;
    assert!(
        eventually(T, || async { s.api.rate_limited_calls_to(FLOODED) >= 1 }).await,
        "the flooded chat was never tried\n{}",
        s.logs_tail()
    );
    // Every other chat at full speed with two handler slots.
    let started = Instant::now();
    for u in 0..200 {
        s.post_ok(&private_command(
            next_update_id(),
            6_000 + u,
            "U",
            Some("en"),
            "/start",
        ))
        .await;
    }
    s.wait_calls("200 other chats answered", T, |calls| {
        calls
            .iter()
            .filter(|c| c.ok() && c.method == "sendMessage" && c.chat_id() != Some(FLOODED))
            .count()
            >= 200
    })
    .await;
    println!(
        "chat in a 3600 s flood wait: 200 other chats answered in {} ms with WORKER_CONCURRENCY=2",
        started.elapsed().as_millis()
    );
    let stats = queue_stats(&s).await;
    assert_eq!(stats["delayed_replies"], 1, "{stats}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let due_in = stats["next_due_ms"].as_i64().unwrap() - now_ms;
    assert!(due_in > 3_500_000, "due in {due_in} ms");

    // A restart while it waits: it stays put aside, not resent early.
    s.workers[0].terminate();
    s.workers[0].wait_exit(T).await;
    s.spawn_worker(&[]);
    s.wait_workers_joined(1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = queue_stats(&s).await;
    assert_eq!(stats["delayed_replies"], 1, "{stats}");
    assert_eq!(s.api.rate_limited_calls_to(FLOODED), 1, "resent before due");
    assert!(s.replies_to(FLOODED).is_empty());

    // A shorter wait, over a restart, comes back when due and in order.
    const SHORT: i64 = 5_001;
    s.api.rate_limit_chat(SHORT, 3);
    s.post_ok(&private_command(
        next_update_id(),
        SHORT,
        "S",
        Some("en"),
        "/start",
    ))
    .await;
    s.post_ok(&private_command(
        next_update_id(),
        SHORT,
        "S",
        Some("en"),
        "/help",
    ))
    .await;
    assert!(eventually(T, || async { s.api.rate_limited_calls_to(SHORT) >= 1 }).await);
    let refused_at = Instant::now();
    s.api.clear_rate_limit_chat(SHORT);
    let w = s.workers.len() - 1;
    s.workers[w].terminate();
    s.workers[w].wait_exit(T).await;
    s.spawn_worker(&[]);
    let second = s.wait_nth_reply(SHORT, 2, T).await;
    let replies = s.replies_to(SHORT);
    let first_at = replies[0].at;
    println!(
        "chat in a 3 s flood wait over a worker restart: answered {} ms after the 429, both replies in order",
        (first_at - refused_at).as_millis()
    );
    assert!(first_at - refused_at >= Duration::from_millis(2_500));
    assert!(
        replies[0].shown_text().starts_with("Hello")
            && replies[1].shown_text().starts_with("Commands"),
        "out of order: {:?}",
        replies.iter().map(|r| r.shown_text()).collect::<Vec<_>>()
    );
    assert!(second.at >= first_at);
    assert_eq!(replies.len(), 2, "answered twice");
    s.api.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bot_wide_429_pauses_every_worker_at_once() {
    const WORKERS: usize = 4;
    const N: i64 = 400;
    let Some(s) = Stack::builder()
        .workers(WORKERS)
        .worker_env("TELEGRAM_SEND_RATE", "100")
        .start()
        .await
    else {
        return;
    };
    for u in 0..N {
        s.post_ok(&private_command(
            next_update_id(),
            7_000 + u,
            "U",
            Some("en"),
            "/start",
        ))
        .await;
    }
    s.wait_calls("the backlog under way", T, |calls| {
        calls.iter().filter(|c| c.method == "sendMessage").count() >= 20
    })
    .await;
    s.api.rate_limit_all_for(Duration::from_secs(11), 5);
    s.wait_calls(
        "all answered after the window",
        Duration::from_secs(120),
        |calls| {
            calls
                .iter()
                .filter(|c| c.ok() && c.method == "sendMessage")
                .count()
                >= N as usize
        },
    )
    .await;
    let slices = s.api.sends_per_retry_window();
    let refused = s.api.calls_in_rate_limit_windows().len();
    println!(
        "bot-wide 429 (retry_after 5 s, 11 s window), {WORKERS} workers: sends reaching Telegram per 5 s slice {slices:?}, {refused} in all"
    );
    // About one per worker: what was already booked when the first 429
    // came back, plus the budget's burst.
    for n in &slices {
        assert!(
            *n <= 2 * WORKERS,
            "{n} sends in one retry_after slice: {slices:?}"
        );
    }
    let logs = s.all_logs();
    assert!(logs.contains("the whole bot"), "no bot-wide pause logged");
    s.api.assert_no_violations();
}

async fn queue_stats(s: &Stack) -> Value {
    let (st, out, err) = s.worker_command(&["queue", "stats", "--json"]).await;
    assert!(st.success(), "queue stats failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}
