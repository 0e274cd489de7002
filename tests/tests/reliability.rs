//! "Nothing lost": bursts of thousands of updates through the real
//! binaries and a real redis-server while things break - a worker
//! SIGKILLed, the ingress SIGKILLed, Redis stopped, the Bot API rate-limiting, a poison update, a
//! worker SIGTERMed, Telegram resending - and at the end every update_id is
//! accounted for: replied, deduplicated, or dead-lettered with a reason
//! (SPEC.md "What is never acceptable": a silent drop).
//!
//! Each update comes from its own user in its own private chat, so every
//! reply maps back to one update_id (`e2e::accounting`). Each scenario
//! prints one line to stderr:
//! `SCENARIO <name>: sent=<n> answered=<n> duplicates=<n> dead=<n> lost=<n>`
//! (duplicates = replies beyond one per update).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::accounting::{
    account, consumer_of_pid, consumers, counters, dead_letters, post_all_once,
    post_all_until_accepted, wait_accounted, Account, Burst, FaultProxy,
};
use e2e::harness::{eventually, http_get, loud, webhook_post};
use e2e::stack::{json_i64, queue_state, Stack};
use e2e::updates::{next_update_id, private_command};
use e2e::WEBHOOK_SECRET;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Updates per burst.
const N: usize = 2_000;
/// Bound for a whole burst to be accounted for on a busy 2-core machine.
const ACCOUNT_TIMEOUT: Duration = Duration::from_secs(420);

/// Waits (bounded) until at least `n` replies went out; fails with the logs.
async fn wait_sent(s: &Stack, n: usize, timeout: Duration, what: &str) {
    if !s.api.wait_for_sent(n, timeout).await {
        panic!(
            "{what}: only {} of the {n} replies expected within {timeout:?}\n{}",
            s.api.sent_count(),
            s.logs_tail()
        );
    }
}

/// After everything is accounted for: the stream drained, then a short
/// settle so a late duplicate would still show up in the final account.
async fn settle(s: &Stack, burst: &Burst) -> Account {
    s.wait_drained(Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    account(s, burst).await
}

async fn xlen(s: &Stack, key: &str) -> u64 {
    let mut c = s.redis_conn().await;
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap_or(0)
}

/// Posts the burst as Telegram does - whatever is not answered 200 (a 503,
/// a dead connection, nobody listening) is sent again - and returns once a
/// third of it was accepted, so the fault that follows hits mid-burst.
async fn telegram_resending_burst(
    s: &Stack,
    burst: &Burst,
) -> (
    tokio::task::JoinHandle<Result<Vec<e2e::accounting::PostReport>, String>>,
    Arc<AtomicUsize>,
) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let poster = tokio::spawn(post_all_until_accepted(
        s.webhook_url(),
        burst.updates.clone(),
        8,
        Duration::from_secs(300),
        accepted.clone(),
    ));
    let ok = eventually(Duration::from_secs(120), || {
        let n = accepted.load(Ordering::SeqCst);
        async move { n >= N / 3 }
    })
    .await;
    assert!(ok, "a third of the burst accepted\n{}", s.logs_tail());
    (poster, accepted)
}

#[track_caller]
fn assert_nothing_lost(a: &Account, s: &Stack) {
    assert_eq!(
        a.lost,
        0,
        "lost updates: {:?}\n{}",
        a.unaccounted,
        s.logs_tail()
    );
}

