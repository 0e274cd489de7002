//! The production store: everything in Redis.

use std::time::Duration;

use crate::redis_conn::Conn;
use futures::FutureExt;

use super::redis_batches::Batches;
use super::redis_ops;
use super::redis_ops::end_many;
use super::redis_ops::{AdmitItem, EnqueueItem};
use super::scripts::scripts;
use super::{
    Admit, Budget, Claimed, Completion, ConsumerGroup, ConsumerInfo, Coordination,
    DeadLetterRequest, Delivery, Depth, Directory, Head, Intake, Lane, OrphanReply, Read, Scope,
    SendBudget, Store, StoreError, StoreFuture, StoreResult,
};
use crate::envelope::{Enqueued, Entry, Probe};
use crate::keys::Keys;
use crate::redis_conn::{self, COMMAND_TIMEOUT};
use crate::stats::{self, BotStats, UserRecord};

pub struct RedisStore {
    conn: Conn,
    /// Its own connection for `XREADGROUP BLOCK`, with a response timeout
    /// longer than the block; one per shard of the ordinary lane and one
    /// for the fast lane, since a blocked read holds its connection and
    /// each reader blocks on its own.
    blocking: Vec<Conn>,
    blocking_fast: Conn,
    keys: Keys,
    /// `REDIS_WAIT_REPLICAS`: replicas that must have an update before
    /// it is acknowledged.
    wait_replicas: u32,
    /// Updates stored, entries ended and sends budgeted together.
    batches: Batches,
}

/// How to reach and lay out the queue in Redis (`REDIS_CLUSTER`,
/// `QUEUE_SHARDS`, `REDIS_WAIT_REPLICAS`).
#[derive(Debug, Clone, Copy)]
pub struct RedisLayout {
    /// `None`: ask the server.
    pub cluster: Option<bool>,
    pub shards: u16,
    pub wait_replicas: u32,
}

impl Default for RedisLayout {
    fn default() -> Self {
        Self {
            cluster: None,
            shards: 1,
            wait_replicas: 0,
        }
    }
}

/// How long an acknowledgement waits for replicas, at most.
pub const WAIT_REPLICAS_FOR: Duration = Duration::from_secs(2);

/// The longest a blocking read may wait.
pub const MAX_BLOCK: Duration = Duration::from_secs(2);

impl RedisStore {
    /// Lazy: never fails because Redis is down, only on a malformed URL.
    /// Every key it touches is named by `keys` (`REDIS_KEY_PREFIX`).
    /// One server, one shard: today's layout, no question asked.
    pub fn open(url: &str, keys: Keys) -> redis::RedisResult<Self> {
        Self::open_target(
            &redis_conn::Target::single(url),
            keys,
            RedisLayout::default(),
        )
    }

    /// Asks the server whether it is a cluster (unless `layout` says),
    /// then lays the keys out for it: hash tags on a cluster, one home per
    /// shard.
    pub async fn connect(url: &str, keys: Keys, layout: RedisLayout) -> redis::RedisResult<Self> {
        let target = redis_conn::Target::resolve(url, layout.cluster).await?;
        Self::open_target(&target, keys, layout)
    }

    /// The store `config` names (`REDIS_URL` and the layout variables).
    pub async fn for_config(config: &crate::config::Config) -> redis::RedisResult<Self> {
        let store = Self::connect(
            config.redis_url_or_default(),
            config.redis_keys.clone(),
            config.redis_layout,
        )
        .await?;
        if store.keys.tagged() {
            tracing::info!(
                cluster = store.is_cluster(),
                shards = store.keys.shards(),
                "Redis keys laid out with hash tags (first: {})",
                store.keys.stream()
            );
        }
        Ok(store)
    }

    pub fn open_target(
        target: &redis_conn::Target,
        keys: Keys,
        layout: RedisLayout,
    ) -> redis::RedisResult<Self> {
        let keys = keys.laid_out(target.is_cluster(), layout.shards);
        let shards = keys.shards();
        Ok(Self {
            conn: target.manager()?,
            blocking: (0..keys.shards())
                .map(|_| target.blocking(MAX_BLOCK))
                .collect::<Result<_, _>>()?,
            blocking_fast: target.blocking(MAX_BLOCK)?,
            keys,
            wait_replicas: layout.wait_replicas,
            batches: Batches::new(shards),
        })
    }

