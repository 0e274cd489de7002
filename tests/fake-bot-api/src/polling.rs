//! getUpdates as Telegram serves it: offsets confirm, long polls wait for
//! updates, and a newer request terminates the one in progress with a 409
//! (two pollers for one bot are the bug this catches).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::server::{err, lock, Answer, Inner};

impl Inner {
    pub(crate) async fn get_updates(self: &Arc<Self>, p: &Map<String, Value>) -> Answer {
        if !lock(&self.webhook).url.is_empty() {
            return err(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
            );
        }
        let offset = p.get("offset").and_then(Value::as_i64).unwrap_or(0);
        let limit = p
            .get("limit")
            .and_then(Value::as_i64)
            .unwrap_or(100)
            .clamp(1, 100) as usize;
        let timeout = p
            .get("timeout")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .clamp(0, 50) as u64;

        // A newer getUpdates terminates the one in progress, as Telegram does.
        let me = {
            let mut poll = lock(&self.poll);
            poll.next += 1;
            let me = poll.next;
            poll.active = Some(me);
            me
        };
        self.poll_notify.notify_waiters();
        struct Release<'a>(&'a Inner, u64);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let mut poll = lock(&self.0.poll);
                if poll.active == Some(self.1) {
                    poll.active = None;
                }
            }
        }
        let _release = Release(self, me);

        {
            let mut q = lock(&self.updates);
            if offset > 0 {
                q.items
                    .retain(|u| u.get("update_id").and_then(Value::as_i64).unwrap_or(0) >= offset);
            } else if offset < 0 {
                let keep = offset.unsigned_abs() as usize;
                while q.items.len() > keep {
                    q.items.pop_front();
                }
            }
        }

        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            let notified = self.poll_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.poll).active != Some(me) {
                // Counted here, not when the newer request arrived: a poll
                // whose client is gone was dropped and answers nothing.
                self.conflicts.fetch_add(1, Ordering::SeqCst);
                return err(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                );
            }
            let batch: Vec<Value> = lock(&self.updates)
                .items
                .iter()
                .take(limit)
                .cloned()
                .collect();
            if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                return Answer::Ok(Value::Array(batch));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}