// ---------------------------------------------------------------------------
// 1. kill -9 one of two workers mid-burst
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_one_of_two_workers_mid_burst_loses_nothing() {
    const CONCURRENCY: usize = 8;
    /// The most a worker can hold: its read-ahead budget.
    const HOLD_BUDGET: usize = CONCURRENCY * 4;
    let Some(mut s) = Stack::builder()
        .workers(2)
        // Small, so the dead worker's entries are reclaimed quickly; not
        // smaller, so that live workers whose heartbeat lags on a starved
        // machine are not robbed (that repeats replies too, kill or not).
        .worker_env("WORKER_CLAIM_IDLE_MS", "2000")
        .worker_env("WORKER_CONCURRENCY", &CONCURRENCY.to_string())
        .start()
        .await
    else {
        return;
    };
    // A little latency per send keeps work in flight when the worker dies.
    s.api.set_delay(Duration::from_millis(20));
    let burst = Burst::private(N, 6_100_000);
    let poster = tokio::spawn(post_all_once(s.webhook_url(), burst.updates.clone(), 32));

    wait_sent(&s, N / 4, Duration::from_secs(240), "before the kill").await;
    let victim_pid = s.workers[0].pid();
    s.workers[0].kill().await;
    let killed_at = std::time::Instant::now();
    let at_kill = s.api.sent_count();
    let victim = consumer_of_pid(&consumers(&s.redis.url()).await, victim_pid);
    assert!(
        at_kill < N,
        "the kill came after the whole burst was answered: nothing was tested"
    );
    let replacement = s.spawn_worker(&[]);

    poster
        .await
        .expect("poster task")
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail()));
    wait_accounted(&s, &burst, ACCOUNT_TIMEOUT).await;
    let a = settle(&s, &burst).await;
    a.print("kill9_one_of_two_workers");
    // Which repeats the kill explains: first reply before it, the next
    // after (the dead worker replied, its entry was reclaimed and handled
    // again). Repeats entirely before or after the kill come from a live
    // worker robbed by a reclaim (its heartbeat lagged past the idle time).
    let (mut straddling, mut other) = (0, 0);
    for (uid, _) in &a.repeated {
        let chat = burst.chat_of[uid];
        let times: Vec<std::time::Instant> = s.replies_to(chat).iter().map(|c| c.at).collect();
        if times.first().is_some_and(|t| *t < killed_at)
            && times.last().is_some_and(|t| *t > killed_at)
        {
            straddling += 1;
        } else {
            other += 1;
        }
    }
    loud(&format!(
        "  note: killed worker pid {victim_pid} at {at_kill} replies, it held {:?} entries; repeated updates: {} across the kill, {} not explained by it: {:?}",
        victim.as_ref().map(|v| v.pending),
        straddling,
        other,
        a.repeated
    ));

    assert_nothing_lost(&a, &s);
    assert_eq!(a.answered, N, "every update answered");
    assert_eq!(a.dead, 0, "nothing dead-lettered: {:?}", a.dead_letters);
    assert!(
        a.duplicates <= HOLD_BUDGET,
        "{} duplicate replies ({straddling} updates repeated across the kill, {other} not explained by it: {:?}); at most the killed worker's in-flight entries (<= {HOLD_BUDGET}) may repeat",
        a.duplicates,
        a.repeated
    );
    let left = consumer_of_pid(&consumers(&s.redis.url()).await, victim_pid);
    assert!(
        left.as_ref().is_none_or(|c| c.pending == 0),
        "the killed worker's entries were all reclaimed: {left:?}"
    );
    assert!(
        s.workers[replacement].has_exited().is_none(),
        "replacement worker still runs"
    );
    s.assert_clean();
}

