//! The store's group commit against a real Redis: calls that arrive
//! together share one script call (`enqueue_many`, `end_many`,
//! `admit_many`), and each caller still gets exactly the answer a call of
//! its own would have given - a resend inside a batch is a duplicate, a
//! second delivery inside a batch is not fresh, the send budget counts
//! every booking before it.

use std::sync::Arc;
use std::time::Duration;

use e2e::harness::RedisServer;
use serde_json::json;
use shared::envelope::{probe, Enqueued, Entry};
use shared::keys::Keys;
use shared::queue::{
    Admit, Budget, Completion, ConsumerGroup, Delivery, Directory, Intake, Lane, RedisLayout,
    RedisStore, SendBudget,
};

const T: Duration = Duration::from_secs(20);

fn update(update_id: i64, chat: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id, "date": 0, "text": "/start",
            "chat": {"id": chat, "type": "private", "first_name": "A"},
            "from": {"id": chat, "is_bot": false, "first_name": "A"}
        }
    }))
    .unwrap()
}

/// One send a second for the whole bot, with `tolerance_us` of burst; no
/// chat limit.
fn one_a_second(chat_id: i64, tolerance_us: u64) -> Budget {
    Budget {
        paid: false,
        chat_id,
        interval_us: 1_000_000,
        tolerance_us,
        chat_interval_us: 0,
        chat_tolerance_us: 0,
    }
}

async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// 30 updates from 10 chats, each posted twice at the same moment.
async fn store_pairs(store: &Arc<RedisStore>) -> Vec<(i64, Enqueued)> {
    let calls = (1..=30i64).flat_map(|id| [id, id]).map(|id| {
        let store = store.clone();
        tokio::spawn(async move {
            let raw = update(id, 100 + id % 10);
            let p = probe(&raw).unwrap();
            (id, store.enqueue(&p, Lane::Ordinary, &raw).await.unwrap())
        })
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resend_in_the_same_batch_is_a_duplicate_and_nothing_is_stored_twice() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = Arc::new(RedisStore::open(&redis.url(), Keys::default()).unwrap());
    let answers = tokio::time::timeout(T, store_pairs(&store)).await.unwrap();
    for id in 1..=30 {
        let stored = answers
            .iter()
            .filter(|(i, a)| *i == id && matches!(a, Enqueued::Stored(_)))
            .count();
        assert_eq!(stored, 1, "update {id}: {answers:?}");
    }
    let mut c = redis_conn(&redis).await;
    let len: u64 = redis::cmd("XLEN")
        .arg(Keys::default().stream())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, 30);
    // Each chat's order list holds its three entries, each once.
    for chat in 100..110i64 {
        let order: Vec<String> = redis::cmd("LRANGE")
            .arg(Keys::default().order(&format!("c{chat}")))
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(order.len(), 3, "chat {chat}: {order:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_ended_together_count_once_and_free_their_chats() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = Arc::new(RedisStore::open(&redis.url(), Keys::default()).unwrap());
    tokio::time::timeout(T, store_pairs(&store)).await.unwrap();
    store.join_group("w").await.unwrap();
    let read = store
        .read_new("w", Lane::Ordinary, 0, 100, 100)
        .await
        .unwrap();
    assert_eq!(read.entries.len(), 30);

    // Every entry finished twice at once (a second delivery racing the
    // first); even update ids keep a reply for sending.
    let finishes = read
        .entries
        .iter()
        .flat_map(|e| [e.clone(), e.clone()])
        .map(|e: Entry| {
            let store = store.clone();
            tokio::spawn(async move {
                let reply = (e.update_id % 2 == 0).then_some("{\"text\":\"hi\"}");
                let done = Completion {
                    reply,
                    reply_lease_until_ms: i64::MAX / 2,
                    ..Completion::default()
                };
                (e.id.clone(), store.finish(&e, done).await.unwrap().0)
            })
        });
    let fresh: Vec<(String, bool)> = tokio::time::timeout(T, futures::future::join_all(finishes))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for e in &read.entries {
        let n = fresh.iter().filter(|(id, f)| *id == e.id && *f).count();
        assert_eq!(n, 1, "entry {} fresh {n} times", e.id);
    }
    let mut c = redis_conn(&redis).await;
    let counters: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(Keys::default().counters())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(counters.get("updates_handled"), Some(&30), "{counters:?}");
    assert_eq!(
        counters.get("updates_deduplicated"),
        Some(&30),
        "{counters:?}"
    );
    assert_eq!(store.kept_replies().await.unwrap(), 15);

    // The kept replies went out, all at once: every chat is free.
    let sent = read
        .entries
        .iter()
        .filter(|e| e.update_id % 2 == 0)
        .map(|e| {
            let (store, id, key) = (store.clone(), e.id.clone(), e.key.clone());
            tokio::spawn(async move { store.reply_sent(&id, &key).await.unwrap() })
        });
    tokio::time::timeout(T, futures::future::join_all(sent))
        .await
        .unwrap();
    assert_eq!(store.kept_replies().await.unwrap(), 0);
    let (len, pending): (u64, redis::Value) = redis::pipe()
        .cmd("XLEN")
        .arg(Keys::default().stream())
        .cmd("XPENDING")
        .arg(Keys::default().stream())
        .arg(shared::keys::GROUP)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, 0);
    assert!(
        matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0))),
        "{pending:?}"
    );
    for chat in 100..110i64 {
        let left: u64 = redis::cmd("LLEN")
            .arg(Keys::default().order(&format!("c{chat}")))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(left, 0, "chat {chat} still holds entries");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sends_budgeted_together_get_exactly_the_burst() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = Arc::new(RedisStore::open(&redis.url(), Keys::default()).unwrap());
    // One send a second, a burst of five: of 25 asking at once, five go.
    let budget = one_a_second(7, 4_000_000);
    let asks = (0..25).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.admit(budget).await.unwrap() })
    });
    let answers: Vec<Admit> = tokio::time::timeout(T, futures::future::join_all(asks))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let go = answers.iter().filter(|a| **a == Admit::Go).count();
    assert_eq!(go, 5, "{answers:?}");
    // Refusals book nothing: each of the others waits about a second.
    let mut waits: Vec<u64> = answers
        .iter()
        .filter_map(|a| match a {
            Admit::Rate(us) => Some(*us),
            _ => None,
        })
        .collect();
    waits.sort_unstable();
    assert_eq!(waits.len(), 20);
    assert!(
        waits.iter().all(|w| (900_000..=1_000_000).contains(w)),
        "{waits:?}"
    );
}

