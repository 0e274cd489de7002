//! The consumer group: reading (on the blocking connections), claiming,
//! heartbeats, membership and liveness - apart because reads block and
//! get their own deadline.

use std::time::Duration;

use futures::FutureExt;

use super::{bounded, RedisStore, MAX_BLOCK};
use crate::queue::redis_ops;
use crate::queue::{Claimed, ConsumerGroup, ConsumerInfo, Lane, Read, StoreError, StoreFuture};
use crate::redis_conn::COMMAND_TIMEOUT;

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