// ---------------------------------------------------------------------------
// 2. Redis stopped and restarted mid-burst
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_mid_burst_loses_nothing() {
    // Slow enough that a backlog is queued and entries are in flight when
    // Redis goes away.
    let Some(mut s) = Stack::builder()
        .workers(2)
        .worker_env("WORKER_CONCURRENCY", "4")
        .redis_aof()
        .start()
        .await
    else {
        return;
    };
    s.api.set_delay(Duration::from_millis(20));
    let burst = Burst::private(N, 6_200_000);
    let (poster, accepted) = telegram_resending_burst(&s, &burst).await;
    let replied_at_stop = s.api.sent_count();
    s.redis.stop().await;
    let at_stop = accepted.load(Ordering::SeqCst);
    // Ingress answers 503 and workers lose their connections meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = http_get(&format!("{}/readyz", s.base_url())).await;
    s.redis.restart().await;

    let reports = poster
        .await
        .expect("poster task")
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail()));
    let refused: usize = reports.iter().map(|r| r.refused).sum();
    let errors: usize = reports.iter().map(|r| r.errors).sum();
    let resent = reports.iter().filter(|r| r.attempts > 1).count();

    wait_accounted(&s, &burst, ACCOUNT_TIMEOUT).await;
    let a = settle(&s, &burst).await;
    a.print("redis_stop_restart_mid_burst");
    loud(&format!(
        "  note: Redis stopped after {at_stop} accepted and {replied_at_stop} answered; {refused} answers 503, {errors} transport errors, {resent} updates resent; /readyz during the outage: {:?}",
        during.as_ref().map(|r| r.status)
    ));

    assert!(
        refused + errors > 0,
        "the outage was seen by the poster (503s): otherwise nothing was tested"
    );
    if let Ok(r) = &during {
        assert_eq!(r.status, 503, "/readyz while Redis is down");
    }
    assert_nothing_lost(&a, &s);
    assert_eq!(a.answered, N, "every accepted update answered");
    assert_eq!(a.dead, 0, "nothing dead-lettered: {:?}", a.dead_letters);
    assert_eq!(
        a.duplicates, 0,
        "a Redis restart with AOF must not make anything answered twice: {:?}",
        a.repeated
    );
    // Recovered by themselves: nobody was restarted.
    let ingress_alive = s.ingress.as_mut().is_some_and(|i| i.has_exited().is_none());
    assert!(ingress_alive, "ingress still runs\n{}", s.logs_tail());
    for w in s.workers.iter_mut() {
        assert!(
            w.has_exited().is_none(),
            "worker pid {} exited\n{}",
            w.pid(),
            w.logs_tail()
        );
    }
    let ready = http_get(&format!("{}/readyz", s.base_url())).await;
    assert_eq!(
        ready.map(|r| r.status).ok(),
        Some(200),
        "ingress ready again"
    );
    s.assert_clean();
}

// ---------------------------------------------------------------------------
// 2b. kill -9 the ingress mid-burst; a new one comes up on the same URL
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingress_killed_mid_burst_loses_nothing() {
    let Some(mut s) = Stack::builder().workers(2).start().await else {
        return;
    };
    let burst = Burst::private(N, 6_250_000);
    let (poster, accepted) = telegram_resending_burst(&s, &burst).await;
    let ingress = s.ingress.as_mut().expect("ingress");
    assert!(ingress.kill().await.is_some());
    let at_kill = accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.restart_ingress().await;

    let reports = poster
        .await
        .expect("poster task")
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail()));
    let errors: usize = reports.iter().map(|r| r.errors).sum();
    let resent = reports.iter().filter(|r| r.attempts > 1).count();
    wait_accounted(&s, &burst, ACCOUNT_TIMEOUT).await;
    let a = settle(&s, &burst).await;
    a.print("ingress_kill_9_mid_burst");
    // Resends the new ingress found already stored (their 200 died with
    // the old one): the case the seen mark is for.
    let metrics = http_get(&format!("{}/metrics", s.base_url()))
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    let already_stored = metrics
        .lines()
        .find(|l| l.starts_with("ingress_updates_duplicate_total"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("?")
        .to_owned();
    loud(&format!(
        "  note: ingress killed after {at_kill} accepted; {errors} transport errors, {resent} updates resent, {already_stored} of them already stored"
    ));
    assert!(
        at_kill < N,
        "the kill came after the whole burst was accepted: nothing was tested"
    );
    assert!(errors > 0, "the poster saw the ingress die");
    assert_nothing_lost(&a, &s);
    assert_eq!(a.answered, N, "every update answered");
    assert_eq!(a.dead, 0, "{:?}", a.dead_letters);
    // An update stored just before the kill, whose 200 never left, comes
    // again: the ingress's seen mark makes the copy harmless.
    assert_eq!(a.duplicates, 0, "{:?}", a.repeated);
    // Same configuration: the new ingress does not register again.
    assert_eq!(
        e2e::webhook_registrations(&s.api),
        1,
        "setWebhook once for both ingresses (besides following the bot's update kinds)"
    );
    s.assert_clean();
}

// ---------------------------------------------------------------------------
// 3. The Bot API answers 429 to a share of sendMessage calls
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limited_burst_is_answered_late_never_early_never_dead() {
    // One delivery: if a 429 counted as a failure, the update would be
    // dead-lettered at once.
    let Some(s) = Stack::builder()
        .workers(1)
        .worker_env("WORKER_MAX_DELIVERIES", "1")
        .start()
        .await
    else {
        return;
    };
    s.api.faults(|f| {
        f.rate_limit_probability = 0.1;
        f.retry_after_secs = 1;
    });
    let burst = Burst::private(N, 6_300_000);
    post_all_once(s.webhook_url(), burst.updates.clone(), 32)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail()));

    wait_accounted(&s, &burst, ACCOUNT_TIMEOUT).await;
    let a = settle(&s, &burst).await;
    a.print("rate_limited_429_share_10pct");
    let windows = s.api.rate_limit_windows();
    let early = s.api.early_retries();
    loud(&format!(
        "  note: {} answers 429 (retry_after=1), {} early retries",
        windows.len(),
        early.len()
    ));

    assert!(!windows.is_empty(), "the fake did answer 429s");
    assert!(
        early.is_empty(),
        "{} sendMessage call(s) came before retry_after had passed, e.g. chat {:?} {:?} too early",
        early.len(),
        early.first().map(|e| e.chat.clone()),
        early.first().map(|e| e.early_by())
    );
    assert_nothing_lost(&a, &s);
    assert_eq!(a.answered, N, "every reply arrives");
    assert_eq!(a.dead, 0, "a 429 is not a failure: {:?}", a.dead_letters);
    assert_eq!(xlen(&s, &s.keys.dead()).await, 0, "no dead letters");
    assert_eq!(
        counters(&s.redis.url())
            .await
            .get("updates_dead_lettered")
            .copied()
            .unwrap_or(0),
        0
    );
    assert_eq!(a.duplicates, 0, "{:?}", a.repeated);
    s.assert_clean();
}