/// Whether Redis has run (and so cached) a script: the way to tell which
/// batch a call rode in.
async fn script_ran(c: &mut redis::aio::MultiplexedConnection, script: &redis::Script) -> bool {
    let known: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(script.get_hash())
        .query_async(c)
        .await
        .unwrap();
    known == [true]
}

/// With one shard the budget shares the bot's home: sends asked while
/// entries end ride in the ends' batches (`admit_many` never runs), and
/// each caller still gets its own answer - every entry fresh once, exactly
/// the burst of sends let through.
#[tokio::test(flavor = "multi_thread")]
async fn ends_and_sends_together_each_get_their_own_answer() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = Arc::new(RedisStore::open(&redis.url(), Keys::default()).unwrap());
    tokio::time::timeout(T, store_pairs(&store)).await.unwrap();
    store.join_group("w").await.unwrap();
    let read = store
        .read_new("w", Lane::Ordinary, 0, 100, 100)
        .await
        .unwrap();
    assert_eq!(read.entries.len(), 30);
    let budget = one_a_second(7, 4_000_000);
    let finishes = read.entries.iter().cloned().map(|e: Entry| {
        let store = store.clone();
        tokio::spawn(async move {
            let fresh = store.finish(&e, Completion::default()).await.unwrap().0;
            (Some(fresh), None)
        })
    });
    let asks = (0..25).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { (None, Some(store.admit(budget).await.unwrap())) })
    });
    let answers: Vec<(Option<bool>, Option<Admit>)> =
        tokio::time::timeout(T, futures::future::join_all(finishes.chain(asks)))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
    let fresh = answers.iter().filter(|(f, _)| *f == Some(true)).count();
    let go = answers
        .iter()
        .filter(|(_, a)| *a == Some(Admit::Go))
        .count();
    let waiting = answers
        .iter()
        .filter(|(_, a)| matches!(a, Some(Admit::Rate(us)) if (900_000..=1_000_000).contains(us)))
        .count();
    assert_eq!((fresh, go, waiting), (30, 5, 20), "{answers:?}");

    let mut c = redis_conn(&redis).await;
    let scripts = shared::queue::scripts::scripts();
    assert!(script_ran(&mut c, &scripts.end_many).await);
    assert!(
        !script_ran(&mut c, &scripts.admit_many).await,
        "sends were budgeted in a call of their own"
    );
    let handled: u64 = redis::cmd("HGET")
        .arg(Keys::default().counters())
        .arg("updates_handled")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(handled, 30);
}

