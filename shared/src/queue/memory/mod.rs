//! The embedded queue: the store's operations in one process's memory, for
//! the all-in-one binary when `REDIS_URL` is unset.
//!
//! Same semantics as Redis where a single process can observe them: ids
//! seen on the way in are not stored twice; an entry stays pending until
//! finished or dead-lettered; a finished update_id is remembered so a
//! redelivery is skipped; per-chat order lists; failure counts; the shared
//! send budget. What it cannot do is outlive the process: a restart starts
//! empty (Telegram resends what it did not get a 200 for; anything accepted
//! and not yet handled is gone). That is the trade for "nothing to install";
//! production uses Redis.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::Notify;

use super::{
    id_order, Claimed, Completion, ConsumerGroup, ConsumerInfo, Coordination, DeadLetterRequest,
    Delivery, Depth, Directory, Head, Intake, Lane, OrphanReply, Read, Store, StoreFuture, Write,
};
use crate::envelope::{now_ms, Enqueued, Entry, Probe};
use crate::keys::{self, Keys};
use crate::stats::{BotStats, UserRecord};

type Id = (u64, u64);

fn id_string(id: Id) -> String {
    format!("{}-{}", id.0, id.1)
}

struct Pending {
    consumer: String,
    since: Instant,
    deliveries: u64,
}

/// A dead letter kept in memory (the CLI reads Redis; in embedded mode the
/// log line at dead-lettering is the operator's record).
#[derive(Debug, Clone)]
pub struct MemoryDeadLetter {
    pub id: String,
    pub update_id: Option<i64>,
    pub error: String,
    pub deliveries: u64,
    pub failed_at: i64,
}

#[derive(Default)]
struct State {
    last_id: Id,
    stream: BTreeMap<Id, Entry>,
    /// The last ordinary entry handed out.
    last_delivered: Id,
    /// Fast-lane entries not handed out yet (they share `stream` and its
    /// ids, so everything keyed by id works for both lanes).
    fast_new: BTreeSet<Id>,
    pending: BTreeMap<Id, Pending>,
    consumers: HashMap<String, Instant>,
    seen: HashMap<i64, Instant>,
    done: HashMap<i64, Instant>,
    failures: HashMap<String, u64>,
    order: HashMap<String, VecDeque<String>>,
    dead: Vec<MemoryDeadLetter>,
    counters: HashMap<&'static str, u64>,
    users: HashMap<i64, UserRecord>,
    kv: HashMap<String, (String, Option<Instant>)>,
    /// Replies kept until sent: entry id -> (body, lease end ms, order key).
    replies: HashMap<String, (String, i64, String)>,
    /// The bots' own hashes (exactly-once writes).
    hashes: HashMap<String, HashMap<String, String>>,
    rate: HashMap<String, i64>,
    /// Pauses Telegram asked for: key -> until (µs since epoch).
    pauses: HashMap<String, i64>,
    /// Recent 429s: (ms, chat id, retry_after ms).
    recent_429s: Vec<(i64, i64, u64)>,
    /// Replies put aside: entry id -> due ms.
    delayed: HashMap<String, i64>,
    /// Numbers outbox messages.
    outbox_seq: u64,
    /// Users who blocked the bot.
    blocked: std::collections::HashSet<i64>,
    ops: u64,
}

impl State {
    fn next_id(&mut self) -> Id {
        let ms = now_ms().max(0) as u64;
        self.last_id = if ms > self.last_id.0 {
            (ms, 0)
        } else {
            (self.last_id.0, self.last_id.1 + 1)
        };
        self.last_id
    }

    /// Forgets expired dedupe marks now and then, so memory follows the
    /// traffic of the last days rather than of all time.
    fn prune(&mut self) {
        self.ops += 1;
        if !self.ops.is_multiple_of(1024) {
            return;
        }
        let now = Instant::now();
        self.seen.retain(|_, exp| *exp > now);
        self.done.retain(|_, exp| *exp > now);
        self.kv.retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
    }

