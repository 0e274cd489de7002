//! A full Redis: `maxmemory` reached under `noeviction` (a managed plan's
//! limit). Redis then refuses every write that could grow memory, so the
//! ingress must answer 503 (Telegram keeps the update and resends it),
//! and everything that frees memory - finishing an entry, dead-lettering
//! one, a new worker joining to drain the backlog - must still work, or
//! the queue wedges for good. Once there is room again, every update
//! answered 200 is answered exactly once.
//!
//! Prints one line per figure: the memory used at each step, the drain
//! rate on the full Redis and the final account
//! (`SCENARIO full_redis: sent=.. answered=.. duplicates=.. dead=.. lost=..`).

use std::time::{Duration, Instant};

use e2e::accounting::{
    account, post_all_once, post_until_accepted, wait_accounted, Burst, FaultProxy,
};
use e2e::harness::{eventually, http_get, loud, webhook_post, HttpReply};
use e2e::stack::{queue_state, Stack};
use e2e::updates::{next_update_id, private_command};
use e2e::WEBHOOK_SECRET;
use serde_json::Value;

/// What each padded update carries, so that a few dozen fill Redis.
const PADDING: usize = 256 * 1024;
/// The plan's limit the backlog runs into.
const LIMIT: &str = "8mb";
/// Below what even an empty Redis with its clients uses: Redis stays over
/// its limit for the whole drain, so every join, finish and dead letter
/// below happens on a Redis that refuses writes (with `LIMIT` itself the
/// first few finishes would already make room).
const TIGHT_LIMIT: &str = "512kb";
const SEND_RATE: &str = "30";
const MAX_DELIVERIES: &str = "2";
const CLAIM_IDLE_MS: &str = "3000";
/// Bound for waits that involve the whole backlog on a busy 2-core machine.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

async fn info_memory(s: &Stack) -> (u64, u64) {
    let mut c = s.redis_conn().await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut c)
        .await
        .expect("INFO memory");
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':')?.parse().ok())
            .unwrap_or(0u64)
    };
    (field("used_memory"), field("maxmemory"))
}

async fn set_maxmemory(s: &Stack, limit: &str) {
    let mut c = s.redis_conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(limit)
        .query_async(&mut c)
        .await
        .expect("CONFIG SET maxmemory");
}

