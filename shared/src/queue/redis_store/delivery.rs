//! How an entry ends, in Redis: what can ride in the worker's batches
//! (`end_many`) does, the rest calls `redis_ops` on its own - the largest
//! capability, so it has a file of its own.

use futures::FutureExt;

use super::{bounded, RedisStore};
use crate::envelope::Entry;
use crate::queue::redis_ops::{self, end_many};
use crate::queue::{
    Admit, Budget, Completion, DeadLetterRequest, Delivery, Head, OrphanReply, SendBudget,
    StoreFuture,
};

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