    /// Logs, as soon as Redis first answers, each server setting that can
    /// lose updates already acknowledged to Telegram: the queue's promise
    /// is only as good as Redis's own durability, and the operator is the
    /// one who can change it.
    pub fn spawn_durability_report(&self) {
        let mut conn = self.conn.clone();
        tokio::spawn(async move {
            loop {
                match bounded(redis_ops::durability_risks(&mut conn)).await {
                    Ok(risks) if risks.is_empty() => {
                        tracing::info!("Redis durability: AOF on, no eviction");
                        return;
                    }
                    Ok(risks) => {
                        for risk in risks {
                            tracing::warn!("{risk}");
                        }
                        return;
                    }
                    Err(StoreError::Redis(e)) if !e.is_io_error() && !e.is_connection_dropped() => {
                        // INFO refused (an ACL): nothing to report.
                        tracing::debug!(error = %e, "cannot read Redis's persistence settings");
                        return;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
                }
            }
        });
    }

    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    pub fn connection(&self) -> Conn {
        self.conn.clone()
    }

    /// `REDIS_WAIT_REPLICAS`: holds the acknowledgement until enough
    /// replicas of the master holding `key` have the write.
    async fn replicated(&self, conn: &mut Conn, key: &str) -> StoreResult<()> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let got = bounded(conn.wait_replicas(key, self.wait_replicas, WAIT_REPLICAS_FOR)).await?;
        if got < self.wait_replicas {
            return Err(StoreError::NotReplicated {
                got,
                want: self.wait_replicas,
            });
        }
        Ok(())
    }
}

/// Every command gets a hard deadline: a dead Redis must never hang a
/// caller, whatever the client library's own timeouts do.
pub(super) fn connection_broke(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_unrecoverable_error()
}

pub(super) async fn bounded<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(r) => r.map_err(StoreError::from),
        Err(_) => Err(StoreError::Timeout),
    }
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn keys(&self) -> &Keys {
        &self.keys
    }
}

impl Intake for RedisStore {
    fn enqueue<'a>(
        &'a self,
        probe: &'a Probe,
        lane: Lane,
        raw: &'a [u8],
    ) -> StoreFuture<'a, Enqueued> {
        async move {
            let mut c = self.conn.clone();
            let item = EnqueueItem::new(&self.keys, probe, lane, raw);
            let stored = self.batches.store(&self.conn, item).await?;
            // A duplicate waits too: its first copy may be the one whose
            // wait ran out.
            let shard = match lane {
                Lane::Ordinary => self.keys.shard_of(&probe.key),
                Lane::Fast => 0,
            };
            self.replicated(&mut c, &redis_ops::lane_stream(&self.keys, lane, shard))
                .await?;
            Ok(stored)
        }
        .boxed()
    }

    fn accepts_writes(&self) -> StoreFuture<'_, ()> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::write_probe(&mut c, &self.keys)).await
        }
        .boxed()
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        async move {
            let mut c = self.conn.clone();
            if redis_conn::ping(&mut c).await {
                Ok(())
            } else {
                Err(StoreError::Timeout)
            }
        }
        .boxed()
    }

    fn shard_depths(&self) -> StoreFuture<'_, Vec<Depth>> {
        async move {
            let mut c = self.conn.clone();
            let mut out = Vec::new();
            for s in 0..self.keys.shards() {
                let stream = redis_ops::lane_stream(&self.keys, Lane::Ordinary, s);
                out.push(bounded(redis_ops::stream_depth(&mut c, &stream)).await?);
            }
            Ok(out)
        }
        .boxed()
    }

    fn depth(&self, lane: Lane) -> StoreFuture<'_, Depth> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::depth(&mut c, &self.keys, lane)).await
        }
        .boxed()
    }
}