async fn readyz(s: &Stack) -> HttpReply {
    http_get(&format!("{}/readyz", s.base_url()))
        .await
        .expect("GET /readyz")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn padded(user: i64, name: &str) -> Value {
    let mut u = private_command(next_update_id(), user, name, Some("en"), "/help");
    // A field no parser looks at: the ingress stores the body as sent.
    u["x_padding"] = Value::from("x".repeat(PADDING));
    u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_redis_drains_its_backlog_and_answers_every_update_once() {
    let Some(mut s) = Stack::builder()
        .redis_args(&["--maxmemory-policy", "noeviction"])
        .worker_env("TELEGRAM_SEND_RATE", SEND_RATE)
        .worker_env("WORKER_MAX_DELIVERIES", MAX_DELIVERIES)
        .worker_env("WORKER_CLAIM_IDLE_MS", CLAIM_IDLE_MS)
        .worker_env("WORKER_CONCURRENCY", "4")
        .start()
        .await
    else {
        return;
    };
    // The fleet ran before (the group exists), then a redeploy leaves a
    // gap in which the backlog builds up.
    s.workers[0].terminate();
    s.workers[0].wait_exit(Duration::from_secs(30)).await;
    set_maxmemory(&s, LIMIT).await;

    let proxy = FaultProxy::start(&s.api.url()).await;
    let mut burst = Burst::private(0, 0);
    let poison_chats = [7_199_998, 7_199_999];
    for chat in poison_chats {
        proxy.fail_chat(chat);
        let u = private_command(next_update_id(), chat, "Poison", Some("en"), "/help");
        s.post_ok(&u).await;
        burst.push(u);
    }

    // Fill Redis the way traffic does: until the ingress refuses.
    let mut refused: Vec<Value> = Vec::new();
    for i in 0..200 {
        let u = padded(7_100_000 + i, &format!("Filler{i}"));
        let r = webhook_post(&s.webhook_url(), Some(WEBHOOK_SECRET), u.to_string())
            .await
            .expect("POST");
        burst.push(u.clone());
        if r.status == 200 {
            continue;
        }
        assert_eq!(r.status, 503, "a full Redis is a 503: {}", r.body);
        assert!(
            r.header("retry-after").is_some(),
            "503 with Retry-After: {:?}",
            r.headers
        );
        refused.push(u);
        break;
    }
    assert_eq!(refused.len(), 1, "Redis never filled up");
    let backlog = s.stream_len().await;
    let (used_full, _) = info_memory(&s).await;
    loud(&format!(
        "FULL_REDIS: limit {LIMIT} reached after {backlog} updates in the stream; used_memory {}",
        mib(used_full)
    ));

    set_maxmemory(&s, TIGHT_LIMIT).await;
    let r = readyz(&s).await;
    assert_eq!(r.status, 503, "/readyz on a full Redis: {}", r.body);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    loud(&format!(
        "FULL_REDIS: /readyz answers {} ({})",
        r.status,
        r.body.trim()
    ));
    let late = private_command(next_update_id(), 7_300_000, "Late", Some("en"), "/start");
    let r = s.post(&late).await;
    assert_eq!(r.status, 503, "{}", r.body);
    burst.push(late.clone());
    refused.push(late);

    // A new deployment starts on the full Redis: both workers must join
    // and drain it.
    let started = Instant::now();
    for _ in 0..2 {
        s.spawn_worker(&[("TELEGRAM_API_URL", &proxy.url())]);
    }
    for w in &s.workers[1..] {
        assert!(
            w.wait_for_log("worker consuming", Duration::from_secs(30))
                .await,
            "a worker did not join the group on a full Redis\n{}",
            w.logs_tail()
        );
    }
    let joined = started.elapsed();
    let healthy = backlog as usize - poison_chats.len();
    s.wait_calls(
        "the healthy backlog answered on the full Redis",
        DRAIN_TIMEOUT,
        |calls| {
            calls
                .iter()
                .filter(|c| c.ok() && c.method == "sendMessage")
                .count()
                >= healthy
        },
    )
    .await;
    let answered_in = started.elapsed() - joined;
    let redis_url = s.redis.url();
    let drained = eventually(DRAIN_TIMEOUT, || {
        let url = redis_url.clone();
        async move {
            queue_state(&url)
                .await
                .is_some_and(|q| q.drained() && q.length == 0)
        }
    })
    .await;
    assert!(
        drained,
        "the backlog did not drain on the full Redis within {DRAIN_TIMEOUT:?}: {:?}\n{}",
        queue_state(&redis_url).await,
        s.logs_tail()
    );
    let took = started.elapsed();
    let (used_drained, max) = info_memory(&s).await;
    loud(&format!(
        "FULL_REDIS: with Redis over its limit: 2 new workers consuming {:.2} s after start; {healthy} backlog updates answered in {:.1} s ({:.1}/s; send budget {SEND_RATE}/s); stream empty (poison dead-lettered) after {:.1} s; used_memory {} -> {} (limit {})",
        joined.as_secs_f64(),
        answered_in.as_secs_f64(),
        healthy as f64 / answered_in.as_secs_f64(),
        took.as_secs_f64(),
        mib(used_full),
        mib(used_drained),
        mib(max)
    ));
    assert!(
        used_drained > max,
        "Redis stayed over its limit for the whole drain"
    );
    let dead_during = account(&s, &burst).await;
    assert_eq!(
        dead_during.dead,
        poison_chats.len(),
        "the poison updates were dead-lettered on the full Redis: {:?}",
        dead_during.dead_letters
    );
    assert_eq!(dead_during.duplicates, 0, "{:?}", dead_during.repeated);
    assert_eq!(readyz(&s).await.status, 503, "still full: still not ready");

    // Room again (the plan upgraded, or the limit lifted): Telegram's
    // resends of the refused updates are stored, new traffic flows.
    set_maxmemory(&s, "0").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            readyz(&s).await.status == 200
        })
        .await,
        "/readyz is 200 once Redis has room"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for u in &refused {
        post_until_accepted(&s.webhook_url(), u, deadline)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail()));
    }
    let fresh = Burst::private(20, 7_400_000);
    post_all_once(s.webhook_url(), fresh.updates.clone(), 8)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs_tail()));
    for u in fresh.updates {
        burst.push(u);
    }
    s.wait_workers_joined(2).await;

    wait_accounted(&s, &burst, DRAIN_TIMEOUT).await;
    // Long enough for a wrongly released entry to be reclaimed and
    // answered a second time.
    tokio::time::sleep(Duration::from_millis(
        3 * CLAIM_IDLE_MS.parse::<u64>().expect("ms"),
    ))
    .await;
    let a = account(&s, &burst).await;
    a.print("full_redis");
    assert_eq!(a.lost, 0, "{:?}", a.unaccounted);
    assert_eq!(a.duplicates, 0, "answered twice: {:?}", a.repeated);
    assert_eq!(a.dead, poison_chats.len(), "{:?}", a.dead_letters);
    assert_eq!(a.answered, burst.len() - poison_chats.len());
    s.assert_clean();
}

