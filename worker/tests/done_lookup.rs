//! The consumer's "already handled?" lookup failing (Redis hiccup) must not
//! let the handler run: an update whose state is unknown may already have
//! been answered. In-process: the real consumer over a `MemoryStore` whose
//! `is_done` fails a few times.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use shared::envelope::{probe, Enqueued, Entry, Probe};
use shared::outbound::{
    Audience, BroadcastStatus, Control, OutMessage, Recipient, RecipientOutcome,
};
use shared::queue::{
    Admit, Budget, Claimed, Completion, ConsumerGroup, ConsumerInfo, Coordination,
    DeadLetterRequest, Delivery, Depth, Directory, Head, Intake, Lane, MemoryStore, OrphanReply,
    Outbound, Read, Scope, SendBudget, Store, StoreError, StoreFuture,
};
use shared::stats::{BotStats, UserRecord};
use shared::telegram::BotApi;
use worker::consumer::{Consumer, Settings};
use worker::dispatch::{Handled, Handler};
use worker::metrics::Metrics;
use worker::sender::Sender;
use worker::HandlerError;

/// `MemoryStore`, except that the first `failing` lookups fail.
struct FlakyLookups {
    inner: MemoryStore,
    failing: usize,
    lookups: AtomicUsize,
    failures_counted: AtomicUsize,
}

impl Store for FlakyLookups {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    fn keys(&self) -> &shared::keys::Keys {
        self.inner.keys()
    }
}

impl Intake for FlakyLookups {
    fn enqueue<'a>(
        &'a self,
        probe: &'a Probe,
        lane: Lane,
        raw: &'a [u8],
    ) -> StoreFuture<'a, Enqueued> {
        self.inner.enqueue(probe, lane, raw)
    }
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }
    fn depth(&self, lane: Lane) -> StoreFuture<'_, Depth> {
        self.inner.depth(lane)
    }
}

impl Coordination for FlakyLookups {
    fn get(&self, key: &str) -> StoreFuture<'_, Option<String>> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &str) -> StoreFuture<'_, ()> {
        self.inner.set(key, value)
    }
    fn try_lock(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreFuture<'_, bool> {
        self.inner.try_lock(key, holder, ttl_ms)
    }
    fn lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreFuture<'_, bool> {
        self.inner.lease(key, holder, ttl_ms)
    }
    fn release(&self, key: &str, holder: &str) -> StoreFuture<'_, ()> {
        self.inner.release(key, holder)
    }
}

impl ConsumerGroup for FlakyLookups {
    fn join_group<'a>(&'a self, consumer: &'a str) -> StoreFuture<'a, ()> {
        self.inner.join_group(consumer)
    }
    fn read_new<'a>(
        &'a self,
        consumer: &'a str,
        lane: Lane,
        _shard: u16,
        count: usize,
        block_ms: u64,
    ) -> StoreFuture<'a, Read> {
        self.inner.read_new(consumer, lane, 0, count, block_ms)
    }
    fn autoclaim<'a>(
        &'a self,
        consumer: &'a str,
        lane: Lane,
        _shard: u16,
        min_idle_ms: u64,
        cursor: &'a str,
        count: usize,
    ) -> StoreFuture<'a, Claimed> {
        self.inner
            .autoclaim(consumer, lane, 0, min_idle_ms, cursor, count)
    }
    fn delivery_counts<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<(String, u64)>> {
        self.inner.delivery_counts(ids)
    }
    fn heartbeat<'a>(&'a self, consumer: &'a str, ids: &'a [String]) -> StoreFuture<'a, ()> {
        self.inner.heartbeat(consumer, ids)
    }
    fn consumers(&self) -> StoreFuture<'_, Vec<ConsumerInfo>> {
        self.inner.consumers()
    }
    fn leave_group<'a>(&'a self, consumer: &'a str) -> StoreFuture<'a, bool> {
        self.inner.leave_group(consumer)
    }
    fn mark_alive<'a>(&'a self, consumer: &'a str, ttl: Duration) -> StoreFuture<'a, ()> {
        self.inner.mark_alive(consumer, ttl)
    }
    fn delete_consumer<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        self.inner.delete_consumer(name)
    }
}