// ---------------------------------------------------------------------------
// 4. A poison update among healthy ones
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_update_is_dead_lettered_the_rest_flows_and_replay_answers_it() {
    const MAX_DELIVERIES: i64 = 3;
    let Some(mut s) = Stack::builder()
        .workers(0)
        .worker_env("WORKER_MAX_DELIVERIES", &MAX_DELIVERIES.to_string())
        .start()
        .await
    else {
        return;
    };
    // The workers talk to the fake through a proxy that fails one chat.
    let proxy = FaultProxy::start(&s.api.url()).await;
    let poison_chat = 6_499_999;
    proxy.fail_chat(poison_chat);
    for _ in 0..2 {
        s.spawn_worker(&[("TELEGRAM_API_URL", &proxy.url())]);
    }
    s.wait_workers_joined(2).await;

    let mut burst = Burst::private(N, 6_400_000);
    let poison = private_command(next_update_id(), poison_chat, "Poison", Some("en"), "/help");
    let poison_id = poison["update_id"].as_i64().expect("update_id");
    burst.push(poison);
    // The poison goes out in the middle of the burst.
    let mut order = burst.updates.clone();
    let last = order.len() - 1;
    order.swap(N / 2, last);
    post_all_once(s.webhook_url(), order, 32)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail()));

    let a = wait_accounted(&s, &burst, ACCOUNT_TIMEOUT).await;
    let a = if a.dead == 1 {
        a
    } else {
        settle(&s, &burst).await
    };
    s.wait_drained(Duration::from_secs(120)).await;
    a.print("poison_one_of_2001");
    loud(&format!(
        "  note: poison update {poison_id}: {} sendMessage attempts answered 500; dead letters: {:?}",
        proxy.failures(poison_chat),
        a.dead_letters
    ));
    assert_nothing_lost(&a, &s);
    assert_eq!(a.answered, N, "all the others flow");
    assert_eq!(a.dead, 1, "only the poison is dead: {:?}", a.dead_letters);
    assert_eq!(a.duplicates, 0, "{:?}", a.repeated);
    assert!(
        proxy.failures(poison_chat) >= MAX_DELIVERIES as usize,
        "at least one attempt per delivery: {}",
        proxy.failures(poison_chat)
    );

    // What the operator sees.
    let dead = s.queue_dead().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(json_i64(&d["update_id"]), Some(poison_id), "{d}");
    assert_eq!(
        json_i64(&d["deliveries"]),
        Some(MAX_DELIVERIES),
        "deliveries == WORKER_MAX_DELIVERIES: {d}"
    );
    let error = d["error"].as_str().unwrap_or("");
    assert!(
        error.contains("500"),
        "the reason names the Bot API's answer: {d}"
    );

    // The Bot API recovers; the operator replays; the poison is answered.
    proxy.clear();
    let (st, out, err) = s.worker_command(&["queue", "replay-dead"]).await;
    assert!(st.success(), "queue replay-dead: {st}\n{out}\n{err}");
    s.wait_nth_reply(poison_chat, 1, Duration::from_secs(60))
        .await;
    let after = settle(&s, &burst).await;
    after.print("poison_after_replay_dead");
    assert_nothing_lost(&after, &s);
    assert_eq!(after.answered, N + 1, "replayed poison answered");
    assert_eq!(after.duplicates, 0, "{:?}", after.repeated);
    assert_eq!(
        xlen(&s, &s.keys.dead()).await,
        0,
        "replay-dead empties the dead letters"
    );
    s.assert_clean();
}

