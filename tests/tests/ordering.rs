//! Per-chat ordering across any number of workers (issue "Per-chat
//! ordering across any number of workers"; worker/src/consumer.rs): a
//! chat's updates are answered in the order the ingress accepted them,
//! whichever worker takes which, while different chats still run in
//! parallel.
//!
//! How order is observed: every load uses supergroup chats, where each
//! reply quotes its command (`reply_parameters.message_id`), and the n-th
//! command of a chat has `message_id` n. The fake Bot API records calls in
//! the order it answered them, so a chat's successful sendMessage records,
//! read in that order, must quote 1, 2, 3, ... The fake delays every
//! sendMessage by a random 0..=20 ms (a handler whose duration varies), so
//! unordered processing visibly reorders replies (the last test shows the
//! check catching exactly that with `WORKER_ORDERING=none`).
//!
//! Ordering only has work to do when a chat has several updates queued at
//! once. Posting like Telegram (a chat's next update only after the 200 for
//! the previous one) to workers that keep up never produces that, so the
//! big loads start their workers once a few rounds are queued (a deploy, a
//! fleet that fell behind) and check that the overlap really happened.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::fake_bot_api::Call;
use e2e::harness::{value_str, webhook_post};
use e2e::stack::Stack;
use e2e::updates::{group_command, next_update_id, supergroup_id, update_id};
use e2e::{BOT_USERNAME, WEBHOOK_SECRET};
use futures::StreamExt;
use serde_json::{json, Value};
use shared::keys;

/// Upper bound of the fake's random sendMessage delay.
const JITTER: Duration = Duration::from_millis(20);
/// Concurrent webhook deliveries (across chats; never two of one chat).
const POST_CONCURRENCY: usize = 32;

/// The `seq`-th command (1-based) of a supergroup: `message_id` = `seq`,
/// alternately `/help` and `/start@bot <payload>` (both quote the command
/// in groups).
fn chat_update(chat: i64, user: i64, seq: i64) -> Value {
    let text = if seq % 2 == 1 {
        "/help".to_string()
    } else {
        format!("/start@{BOT_USERNAME} seq{seq}")
    };
    let mut u = group_command(next_update_id(), chat, user, "Orderly", Some("en"), &text);
    u["message"]["message_id"] = json!(seq);
    u
}

/// `n` supergroups with ids derived from `base`, and one user per chat.
fn chats(base: i64, n: usize) -> Vec<(i64, i64)> {
    (0..n as i64)
        .map(|i| (supergroup_id(base + i), base * 10 + i))
        .collect()
}

/// When the ingress answered 200 to each `(chat, seq)`.
type Accepted = HashMap<(i64, i64), Instant>;

/// Posts `msgs` commands to every chat the way Telegram delivers a
/// webhook: round-robin across chats (every chat's 1st, then every chat's
/// 2nd, ...), several chats at once, but a chat's next update only after
/// its previous one was answered 200. Takes only owned data so it can run
/// in a task while the test kills a worker.
async fn post_round_robin(webhook_url: String, chats: Vec<(i64, i64)>, msgs: i64) -> Accepted {
    let url = Arc::new(webhook_url);
    let mut accepted = HashMap::new();
    for seq in 1..=msgs {
        let round: Vec<((i64, i64), Result<Instant, String>)> =
            futures::stream::iter(chats.iter().copied())
                .map(|(chat, user)| {
                    let url = url.clone();
                    async move {
                        let body = chat_update(chat, user, seq).to_string();
                        let r = match webhook_post(&url, Some(WEBHOOK_SECRET), body).await {
                            Ok(r) if r.status == 200 => Ok(Instant::now()),
                            Ok(r) => Err(format!("status {} ({})", r.status, r.body)),
                            Err(e) => Err(e.to_string()),
                        };
                        ((chat, seq), r)
                    }
                })
                .buffer_unordered(POST_CONCURRENCY)
                .collect()
                .await;
        for (k, r) in round {
            match r {
                Ok(at) => {
                    accepted.insert(k, at);
                }
                Err(e) => panic!("the ingress refused chat {} message {}: {e}", k.0, k.1),
            }
        }
    }
    accepted
}

