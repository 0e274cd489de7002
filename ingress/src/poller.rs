//! Polling mode: with no public URL, one replica long-polls `getUpdates`
//! and appends to the same stream, so workers cannot tell the difference.
//!
//! Exactly one poller runs across all replicas, through a Redis lease. The
//! lease is (re)taken before every long poll for longer than that poll can
//! last, so a holder that dies or loses Redis stops polling before anyone
//! else may start: two `getUpdates` never overlap, and Telegram never
//! answers 409. The offset lives in Redis and advances only after the batch
//! is stored; a batch fetched twice (crash in between) is deduplicated by
//! update_id on the way in.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use shared::envelope::{self, Enqueued};
use shared::queue::Store;
use shared::signals::Backoff;
use shared::telegram::{BotApi, BotApiError};

use crate::metrics::Metrics;
use crate::registration::{allowed_updates, retrying, SetupError};

/// Seconds Telegram may hold a `getUpdates` open.
pub const POLL_TIMEOUT_SECS: u64 = 10;
/// Margin on top of the long poll for the HTTP round trip.
const HTTP_MARGIN: Duration = Duration::from_secs(3);
/// Lease length: longer than a whole poll, so it never expires mid-poll.
const LEASE: Duration = Duration::from_secs(POLL_TIMEOUT_SECS + 5);
/// While paused (another deployment's webhook is set), how often to look
/// whether it is gone; well inside the lease, which is kept meanwhile so no
/// other replica of this deployment takes over and deletes it again.
const PAUSED_CHECK: Duration = Duration::from_secs(5);

pub struct Poller {
    pub api: BotApi,
    pub store: Arc<dyn Store>,
    pub lanes: Arc<crate::lanes::Lanes>,
    pub metrics: Arc<Metrics>,
    pub instance: String,
}

