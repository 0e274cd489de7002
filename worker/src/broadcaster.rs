//! Sending broadcasts: every worker takes small leased batches of
//! recipients from the running broadcasts and sends them through the
//! shared budget at the lowest priority, so interactive replies always go
//! first and a broadcast uses what the budget leaves.
//!
//! A recipient is leased while its send is under way and recorded once
//! it ended; a worker that dies mid-batch leaves its recipients' leases to
//! run out, and another worker sends them. So each recipient gets the
//! message at most once, apart from the sends in flight at a crash - at
//! most [`BATCH`] per worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use shared::outbound::{OutMessage, Recipient, RecipientOutcome};
use shared::queue::Store;

use crate::metrics::Metrics;
use crate::sender::{Priority, SendError, Sender};

/// Recipients one worker takes at a time (and may send twice at a crash).
pub const BATCH: usize = 8;
/// How often the running broadcasts are looked for when there are none.
const IDLE_POLL: Duration = Duration::from_millis(500);

pub struct Broadcaster {
    pub store: Arc<dyn Store>,
    pub sender: Arc<Sender>,
    pub metrics: Arc<Metrics>,
    /// How long a recipient stays leased (`WORKER_BROADCAST_LEASE_MS`):
    /// past the longest a send may take (the Bot API timeout, 60 s), after
    /// which another worker may send it.
    pub lease: Duration,
}

impl Broadcaster {
    pub async fn run(self, cancel: CancellationToken) {
        let mut messages: HashMap<String, OutMessage> = HashMap::new();
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let mut busy = false;
            match self.store.broadcasts_running().await {
                Ok(ids) => {
                    for id in ids {
                        if cancel.is_cancelled() {
                            return;
                        }
                        if let Some(wait) = self.sender.paused_for() {
                            debug!(
                                wait_ms = wait.as_millis() as u64,
                                "bot paused; broadcasts wait"
                            );
                            break;
                        }
                        busy |= self.batch(&id, &mut messages).await;
                    }
                }
                Err(e) => debug!(error = %e, "cannot list the running broadcasts"),
            }
            let pause = self.sender.paused_for().unwrap_or(IDLE_POLL);
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        }
    }

    /// Sends one batch of broadcast `id`; true when there was one.
    async fn batch(&self, id: &str, messages: &mut HashMap<String, OutMessage>) -> bool {
        if !messages.contains_key(id) {
            match self.store.broadcast_message(id).await {
                Ok(Some(m)) => {
                    messages.insert(id.to_owned(), m);
                }
                Ok(None) => return false,
                Err(e) => {
                    debug!(error = %e, broadcast = id, "cannot read the broadcast's message");
                    return false;
                }
            }
        }
        let msg = &messages[id];
        let batch = match self
            .store
            .broadcast_take(id, BATCH, self.lease.as_millis() as u64)
            .await
        {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => return false,
            Err(e) => {
                debug!(error = %e, broadcast = id, "cannot take recipients");
                return false;
            }
        };
        let sends = batch.iter().map(|r| self.send_one(msg, r));
        futures::future::join_all(sends).await;
        true
    }

    async fn send_one(&self, msg: &OutMessage, r: &Recipient) {
        let mut params = msg.params.clone();
        params["chat_id"] = Value::from(r.chat_id);
        let outcome = match self
            .sender
            .send(&msg.method, params, &self.metrics, Priority::Outbound)
            .await
        {
            Ok(_) => RecipientOutcome::Sent,
            // Maybe delivered: never resent, counted as sent.
            Err(SendError::Unknown(_)) => RecipientOutcome::Sent,
            Err(SendError::Final(e)) if e.code() == Some(403) => RecipientOutcome::Blocked,
            Err(SendError::Final(e)) => {
                info!(broadcast = %r.broadcast, chat_id = r.chat_id, reason = %e, "broadcast refused for this recipient");
                RecipientOutcome::Failed
            }
            Err(SendError::Wait { .. }) => RecipientOutcome::Again,
            Err(SendError::Transient(e)) => {
                warn!(broadcast = %r.broadcast, chat_id = r.chat_id, error = %e, "broadcast send failed after retries");
                RecipientOutcome::Failed
            }
            // The budget is unreachable: leave the lease to run out, and
            // the recipient to whoever takes it then.
            Err(SendError::Store(e)) => {
                debug!(error = %e, "send budget unavailable; the recipient comes back");
                return;
            }
        };
        self.metrics.outbound(outcome.field());
        if let Err(e) = self.store.broadcast_record(r, outcome).await {
            debug!(error = %e, "could not record a broadcast send; its lease runs out");
        }
    }
}