/// Posts every chat's `msgs` commands, one chat after another, each chat's
/// in order (for a backlog posted before any worker runs).
async fn post_in_order(s: &Stack, chats: &[(i64, i64)], msgs: i64) -> Vec<Value> {
    let mut all = Vec::new();
    for &(chat, user) in chats {
        for seq in 1..=msgs {
            let u = chat_update(chat, user, seq);
            s.post_ok(&u).await;
            all.push(u);
        }
    }
    all
}

/// A chat's successful replies as (quoted message_id, arrival), in the
/// order the fake answered them.
fn replies_by_chat(calls: &[Call], chats: &HashSet<i64>) -> HashMap<i64, Vec<(i64, Instant)>> {
    let mut out: HashMap<i64, Vec<(i64, Instant)>> = HashMap::new();
    for c in calls.iter().filter(|c| c.ok() && c.method == "sendMessage") {
        let Some(chat) = c.chat_id().filter(|id| chats.contains(id)) else {
            continue;
        };
        let quoted = c.param("reply_parameters")["message_id"]
            .as_i64()
            .unwrap_or(-1);
        out.entry(chat).or_default().push((quoted, c.at));
    }
    out
}

/// What the replies say about order.
#[derive(Debug, Default)]
struct OrderReport {
    /// Chats whose first answers are not in message order, with the
    /// sequence of quoted ids as sent.
    out_of_order: Vec<(i64, Vec<i64>)>,
    /// `(chat, seq)` never answered.
    missing: Vec<(i64, i64)>,
    /// Replies quoting nothing or a message that was not sent / expected.
    unexpected: Vec<(i64, i64)>,
    /// Repeated answers, in total.
    duplicates: usize,
    /// Repeats that came after a later message had been answered (the
    /// repeat of the immediately preceding answer is the expected shape of
    /// an at-least-once redelivery).
    late_duplicates: Vec<(i64, Vec<i64>)>,
    /// Answers in total.
    answered: usize,
}

/// Checks first-answer order per chat: message k must be answered (the
/// first time) after message k-1 was answered (the first time). Messages
/// in `skip` (dead-lettered) must not be answered at all.
fn check_order(
    calls: &[Call],
    chats: &[(i64, i64)],
    msgs: i64,
    skip: &HashSet<(i64, i64)>,
) -> OrderReport {
    let ids: HashSet<i64> = chats.iter().map(|c| c.0).collect();
    let by_chat = replies_by_chat(calls, &ids);
    let mut r = OrderReport::default();
    for &(chat, _) in chats {
        let sent: Vec<i64> = by_chat
            .get(&chat)
            .map(|v| v.iter().map(|(q, _)| *q).collect())
            .unwrap_or_default();
        r.answered += sent.len();
        let mut seen = HashSet::new();
        let mut firsts = Vec::new();
        let mut late = false;
        for (i, &q) in sent.iter().enumerate() {
            if !(1..=msgs).contains(&q) || skip.contains(&(chat, q)) {
                r.unexpected.push((chat, q));
                continue;
            }
            if !seen.insert(q) {
                r.duplicates += 1;
                if i == 0 || sent[i - 1] != q {
                    late = true;
                }
                continue;
            }
            firsts.push(q);
        }
        if firsts.windows(2).any(|w| w[0] >= w[1]) {
            r.out_of_order.push((chat, sent.clone()));
        }
        if late {
            r.late_duplicates.push((chat, sent.clone()));
        }
        for seq in 1..=msgs {
            if !skip.contains(&(chat, seq)) && !seen.contains(&seq) {
                r.missing.push((chat, seq));
            }
        }
    }
    r
}

/// Consecutive pairs of a chat where message k+1 was already accepted by
/// the ingress before message k's reply reached the Bot API: the pairs for
/// which ordering had something to do (otherwise the test proves nothing).
fn overlapping_pairs(calls: &[Call], chats: &[(i64, i64)], accepted: &Accepted) -> usize {
    let ids: HashSet<i64> = chats.iter().map(|c| c.0).collect();
    let by_chat = replies_by_chat(calls, &ids);
    let mut n = 0;
    for (chat, replies) in by_chat {
        let mut first_at: HashMap<i64, Instant> = HashMap::new();
        for (q, at) in replies {
            first_at.entry(q).or_insert(at);
        }
        for (&q, &at) in &first_at {
            if accepted.get(&(chat, q + 1)).is_some_and(|next| *next < at) {
                n += 1;
            }
        }
    }
    n
}