impl Poller {
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SetupError> {
        let mut holding = false;
        // A webhook came back after we deleted it at start: someone else
        // (another deployment with this token) uses webhook mode.
        let mut paused = false;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        info!("Setting up Telegram bot via polling (no webhook URL configured)...");
        while !cancel.is_cancelled() {
            let took = match self
                .store
                .lease(
                    &self.store.keys().poller_lease(),
                    &self.instance,
                    LEASE.as_millis() as u64,
                )
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, "Redis unavailable; polling paused");
                    holding = false;
                    sleep_or_cancel(backoff.next_delay(), &cancel).await;
                    continue;
                }
            };
            if !took {
                if holding {
                    info!("polling lease lost; another replica polls now");
                }
                holding = false;
                sleep_or_cancel(Duration::from_secs(2), &cancel).await;
                continue;
            }
            if !holding {
                holding = true;
                info!(instance = %self.instance, "polling lease acquired; this replica polls getUpdates");
                let info = retrying("getWebhookInfo", || self.api.get_webhook_info()).await?;
                if !info.url.is_empty() {
                    warn!(
                        "a webhook was set ({}); deleting it for polling mode. If production uses this token with a webhook, stop this process",
                        info.url
                    );
                }
                retrying("deleteWebhook", || self.api.delete_webhook(false)).await?;
                info!("Telegram bot configured via polling");
            }
            if paused {
                match self.api.get_webhook_info().await {
                    Ok(info) if info.url.is_empty() => {
                        info!("the other webhook is gone; polling resumes");
                        paused = false;
                    }
                    Err(e) if e.is_unauthorized() => return Err(SetupError::Unauthorized),
                    _ => {
                        sleep_or_cancel(PAUSED_CHECK, &cancel).await;
                        continue;
                    }
                }
            }
            let offset: Option<i64> = match self.store.get(&self.store.keys().poller_offset()).await
            {
                Ok(v) => v.and_then(|v| v.parse().ok()),
                Err(e) => {
                    warn!(error = %e, "could not read the polling offset");
                    sleep_or_cancel(backoff.next_delay(), &cancel).await;
                    continue;
                }
            };
            // Read each time: the workers publish their bot's kinds when
            // they start, maybe after this poller did.
            let allowed = allowed_updates(self.store.as_ref()).await;
            let mut params = json!({
                "timeout": POLL_TIMEOUT_SECS,
                "limit": 100,
                "allowed_updates": allowed,
            });
            if let Some(o) = offset {
                params["offset"] = json!(o);
            }
            let poll = self.api.call_with_timeout::<_, Vec<serde_json::Value>>(
                "getUpdates",
                &params,
                Duration::from_secs(POLL_TIMEOUT_SECS) + HTTP_MARGIN,
            );
            let batch = tokio::select! {
                r = poll => r,
                // Cancelling drops the request; the lease then simply expires.
                _ = cancel.cancelled() => break,
            };
            let updates = match batch {
                Ok(u) => u,
                Err(e) if e.is_webhook_active() => {
                    error!(
                        "Telegram has a webhook for this bot again: another deployment uses this token in webhook mode. Polling pauses rather than deleting it again (the two would take turns missing updates); it resumes if that webhook goes. Use a separate bot token for development"
                    );
                    paused = true;
                    continue;
                }
                Err(e) => {
                    self.poll_error(e, &mut backoff, &cancel).await?;
                    continue;
                }
            };
            backoff.reset();
            if updates.is_empty() {
                continue;
            }
            let mut next = offset.unwrap_or(i64::MIN);
            let mut stored_all = true;
            for u in &updates {
                let raw = serde_json::to_vec(u).unwrap_or_default();
                self.metrics.received.inc();
                let probe = match envelope::probe(&raw) {
                    Ok(p) => p,
                    Err(e) => {
                        self.metrics.reject("no_update_id");
                        warn!(error = %e, "getUpdates returned an item that is not an update; skipped");
                        continue;
                    }
                };
                match self
                    .store
                    .enqueue(&probe, self.lanes.lane(probe.kind), &raw)
                    .await
                {
                    Ok(Enqueued::Stored(_)) => {
                        self.metrics.enqueued.inc();
                    }
                    Ok(Enqueued::Duplicate) => {
                        self.metrics.duplicates.inc();
                    }
                    Err(e) => {
                        warn!(update_id = probe.update_id, error = %e, "could not store update; it will be fetched again");
                        stored_all = false;
                        break;
                    }
                }
                next = next.max(probe.update_id + 1);
            }
            // Only what is stored is confirmed: the offset moves past the
            // stored prefix, and the rest is fetched again.
            if next != offset.unwrap_or(i64::MIN) {
                let _ = self
                    .store
                    .set(&self.store.keys().poller_offset(), &next.to_string())
                    .await;
            }
            if !stored_all {
                sleep_or_cancel(backoff.next_delay(), &cancel).await;
            }
        }
        if holding {
            let _ = self
                .store
                .release(&self.store.keys().poller_lease(), &self.instance)
                .await;
            info!("polling lease released");
        }
        Ok(())
    }

    async fn poll_error(
        &self,
        e: BotApiError,
        backoff: &mut Backoff,
        cancel: &CancellationToken,
    ) -> Result<(), SetupError> {
        if e.is_unauthorized() {
            return Err(SetupError::Unauthorized);
        }
        if let Some(wait) = e.retry_after() {
            warn!(error = %e, "getUpdates rate limited");
            sleep_or_cancel(wait, cancel).await;
        } else if e.code() == Some(409) {
            // Someone outside this deployment polls or set a webhook with the
            // same token (a laptop with the production token, say).
            warn!(error = %e, "getUpdates conflict: another process uses this bot token");
            sleep_or_cancel(backoff.next_delay(), cancel).await;
        } else {
            warn!(error = %e, "getUpdates failed; retrying");
            sleep_or_cancel(backoff.next_delay(), cancel).await;
        }
        Ok(())
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = cancel.cancelled() => {}
    }
}
