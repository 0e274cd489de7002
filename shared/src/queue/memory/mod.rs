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
//!
//! Here: the state, the store and the small capabilities (`Coordination`,
//! `Directory`). The larger ones have a file each - `intake`, `group`,
//! `delivery`, `budget`, `outbound` - all working on the one `State`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::Notify;

use super::{id_order, Coordination, Directory, Store, StoreFuture, Write};
use crate::envelope::{now_ms, Entry};
use crate::keys::Keys;
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
mod delivery;
mod group;
mod intake;
mod outbound;
#[cfg(test)]
mod tests;
