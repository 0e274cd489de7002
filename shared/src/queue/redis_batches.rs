//! The store's three group commits (see `group_commit`): updates stored,
//! entries ended and sends budgeted together, each kind many per script
//! call. Kept apart from `redis_store` so the store's methods only say
//! which batch an operation rides in.

use crate::envelope::Enqueued;
use crate::keys::Keys;
use crate::redis_conn::Conn;

use super::group_commit::{run_with, GroupCommit};
use super::redis_ops::end_many::{self, EndAnswer, EndItem};
use super::redis_ops::{self, AdmitItem, EnqueueItem};
use super::redis_store::{bounded, connection_broke};
use super::{Head, StoreError, StoreResult};

/// The most updates one `enqueue_many.lua` call stores: an ingress's
/// whole burst of concurrent requests, while one call stays short.
const INTAKE_BATCH: usize = 128;
/// Batches of updates stored at once: Telegram is waiting for each
/// request's 200, so latency counts more here than on the worker's side.
const INTAKE_PARALLEL: usize = 4;
/// The most items (entries ended, sends budgeted) one `end_many.lua` or
/// `admit_many.lua` call takes: enough to carry a worker's whole
/// concurrency, small enough to keep one call short.
const WORKER_BATCH: usize = 128;
/// Worker-side batches at once: the next one gathers while one runs.
const WORKER_PARALLEL: usize = 2;

pub(super) struct Batches {
    /// One per shard's home: a script call stays in one slot.
    intake: Vec<GroupCommit<EnqueueItem, Enqueued>>,
    /// Finishes and sent replies of the bot's home, and the sends'
    /// budget checks when the budget lives there too.
    ends: GroupCommit<EndItem, EndAnswer>,
    /// The sends' budget checks when it lives in another home.
    admits: GroupCommit<AdmitItem, (i64, i64)>,
}

impl Batches {
    pub(super) fn new(shards: u16) -> Self {
        Self {
            intake: (0..shards.max(1))
                .map(|_| GroupCommit::new(INTAKE_BATCH, INTAKE_PARALLEL))
                .collect(),
            ends: GroupCommit::new(WORKER_BATCH, WORKER_PARALLEL),
            admits: GroupCommit::new(WORKER_BATCH, WORKER_PARALLEL),
        }
    }

    /// Stores an update in the next batch of its shard. The batch runs
    /// once more if the connection broke (Redis restarted, a failover, an
    /// idle connection cut by a proxy): the manager is reconnecting, so
    /// one more try usually lands. Safe to repeat: if the first script
    /// ran, the seen marks make this one a no-op that answers Duplicate.
    /// Otherwise Telegram would get a 503 and hold the chat back for its
    /// own retry delay.
    pub(super) async fn store(&self, conn: &Conn, item: EnqueueItem) -> StoreResult<Enqueued> {
        let batcher = &self.intake[usize::from(item.shard) % self.intake.len()];
        batcher
            .call(item, || {
                let conn = conn.clone();
                run_with(move |items: Vec<EnqueueItem>| {
                    let mut c = conn.clone();
                    async move {
                        match bounded(redis_ops::enqueue_many(&mut c, &items)).await {
                            Err(StoreError::Redis(e)) if connection_broke(&e) => {
                                tracing::debug!(error = %e, "connection broke while storing; one more try");
                                bounded(redis_ops::enqueue_many(&mut c, &items)).await
                            }
                            other => other,
                        }
                    }
                })
            })
            .await
    }

    /// Ends an entry (or forgets a sent reply) in the next batch.
    pub(super) async fn end(
        &self,
        conn: &Conn,
        keys: &Keys,
        item: EndItem,
    ) -> StoreResult<(bool, Option<String>)> {
        self.ask(
            conn,
            keys,
            item,
            "an end got another kind's answer",
            |a| match a {
                EndAnswer::Ended { fresh, head } => Some((fresh, head)),
                _ => None,
            },
        )
        .await
    }

    /// Asks whether an update (of the bot's home) is handled, in the next
    /// batch.
    pub(super) async fn done(&self, conn: &Conn, keys: &Keys, item: EndItem) -> StoreResult<bool> {
        self.ask(
            conn,
            keys,
            item,
            "a dedupe check got another kind's answer",
            |a| match a {
                EndAnswer::Done(d) => Some(d),
                _ => None,
            },
        )
        .await
    }

    /// Asks a chat's head (of the bot's home) in the next batch, so the
    /// park pass's question rides with the ends that moved the heads.
    pub(super) async fn head(&self, conn: &Conn, keys: &Keys, item: EndItem) -> StoreResult<Head> {
        self.ask(
            conn,
            keys,
            item,
            "a head got another kind's answer",
            |a| match a {
                EndAnswer::Head(h) => Some(h),
                _ => None,
            },
        )
        .await
    }

    /// Puts an item in the next `end_many` batch and takes its answer,
    /// which must be of the item's kind (`pick`); another kind is a bug in
    /// the batch's bookkeeping, reported as `what`.
    async fn ask<T>(
        &self,
        conn: &Conn,
        keys: &Keys,
        item: EndItem,
        what: &'static str,
        pick: impl FnOnce(EndAnswer) -> Option<T>,
    ) -> StoreResult<T> {
        let answer = self
            .ends
            .call(item, || {
                let (conn, keys) = (conn.clone(), keys.clone());
                run_with(move |items| {
                    let (mut c, keys) = (conn.clone(), keys.clone());
                    async move { bounded(end_many::end_many(&mut c, &keys, items)).await }
                })
            })
            .await?;
        pick(answer).ok_or(StoreError::Batch(what))
    }

    /// Asks the send budget in the next batch: (why, µs to wait). With
    /// one shard the budget shares the bot's home, and the check rides
    /// with the worker's ends (one call for both instead of two).
    pub(super) async fn admit(
        &self,
        conn: &Conn,
        keys: &Keys,
        item: AdmitItem,
    ) -> StoreResult<(i64, i64)> {
        if keys.shards() == 1 {
            let item = end_many::admit(keys, item);
            return self
                .ask(
                    conn,
                    keys,
                    item,
                    "a send got another kind's answer",
                    |a| match a {
                        EndAnswer::Admit { why, wait_us } => Some((why, wait_us)),
                        _ => None,
                    },
                )
                .await;
        }
        self.admits
            .call(item, || {
                let (conn, keys) = (conn.clone(), keys.clone());
                run_with(move |items| {
                    let (mut c, keys) = (conn.clone(), keys.clone());
                    async move { bounded(redis_ops::admit_many(&mut c, &keys, items)).await }
                })
            })
            .await
    }
}
