//! Storing updates and the ingress's probes: each update rides in its
//! shard's batch, then waits for the replicas `REDIS_WAIT_REPLICAS` asks for.

use futures::FutureExt;

use super::{bounded, RedisStore};
use crate::envelope::{Enqueued, Probe};
use crate::queue::redis_ops::{self, EnqueueItem};
use crate::queue::{Depth, Intake, Lane, StoreError, StoreFuture};
use crate::redis_conn;

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