// ---------------------------------------------------------------------------
// 5. SIGTERM to a worker mid-burst
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_burst_exits_zero_and_the_next_worker_finishes() {
    let Some(mut s) = Stack::builder()
        .workers(1)
        .worker_env("WORKER_CONCURRENCY", "4")
        .start()
        .await
    else {
        return;
    };
    s.api.set_delay(Duration::from_millis(50));
    let burst = Burst::private(N, 6_500_000);
    post_all_once(s.webhook_url(), burst.updates.clone(), 32)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail()));
    wait_sent(&s, 100, Duration::from_secs(120), "before SIGTERM").await;

    let pid = s.workers[0].pid();
    s.workers[0].terminate();
    let st = s.workers[0].wait_exit(Duration::from_secs(60)).await;
    assert!(
        st.success(),
        "SIGTERM: exit 0 after finishing in-flight work, got {st}\n{}",
        s.workers[0].logs_tail()
    );
    let by_first = s.api.sent_count();
    assert!(
        by_first < N,
        "the first worker should not have had time to do everything"
    );
    // Checked at the end, so that the account is printed either way.
    let list = consumers(&s.redis.url()).await;
    let mine = consumer_of_pid(&list, pid);
    let state = queue_state(&s.redis.url()).await.expect("queue state");
    let first_logs = s.workers[0].logs_tail();

    s.api.set_delay(Duration::ZERO);
    s.spawn_worker(&[("WORKER_CONCURRENCY", "16")]);
    wait_accounted(&s, &burst, ACCOUNT_TIMEOUT).await;
    let a = settle(&s, &burst).await;
    a.print("sigterm_worker_mid_burst");
    loud(&format!(
        "  note: the terminated worker answered {by_first} before exiting 0; its consumer then: {mine:?}"
    ));
    assert_nothing_lost(&a, &s);
    assert!(
        mine.as_ref().is_none_or(|c| c.pending == 0),
        "the terminated worker left entries pending: {mine:?} (all consumers: {list:?})\n{first_logs}"
    );
    assert_eq!(state.pending, 0, "nothing pending at all: {state:?}");
    assert_eq!(a.answered, N);
    assert_eq!(a.dead, 0, "{:?}", a.dead_letters);
    assert_eq!(
        a.duplicates, 0,
        "a graceful stop repeats nothing: {:?}",
        a.repeated
    );
    s.assert_clean();
}