    fn kv_get(&self, key: &str) -> Option<&str> {
        let (v, exp) = self.kv.get(key)?;
        if exp.is_some_and(|e| e <= Instant::now()) {
            return None;
        }
        Some(v)
    }

    fn remove_entry(&mut self, id: &str) -> Option<Entry> {
        let entry = self.remove_from_stream(id);
        self.replies.remove(id);
        if let Some(e) = &entry {
            self.leave_order(&e.key, id);
        }
        entry
    }

    /// Out of the stream and the pending list, still in its chat's order.
    fn remove_from_stream(&mut self, id: &str) -> Option<Entry> {
        let oid = id_order(id);
        self.pending.remove(&oid);
        self.failures.remove(id);
        self.stream.remove(&oid)
    }

    fn leave_order(&mut self, key: &str, id: &str) {
        if key.is_empty() {
            return;
        }
        if let Some(list) = self.order.get_mut(key) {
            list.retain(|x| x != id);
            if list.is_empty() {
                self.order.remove(key);
            }
        }
    }

    fn apply(&mut self, w: &Write) {
        let h = self.hashes.entry(w.hash().to_owned()).or_default();
        match w {
            Write::Incr { field, by, .. } => {
                let n = h
                    .get(field)
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0);
                h.insert(field.clone(), (n + by).to_string());
            }
            Write::Set { field, value, .. } => {
                h.insert(field.clone(), value.clone());
            }
            Write::SetOnce { field, value, .. } => {
                h.entry(field.clone()).or_insert_with(|| value.clone());
            }
        }
    }

    fn head(&self, key: &str) -> Option<String> {
        self.order.get(key).and_then(|l| l.front().cloned())
    }
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    arrived: Notify,
    /// Names its locks and leases come under, as with Redis; nothing here
    /// is shared with another bot, so the prefix only keeps the API uniform.
    keys: Keys,
}

impl MemoryStore {
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            ..Self::default()
        }
    }

    pub fn dead_letters(&self) -> Vec<MemoryDeadLetter> {
        self.state
            .lock()
            .map(|s| s.dead.clone())
            .unwrap_or_default()
    }

    /// Replies of handled updates not yet sent (an update has ended for its
    /// user only once its reply is out).
    /// Replies put aside until Telegram lets them go (a long 429) are not
    /// counted: they are waiting, not being sent.
    pub fn replies_being_sent(&self) -> usize {
        self.state
            .lock()
            .map(|s| {
                s.replies
                    .keys()
                    .filter(|id| !s.delayed.contains_key(*id))
                    .count()
            })
            .unwrap_or(0)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding the lock cannot leave the maps half-changed
        // in a way the next caller would trip over; carry on with them.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.prune();
        f(&mut guard)
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> StoreFuture<'a, T> {
    futures::future::ready(Ok(v)).boxed()
}

impl Store for MemoryStore {
    fn keys(&self) -> &Keys {
        &self.keys
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}

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

impl Coordination for MemoryStore {
    fn get(&self, key: &str) -> StoreFuture<'_, Option<String>> {
        ready(self.with(|s| s.kv_get(key).map(str::to_owned)))
    }

    fn set(&self, key: &str, value: &str) -> StoreFuture<'_, ()> {
        self.with(|s| s.kv.insert(key.to_owned(), (value.to_owned(), None)));
        ready(())
    }

    fn try_lock(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreFuture<'_, bool> {
        ready(self.with(|s| {
            if s.kv_get(key).is_some() {
                return false;
            }
            let exp = Instant::now() + Duration::from_millis(ttl_ms);
            s.kv.insert(key.to_owned(), (holder.to_owned(), Some(exp)));
            true
        }))
    }

    fn lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreFuture<'_, bool> {
        ready(self.with(|s| {
            let free_or_mine = s.kv_get(key).is_none_or(|h| h == holder);
            if free_or_mine {
                let exp = Instant::now() + Duration::from_millis(ttl_ms);
                s.kv.insert(key.to_owned(), (holder.to_owned(), Some(exp)));
            }
            free_or_mine
        }))
    }

    fn release(&self, key: &str, holder: &str) -> StoreFuture<'_, ()> {
        self.with(|s| {
            if s.kv_get(key) == Some(holder) {
                s.kv.remove(key);
            }
        });
        ready(())
    }
}

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

