//! How an entry ends in the embedded queue, with the same rules as the
//! Redis scripts (`lua/finish.lua`, `lua/reply_sent.lua`, ...): the largest
//! capability, so it has a file of its own.

use std::time::{Duration, Instant};

use super::{ready, MemoryDeadLetter, MemoryStore};
use crate::envelope::{now_ms, Entry};
use crate::keys;
use crate::queue::{
    id_order, Completion, DeadLetterRequest, Delivery, Head, OrphanReply, StoreFuture,
};
use crate::stats::UserRecord;

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
