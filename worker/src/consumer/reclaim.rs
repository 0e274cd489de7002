//! Taking over what dead workers left: pending entries past the claim
//! timeout, kept replies past their lease; and the membership chores that
//! ride the same tick (alive mark, removing names of dead workers).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, Instrument};

use shared::envelope::Entry;
use shared::queue::Lane;

use super::{sleep_or_cancel, Consumer, DEAD_AFTER_PERIODS};

/// How often kept replies are checked for being due.
const DUE_POLL: Duration = Duration::from_millis(250);
use crate::replies::Kept;

impl Consumer {
    pub(super) async fn reclaim_loop(self: Arc<Self>, cancel: CancellationToken) {
        let idle = self.settings.claim_idle;
        let tick = (idle / 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let mut last_cleanup = Instant::now();
        let mut last_alive = Instant::now();
        loop {
            if sleep_or_cancel(tick, &cancel).await {
                return;
            }
            if last_alive.elapsed() >= idle {
                last_alive = Instant::now();
                self.mark_alive().await;
            }
            for lane in Lane::ALL {
                for shard in 0..self.shards_of(lane) {
                    self.reclaim_lane(lane, shard, idle, &cancel).await;
                }
            }
            if last_cleanup.elapsed() >= idle {
                last_cleanup = Instant::now();
                self.remove_dead_consumers().await;
            }
        }
    }

    /// Replies put aside come back when due, and those of dead workers
    /// once their lease ran out: looked for often, since a due time is a
    /// promise to the chat waiting behind it (one cheap sorted-set range
    /// per pass).
    pub(super) async fn due_loop(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            if sleep_or_cancel(DUE_POLL, &cancel).await {
                return;
            }
            self.take_over_replies().await;
        }
    }

    async fn reclaim_lane(
        self: &Arc<Self>,
        lane: Lane,
        shard: u16,
        idle: Duration,
        cancel: &CancellationToken,
    ) {
        {
            let mut cursor = "0-0".to_string();
            for _ in 0..20 {
                if cancel.is_cancelled() {
                    return;
                }
                let page = self
                    .store
                    .autoclaim(
                        &self.settings.name,
                        lane,
                        shard,
                        idle.as_millis() as u64,
                        &cursor,
                        32,
                    )
                    .await;
                let (next, entries, bad) = match page {
                    Ok(p) => (p.next_cursor, p.entries, p.unreadable),
                    Err(e) => {
                        debug!(error = %e, "reclaim pass failed");
                        break;
                    }
                };
                for (id, reason) in bad {
                    self.dead_letter_unreadable(&id, &reason).await;
                }
                // Entries still in flight here went idle only because the
                // heartbeat could not reach Redis (while their finish was
                // retrying): the claim made them ours again, and running
                // them a second time would answer twice.
                let entries: Vec<Entry> = match self.inflight.lock() {
                    Ok(s) => entries.into_iter().filter(|e| !s.contains(&e.id)).collect(),
                    Err(_) => entries,
                };
                if !entries.is_empty() {
                    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
                    // Ours from the moment of the claim: the heartbeat must
                    // cover them before anything else, or a slow pass lets
                    // another worker claim them again.
                    if let Ok(mut s) = self.inflight.lock() {
                        s.extend(ids.iter().cloned());
                    }
                    let counts: HashMap<String, u64> = self
                        .store
                        .delivery_counts(&ids)
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    for entry in entries {
                        self.metrics.reclaimed.inc();
                        let delivered = counts.get(&entry.id).copied().unwrap_or(1);
                        // Deliveries that never came back with a result: the
                        // worker handling it died each time. Poison of the
                        // kind that kills processes ends here too.
                        if delivered > u64::from(self.settings.max_deliveries) {
                            let reason = format!("delivered {delivered} times without finishing (the worker handling it died or stalled each time)");
                            let span = tracing::info_span!("update", update_id = entry.update_id, entry = %entry.id);
                            async {
                                error!("{reason}; moving the update to the dead letters");
                                self.dead_letter(&entry, &reason, delivered).await;
                            }
                            .instrument(span)
                            .await;
                            if let Ok(mut s) = self.inflight.lock() {
                                s.remove(&entry.id);
                            }
                            continue;
                        }
                        info!(update_id = entry.update_id, entry = %entry.id, delivered, "reclaimed an entry from a dead or stalled consumer");
                        self.dispatch(entry, None, false);
                    }
                }
                if next == "0-0" {
                    break;
                }
                cursor = next;
            }
        }
    }