/// A lower bound of how many sendMessage calls the fake was serving at
/// once. The fake records a call when it answers it, with the time it
/// arrived; so every call recorded after call j that arrived before j was
/// still in progress when j arrived. One handler at a time gives 1.
fn max_concurrent_sends(calls: &[Call]) -> usize {
    let arrived: Vec<Instant> = calls
        .iter()
        .filter(|c| c.method == "sendMessage")
        .map(|c| c.at)
        .collect();
    arrived
        .iter()
        .enumerate()
        .map(|(j, at_j)| 1 + arrived[j + 1..].iter().filter(|at| *at <= at_j).count())
        .max()
        .unwrap_or(0)
}

/// Waits until every `(chat, seq)` of the load (minus `skip`) was answered
/// at least once.
async fn wait_all_answered(
    s: &Stack,
    chats: &[(i64, i64)],
    msgs: i64,
    skip: &HashSet<(i64, i64)>,
    timeout: Duration,
) -> bool {
    let want = chats.len() * msgs as usize - skip.len();
    let ids: HashSet<i64> = chats.iter().map(|c| c.0).collect();
    s.api
        .wait_for(timeout, |calls| {
            // Cheap pre-check before building the set.
            if calls.len() < want {
                return false;
            }
            let mut got = HashSet::new();
            for c in calls.iter().filter(|c| c.ok() && c.method == "sendMessage") {
                if let Some(chat) = c.chat_id().filter(|id| ids.contains(id)) {
                    if let Some(q) = c.param("reply_parameters")["message_id"].as_i64() {
                        got.insert((chat, q));
                    }
                }
            }
            got.len() >= want
        })
        .await
}

async fn dead_letters(s: &Stack) -> Vec<HashMap<String, String>> {
    let mut c = s.redis_conn().await;
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(keys::Keys::default().dead())
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .expect("XRANGE dead letters");
    let mut out = Vec::new();
    if let redis::Value::Array(entries) = v {
        for e in entries {
            let redis::Value::Array(pair) = e else {
                continue;
            };
            let Some(redis::Value::Array(fields)) = pair.get(1) else {
                continue;
            };
            let mut m = HashMap::new();
            for kv in fields.chunks(2) {
                if let [k, v] = kv {
                    if let (Some(k), Some(v)) = (value_str(k), value_str(v)) {
                        m.insert(k, v);
                    }
                }
            }
            out.push(m);
        }
    }
    out
}

/// Order lists left in Redis (`tgbot:order:*`): none once everything ended.
async fn order_lists_left(s: &Stack) -> Vec<String> {
    let mut c = s.redis_conn().await;
    redis::cmd("KEYS")
        .arg(keys::Keys::default().order("*"))
        .query_async(&mut c)
        .await
        .expect("KEYS")
}

/// Waits until the stream holds at least `n` entries (no worker runs yet,
/// so nothing is removed).
async fn wait_queued(s: &Stack, n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while s.stream_len().await < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} updates queued within {timeout:?}\n{}",
            s.stream_len().await,
            s.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts posting the load in a task, lets `backlog` updates queue up with
/// no worker running (a deploy, or a fleet that fell behind), then starts
/// `workers` workers while the rest keeps coming. Without the backlog the
/// workers keep up with the round-robin stream and never hold two updates
/// of one chat at once - ordering would have nothing to do.
async fn start_load(
    s: &mut Stack,
    chats: &[(i64, i64)],
    msgs: i64,
    backlog: u64,
    workers: usize,
) -> tokio::task::JoinHandle<Accepted> {
    let poster = tokio::spawn(post_round_robin(s.webhook_url(), chats.to_vec(), msgs));
    wait_queued(s, backlog, Duration::from_secs(120)).await;
    for _ in 0..workers {
        s.spawn_worker(&[]);
    }
    poster
}