impl Delivery for MemoryStore {
    fn is_done<'a>(&'a self, _entry_id: &'a str, update_id: i64) -> StoreFuture<'a, bool> {
        ready(self.with(|s| s.done.get(&update_id).is_some_and(|e| *e > Instant::now())))
    }

    fn finish<'a>(
        &'a self,
        entry: &'a Entry,
        done: Completion<'a>,
    ) -> StoreFuture<'a, (bool, Option<String>)> {
        let user = done.user;
        ready(self.with(|s| {
            let now = Instant::now();
            let fresh = s.done.get(&entry.update_id).is_none_or(|e| *e <= now);
            if fresh {
                s.done.insert(
                    entry.update_id,
                    now + Duration::from_secs(keys::DONE_TTL_SECS),
                );
                *s.counters.entry("updates_handled").or_default() += 1;
                if let Some(u) = user {
                    let t = now_ms();
                    s.blocked.remove(&u.id);
                    let rec = s.users.entry(u.id).or_insert_with(|| UserRecord {
                        id: u.id,
                        first_seen: t,
                        ..Default::default()
                    });
                    rec.last_seen = t;
                    rec.first_name = u.first_name.clone();
                    rec.username = Some(u.username.clone()).filter(|x| !x.is_empty());
                    rec.language_code = Some(u.language_code.clone()).filter(|x| !x.is_empty());
                    if u.is_message {
                        rec.messages += 1;
                    }
                    if !u.start_payload.is_empty() {
                        rec.start_payload = Some(u.start_payload.clone());
                    }
                }
                for w in done.writes {
                    s.apply(w);
                }
                if let Some(reply) = done.reply {
                    s.remove_from_stream(&entry.id);
                    s.replies.insert(
                        entry.id.clone(),
                        (
                            reply.to_owned(),
                            done.reply_lease_until_ms,
                            entry.key.clone(),
                        ),
                    );
                    return (true, None);
                }
            } else {
                *s.counters.entry("updates_deduplicated").or_default() += 1;
            }
            s.remove_entry(&entry.id);
            let head = if entry.key.is_empty() {
                None
            } else {
                s.head(&entry.key)
            };
            (fresh, head)
        }))
    }

    fn reply_sent<'a>(
        &'a self,
        entry_id: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, Option<String>> {
        ready(self.with(|s| {
            s.replies.remove(entry_id);
            s.failures.remove(entry_id);
            s.leave_order(key, entry_id);
            s.head(key)
        }))
    }

    fn delay_reply<'a>(
        &'a self,
        entry_id: &'a str,
        body: &'a str,
        due_ms: i64,
    ) -> StoreFuture<'a, ()> {
        self.with(|s| {
            if let Some(r) = s.replies.get_mut(entry_id) {
                r.0 = body.to_owned();
                r.1 = due_ms;
            }
            s.delayed.insert(entry_id.to_owned(), due_ms);
            let n = s.failures.entry(entry_id.to_owned()).or_default();
            *n = n.saturating_sub(1);
        });
        ready(())
    }

    fn kept_replies(&self) -> StoreFuture<'_, u64> {
        ready(self.with(|s| s.replies.len() as u64))
    }

    fn delayed_replies(&self) -> StoreFuture<'_, (u64, Option<i64>)> {
        ready(self.with(|s| (s.delayed.len() as u64, s.delayed.values().min().copied())))
    }

    fn renew_replies<'a>(&'a self, ids: &'a [String], until_ms: i64) -> StoreFuture<'a, ()> {
        self.with(|s| {
            for id in ids {
                if let Some(r) = s.replies.get_mut(id) {
                    r.1 = until_ms;
                }
            }
        });
        ready(())
    }

    fn orphan_replies(&self, until_ms: i64, count: usize) -> StoreFuture<'_, Vec<OrphanReply>> {
        let now = now_ms();
        ready(self.with(|s| {
            let due: Vec<String> = s
                .replies
                .iter()
                .filter(|(_, r)| r.1 <= now)
                .map(|(id, _)| id.clone())
                .take(count)
                .collect();
            due.into_iter()
                .filter_map(|id| {
                    let r = s.replies.get_mut(&id)?;
                    r.1 = until_ms;
                    s.delayed.remove(&id);
                    let body = r.0.clone();
                    let n = s.failures.entry(id.clone()).or_default();
                    *n += 1;
                    Some(OrphanReply {
                        id,
                        body,
                        takeovers: *n,
                    })
                })
                .collect()
        }))
    }

    fn count_failure<'a>(&'a self, entry_id: &'a str) -> StoreFuture<'a, u64> {
        ready(self.with(|s| {
            let n = s.failures.entry(entry_id.to_owned()).or_default();
            *n += 1;
            *n
        }))
    }

    fn dead_letter<'a>(&'a self, d: DeadLetterRequest<'a>) -> StoreFuture<'a, ()> {
        self.with(|s| {
            s.remove_entry(d.id);
            s.replies.remove(d.id);
            s.leave_order(d.key, d.id);
            s.dead.push(MemoryDeadLetter {
                id: d.id.to_owned(),
                update_id: d.update_id,
                error: d.error.to_owned(),
                deliveries: d.deliveries,
                failed_at: now_ms(),
            });
            *s.counters.entry("updates_dead_lettered").or_default() += 1;
        });
        ready(())
    }

    fn heads<'a>(&'a self, chats: &'a [(String, i64)]) -> StoreFuture<'a, Vec<Head>> {
        let now = Instant::now();
        ready(self.with(|s| {
            chats
                .iter()
                .map(|(k, update_id)| Head {
                    entry: s.head(k),
                    asked_done: s.done.get(update_id).is_some_and(|e| *e > now),
                })
                .collect()
        }))
    }

    fn heal_head<'a>(&'a self, key: &'a str, head: &'a str) -> StoreFuture<'a, bool> {
        ready(self.with(|s| {
            if s.head(key).as_deref() != Some(head)
                || s.stream.contains_key(&id_order(head))
                || s.replies.contains_key(head)
            {
                return false;
            }
            if let Some(l) = s.order.get_mut(key) {
                l.pop_front();
            }
            true
        }))
    }
}

impl Directory for MemoryStore {
    fn kv_get<'a>(&'a self, hash: &'a str, field: &'a str) -> StoreFuture<'a, Option<String>> {
        ready(self.with(|s| s.hashes.get(hash).and_then(|h| h.get(field)).cloned()))
    }

    fn user(&self, user_id: i64) -> StoreFuture<'_, Option<UserRecord>> {
        ready(self.with(|s| s.users.get(&user_id).cloned()))
    }

    fn bot_stats(&self, now_ms: i64) -> StoreFuture<'_, BotStats> {
        let since = now_ms - 24 * 3600 * 1000;
        ready(self.with(|s| BotStats {
            users_total: s.users.len() as u64,
            users_new_24h: s.users.values().filter(|u| u.first_seen >= since).count() as u64,
            users_active_24h: s.users.values().filter(|u| u.last_seen >= since).count() as u64,
            updates_handled: s.counters.get("updates_handled").copied().unwrap_or(0),
            queue_depth: s.stream.len() as u64,
            users_blocked: s.blocked.len() as u64,
        }))
    }
}

mod budget;
mod outbound;
#[cfg(test)]
mod tests;
