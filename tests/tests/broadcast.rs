//! Broadcasts through the durable queue and the shared budget, against the
//! real workers, real Redis and the fake Bot API: a worker killed mid-way,
//! users who blocked the bot, interactive replies first, pause / resume /
//! cancel.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use e2e::harness::eventually;
use e2e::stack::Stack;
use e2e::updates::{next_update_id, private_command};
use shared::outbound::{Audience, BroadcastStatus, Control, OutMessage};
use shared::queue::{Outbound, RedisStore};

const T: Duration = Duration::from_secs(180);

fn store(s: &Stack) -> RedisStore {
    RedisStore::open(&s.redis.url(), s.keys.clone()).expect("redis url")
}

fn message(text: &str) -> OutMessage {
    OutMessage {
        method: "sendMessage".into(),
        params: json!({ "text": text }),
    }
}

async fn status(store: &RedisStore, id: &str) -> BroadcastStatus {
    store
        .broadcast_status(id)
        .await
        .expect("status")
        .expect("known broadcast")
}

async fn wait_state(
    store: &RedisStore,
    id: &str,
    state: &str,
    timeout: Duration,
) -> BroadcastStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let st = status(store, id).await;
        if st.state == state {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "broadcast not {state} in {timeout:?}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Successful sends of `text` per chat.
fn received(s: &Stack, text: &str) -> HashMap<i64, usize> {
    let mut m = HashMap::new();
    for c in s.api.calls_to("sendMessage") {
        if c.ok() && c.param("text").as_str() == Some(text) {
            if let Some(chat) = c.chat_id() {
                *m.entry(chat).or_default() += 1;
            }
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_survives_a_killed_worker_skips_blocked_users_and_lets_replies_first() {
    const N: i64 = 5_000;
    const FIRST: i64 = 10_000_000;
    let Some(mut s) = Stack::builder()
        .workers(2)
        .worker_env("TELEGRAM_SEND_RATE", "280")
        // The fake answers at once: a short lease brings the killed
        // worker's batch back soon.
        .worker_env("WORKER_BROADCAST_LEASE_MS", "5000")
        .start()
        .await
    else {
        return;
    };
    // Telegram's bot-wide limit, scaled up: more than 300 sends in any
    // second is answered 429.
    s.api.flood_limit(300);
    let chats: Vec<i64> = (0..N).map(|i| FIRST + i).collect();
    let blocked: Vec<i64> = chats.iter().copied().filter(|c| c % 10 == 3).collect();
    for c in &blocked {
        s.api.block_chat(*c);
    }
    let store = store(&s);
    let started = Instant::now();
    let id = store
        .broadcast_create(&message("news #1"), &Audience::Chats(chats.clone()))
        .await
        .expect("broadcast created");

    // An interactive /start in the middle of it is answered at once.
    assert!(
        eventually(T, || async { received(&s, "news #1").len() >= 1_000 }).await,
        "the broadcast did not get going\n{}",
        s.logs_tail()
    );
    let asked = Instant::now();
    s.post_ok(&private_command(
        next_update_id(),
        42,
        "Ann",
        Some("en"),
        "/start",
    ))
    .await;
    let reply = s.wait_nth_reply(42, 1, Duration::from_secs(10)).await;
    let reply_ms = (reply.at - asked).as_millis();

    // kill -9 one worker mid-way, start another.
    assert!(eventually(T, || async { received(&s, "news #1").len() >= 2_000 }).await);
    s.workers[0].kill().await;
    let at_kill = received(&s, "news #1").len();
    s.spawn_worker(&[]);

    let done = wait_state(&store, &id, "done", T).await;
    let secs = started.elapsed().as_secs_f64();
    let got = received(&s, "news #1");
    let reached: Vec<i64> = chats
        .iter()
        .copied()
        .filter(|c| !blocked.contains(c))
        .collect();
    let missing = reached.iter().filter(|c| !got.contains_key(c)).count();
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    let to_blocked = blocked.iter().filter(|c| got.contains_key(c)).count();
    println!(
        "broadcast to {N} chats ({} blocked), 2 workers, one killed after {at_kill} sends: \
         {} received, {missing} missing, {duplicates} duplicates (bound: {} in flight per worker), \
         status sent {} blocked {} failed {}, done in {:.1} s (the killed worker's batch waited out its 5 s lease), 429s from the fake: {}, \
         /start during it answered in {reply_ms} ms",
        blocked.len(),
        got.len(),
        worker::broadcaster::BATCH,
        done.sent,
        done.blocked,
        done.failed,
        secs,
        s.api.flood_refusals(),
    );
    assert_eq!(missing, 0);
    assert_eq!(to_blocked, 0);
    assert!(
        duplicates <= worker::broadcaster::BATCH,
        "{duplicates} duplicates"
    );
    assert_eq!(done.blocked, blocked.len() as u64);
    assert_eq!(done.sent + done.blocked, N as u64);
    assert_eq!(
        s.api.flood_refusals(),
        0,
        "the budget let Telegram refuse sends"
    );
    assert!(
        reply_ms < 1_000,
        "/start waited {reply_ms} ms behind the broadcast"
    );

    // The blocked users are marked: a second broadcast skips them.
    let before = s.api.calls_to("sendMessage").len();
    let id2 = store
        .broadcast_create(&message("news #2"), &Audience::Chats(chats.clone()))
        .await
        .expect("second broadcast");
    let second = wait_state(&store, &id2, "done", T).await;
    let got2 = received(&s, "news #2");
    let tried_blocked = s.api.calls_to("sendMessage")[before..]
        .iter()
        .filter(|c| c.chat_id().is_some_and(|c| blocked.contains(&c)))
        .count();
    println!(
        "second broadcast to the same {N}: total {} (blocked users skipped), {} received, {tried_blocked} sends to blocked users",
        second.total,
        got2.len()
    );
    assert_eq!(second.total, (N as usize - blocked.len()) as u64);
    assert_eq!(tried_blocked, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_and_cancel_do_what_they_say() {
    let Some(s) = Stack::builder()
        .worker_env("TELEGRAM_SEND_RATE", "50")
        .start()
        .await
    else {
        return;
    };
    let store = store(&s);
    let chats: Vec<i64> = (0..2_000).map(|i| 20_000_000 + i).collect();
    let id = store
        .broadcast_create(&message("promo"), &Audience::Chats(chats))
        .await
        .unwrap();
    assert!(eventually(T, || async { received(&s, "promo").len() >= 50 }).await);

    let paused = store
        .broadcast_control(&id, Control::Pause)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paused.state, "paused");
    // What was in flight at the pause finishes; then nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_pause = received(&s, "promo").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(received(&s, "promo").len(), at_pause, "sent while paused");

    let resumed = store
        .broadcast_control(&id, Control::Resume)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.state, "running");
    assert!(eventually(T, || async { received(&s, "promo").len() >= at_pause + 50 }).await);

    let cancelled = store
        .broadcast_control(&id, Control::Cancel)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.state, "cancelled");
    assert_eq!(cancelled.left, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_cancel = received(&s, "promo").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(received(&s, "promo").len(), at_cancel, "sent after cancel");
    let end = status(&store, &id).await;
    println!(
        "pause at {at_pause} sent: none while paused; resumed; cancelled at {at_cancel}: state {}, sent {} of {}",
        end.state, end.sent, end.total
    );
    assert!(end.sent < end.total);
    assert_eq!(
        store
            .broadcast_control("b-unknown", Control::Pause)
            .await
            .unwrap(),
        None
    );
}