fn short(v: &[(i64, Vec<i64>)]) -> String {
    v.iter()
        .take(5)
        .map(|(chat, seq)| format!("chat {chat}: {seq:?}"))
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_keep_every_chats_order_and_run_chats_in_parallel() {
    const CHATS: usize = 200;
    const MSGS: i64 = 25;
    let Some(mut s) = Stack::builder()
        .workers(0)
        .worker_env("WORKER_CONCURRENCY", "16")
        .worker_env("TELEGRAM_SEND_RATE", "0")
        .worker_env("WORKER_ORDERING", "chat")
        .start()
        .await
    else {
        return;
    };
    s.api.set_send_jitter(JITTER);
    let chats = chats(600_000, CHATS);
    let total = CHATS * MSGS as usize;

    let started = Instant::now();
    // Four rounds queued before the workers start: every chat has several
    // updates waiting at once.
    let poster = start_load(&mut s, &chats, MSGS, 4 * CHATS as u64, 4).await;
    let accepted = poster.await.expect("poster task");
    let posted_in = started.elapsed();
    let ok = wait_all_answered(&s, &chats, MSGS, &HashSet::new(), Duration::from_secs(300)).await;
    let elapsed = started.elapsed();
    assert!(
        ok,
        "{} of {total} updates answered within {elapsed:?}\n{}",
        s.api.sent_count(),
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(60)).await;

    let calls = s.api.calls();
    let r = check_order(&calls, &chats, MSGS, &HashSet::new());
    let overlap = overlapping_pairs(&calls, &chats, &accepted);
    let concurrent = max_concurrent_sends(&calls);
    // The sum of the fake's delays is what one sequential handler would
    // spend: total x the mean of uniform 0..=20 ms.
    let sequential = JITTER.as_secs_f64() / 2.0 * total as f64;
    println!(
        "ORDERING 4 workers: {total} updates in {:.1} s (sequential would be ~{sequential:.0} s); \
         posting took {:.1} s; up to {concurrent} sendMessage calls in progress at once; \
         {overlap} of {} consecutive pairs had the next update accepted before the previous \
         one was answered",
        elapsed.as_secs_f64(),
        posted_in.as_secs_f64(),
        CHATS * (MSGS as usize - 1),
    );
    // Deterministic, not a speed check: rounds 1-4 were all accepted
    // before any worker ran, so at least pairs (1,2), (2,3), (3,4) of every
    // chat were queued together.
    assert!(
        overlap >= 3 * CHATS,
        "only {overlap} pairs overlapped: the load did not exercise ordering"
    );
    assert!(
        r.out_of_order.is_empty(),
        "{} chat(s) answered out of order (quoted message ids, in send order):\n  {}",
        r.out_of_order.len(),
        short(&r.out_of_order)
    );
    assert!(r.missing.is_empty(), "never answered: {:?}", r.missing);
    assert!(r.unexpected.is_empty(), "unexpected: {:?}", r.unexpected);
    assert_eq!(
        r.duplicates, 0,
        "no worker died: every update answered exactly once"
    );
    assert_eq!(r.answered, total);
    assert_eq!(s.api.sent_count(), total, "no extra messages");
    assert!(dead_letters(&s).await.is_empty(), "no dead letters");
    assert_eq!(
        order_lists_left(&s).await,
        Vec::<String>::new(),
        "every order list is emptied once its chat's updates ended"
    );
    // Parallelism, not speed: different chats' handlers overlapped (one
    // at a time would give 1). The wall time above is printed only: it is
    // mostly the ingress accepting 5,000 posts one chat-turn at a time, and
    // on a shared machine that says more about the load than the workers.
    assert!(
        concurrent >= 8,
        "at most {concurrent} sendMessage calls were ever in progress at once: \
         different chats must run in parallel ({total} updates took {elapsed:?}; \
         one at a time would take ~{sequential:.0} s)"
    );
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_holds_when_a_worker_is_killed_mid_run() {
    const CHATS: usize = 200;
    const MSGS: i64 = 25;
    const CONCURRENCY: usize = 16;
    let Some(mut s) = Stack::builder()
        .workers(0)
        .worker_env("WORKER_CONCURRENCY", &CONCURRENCY.to_string())
        .worker_env("TELEGRAM_SEND_RATE", "0")
        .worker_env("WORKER_CLAIM_IDLE_MS", "1000")
        .start()
        .await
    else {
        return;
    };
    s.api.set_send_jitter(JITTER);
    let chats = chats(610_000, CHATS);
    let total = CHATS * MSGS as usize;

    let started = Instant::now();
    let poster = start_load(&mut s, &chats, MSGS, 4 * CHATS as u64, 4).await;
    // Killed while the backlog is being worked off: it has heads running
    // and later updates of the same chats parked.
    assert!(
        s.api
            .wait_for_sent(total / 10, Duration::from_secs(180))
            .await,
        "no progress: {} sent\n{}",
        s.api.sent_count(),
        s.logs_tail()
    );
    let killed = s.workers[0].kill().await;
    assert!(killed.is_some(), "worker 0 was running");
    let killed_at = s.api.sent_count();
    let accepted = poster.await.expect("poster task");

    let ok = wait_all_answered(&s, &chats, MSGS, &HashSet::new(), Duration::from_secs(300)).await;
    let elapsed = started.elapsed();
    assert!(
        ok,
        "after worker 0 was SIGKILLed, {} sends for {total} updates within {elapsed:?}: its entries must be reclaimed\n{}",
        s.api.sent_count(),
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(60)).await;

    let calls = s.api.calls();
    let r = check_order(&calls, &chats, MSGS, &HashSet::new());
    let overlap = overlapping_pairs(&calls, &chats, &accepted);
    let reclaimed = s
        .workers
        .iter()
        .map(|w| {
            w.logs()
                .matches("reclaimed an entry from a dead or stalled consumer")
                .count()
        })
        .sum::<usize>();
    println!(
        "ORDERING kill: worker 0 SIGKILLed after {killed_at} of {total} replies; all answered in {:.1} s; \
         {reclaimed} entries reclaimed (worker 0 could hold {}); {} duplicate replies ({} out of place); \
         {overlap} overlapping pairs",
        elapsed.as_secs_f64(),
        CONCURRENCY * 4,
        r.duplicates,
        r.late_duplicates.len(),
    );
    assert!(
        r.out_of_order.is_empty(),
        "{} chat(s) answered out of order after a worker died (quoted message ids, in send order; \
         a chat's message k must first be answered after message k-1):\n  {}",
        r.out_of_order.len(),
        short(&r.out_of_order)
    );
    assert!(r.missing.is_empty(), "never answered: {:?}", r.missing);
    assert!(r.unexpected.is_empty(), "unexpected: {:?}", r.unexpected);
    // At-least-once: a second answer needs a second delivery, i.e. a
    // reclaim. Ideally only what the dead worker had running (at most its
    // concurrency) repeats; under CPU starvation a reclaimed entry can be
    // reclaimed again before its new owner's heartbeat covers it (see the
    // printed line), so the bound is the number of reclaims.
    assert!(
        r.duplicates <= reclaimed,
        "{} duplicate replies but only {reclaimed} reclaims:\n  {}",
        r.duplicates,
        short(&r.late_duplicates)
    );
    assert!(reclaimed > 0, "the killed worker's entries were reclaimed");
    assert!(dead_letters(&s).await.is_empty(), "no dead letters");
    assert_eq!(order_lists_left(&s).await, Vec::<String>::new());
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_lettered_head_does_not_block_its_chat() {
    const MSGS: i64 = 5;
    let Some(s) = Stack::builder()
        .workers(2)
        .worker_env("WORKER_MAX_DELIVERIES", "2")
        .worker_env("WORKER_CLAIM_IDLE_MS", "2000")
        .start()
        .await
    else {
        return;
    };
    s.api.set_send_jitter(JITTER);
    // Chat X's first command can never be answered (its reply always gets
    // a 500); chat Y is healthy.
    let both = chats(620_000, 2);
    let x = both[0].0;
    s.api.fail_reply_to(x, 1);
    let posted = post_in_order(&s, &both, MSGS).await;
    let x1_update_id = update_id(&posted[0]);

    let skip: HashSet<(i64, i64)> = [(x, 1)].into();
    let ok = wait_all_answered(&s, &both, MSGS, &skip, Duration::from_secs(120)).await;
    assert!(
        ok,
        "chat X must go on after its first update is dead-lettered; sent to X: {:?}\n{}",
        s.api
            .sent_to(x)
            .iter()
            .map(|p| p["reply_parameters"]["message_id"].clone())
            .collect::<Vec<_>>(),
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(60)).await;

    let calls = s.api.calls();
    let r = check_order(&calls, &both, MSGS, &skip);
    assert!(
        r.out_of_order.is_empty(),
        "out of order: {:?}",
        r.out_of_order
    );
    assert!(r.missing.is_empty(), "never answered: {:?}", r.missing);
    assert!(r.unexpected.is_empty(), "unexpected: {:?}", r.unexpected);
    assert_eq!(r.duplicates, 0);

    // Message 2 ran only after message 1 was given up on: every failed
    // attempt for 1 came before the reply to 2.
    let to_x: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "sendMessage" && c.chat_id() == Some(x))
        .collect();
    let failed: Vec<usize> = to_x
        .iter()
        .enumerate()
        .filter(|(_, c)| c.status == 500)
        .map(|(i, _)| i)
        .collect();
    let first_ok = to_x.iter().position(|c| c.ok()).expect("X got replies");
    assert!(
        !failed.is_empty() && failed.iter().all(|i| *i < first_ok),
        "chat X's message 2 must wait for message 1 to end (attempts in order: {:?})",
        to_x.iter()
            .map(|c| (c.param("reply_parameters")["message_id"].clone(), c.status))
            .collect::<Vec<_>>()
    );
    assert!(
        to_x.iter()
            .filter(|c| c.status == 500)
            .all(|c| c.param("reply_parameters")["message_id"] == 1),
        "only message 1 failed"
    );

    let dead = dead_letters(&s).await;
    assert_eq!(dead.len(), 1, "exactly X's first update is dead: {dead:?}");
    assert_eq!(
        dead[0].get("update_id").map(String::as_str),
        Some(x1_update_id.to_string().as_str()),
        "{dead:?}"
    );
    assert!(
        dead[0].get("error").is_some_and(|e| !e.is_empty()),
        "the dead letter says why: {dead:?}"
    );
    assert!(
        dead[0]
            .get("deliveries")
            .and_then(|d| d.parse::<u64>().ok())
            .is_some_and(|d| d >= 2),
        "dead-lettered after WORKER_MAX_DELIVERIES=2 failed deliveries: {dead:?}"
    );
    println!(
        "ORDERING dead head: chat X message 1 dead-lettered after {} failed sends ({}); messages 2..{MSGS} answered in order",
        failed.len(),
        dead[0].get("error").cloned().unwrap_or_default()
    );
    assert_eq!(order_lists_left(&s).await, Vec::<String>::new());
    s.assert_clean();
}

/// A backlog accepted before any worker runs, then 4 workers at once: the
/// read-ahead hands each worker many entries of the same chat.
async fn backlog_report(ordering: &str) -> Option<(OrderReport, usize)> {
    const CHATS: usize = 20;
    const MSGS: i64 = 25;
    let base = if ordering == "none" { 630_000 } else { 640_000 };
    let mut s = Stack::builder()
        .workers(0)
        .worker_env("WORKER_CONCURRENCY", "16")
        .worker_env("WORKER_ORDERING", ordering)
        .start()
        .await?;
    s.api.set_send_jitter(JITTER);
    let chats = chats(base, CHATS);
    post_in_order(&s, &chats, MSGS).await;
    for _ in 0..4 {
        s.spawn_worker(&[]);
    }
    s.wait_workers_joined(4).await;
    let ok = wait_all_answered(&s, &chats, MSGS, &HashSet::new(), Duration::from_secs(120)).await;
    assert!(
        ok,
        "{} of {} answered (WORKER_ORDERING={ordering})\n{}",
        s.api.sent_count(),
        CHATS * MSGS as usize,
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(60)).await;
    let r = check_order(&s.api.calls(), &chats, MSGS, &HashSet::new());
    s.assert_clean();
    Some((r, CHATS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_is_answered_in_order_per_chat() {
    let Some((r, chats)) = backlog_report("chat").await else {
        return;
    };
    assert!(
        r.out_of_order.is_empty(),
        "{} of {chats} chats answered out of order:\n  {}",
        r.out_of_order.len(),
        short(&r.out_of_order)
    );
    assert!(r.missing.is_empty() && r.unexpected.is_empty(), "{r:?}");
    assert_eq!(r.duplicates, 0);
}

/// Control: the same backlog without per-chat order is answered out of
/// order, so the check above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_ordering_the_same_backlog_is_reordered() {
    let Some((r, chats)) = backlog_report("none").await else {
        return;
    };
    println!(
        "ORDERING control (WORKER_ORDERING=none): {} of {chats} chats answered out of order",
        r.out_of_order.len()
    );
    assert!(r.missing.is_empty() && r.unexpected.is_empty(), "{r:?}");
    assert!(
        !r.out_of_order.is_empty(),
        "with WORKER_ORDERING=none and random handler delays, some chat should be answered out of order; \
         if not, the order check proves nothing"
    );
}
