//! The app's own messages and broadcasts in Redis (`lua/outbox_put.lua`,
//! `lua/broadcast_*.lua`).

use std::collections::HashMap;

use futures::FutureExt;

use super::redis_store::{bounded, RedisStore};
use super::scripts::scripts;
use super::{Outbound, Store, StoreFuture};
use crate::envelope::now_ms;
use crate::outbound::{
    kept_body, Audience, BroadcastStatus, Control, OutMessage, Recipient, RecipientOutcome,
};

/// How long an idempotency key answers with its first id.
const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

/// A broadcast id: time-ordered, unique across processes.
fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("b{nanos:x}")
}

fn status_of(id: &str, m: &HashMap<String, String>) -> Option<BroadcastStatus> {
    let state = m.get("state")?.clone();
    let num = |f: &str| m.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (total, sent, failed, blocked) = (num("total"), num("sent"), num("failed"), num("blocked"));
    let left = if state == "cancelled" || state == "done" {
        0
    } else {
        total.saturating_sub(sent + failed + blocked)
    };
    Some(BroadcastStatus {
        id: id.to_owned(),
        state,
        total,
        sent,
        failed,
        blocked,
        left,
        method: m.get("method").cloned().unwrap_or_default(),
        created_at_ms: num("created_at") as i64,
        finished_at_ms: num("finished_at") as i64,
    })
}

impl RedisStore {
    async fn read_status(&self, id: &str) -> super::StoreResult<Option<BroadcastStatus>> {
        let mut c = self.connection();
        let m: HashMap<String, String> = bounded(
            redis::cmd("HGETALL")
                .arg(self.keys().broadcast(id))
                .query_async(&mut c),
        )
        .await?;
        Ok(status_of(id, &m))
    }
}

