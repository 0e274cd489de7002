//! Storing updates in the embedded queue: dedupe by `update_id` on the way
//! in, the chat's order list, and a wake-up for blocked readers.

use std::time::{Duration, Instant};

use super::{id_string, ready, MemoryStore};
use crate::envelope::{now_ms, Enqueued, Entry, Probe};
use crate::keys;
use crate::queue::{Depth, Intake, Lane, StoreFuture};

impl Intake for MemoryStore {
    fn enqueue<'a>(
        &'a self,
        probe: &'a Probe,
        lane: Lane,
        raw: &'a [u8],
    ) -> StoreFuture<'a, Enqueued> {
        let out = self.with(|s| {
            let now = Instant::now();
            if s.seen.get(&probe.update_id).is_some_and(|exp| *exp > now) {
                return Enqueued::Duplicate;
            }
            s.seen.insert(
                probe.update_id,
                now + Duration::from_secs(keys::SEEN_TTL_SECS),
            );
            let id = s.next_id();
            let ids = id_string(id);
            let key = match lane {
                Lane::Ordinary => probe.key.clone(),
                Lane::Fast => String::new(),
            };
            if lane == Lane::Fast {
                s.fast_new.insert(id);
            }
            let mut first_in_chat = false;
            if !key.is_empty() {
                let list = s.order.entry(key.clone()).or_default();
                first_in_chat = list.is_empty();
                list.push_back(ids.clone());
            }
            s.stream.insert(
                id,
                Entry {
                    id: ids.clone(),
                    update_id: probe.update_id,
                    received_at_ms: now_ms(),
                    key,
                    update: raw.to_vec(),
                    lane,
                    first_in_chat,
                },
            );
            Enqueued::Stored(ids)
        });
        self.arrived.notify_waiters();
        ready(out)
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        ready(())
    }

    fn depth(&self, lane: Lane) -> StoreFuture<'_, Depth> {
        ready(self.with(|s| {
            let of_lane = || s.stream.iter().filter(|(_, e)| e.lane == lane);
            let length = of_lane().count() as u64;
            let pending = of_lane()
                .filter(|(id, _)| s.pending.contains_key(id))
                .count() as u64;
            let oldest = of_lane().next().map(|(id, _)| id.0).unwrap_or(0);
            Depth {
                length,
                lag: length.saturating_sub(pending),
                pending,
                oldest_age_ms: if oldest == 0 {
                    0
                } else {
                    (now_ms() as u64).saturating_sub(oldest)
                },
            }
        }))
    }
}