impl Coordination for RedisStore {
    fn get(&self, key: &str) -> StoreFuture<'_, Option<String>> {
        let cmd = redis::cmd("GET").arg(key).clone();
        async move {
            let mut c = self.conn.clone();
            bounded(cmd.query_async(&mut c)).await
        }
        .boxed()
    }

    fn set(&self, key: &str, value: &str) -> StoreFuture<'_, ()> {
        let cmd = redis::cmd("SET").arg(key).arg(value).clone();
        async move {
            let mut c = self.conn.clone();
            bounded(cmd.query_async(&mut c)).await
        }
        .boxed()
    }

    fn try_lock(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreFuture<'_, bool> {
        let cmd = redis::cmd("SET")
            .arg(key)
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .clone();
        async move {
            let mut c = self.conn.clone();
            let r: Option<String> = bounded(cmd.query_async(&mut c)).await?;
            Ok(r.is_some())
        }
        .boxed()
    }

    fn lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreFuture<'_, bool> {
        let mut inv = scripts().lease.prepare_invoke();
        inv.key(key).arg(holder).arg(ttl_ms);
        async move {
            let mut c = self.conn.clone();
            let n: i64 = bounded(inv.invoke_async(&mut c)).await?;
            Ok(n == 1)
        }
        .boxed()
    }

    fn release(&self, key: &str, holder: &str) -> StoreFuture<'_, ()> {
        let mut inv = scripts().release.prepare_invoke();
        inv.key(key).arg(holder);
        async move {
            let mut c = self.conn.clone();
            let _: i64 = bounded(inv.invoke_async(&mut c)).await?;
            Ok(())
        }
        .boxed()
    }
}

impl ConsumerGroup for RedisStore {
    fn join_group<'a>(&'a self, consumer: &'a str) -> StoreFuture<'a, ()> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::join_group(&mut c, &self.keys, consumer)).await
        }
        .boxed()
    }

    fn shards(&self) -> u16 {
        self.keys.shards()
    }

    fn read_new<'a>(
        &'a self,
        consumer: &'a str,
        lane: Lane,
        shard: u16,
        count: usize,
        block_ms: u64,
    ) -> StoreFuture<'a, Read> {
        async move {
            let mut c = match lane {
                Lane::Ordinary => self.blocking[usize::from(shard) % self.blocking.len()].clone(),
                Lane::Fast => self.blocking_fast.clone(),
            };
            let block_ms = block_ms.min(MAX_BLOCK.as_millis() as u64);
            let f = redis_ops::read_new(&mut c, &self.keys, consumer, lane, shard, count, block_ms);
            let (entries, unreadable) =
                match tokio::time::timeout(MAX_BLOCK + COMMAND_TIMEOUT, f).await {
                    Ok(r) => r?,
                    Err(_) => return Err(StoreError::Timeout),
                };
            Ok(Read {
                entries,
                unreadable,
            })
        }
        .boxed()
    }

    fn autoclaim<'a>(
        &'a self,
        consumer: &'a str,
        lane: Lane,
        shard: u16,
        min_idle_ms: u64,
        cursor: &'a str,
        count: usize,
    ) -> StoreFuture<'a, Claimed> {
        async move {
            let mut c = self.conn.clone();
            let (next_cursor, entries, unreadable) = bounded(redis_ops::autoclaim(
                &mut c,
                &self.keys,
                consumer,
                lane,
                shard,
                min_idle_ms,
                cursor,
                count,
            ))
            .await?;
            Ok(Claimed {
                next_cursor,
                entries,
                unreadable,
            })
        }
        .boxed()
    }

    fn delivery_counts<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<(String, u64)>> {
        async move {
            let mut c = self.conn.clone();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let m = bounded(redis_ops::delivery_counts(&mut c, &self.keys, &refs)).await?;
            Ok(m.into_iter().collect())
        }
        .boxed()
    }

    fn heartbeat<'a>(&'a self, consumer: &'a str, ids: &'a [String]) -> StoreFuture<'a, ()> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::heartbeat(&mut c, &self.keys, consumer, ids)).await
        }
        .boxed()
    }

    fn consumers(&self) -> StoreFuture<'_, Vec<ConsumerInfo>> {
        async move {
            let mut c = self.conn.clone();
            bounded(async {
                let mut list = redis_ops::consumers(&mut c, &self.keys).await?;
                redis_ops::fill_alive(&mut c, &self.keys, &mut list).await?;
                Ok(list)
            })
            .await
        }
        .boxed()
    }

    fn leave_group<'a>(&'a self, consumer: &'a str) -> StoreFuture<'a, bool> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::leave_group(&mut c, &self.keys, consumer)).await
        }
        .boxed()
    }

    fn mark_alive<'a>(&'a self, consumer: &'a str, ttl: Duration) -> StoreFuture<'a, ()> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::mark_alive(&mut c, &self.keys, consumer, ttl)).await
        }
        .boxed()
    }

    fn delete_consumer<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        async move {
            let mut c = self.conn.clone();
            // DELCONSUMER answers the number of entries the consumer still
            // had pending (0 for the names we remove), not a success flag.
            bounded(redis_ops::delete_consumer(&mut c, &self.keys, name)).await?;
            Ok(true)
        }
        .boxed()
    }
}