/// The narrow case behind an intermittent failure of the test above: an
/// update that arrives while the worker's XREADGROUP is blocked, just
/// after SIGTERM, is handed to the stopping worker ("whatever Redis hands
/// us is ours"). It must be handled before the exit, not left pending for
/// another worker's claim timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_then_an_update_taken_by_the_last_read_is_not_left_pending() {
    let Some(mut s) = Stack::builder().workers(1).start().await else {
        return;
    };
    // The worker is up and idle (blocked in XREADGROUP).
    let warm = private_command(next_update_id(), 6_700_000, "Warm", Some("en"), "/help");
    s.post_ok(&warm).await;
    s.wait_nth_reply(6_700_000, 1, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = s.workers[0].pid();
    let chat = 6_700_001;
    let late = private_command(next_update_id(), chat, "Late", Some("en"), "/help");
    s.workers[0].terminate();
    s.post_ok(&late).await;
    let started = std::time::Instant::now();
    let st = s.workers[0].wait_exit(Duration::from_secs(90)).await;
    let took = started.elapsed();
    assert!(st.success(), "exit 0 after SIGTERM, got {st}");
    let list = consumers(&s.redis.url()).await;
    let mine = consumer_of_pid(&list, pid);
    let answered = !s.replies_to(chat).is_empty();
    loud(&format!(
        "  note: SIGTERM then one update: the stopping worker answered it: {answered}; exit after {took:?}; its consumer: {mine:?}"
    ));
    assert!(
        mine.as_ref().is_none_or(|c| c.pending == 0),
        "the stopping worker took the update and left it pending (exit after {took:?}, the whole grace period): {mine:?}\n{}",
        s.workers[0].logs_tail()
    );
    // Whoever takes it, it is answered once.
    s.spawn_worker(&[]);
    s.wait_nth_reply(chat, 1, Duration::from_secs(90)).await;
    s.wait_drained(Duration::from_secs(60)).await;
    assert_eq!(s.replies_to(chat).len(), 1);
    s.assert_clean();
}

// ---------------------------------------------------------------------------
// 6. Telegram resends updates
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resent_updates_are_answered_exactly_once() {
    const RESENT: usize = 200;
    let Some(s) = Stack::builder().workers(2).start().await else {
        return;
    };
    let burst = Burst::private(N, 6_600_000);
    // Every 10th update is posted twice: half of them as two concurrent
    // requests, half once more at the end of the burst (while the first
    // copy is queued, in flight or done).
    let mut jobs: Vec<Vec<Value>> = Vec::new();
    let mut later = Vec::new();
    for (i, u) in burst.updates.iter().enumerate() {
        if i % 10 == 0 && (i / 10) % 2 == 0 {
            jobs.push(vec![u.clone(), u.clone()]);
        } else {
            jobs.push(vec![u.clone()]);
            if i % 10 == 0 {
                later.push(vec![u.clone()]);
            }
        }
    }
    let resent = later.len() + jobs.iter().filter(|j| j.len() == 2).count();
    assert_eq!(resent, RESENT);
    jobs.extend(later);

    let url = s.webhook_url();
    let bad: Vec<String> = futures::stream::iter(jobs)
        .map(|job| {
            let url = url.clone();
            async move {
                let posts = job.iter().map(|u| {
                    let url = url.clone();
                    async move {
                        let r = webhook_post(&url, Some(WEBHOOK_SECRET), u.to_string()).await;
                        match r {
                            Ok(r) if r.status == 200 => None,
                            Ok(r) => Some(format!("{}: {} {}", u["update_id"], r.status, r.body)),
                            Err(e) => Some(format!("{}: {e}", u["update_id"])),
                        }
                    }
                });
                futures::future::join_all(posts).await
            }
        })
        .buffer_unordered(32)
        .flat_map(futures::stream::iter)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    assert!(
        bad.is_empty(),
        "every delivery and every resend is answered 200: {:?}\n{}",
        &bad[..bad.len().min(5)],
        s.logs_tail()
    );

    wait_accounted(&s, &burst, ACCOUNT_TIMEOUT).await;
    let a = settle(&s, &burst).await;
    a.print("telegram_resends_200_of_2000");
    let c = counters(&s.redis.url()).await;
    loud(&format!("  note: counters {c:?}"));
    assert_nothing_lost(&a, &s);
    assert_eq!(a.answered, N);
    assert_eq!(a.dead, 0, "{:?}", a.dead_letters);
    assert_eq!(
        a.duplicates, 0,
        "a resent update is answered exactly once: {:?}",
        a.repeated
    );
    assert_eq!(s.api.sent_count(), N, "no message beyond one per update");
    assert_eq!(
        c.get("updates_handled").copied().unwrap_or(0),
        N as i64,
        "handled once each: {c:?}"
    );
    s.assert_clean();
}

// ---------------------------------------------------------------------------
// 7. Garbage bodies at the ingress
// ---------------------------------------------------------------------------