/// With several shards the budget lives in another home than the bot's
/// (another slot on a cluster): sends are budgeted in calls of their own,
/// with the same answers.
#[tokio::test(flavor = "multi_thread")]
async fn sends_of_a_sharded_layout_are_budgeted_apart() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let layout = RedisLayout {
        cluster: Some(false),
        shards: 3,
        ..RedisLayout::default()
    };
    let target = shared::redis_conn::Target::single(&redis.url());
    let store = Arc::new(RedisStore::open_target(&target, Keys::default(), layout).unwrap());
    let budget = one_a_second(-5, 0);
    let asks = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.admit(budget).await.unwrap() })
    });
    let answers: Vec<Admit> = tokio::time::timeout(T, futures::future::join_all(asks))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        answers.iter().filter(|a| **a == Admit::Go).count(),
        1,
        "{answers:?}"
    );
    let mut c = redis_conn(&redis).await;
    let scripts = shared::queue::scripts::scripts();
    assert!(script_ran(&mut c, &scripts.admit_many).await);
    assert!(!script_ran(&mut c, &scripts.end_many).await);
}

/// A chat's head asked right after the reply that held it went out (the
/// park pass's question riding in the worker's batch) is the chat's next
/// entry, with that entry's done bit.
#[tokio::test(flavor = "multi_thread")]
async fn a_head_asked_with_the_end_that_moves_it_sees_the_next_entry() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = Arc::new(RedisStore::open(&redis.url(), Keys::default()).unwrap());
    for id in [1, 2] {
        let raw = update(id, 42);
        let p = probe(&raw).unwrap();
        store.enqueue(&p, Lane::Ordinary, &raw).await.unwrap();
    }
    store.join_group("w").await.unwrap();
    let read = store
        .read_new("w", Lane::Ordinary, 0, 10, 100)
        .await
        .unwrap();
    let [first, second] = &read.entries[..] else {
        panic!("read {:?}", read.entries);
    };
    let kept = Completion {
        reply: Some("{\"text\":\"hi\"}"),
        reply_lease_until_ms: i64::MAX / 2,
        ..Completion::default()
    };
    let (done_first, done_second) = futures::future::join(
        store.is_done(&first.id, first.update_id),
        store.is_done(&second.id, second.update_id),
    )
    .await;
    assert!(!done_first.unwrap() && !done_second.unwrap());
    assert!(store.finish(first, kept).await.unwrap().0);
    // Asked in the worker's batches, the dedupe check sees the finish.
    assert!(store.is_done(&first.id, first.update_id).await.unwrap());
    assert!(!store.is_done(&second.id, second.update_id).await.unwrap());
    // The kept reply holds the chat: the first entry is still its head.
    let chats = vec![(first.key.clone(), first.update_id)];
    let before = store.heads(&chats).await.unwrap();
    assert_eq!(before[0].entry.as_deref(), Some(first.id.as_str()));
    assert!(before[0].asked_done);

    let next = vec![(second.key.clone(), second.update_id)];
    let (sent, after) = tokio::time::timeout(
        T,
        futures::future::join(store.reply_sent(&first.id, &first.key), store.heads(&next)),
    )
    .await
    .unwrap();
    assert_eq!(sent.unwrap().as_deref(), Some(second.id.as_str()));
    let after = after.unwrap();
    assert_eq!(after[0].entry.as_deref(), Some(second.id.as_str()));
    assert!(!after[0].asked_done);
}