impl Delivery for RedisStore {
    fn is_done<'a>(&'a self, entry_id: &'a str, update_id: i64) -> StoreFuture<'a, bool> {
        if end_many::batches(entry_id) {
            let item = end_many::done(&self.keys, update_id);
            return self.batches.done(&self.conn, &self.keys, item).boxed();
        }
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::is_done(&mut c, &self.keys, entry_id, update_id)).await
        }
        .boxed()
    }

    fn finish<'a>(
        &'a self,
        entry: &'a Entry,
        done: Completion<'a>,
    ) -> StoreFuture<'a, (bool, Option<String>)> {
        if end_many::batches(&entry.id) {
            let item = end_many::finished(&self.keys, entry, &done);
            return self.batches.end(&self.conn, &self.keys, item).boxed();
        }
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::finish(&mut c, &self.keys, entry, done)).await
        }
        .boxed()
    }

    /// With one shard the budget shares the bot's home: the finish and the
    /// budget check are put in the same batch (enqueued together, so they
    /// leave in one call).
    fn finish_admitting<'a>(
        &'a self,
        entry: &'a Entry,
        done: Completion<'a>,
        first_send: Option<Budget>,
    ) -> StoreFuture<'a, (bool, Option<String>, Option<Admit>)> {
        let together = self.keys.shards() == 1 && end_many::batches(&entry.id);
        let first_send = first_send.filter(|_| together);
        async move {
            let (ended, admitted) = match first_send {
                Some(budget) => {
                    let (ended, admitted) =
                        futures::future::join(self.finish(entry, done), self.admit(budget)).await;
                    (ended, admitted.ok())
                }
                None => (self.finish(entry, done).await, None),
            };
            let (fresh, head) = ended?;
            Ok((fresh, head, admitted))
        }
        .boxed()
    }

    fn reply_sent<'a>(
        &'a self,
        entry_id: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, Option<String>> {
        if end_many::batches(entry_id) {
            let item = end_many::sent(&self.keys, entry_id, key);
            return async move { Ok(self.batches.end(&self.conn, &self.keys, item).await?.1) }
                .boxed();
        }
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::reply_sent(&mut c, &self.keys, entry_id, key)).await
        }
        .boxed()
    }

    fn delay_reply<'a>(
        &'a self,
        entry_id: &'a str,
        body: &'a str,
        due_ms: i64,
    ) -> StoreFuture<'a, ()> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::delay_reply(
                &mut c, &self.keys, entry_id, body, due_ms,
            ))
            .await
        }
        .boxed()
    }

    fn kept_replies(&self) -> StoreFuture<'_, u64> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::kept_replies(&mut c, &self.keys)).await
        }
        .boxed()
    }

    fn delayed_replies(&self) -> StoreFuture<'_, (u64, Option<i64>)> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::delayed_replies(&mut c, &self.keys)).await
        }
        .boxed()
    }

    fn renew_replies<'a>(&'a self, ids: &'a [String], until_ms: i64) -> StoreFuture<'a, ()> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::renew_replies(&mut c, &self.keys, ids, until_ms)).await
        }
        .boxed()
    }

    fn orphan_replies(&self, until_ms: i64, count: usize) -> StoreFuture<'_, Vec<OrphanReply>> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::orphan_replies(
                &mut c, &self.keys, until_ms, count,
            ))
            .await
        }
        .boxed()
    }

    fn count_failure<'a>(&'a self, entry_id: &'a str) -> StoreFuture<'a, u64> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::count_failure(&mut c, &self.keys, entry_id)).await
        }
        .boxed()
    }

    fn dead_letter<'a>(&'a self, d: DeadLetterRequest<'a>) -> StoreFuture<'a, ()> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::dead_letter(
                &mut c,
                &self.keys,
                d.id,
                d.update_id,
                d.key,
                d.update,
                d.error,
                d.deliveries,
                d.reply,
            ))
            .await
        }
        .boxed()
    }

    /// With one shard every chat's head is asked in the worker's batches
    /// (riding with the ends that moved them); a sharded layout asks with
    /// one pipeline per shard.
    fn heads<'a>(&'a self, chats: &'a [(String, i64)]) -> StoreFuture<'a, Vec<Head>> {
        async move {
            if self.keys.shards() == 1 {
                let asks = chats.iter().map(|(chat, update_id)| {
                    let item = end_many::head(&self.keys, chat, *update_id);
                    self.batches.head(&self.conn, &self.keys, item)
                });
                return futures::future::try_join_all(asks).await;
            }
            let mut c = self.conn.clone();
            bounded(redis_ops::heads(&mut c, &self.keys, chats)).await
        }
        .boxed()
    }

    fn heal_head<'a>(&'a self, key: &'a str, head: &'a str) -> StoreFuture<'a, bool> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::heal_head(&mut c, &self.keys, key, head)).await
        }
        .boxed()
    }
}