impl Outbound for FlakyLookups {
    fn outbox_put<'a>(
        &'a self,
        msg: &'a OutMessage,
        due_ms: i64,
        key: Option<&'a str>,
    ) -> StoreFuture<'a, (String, bool)> {
        self.inner.outbox_put(msg, due_ms, key)
    }
    fn broadcast_create<'a>(
        &'a self,
        msg: &'a OutMessage,
        to: &'a Audience,
    ) -> StoreFuture<'a, String> {
        self.inner.broadcast_create(msg, to)
    }
    fn broadcast_status<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<BroadcastStatus>> {
        self.inner.broadcast_status(id)
    }
    fn broadcast_message<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<OutMessage>> {
        self.inner.broadcast_message(id)
    }
    fn broadcast_list(&self) -> StoreFuture<'_, Vec<BroadcastStatus>> {
        self.inner.broadcast_list()
    }
    fn broadcast_control<'a>(
        &'a self,
        id: &'a str,
        c: Control,
    ) -> StoreFuture<'a, Option<BroadcastStatus>> {
        self.inner.broadcast_control(id, c)
    }
    fn broadcasts_running(&self) -> StoreFuture<'_, Vec<String>> {
        self.inner.broadcasts_running()
    }
    fn broadcast_take<'a>(
        &'a self,
        id: &'a str,
        count: usize,
        lease_ms: u64,
    ) -> StoreFuture<'a, Vec<Recipient>> {
        self.inner.broadcast_take(id, count, lease_ms)
    }
    fn broadcast_record<'a>(
        &'a self,
        r: &'a Recipient,
        o: RecipientOutcome,
    ) -> StoreFuture<'a, ()> {
        self.inner.broadcast_record(r, o)
    }
    fn mark_blocked(&self, chat_id: i64) -> StoreFuture<'_, ()> {
        self.inner.mark_blocked(chat_id)
    }
}

impl Delivery for FlakyLookups {
    fn is_done<'a>(&'a self, _entry_id: &'a str, update_id: i64) -> StoreFuture<'a, bool> {
        if self.lookups.fetch_add(1, Ordering::SeqCst) < self.failing {
            return Box::pin(async { Err(StoreError::Timeout) });
        }
        self.inner.is_done(_entry_id, update_id)
    }
    fn count_failure<'a>(&'a self, entry_id: &'a str) -> StoreFuture<'a, u64> {
        self.failures_counted.fetch_add(1, Ordering::SeqCst);
        self.inner.count_failure(entry_id)
    }
    fn finish<'a>(
        &'a self,
        entry: &'a Entry,
        done: Completion<'a>,
    ) -> StoreFuture<'a, (bool, Option<String>)> {
        self.inner.finish(entry, done)
    }
    fn reply_sent<'a>(
        &'a self,
        entry_id: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, Option<String>> {
        self.inner.reply_sent(entry_id, key)
    }
    fn delay_reply<'a>(
        &'a self,
        entry_id: &'a str,
        body: &'a str,
        due_ms: i64,
    ) -> StoreFuture<'a, ()> {
        self.inner.delay_reply(entry_id, body, due_ms)
    }
    fn delayed_replies(&self) -> StoreFuture<'_, (u64, Option<i64>)> {
        self.inner.delayed_replies()
    }
    fn kept_replies(&self) -> StoreFuture<'_, u64> {
        Delivery::kept_replies(&self.inner)
    }
    fn renew_replies<'a>(&'a self, ids: &'a [String], until_ms: i64) -> StoreFuture<'a, ()> {
        self.inner.renew_replies(ids, until_ms)
    }
    fn orphan_replies(&self, until_ms: i64, count: usize) -> StoreFuture<'_, Vec<OrphanReply>> {
        self.inner.orphan_replies(until_ms, count)
    }
    fn dead_letter<'a>(&'a self, dead: DeadLetterRequest<'a>) -> StoreFuture<'a, ()> {
        self.inner.dead_letter(dead)
    }
    fn heads<'a>(&'a self, chats: &'a [(String, i64)]) -> StoreFuture<'a, Vec<Head>> {
        self.inner.heads(chats)
    }
    fn heal_head<'a>(&'a self, key: &'a str, head: &'a str) -> StoreFuture<'a, bool> {
        self.inner.heal_head(key, head)
    }
}