/// The completion of an answered update asks the budget for its reply's
/// first send in the same batch: the answer comes back with the finish and
/// the send is booked (the next one waits), exactly as if asked apart.
#[tokio::test(flavor = "multi_thread")]
async fn a_finish_asks_the_budget_for_its_reply_in_the_same_call() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = Arc::new(RedisStore::open(&redis.url(), Keys::default()).unwrap());
    for id in [1, 2] {
        let raw = update(id, 40 + id);
        let p = probe(&raw).unwrap();
        store.enqueue(&p, Lane::Ordinary, &raw).await.unwrap();
    }
    store.join_group("w").await.unwrap();
    let read = store
        .read_new("w", Lane::Ordinary, 0, 10, 100)
        .await
        .unwrap();
    let budget = one_a_second(41, 0);
    let kept = Completion {
        reply: Some("{\"text\":\"hi\"}"),
        reply_lease_until_ms: i64::MAX / 2,
        ..Completion::default()
    };
    let (fresh, _, admitted) = store
        .finish_admitting(&read.entries[0], kept, Some(budget))
        .await
        .unwrap();
    assert!(fresh);
    assert_eq!(admitted, Some(Admit::Go));
    // The first send was booked: the next one waits about a second.
    let (fresh, _, admitted) = store
        .finish_admitting(&read.entries[1], kept, Some(budget))
        .await
        .unwrap();
    assert!(fresh);
    assert!(
        matches!(admitted, Some(Admit::Rate(us)) if (900_000..=1_000_000).contains(&us)),
        "{admitted:?}"
    );
    // Without a send to ask about, nothing is asked.
    let (fresh, _, admitted) = store
        .finish_admitting(&read.entries[1], Completion::default(), None)
        .await
        .unwrap();
    assert!(!fresh);
    assert_eq!(admitted, None);
    let mut c = redis_conn(&redis).await;
    assert!(!script_ran(&mut c, &shared::queue::scripts::scripts().admit_many).await);
}

/// An update stored while its chat has no other entry waiting is marked
/// its chat's first (the worker runs it without asking for the head); one
/// stored behind another is not, nor is one of a chat whose earlier entry
/// is still listed - also when both arrive in one batch.
#[tokio::test(flavor = "multi_thread")]
async fn updates_stored_first_in_their_chat_are_marked() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = Arc::new(RedisStore::open(&redis.url(), Keys::default()).unwrap());
    let stored = [(1, 50), (2, 50), (3, 51)].map(|(id, chat)| {
        let store = store.clone();
        async move {
            let raw = update(id, chat);
            let p = probe(&raw).unwrap();
            store.enqueue(&p, Lane::Ordinary, &raw).await.unwrap()
        }
    });
    tokio::time::timeout(T, futures::future::join_all(stored))
        .await
        .unwrap();
    store.join_group("w").await.unwrap();
    let read = store
        .read_new("w", Lane::Ordinary, 0, 10, 100)
        .await
        .unwrap();
    // Stored concurrently: which of chat 50's two went in first is up to
    // the scheduler; the one read first must be the one marked.
    let of_chat = |ids: &[i64]| -> Vec<&shared::envelope::Entry> {
        read.entries
            .iter()
            .filter(|e| ids.contains(&e.update_id))
            .collect()
    };
    let (chat50, chat51) = (of_chat(&[1, 2]), of_chat(&[3]));
    assert_eq!(read.entries.len(), 3);
    let flags: Vec<bool> = chat50.iter().map(|e| e.first_in_chat).collect();
    assert_eq!(
        flags,
        [true, false],
        "chat 50's first stored is marked, the other not"
    );
    assert!(chat51[0].first_in_chat);

    // Chat 50's first entry ends; its second is still listed, so a new
    // update of chat 50 is not first either. Once the chat is empty, the
    // next one is.
    store
        .finish(chat50[0], Completion::default())
        .await
        .unwrap();
    for id in [4, 5] {
        let raw = update(id, 50);
        let p = probe(&raw).unwrap();
        store.enqueue(&p, Lane::Ordinary, &raw).await.unwrap();
        if id == 4 {
            let next = store
                .read_new("w", Lane::Ordinary, 0, 10, 100)
                .await
                .unwrap();
            assert!(!next.entries[0].first_in_chat);
            store
                .finish(chat50[1], Completion::default())
                .await
                .unwrap();
            store
                .finish(&next.entries[0], Completion::default())
                .await
                .unwrap();
        }
    }
    let last = store
        .read_new("w", Lane::Ordinary, 0, 10, 100)
        .await
        .unwrap();
    assert_eq!(last.entries[0].update_id, 5);
    assert!(last.entries[0].first_in_chat);
}

/// A send under a per-chat limit of one a second and nothing else.
fn chat_limited(chat_id: i64) -> Budget {
    Budget {
        paid: false,
        chat_id,
        interval_us: 0,
        tolerance_us: 0,
        chat_interval_us: 1_000_000,
        chat_tolerance_us: 0,
    }
}

