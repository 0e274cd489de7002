//! Outbound messages in the embedded queue: single messages (kept like a
//! reply, due at their `not_before`) and blocked marks; broadcasts need
//! Redis (a laptop's bot has no audience to broadcast to, and a job that
//! must survive restarts cannot live in one process's memory).

use super::{ready, MemoryStore};
use crate::envelope::now_ms;
use crate::outbound::{
    kept_body, Audience, BroadcastStatus, Control, OutMessage, Recipient, RecipientOutcome,
};
use crate::queue::{Outbound, StoreError, StoreFuture};

const NEEDS_REDIS: &str = "broadcasts need Redis (set REDIS_URL)";

fn unsupported<'a, T: Send + 'a>() -> StoreFuture<'a, T> {
    Box::pin(futures::future::ready(Err(StoreError::Unsupported(
        NEEDS_REDIS,
    ))))
}

impl Outbound for MemoryStore {
    fn outbox_put<'a>(
        &'a self,
        msg: &'a OutMessage,
        due_ms: i64,
        idempotency_key: Option<&'a str>,
    ) -> StoreFuture<'a, (String, bool)> {
        ready(self.with(|s| {
            let idem = idempotency_key.map(|k| format!("outbox-idem:{k}"));
            if let Some(first) = idem.as_deref().and_then(|k| s.kv_get(k)) {
                return (first.to_owned(), false);
            }
            s.outbox_seq += 1;
            let id = format!("o{}", s.outbox_seq);
            s.replies
                .insert(id.clone(), (kept_body(msg), due_ms, String::new()));
            if due_ms > now_ms() {
                s.delayed.insert(id.clone(), due_ms);
            }
            if let Some(k) = idem {
                s.kv.insert(k, (id.clone(), None));
            }
            (id, true)
        }))
    }

    fn broadcast_create<'a>(
        &'a self,
        _: &'a OutMessage,
        _: &'a Audience,
    ) -> StoreFuture<'a, String> {
        unsupported()
    }

    fn broadcast_status<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<BroadcastStatus>> {
        ready(None)
    }

    fn broadcast_message<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<OutMessage>> {
        ready(None)
    }

    fn broadcast_list(&self) -> StoreFuture<'_, Vec<BroadcastStatus>> {
        ready(Vec::new())
    }

    fn broadcast_control<'a>(
        &'a self,
        _: &'a str,
        _: Control,
    ) -> StoreFuture<'a, Option<BroadcastStatus>> {
        unsupported()
    }

    fn broadcasts_running(&self) -> StoreFuture<'_, Vec<String>> {
        ready(Vec::new())
    }

    fn broadcast_take<'a>(
        &'a self,
        _: &'a str,
        _: usize,
        _: u64,
    ) -> StoreFuture<'a, Vec<Recipient>> {
        ready(Vec::new())
    }

    fn broadcast_record<'a>(
        &'a self,
        _: &'a Recipient,
        _: RecipientOutcome,
    ) -> StoreFuture<'a, ()> {
        ready(())
    }

    fn mark_blocked(&self, chat_id: i64) -> StoreFuture<'_, ()> {
        self.with(|s| {
            s.blocked.insert(chat_id);
        });
        ready(())
    }
}