impl Directory for FlakyLookups {
    fn kv_get<'a>(&'a self, hash: &'a str, field: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.kv_get(hash, field)
    }
    fn user(&self, user_id: i64) -> StoreFuture<'_, Option<UserRecord>> {
        self.inner.user(user_id)
    }
    fn bot_stats(&self, now_ms: i64) -> StoreFuture<'_, BotStats> {
        self.inner.bot_stats(now_ms)
    }
}

impl SendBudget for FlakyLookups {
    fn admit(&self, budget: Budget) -> StoreFuture<'_, Admit> {
        self.inner.admit(budget)
    }
    fn rate_limited(
        &self,
        chat_id: i64,
        retry_after: Duration,
        window: Duration,
    ) -> StoreFuture<'_, Scope> {
        self.inner.rate_limited(chat_id, retry_after, window)
    }
}

/// Records, for each run, how many lookups had been made by then.
struct Recorder {
    store: Arc<FlakyLookups>,
    runs: std::sync::Mutex<Vec<usize>>,
}

impl Handler for Recorder {
    fn handle<'a>(&'a self, _entry: &'a Entry) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        let seen = self.store.lookups.load(Ordering::SeqCst);
        self.runs.lock().unwrap().push(seen);
        Box::pin(async { Ok(Handled::default()) })
    }
}

#[tokio::test]
async fn a_failed_already_handled_lookup_does_not_run_the_handler() {
    let failing = 3;
    let store = Arc::new(FlakyLookups {
        inner: MemoryStore::default(),
        failing,
        lookups: AtomicUsize::new(0),
        failures_counted: AtomicUsize::new(0),
    });
    let raw = br#"{"update_id":41,"message":{"message_id":1,"chat":{"id":9,"type":"private"},"text":"/help"}}"#;
    store
        .enqueue(&probe(raw).unwrap(), Lane::Ordinary, raw)
        .await
        .expect("enqueue");
    let handler = Arc::new(Recorder {
        store: store.clone(),
        runs: Default::default(),
    });
    let metrics = Arc::new(Metrics::default());
    let consumer = Consumer::new(
        Settings {
            name: "w1".into(),
            concurrency: 2,
            max_deliveries: 5,
            claim_idle: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            // Unordered: the lookup under test is the consumer's own, not
            // the one that rides along with the chat-head check.
            per_chat_order: false,
            deadlines: Default::default(),
        },
        store.clone(),
        handler.clone(),
        // Never called: the handler answers nothing.
        Sender::new(
            BotApi::new(
                &"http://127.0.0.1:9".parse().unwrap(),
                &shared::config::BotToken::parse("1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap(),
            ),
            store.clone(),
            0,
        ),
        metrics.clone(),
    );
    let cancel = CancellationToken::new();
    let run = tokio::spawn(consumer.run(cancel.clone()));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) && !store.inner.is_done("", 41).await.unwrap()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the consumer stops")
        .unwrap();

    let runs = handler.runs.lock().unwrap().clone();
    println!(
        "lookups failed {failing} times; handler runs: {} (after lookup #{:?}); failures counted: {}; handled after {:?}",
        runs.len(),
        runs,
        store.failures_counted.load(Ordering::SeqCst),
        started.elapsed()
    );
    assert_eq!(runs.len(), 1, "handled exactly once: {runs:?}");
    assert!(
        runs[0] > failing,
        "the handler ran only after a lookup succeeded: {runs:?}"
    );
    assert_eq!(
        store.failures_counted.load(Ordering::SeqCst),
        0,
        "a failed lookup is not the update's failure"
    );
    assert!(store.inner.is_done("", 41).await.unwrap());
    assert_eq!(metrics.failed.get(), 0);
}