/// A chat pause of 20 s as a version wrote it: `value` is what the key
/// holds.
async fn pause_as_written(c: &mut redis::aio::MultiplexedConnection, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("PX")
        .arg(20_000)
        .query_async(c)
        .await
        .unwrap();
}

/// A chat paused by Telegram's 429 waits out what is left of the pause -
/// read in the same step as the chat's own rate - also when an earlier
/// version wrote the pause (value `1`, only a time to live); another chat
/// goes on, and a pause whose end has passed holds nothing back.
#[tokio::test(flavor = "multi_thread")]
async fn a_chat_pause_holds_whichever_version_wrote_it() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let keys = Keys::default();
    let store = RedisStore::open(&redis.url(), keys.clone()).unwrap();
    let paused = |a: Admit, max_us: u64| matches!(a, Admit::ChatPaused(us) if us > max_us - 2_000_000 && us <= max_us);

    store
        .rate_limited(7, Duration::from_secs(30), Duration::from_secs(1))
        .await
        .unwrap();
    let a = store.admit(chat_limited(7)).await.unwrap();
    assert!(paused(a, 30_000_000), "{a:?}");
    let a = store.admit(chat_limited(8)).await.unwrap();
    assert!(matches!(a, Admit::Go), "{a:?}");

    let mut c = redis_conn(&redis).await;
    pause_as_written(&mut c, &keys.pause_chat(9), "1").await;
    let a = store.admit(chat_limited(9)).await.unwrap();
    assert!(paused(a, 20_000_000), "an earlier version's pause: {a:?}");

    // Ended long ago, the key not yet expired: no pause; the send is
    // booked, so the chat's next one waits for its rate.
    pause_as_written(&mut c, &keys.pause_chat(10), "1000").await;
    let a = store.admit(chat_limited(10)).await.unwrap();
    assert!(matches!(a, Admit::Go), "{a:?}");
    let a = store.admit(chat_limited(10)).await.unwrap();
    assert!(matches!(a, Admit::Rate(_)), "{a:?}");
}

/// The user record ended with an update: first_seen is set by the first
/// and kept by every later one (also one that brings a field the record
/// did not have yet, a /start payload), names and last_seen follow the
/// latest, messages count every message - one user's updates in one batch
/// or in batches of their own.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_record_keeps_its_first_seen_and_follows_the_latest() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = Arc::new(RedisStore::open(&redis.url(), Keys::default()).unwrap());
    for id in 1..=4 {
        let raw = update(id, 77);
        store
            .enqueue(&probe(&raw).unwrap(), Lane::Ordinary, &raw)
            .await
            .unwrap();
    }
    store.join_group("w").await.unwrap();
    let read = store
        .read_new("w", Lane::Ordinary, 0, 10, 100)
        .await
        .unwrap();
    assert_eq!(read.entries.len(), 4);
    let touch = |name: &str, payload: &str, is_message: bool| shared::queue::UserTouch {
        id: 77,
        first_name: name.to_owned(),
        username: "ann".to_owned(),
        language_code: "en".to_owned(),
        is_message,
        start_payload: payload.to_owned(),
    };
    let ends = [
        touch("Ann", "", true),
        touch("Anna", "ref_1", true),
        touch("Anna", "", false),
        touch("Anna", "ref_2", true),
    ];
    let finish = |i: usize| {
        let store = store.clone();
        let entry = read.entries[i].clone();
        let user = ends[i].clone();
        async move {
            let done = Completion {
                user: Some(&user),
                ..Completion::default()
            };
            store.finish(&entry, done).await.unwrap();
        }
    };
    finish(0).await;
    let first = store.user(77).await.unwrap().expect("recorded");
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The rest together (one batch, or as the batches fall).
    futures::future::join_all((1..4).map(finish)).await;
    let rec = store.user(77).await.unwrap().expect("recorded");
    assert_eq!(rec.first_seen, first.first_seen, "first_seen set once");
    assert!(rec.last_seen > first.first_seen, "{rec:?}");
    assert_eq!(rec.first_name, "Anna");
    assert!(rec
        .start_payload
        .as_deref()
        .is_some_and(|p| p.starts_with("ref_")));
    assert_eq!(rec.messages, 3);
}