    /// Renewed every claim period, valid for ten: a worker that misses
    /// ten renewals is dead or cut off from Redis. Joining again each time
    /// (a no-op while the name exists) puts an idle worker back in the
    /// group after Redis lost it (a restart without data).
    pub(super) async fn mark_alive(&self) {
        if let Err(e) = self.store.join_group(&self.settings.name).await {
            debug!(error = %e, "could not rejoin the consumer group");
        }
        let ttl = self.settings.claim_idle * DEAD_AFTER_PERIODS;
        if let Err(e) = self.store.mark_alive(&self.settings.name, ttl).await {
            debug!(error = %e, "could not renew the alive mark");
        }
    }

    /// Consumer names of dead workers would pile up with every deploy;
    /// a name goes once it owns nothing, has been silent for ten claim
    /// periods and its worker stopped renewing its alive mark (an idle
    /// live worker looks silent to Redis 7.0 too).
    pub(super) async fn remove_dead_consumers(&self) {
        let Ok(list) = self.store.consumers().await else {
            return;
        };
        let limit = self.settings.claim_idle.as_millis() as u64 * u64::from(DEAD_AFTER_PERIODS);
        for c in list {
            if c.name != self.settings.name && c.pending == 0 && c.idle_ms > limit && !c.alive {
                if let Ok(true) = self.store.delete_consumer(&c.name).await {
                    info!(consumer = %c.name, idle_ms = c.idle_ms, "removed a consumer that is gone");
                }
            }
        }
    }

    pub(super) async fn heartbeat_loop(self: Arc<Self>, cancel: CancellationToken) {
        let tick = (self.settings.claim_idle / 3).max(Duration::from_millis(30));
        loop {
            if sleep_or_cancel(tick, &cancel).await {
                return;
            }
            let ids: Vec<String> = match self.inflight.lock() {
                Ok(s) => s.iter().cloned().collect(),
                Err(_) => continue,
            };
            for chunk in ids.chunks(100) {
                if let Err(e) = self.store.heartbeat(&self.settings.name, chunk).await {
                    debug!(error = %e, "heartbeat failed");
                }
                // The same ids cover replies being sent (kept after their
                // entry left the stream).
                if let Err(e) = self.store.renew_replies(chunk, self.lease_end()).await {
                    debug!(error = %e, "renewing reply leases failed");
                }
            }
        }
    }

    /// Replies whose worker died after the update's completion and before
    /// Telegram had them: sent from here, in their chat's order (the chat
    /// still waits for them).
    pub(super) async fn take_over_replies(self: &Arc<Self>) {
        let orphans = match self.store.orphan_replies(self.lease_end(), 16).await {
            Ok(o) => o,
            Err(e) => {
                debug!(error = %e, "looking for orphaned replies failed");
                return;
            }
        };
        for o in orphans {
            let kept: Kept = match serde_json::from_str(&o.body) {
                Ok(k) => k,
                Err(e) => {
                    let reason = format!("unreadable kept reply: {e}");
                    error!(entry = %o.id, "{reason}; moving it to the dead letters");
                    let kept = Kept::unreadable();
                    self.dead_letter_kept(&o.id, &kept, &reason, o.takeovers)
                        .await;
                    continue;
                }
            };
            let span = tracing::info_span!("update", update_id = kept.update_id, entry = %o.id);
            // Its first try plus each takeover is a delivery.
            if o.takeovers >= u64::from(self.settings.max_deliveries) {
                let reason = format!(
                    "reply delivered {} times without finishing (the worker sending it died or stalled each time)",
                    o.takeovers + 1
                );
                async {
                    error!("{reason}; moving it to the dead letters");
                    self.dead_letter_kept(&o.id, &kept, &reason, o.takeovers)
                        .await;
                }
                .instrument(span)
                .await;
                continue;
            }
            if let Ok(mut s) = self.inflight.lock() {
                if !s.insert(o.id.clone()) {
                    continue; // still ours: the heartbeat just missed it
                }
            }
            if kept.outbound {
                debug!(entry = %o.id, chat_id = kept.chat_id, "sending an outbox message");
            } else {
                self.metrics.reclaimed.inc();
                info!(update_id = kept.update_id, entry = %o.id, "took over a reply its worker left unsent");
            }
            let this = self.clone();
            self.tasks.spawn(
                async move {
                    let mut kept = kept;
                    let lane = if kept.urgent {
                        Lane::Fast
                    } else {
                        Lane::Ordinary
                    };
                    let mut permit = this.slots(lane).acquire_owned().await.ok();
                    if let Some(outcome) = this.send_kept(&o.id, &mut kept, &mut permit, None).await
                    {
                        if kept.outbound {
                            this.metrics.outbound(outcome.label());
                        } else {
                            this.metrics.handled(outcome.label());
                        }
                    }
                    if let Ok(mut s) = this.inflight.lock() {
                        s.remove(&o.id);
                    }
                    drop(permit);
                    this.wake.notify_one();
                }
                .instrument(span),
            );
        }
    }
}
