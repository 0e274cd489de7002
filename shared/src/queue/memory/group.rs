//! The consumer group in process: reads that block until an entry arrives,
//! claims of idle entries, heartbeats and liveness - apart because reading
//! is the one capability that waits.

use std::time::{Duration, Instant};

use futures::FutureExt;

use super::{id_string, ready, Id, MemoryStore, Pending, State};
use crate::queue::{id_order, Claimed, ConsumerGroup, ConsumerInfo, Lane, Read, StoreFuture};

impl ConsumerGroup for MemoryStore {
    fn join_group<'a>(&'a self, consumer: &'a str) -> StoreFuture<'a, ()> {
        self.with(|s| {
            s.consumers
                .entry(consumer.to_owned())
                .or_insert_with(Instant::now);
        });
        ready(())
    }

    fn read_new<'a>(
        &'a self,
        consumer: &'a str,
        lane: Lane,
        _shard: u16,
        count: usize,
        block_ms: u64,
    ) -> StoreFuture<'a, Read> {
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(block_ms);
            loop {
                // Registered before looking, so an entry arriving in between
                // still wakes us.
                let arrived = self.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                let entries = self.with(|s| {
                    s.consumers.insert(consumer.to_owned(), Instant::now());
                    let ids: Vec<Id> = match lane {
                        Lane::Ordinary => {
                            let from = s.last_delivered;
                            s.stream
                                .range((
                                    std::ops::Bound::Excluded(from),
                                    std::ops::Bound::Unbounded,
                                ))
                                .filter(|(_, e)| e.lane == Lane::Ordinary)
                                .take(count)
                                .map(|(id, _)| *id)
                                .collect()
                        }
                        Lane::Fast => s.fast_new.iter().take(count).copied().collect(),
                    };
                    let mut out = Vec::with_capacity(ids.len());
                    for id in ids {
                        match lane {
                            Lane::Ordinary => s.last_delivered = id,
                            Lane::Fast => {
                                s.fast_new.remove(&id);
                            }
                        }
                        s.pending.insert(
                            id,
                            Pending {
                                consumer: consumer.to_owned(),
                                since: Instant::now(),
                                deliveries: 1,
                            },
                        );
                        if let Some(e) = s.stream.get(&id) {
                            out.push(e.clone());
                        }
                    }
                    out
                });
                if !entries.is_empty() {
                    return Ok(Read {
                        entries,
                        unreadable: vec![],
                    });
                }
                if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                    return Ok(Read::default());
                }
            }
        }
        .boxed()
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
        let min_idle = Duration::from_millis(min_idle_ms);
        ready(self.with(|s| {
            s.consumers.insert(consumer.to_owned(), Instant::now());
            let start = id_order(cursor);
            let mut claimed = Vec::new();
            let mut next = "0-0".to_string();
            let mut gone = Vec::new();
            let State {
                pending, stream, ..
            } = &mut *s;
            for (id, p) in pending.range_mut(start..) {
                if claimed.len() >= count {
                    next = id_string(*id);
                    break;
                }
                let in_lane = stream.get(id).map(|e| e.lane).unwrap_or_default() == lane;
                if !in_lane || p.since.elapsed() < min_idle {
                    continue;
                }
                p.consumer = consumer.to_owned();
                p.since = Instant::now();
                p.deliveries += 1;
                claimed.push(*id);
            }
            let mut entries = Vec::new();
            for id in claimed {
                match s.stream.get(&id) {
                    Some(e) => entries.push(e.clone()),
                    None => gone.push(id),
                }
            }
            for id in gone {
                s.pending.remove(&id);
            }
            Claimed {
                next_cursor: next,
                entries,
                unreadable: vec![],
            }
        }))
    }

    fn delivery_counts<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<(String, u64)>> {
        ready(self.with(|s| {
            ids.iter()
                .filter_map(|id| Some((id.clone(), s.pending.get(&id_order(id))?.deliveries)))
                .collect()
        }))
    }

    fn heartbeat<'a>(&'a self, consumer: &'a str, ids: &'a [String]) -> StoreFuture<'a, ()> {
        self.with(|s| {
            s.consumers.insert(consumer.to_owned(), Instant::now());
            for id in ids {
                if let Some(p) = s.pending.get_mut(&id_order(id)) {
                    if p.consumer == consumer {
                        p.since = Instant::now();
                    }
                }
            }
        });
        ready(())
    }

    fn consumers(&self) -> StoreFuture<'_, Vec<ConsumerInfo>> {
        ready(self.with(|s| {
            s.consumers
                .iter()
                .map(|(name, seen)| ConsumerInfo {
                    name: name.clone(),
                    pending: s.pending.values().filter(|p| &p.consumer == name).count() as u64,
                    idle_ms: seen.elapsed().as_millis() as u64,
                    alive: s.kv_get(&self.keys.alive(name)).is_some(),
                })
                .collect()
        }))
    }

    fn leave_group<'a>(&'a self, consumer: &'a str) -> StoreFuture<'a, bool> {
        ready(self.with(|s| {
            if s.pending.values().any(|p| p.consumer == consumer) {
                return false;
            }
            s.consumers.remove(consumer);
            s.kv.remove(&self.keys.alive(consumer));
            true
        }))
    }

    fn mark_alive<'a>(&'a self, consumer: &'a str, ttl: Duration) -> StoreFuture<'a, ()> {
        let exp = Instant::now() + ttl;
        self.with(|s| {
            s.kv.insert(self.keys.alive(consumer), ("1".to_owned(), Some(exp)));
        });
        ready(())
    }

    fn delete_consumer<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        ready(self.with(|s| s.consumers.remove(name).is_some()))
    }
}