impl Directory for RedisStore {
    fn kv_get<'a>(&'a self, hash: &'a str, field: &'a str) -> StoreFuture<'a, Option<String>> {
        async move {
            let mut c = self.conn.clone();
            bounded(redis_ops::kv_get(&mut c, &self.keys, hash, field)).await
        }
        .boxed()
    }

    fn user(&self, user_id: i64) -> StoreFuture<'_, Option<UserRecord>> {
        async move {
            let mut c = self.conn.clone();
            bounded(stats::user(&mut c, &self.keys, user_id)).await
        }
        .boxed()
    }

    fn bot_stats(&self, now_ms: i64) -> StoreFuture<'_, BotStats> {
        async move {
            let mut c = self.conn.clone();
            bounded(stats::bot(&mut c, &self.keys, now_ms)).await
        }
        .boxed()
    }
}

impl SendBudget for RedisStore {
    fn admit(&self, b: Budget) -> StoreFuture<'_, Admit> {
        let pool = if b.paid {
            self.keys.rate_paid()
        } else {
            self.keys.rate_global()
        };
        let item = AdmitItem {
            keys: [
                pool,
                self.keys.rate_chat(b.chat_id),
                self.keys.pause_chat(b.chat_id),
            ],
            args: [
                b.interval_us,
                b.tolerance_us,
                b.chat_interval_us,
                b.chat_tolerance_us,
            ],
        };
        async move {
            let (why, wait) = self.batches.admit(&self.conn, &self.keys, item).await?;
            let wait = wait.max(0) as u64;
            Ok(match why {
                0 => Admit::Go,
                2 => Admit::BotPaused(wait),
                3 => Admit::ChatPaused(wait),
                _ => Admit::Rate(wait),
            })
        }
        .boxed()
    }

    fn rate_limited(
        &self,
        chat_id: i64,
        retry_after: Duration,
        window: Duration,
    ) -> StoreFuture<'_, Scope> {
        let mut inv = scripts().rate_limited.prepare_invoke();
        inv.key(self.keys.recent_429s())
            .key(self.keys.pause_bot())
            .key(self.keys.pause_chat(chat_id))
            .arg(chat_id)
            .arg(retry_after.as_millis().max(1) as u64)
            .arg(window.as_millis().max(1) as u64);
        async move {
            let mut c = self.conn.clone();
            let bot: i64 = bounded(inv.invoke_async(&mut c)).await?;
            Ok(if bot == 1 { Scope::Bot } else { Scope::Chat })
        }
        .boxed()
    }
}