impl Outbound for RedisStore {
    fn outbox_put<'a>(
        &'a self,
        msg: &'a OutMessage,
        due_ms: i64,
        idempotency_key: Option<&'a str>,
    ) -> StoreFuture<'a, (String, bool)> {
        let keys = self.keys();
        let mut inv = scripts().outbox_put.prepare_invoke();
        inv.key(keys.outbox_idempotency(idempotency_key.unwrap_or("-")))
            .key(keys.replies())
            .key(keys.replies_due())
            .key(keys.replies_delayed())
            .key(keys.outbox_seq())
            .arg(kept_body(msg))
            .arg(due_ms)
            .arg(now_ms())
            .arg(if idempotency_key.is_some() { "1" } else { "0" })
            .arg(IDEMPOTENCY_TTL_SECS);
        async move {
            let mut c = self.connection();
            let (id, stored): (String, i64) = bounded(inv.invoke_async(&mut c)).await?;
            Ok((id, stored == 1))
        }
        .boxed()
    }

    fn broadcast_create<'a>(
        &'a self,
        msg: &'a OutMessage,
        audience: &'a Audience,
    ) -> StoreFuture<'a, String> {
        let keys = self.keys();
        let id = new_id();
        let mut inv = scripts().broadcast_create.prepare_invoke();
        inv.key(keys.broadcast(&id))
            .key(keys.broadcast_todo(&id))
            .key(keys.broadcasts())
            .key(keys.broadcasts_running())
            .key(keys.users_first_seen())
            .key(keys.users_blocked())
            .arg(&id)
            .arg(&msg.method)
            .arg(msg.params.to_string())
            .arg(now_ms());
        match audience {
            Audience::All => {
                inv.arg("all");
            }
            Audience::Chats(list) => {
                inv.arg("list");
                for c in list {
                    inv.arg(*c);
                }
            }
        }
        async move {
            let mut c = self.connection();
            let _total: i64 = bounded(inv.invoke_async(&mut c)).await?;
            Ok(id)
        }
        .boxed()
    }

    fn broadcast_status<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<BroadcastStatus>> {
        self.read_status(id).boxed()
    }

    fn broadcast_message<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<OutMessage>> {
        async move {
            let mut c = self.connection();
            let (method, params): (Option<String>, Option<String>) = bounded(
                redis::cmd("HMGET")
                    .arg(self.keys().broadcast(id))
                    .arg("method")
                    .arg("params")
                    .query_async(&mut c),
            )
            .await?;
            Ok(match (method, params) {
                (Some(method), Some(params)) => Some(OutMessage {
                    method,
                    params: serde_json::from_str(&params).unwrap_or_default(),
                }),
                _ => None,
            })
        }
        .boxed()
    }

    fn broadcast_list(&self) -> StoreFuture<'_, Vec<BroadcastStatus>> {
        async move {
            let mut c = self.connection();
            let ids: Vec<String> = bounded(
                redis::cmd("ZRANGE")
                    .arg(self.keys().broadcasts())
                    .arg(0)
                    .arg(-1)
                    .arg("REV")
                    .query_async(&mut c),
            )
            .await?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(s) = self.read_status(&id).await? {
                    out.push(s);
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn broadcast_control<'a>(
        &'a self,
        id: &'a str,
        control: Control,
    ) -> StoreFuture<'a, Option<BroadcastStatus>> {
        let keys = self.keys();
        let mut inv = scripts().broadcast_control.prepare_invoke();
        inv.key(keys.broadcast(id))
            .key(keys.broadcast_todo(id))
            .key(keys.broadcasts_running())
            .arg(match control {
                Control::Pause => "pause",
                Control::Resume => "resume",
                Control::Cancel => "cancel",
            })
            .arg(id)
            .arg(now_ms());
        async move {
            let mut c = self.connection();
            let state: Option<String> = bounded(inv.invoke_async(&mut c)).await?;
            match state {
                Some(_) => self.read_status(id).await,
                None => Ok(None),
            }
        }
        .boxed()
    }

    fn broadcasts_running(&self) -> StoreFuture<'_, Vec<String>> {
        async move {
            let mut c = self.connection();
            bounded(
                redis::cmd("SMEMBERS")
                    .arg(self.keys().broadcasts_running())
                    .query_async(&mut c),
            )
            .await
        }
        .boxed()
    }

    fn broadcast_take<'a>(
        &'a self,
        id: &'a str,
        count: usize,
        lease_ms: u64,
    ) -> StoreFuture<'a, Vec<Recipient>> {
        let keys = self.keys();
        let mut inv = scripts().broadcast_take.prepare_invoke();
        inv.key(keys.broadcast(id))
            .key(keys.broadcast_todo(id))
            .key(keys.broadcast_inflight(id))
            .arg(now_ms())
            .arg(lease_ms)
            .arg(count);
        async move {
            let mut c = self.connection();
            let chats: Vec<i64> = bounded(inv.invoke_async(&mut c)).await?;
            Ok(chats
                .into_iter()
                .map(|chat_id| Recipient {
                    broadcast: id.to_owned(),
                    chat_id,
                })
                .collect())
        }
        .boxed()
    }

    fn broadcast_record<'a>(
        &'a self,
        r: &'a Recipient,
        outcome: RecipientOutcome,
    ) -> StoreFuture<'a, ()> {
        let keys = self.keys();
        let mut inv = scripts().broadcast_record.prepare_invoke();
        inv.key(keys.broadcast(&r.broadcast))
            .key(keys.broadcast_todo(&r.broadcast))
            .key(keys.broadcast_inflight(&r.broadcast))
            .key(keys.broadcasts_running())
            .key(keys.users_blocked())
            .arg(r.chat_id)
            .arg(outcome.field())
            .arg(now_ms())
            .arg(&r.broadcast);
        async move {
            let mut c = self.connection();
            let _: i64 = bounded(inv.invoke_async(&mut c)).await?;
            Ok(())
        }
        .boxed()
    }

    fn mark_blocked(&self, chat_id: i64) -> StoreFuture<'_, ()> {
        async move {
            let mut c = self.connection();
            bounded(
                redis::cmd("ZADD")
                    .arg(self.keys().users_blocked())
                    .arg(now_ms())
                    .arg(chat_id)
                    .query_async::<i64>(&mut c),
            )
            .await
            .map(drop)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_is_what_is_not_counted_yet_until_the_job_ends() {
        let m: HashMap<String, String> = [
            ("state", "running"),
            ("total", "10"),
            ("sent", "5"),
            ("failed", "1"),
            ("blocked", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(status_of("b1", &m).unwrap().left, 2);
        assert_eq!(status_of("b1", &HashMap::new()), None);
    }
}