/// The finish must outlast any refusal: a worker that gave up after a
/// while and let the entry go had it reclaimed and answered twice (the
/// issue: 8 of 162 users). `min-replicas-to-write` makes Redis refuse
/// every write - the finish, the heartbeat, the reclaim - for longer than
/// the minute the old code waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finish_refused_for_over_a_minute_never_answers_twice() {
    const REFUSED_FOR: Duration = Duration::from_secs(75);
    let Some(s) = Stack::builder()
        .worker_env("WORKER_CLAIM_IDLE_MS", CLAIM_IDLE_MS)
        .start()
        .await
    else {
        return;
    };
    let mut burst = Burst::private(0, 0);
    let u = private_command(next_update_id(), 7_500_000, "Patient", Some("en"), "/help");
    burst.push(u.clone());
    // The reply takes a while, so writes can be refused while it is on
    // its way: the update's completion (writes, "handled" mark, the reply
    // kept) came first, and forgetting the sent reply is the first write
    // refused.
    s.api.set_delay(Duration::from_secs(2));
    s.post_ok(&u).await;
    let url = s.redis.url();
    assert!(
        eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move { queue_state(&url).await.is_some_and(|q| q.kept == 1) }
        })
        .await,
        "the update was not handled\n{}",
        s.logs_tail()
    );
    let mut c = s.redis_conn().await;
    let set_min_replicas = |n: &'static str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(n)
            .clone()
    };
    let _: () = set_min_replicas("1")
        .query_async(&mut c)
        .await
        .expect("CONFIG SET");
    s.wait_calls("the reply", Duration::from_secs(30), |calls| {
        calls.iter().any(|c| c.ok() && c.method == "sendMessage")
    })
    .await;
    tokio::time::sleep(REFUSED_FOR).await;
    let _: () = set_min_replicas("0")
        .query_async(&mut c)
        .await
        .expect("CONFIG SET");
    s.api.set_delay(Duration::ZERO);

    s.wait_drained(Duration::from_secs(30)).await;
    // A reclaim, had the entry been let go, comes within a claim period.
    tokio::time::sleep(Duration::from_millis(
        3 * CLAIM_IDLE_MS.parse::<u64>().expect("ms"),
    ))
    .await;
    let a = account(&s, &burst).await;
    a.print("finish_refused_75s");
    assert_eq!(a.duplicates, 0, "answered twice: {:?}", a.repeated);
    assert_eq!(a.answered, 1);
    assert_eq!(s.counter("updates_handled").await, 1);
    s.assert_clean();
}
