//! The production store: everything in Redis.
//!
//! Here: the store, its layout and the small capabilities (`Coordination`,
//! `Directory`). Each larger capability has a file of its own - `intake`,
//! `group`, `delivery`, `budget` - and the app's own messages live in
//! `queue::redis_outbound`.

mod budget;
mod delivery;
mod group;
mod intake;

use std::time::Duration;

use crate::redis_conn::Conn;
use futures::FutureExt;

use super::redis_batches::Batches;
use super::redis_ops;
use super::scripts::scripts;
use super::{Coordination, Directory, Store, StoreError, StoreFuture, StoreResult};
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