/// 300 bodies that are not updates: random bytes, random bytes that open
/// like an object, truncated updates, JSON that is not an object or has no
/// integer update_id.
fn garbage_bodies(rng: &mut rand::rngs::StdRng) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for _ in 0..100 {
        let len = rng.random_range(0..4096);
        out.push((0..len).map(|_| rng.random::<u8>()).collect());
    }
    for _ in 0..50 {
        let len = rng.random_range(0..4096);
        let mut b = b"{\"update_id\": ".to_vec();
        b.extend((0..len).map(|_| rng.random::<u8>()));
        out.push(b);
    }
    for i in 0..100 {
        let mut u = private_command(
            rng.random_range(1..i64::MAX),
            7_000_000 + i,
            "Trunc",
            Some("en"),
            "/start",
        );
        if i % 2 == 0 {
            u["padding"] = json!("x".repeat(rng.random_range(0..3000)));
        }
        let text = u.to_string();
        let cut = rng.random_range(0..text.len());
        out.push(text.as_bytes()[..cut].to_vec());
    }
    let fixed: Vec<Value> = vec![
        json!(null),
        json!(true),
        json!(42),
        json!(-1.5),
        json!("update_id"),
        json!([]),
        json!([{"update_id": 1}]),
        json!({}),
        json!({"update_id": "5"}),
        json!({"update_id": 5.5}),
        json!({"update_id": null}),
        json!({"update_id": [5]}),
        json!({"update_id": {"id": 5}}),
        json!({"update_id": true}),
        json!({"message": {"text": "/start"}}),
        json!({"update_id": 18_446_744_073_709_551_615u64}),
    ];
    let mut k = 0;
    while out.len() < 300 {
        let v = &fixed[k % fixed.len()];
        let s = if k % 2 == 0 {
            v.to_string()
        } else {
            format!(
                "  \n{}\t",
                serde_json::to_string_pretty(v).unwrap_or_default()
            )
        };
        out.push(s.into_bytes());
        k += 1;
    }
    out.truncate(300);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_bodies_are_refused_and_nothing_is_stored() {
    let Some(s) = Stack::builder().workers(0).start().await else {
        return;
    };
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bodies = garbage_bodies(&mut rng);
    assert_eq!(bodies.len(), 300);
    let url = s.webhook_url();
    let answers: Vec<(usize, Result<u16, String>)> =
        futures::stream::iter(bodies.iter().enumerate())
            .map(|(i, b)| {
                let url = url.clone();
                async move {
                    let r = webhook_post(&url, Some(WEBHOOK_SECRET), b.clone())
                        .await
                        .map(|r| r.status)
                        .map_err(|e| e.to_string());
                    (i, r)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(_, r)| !matches!(r, Ok(400 | 413)))
        .map(|(i, r)| {
            format!(
                "body #{i} ({} bytes, starts {:?}): {r:?}",
                bodies[*i].len(),
                String::from_utf8_lossy(&bodies[*i][..bodies[*i].len().min(60)])
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "seed {seed}: every garbage body is answered 400 (or 413), {} were not:\n{}\n{}",
        wrong.len(),
        wrong[..wrong.len().min(10)].join("\n"),
        s.logs_tail()
    );
    let health = http_get(&format!("{}/healthz", s.base_url())).await;
    assert_eq!(
        health.as_ref().map(|r| r.status).ok(),
        Some(200),
        "the ingress still serves /healthz: {health:?}\n{}",
        s.logs_tail()
    );
    assert_eq!(
        xlen(&s, &s.keys.stream()).await,
        0,
        "seed {seed}: nothing stored"
    );
    // And it still takes real updates.
    let u = private_command(next_update_id(), 7_100_001, "After", Some("en"), "/start");
    s.post_ok(&u).await;
    assert_eq!(
        xlen(&s, &s.keys.stream()).await,
        1,
        "the real update is stored"
    );
    let n400 = answers.iter().filter(|(_, r)| matches!(r, Ok(400))).count();
    loud(&format!(
        "  note: garbage bodies: {} posted, {n400} answered 400, {} answered 413, none stored (seed {seed})",
        bodies.len(),
        bodies.len() - n400
    ));
    let dead = dead_letters(&s.redis.url()).await.unwrap_or_default();
    assert!(dead.is_empty(), "{dead:?}");
    e2e::assert_token_absent(&s.all_logs());
}
