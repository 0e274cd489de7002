//! Delivering one entry: the dedupe check, the handler (errors and panics
//! caught), the completion (writes, directory, "handled" mark, the reply
//! kept), the reply sent, retries and dead letters.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, info, warn};

use shared::envelope::{now_ms, Entry};
use shared::queue::{Admit, Budget, Completion, DeadLetterRequest};
use shared::signals::Backoff;

use shared::queue::Lane;

use super::{panic_message, Consumer};
use crate::dispatch::Outcome;
use crate::replies::{self, Kept, Pass};
use crate::sender::HOLD_AT_MOST;

impl Consumer {
    pub(super) async fn deliver(
        &self,
        entry: Entry,
        permit: OwnedSemaphorePermit,
        known_done: Option<bool>,
    ) {
        let mut permit = Some(permit);
        let mut known_done = known_done;
        let mut lookup_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut lookup_deadline = None;
        let mut attempts = 0u64;
        loop {
            // Cheap pre-check (made by the park pass for ordered entries, so
            // at no extra round trip); the authoritative one is in the
            // finish script. A retry asks afresh.
            let done = match known_done.take() {
                Some(d) => Ok(d),
                None => self.store.is_done(&entry.id, entry.update_id).await,
            };
            let done = match done {
                Ok(d) => d,
                // Unknown whether it was handled: running the handler could
                // answer twice. Not the update's failure - ask again with
                // the slot freed; after a minute it stays pending for a
                // later delivery.
                Err(e) => {
                    let wait = lookup_backoff.next_delay();
                    let deadline = *lookup_deadline
                        .get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
                    if Instant::now() + wait > deadline {
                        warn!(error = %e, "cannot tell whether the update was handled; it stays pending");
                        break;
                    }
                    debug!(error = %e, "cannot tell whether the update was handled; asking again in {wait:?}");
                    drop(permit.take());
                    tokio::time::sleep(wait).await;
                    match self.slots(entry.lane).acquire_owned().await {
                        Ok(p) => permit = Some(p),
                        Err(_) => break,
                    }
                    continue;
                }
            };
            if done {
                let (fresh, _) = self.finish(&entry, Completion::default()).await;
                if !fresh {
                    self.metrics.deduplicated.inc();
                    info!("update already handled; acknowledged and skipped");
                }
                break;
            }
            if let Some((kind, age)) = self.expired(&entry) {
                // Answering now would come too late (Telegram refuses an old
                // query, a payment has failed): end it, counted, not answered.
                let (fresh, _) = self.finish(&entry, Completion::default()).await;
                if fresh {
                    self.metrics.expired(kind);
                    info!(
                        kind,
                        age_ms = age.as_millis() as u64,
                        "update past its deadline; ended as expired, not answered late"
                    );
                } else {
                    self.metrics.deduplicated.inc();
                }
                break;
            }
            let started = Instant::now();
            let result = AssertUnwindSafe(self.handler.handle(&entry))
                .catch_unwind()
                .await;
            self.metrics
                .latency
                .observe(started.elapsed().as_secs_f64());
            let error = match result {
                Ok(Ok(handled)) => {
                    // The writes, the directory entry and the reply to send
                    // are stored with the "handled" mark; the reply goes out
                    // after (see `replies`).
                    let urgent = entry.lane == Lane::Fast;
                    let kept = Kept::of(entry.update_id, &entry.key, urgent, &handled);
                    let body = kept.as_ref().map(Kept::to_json);
                    let completion = Completion {
                        user: handled.user.as_ref(),
                        writes: &handled.writes,
                        reply: body.as_deref(),
                        reply_lease_until_ms: self.lease_end(),
                    };
                    // The reply's first send asks the budget in the same
                    // step as the completion.
                    let first_send = kept.as_ref().and_then(|k| k.next_budget(&self.sender));
                    let (fresh, admitted) =
                        self.finish_admitting(&entry, completion, first_send).await;
                    if !fresh {
                        self.metrics.deduplicated.inc();
                        info!(
                            "update was handled meanwhile by another delivery; not counted twice"
                        );
                        break;
                    }
                    let outcome = match kept {
                        None => Some(Outcome::Counted),
                        Some(mut kept) => {
                            self.send_kept(&entry.id, &mut kept, &mut permit, admitted)
                                .await
                        }
                    };
                    if let Some(outcome) = outcome {
                        self.metrics.handled(outcome.label());
                        debug!(outcome = outcome.label(), "update handled");
                    }
                    break;
                }
                Ok(Err(e)) if !e.is_retry() => {
                    // The handler says no delivery will fix it: dead letters
                    // now, with its reason, not after the retries.
                    self.metrics.failed.inc();
                    let deliveries = self.store.count_failure(&entry.id).await.unwrap_or(1);
                    error!(error = %e, "handler gave up; moving the update to the dead letters");
                    self.dead_letter(&entry, &format!("gave up: {e}"), deliveries)
                        .await;
                    break;
                }
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!("handler panicked: {}", panic_message(&panic)),
            };
            self.metrics.failed.inc();
            attempts += 1;
            let failures = match self.store.count_failure(&entry.id).await {
                Ok(n) => n.max(attempts),
                // A full Redis refuses the count but still takes the dead
                // letter (which frees the entry): count the attempts made
                // here, so a poison update still ends instead of cycling.
                Err(e) if e.is_out_of_memory() => attempts,
                Err(e) => {
                    // Cannot even count: leave the entry pending; once Redis
                    // is back, the reclaimer hands it out again.
                    warn!(error = %e, handler_error = %error, "failed, and Redis is unavailable; the entry stays pending");
                    break;
                }
            };
            if failures >= u64::from(self.settings.max_deliveries) {
                error!(deliveries = failures, error = %error, "giving up; moving the update to the dead letters");
                self.dead_letter(&entry, &error, failures).await;
                break;
            }
            warn!(attempt = failures, error = %error, "handling failed; will retry");
            // Free the slot while waiting, so a poison update does not
            // starve healthy ones.
            drop(permit.take());
            let wait = Duration::from_millis(
                (250u64 << failures.min(6)).min(self.settings.claim_idle.as_millis() as u64 / 2),
            );
            tokio::time::sleep(wait).await;
            match self.slots(entry.lane).acquire_owned().await {
                Ok(p) => permit = Some(p),
                Err(_) => break,
            }
        }
        if let Ok(mut s) = self.inflight.lock() {
            s.remove(&entry.id);
        }
        drop(permit);
        // The chat's next entry may be parked here: let it go now.
        self.wake.notify_one();
    }

    /// Runs the finish script until it succeeds. Giving up is never safe:
    /// an entry released without its finish is reclaimed and, its done bit
    /// unset, handled again. Until then the entry stays in flight here -
    /// the heartbeat keeps it from being reclaimed, the handler slot stays
    /// taken (a Redis that cannot finish entries gets no new ones from this
    /// worker) - and a shutdown leaves it pending after the grace period,
    /// like a crash would. Returns whether the update was fresh (not
    /// handled before) and its chat's next entry.
    pub(super) async fn finish(
        &self,
        entry: &Entry,
        done: Completion<'_>,
    ) -> (bool, Option<String>) {
        until_stored("mark the update handled", || self.store.finish(entry, done)).await
    }

    /// [`Consumer::finish`], asking the budget for the reply's first send
    /// in the same step; returns whether the update was fresh and the
    /// budget's answer, if asked.
    async fn finish_admitting(
        &self,
        entry: &Entry,
        done: Completion<'_>,
        first_send: Option<Budget>,
    ) -> (bool, Option<Admit>) {
        let (fresh, _, admitted) = until_stored("mark the update handled", || {
            self.store.finish_admitting(entry, done, first_send)
        })
        .await;
        (fresh, admitted)
    }

    pub(super) async fn dead_letter(&self, entry: &Entry, reason: &str, deliveries: u64) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let request = DeadLetterRequest {
            id: &entry.id,
            update_id: Some(entry.update_id),
            key: &entry.key,
            update: &entry.update,
            error: reason,
            deliveries,
            reply: "",
        };
        for _ in 0..20 {
            match self.store.dead_letter(request).await {
                Ok(()) => {
                    self.metrics.dead_lettered.inc();
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "could not dead-letter yet; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        error!("could not dead-letter; the entry stays pending and is retried later");
    }

    pub(super) async fn dead_letter_unreadable(&self, id: &str, reason: &str) {
        error!(
            entry = id,
            reason, "unreadable stream entry; moving it to the dead letters"
        );
        let request = DeadLetterRequest {
            id,
            update_id: None,
            key: "",
            update: b"",
            error: reason,
            deliveries: 1,
            reply: "",
        };
        if let Err(e) = self.store.dead_letter(request).await {
            warn!(error = %e, "could not dead-letter the unreadable entry; it stays pending");
        } else {
            self.metrics.dead_lettered.inc();
        }
    }

    /// When a reply kept now may be taken over by another worker, unless
    /// the heartbeat renews it first.
    pub(super) fn lease_end(&self) -> i64 {
        now_ms() + self.settings.claim_idle.as_millis() as i64
    }

    /// Sends a kept reply (`admitted`: the budget's answer for its next
    /// send, already asked), retrying what Telegram failed (5xx, network
    /// after the sender's own retries) up to `WORKER_MAX_DELIVERIES` times
    /// with the slot freed between tries; then forgets it. `None` when it
    /// was dead-lettered.
    ///
    /// A wait Telegram asks for beyond [`HOLD_AT_MOST`] - and a retry
    /// backoff beyond it - puts the reply aside in the store until due
    /// (`None` then too): no slot, no task, no memory held here meanwhile,
    /// and any worker sends it once due, also after a restart.
    pub(super) async fn send_kept(
        &self,
        id: &str,
        kept: &mut Kept,
        permit: &mut Option<OwnedSemaphorePermit>,
        mut admitted: Option<Admit>,
    ) -> Option<Outcome> {
        let lane = if kept.urgent {
            Lane::Fast
        } else {
            Lane::Ordinary
        };
        loop {
            match replies::send(&self.sender, &self.metrics, kept, admitted.take()).await {
                Pass::Ended(outcome) => {
                    // Handled and answered: what is left is bookkeeping,
                    // which needs no handler slot (the chat still waits
                    // for it, and the entry stays in flight until done).
                    drop(permit.take());
                    if kept.blocked {
                        self.blocked(kept.chat_id).await;
                    }
                    self.reply_sent(id, &kept.key).await;
                    return Some(outcome);
                }
                Pass::Wait(wait) => {
                    self.put_aside(id, kept, wait).await;
                    return None;
                }
                Pass::Failed(e) => {
                    kept.failures += 1;
                    let attempts = kept.failures;
                    self.metrics.failed.inc();
                    if attempts >= u64::from(self.settings.max_deliveries) {
                        let reason = format!("reply could not be sent: {e}");
                        error!(deliveries = attempts, error = %e, "giving up on the reply; moving it to the dead letters");
                        self.dead_letter_kept(id, kept, &reason, attempts).await;
                        return None;
                    }
                    warn!(attempt = attempts, error = %e, "sending the reply failed; will retry");
                    let wait = Duration::from_millis(
                        (250u64 << attempts.min(6))
                            .min(self.settings.claim_idle.as_millis() as u64 / 2),
                    );
                    if wait > HOLD_AT_MOST {
                        self.put_aside(id, kept, wait).await;
                        return None;
                    }
                    drop(permit.take());
                    tokio::time::sleep(wait).await;
                    *permit = self.slots(lane).acquire_owned().await.ok();
                }
            }
        }
    }

    /// A 403: the user blocked the bot (or is gone); later broadcasts skip
    /// them, `/stats` counts them. Best effort: the send's outcome stands.
    pub(super) async fn blocked(&self, chat_id: Option<i64>) {
        let Some(chat_id) = chat_id.filter(|c| *c > 0) else {
            return;
        };
        if let Err(e) = self.store.mark_blocked(chat_id).await {
            debug!(error = %e, chat_id, "could not mark the user as blocking the bot");
        }
    }

    /// Stores the reply with its progress and due time; from then on the
    /// heartbeat no longer renews it (the caller drops it from the
    /// in-flight set) and the takeover pass brings it back when due.
    async fn put_aside(&self, id: &str, kept: &Kept, wait: Duration) {
        let body = kept.to_json();
        let due = now_ms() + wait.as_millis() as i64;
        until_stored("put the reply aside", || {
            self.store.delay_reply(id, &body, due)
        })
        .await;
        self.metrics.delayed.inc();
        info!(
            chat_id = kept.chat_id,
            wait_s = wait.as_secs(),
            "reply put aside until Telegram lets it go; its chat waits, no slot is held"
        );
    }

    /// Forgets a sent reply, retrying until Redis takes it. Giving up
    /// would let the lease run out and another worker send the reply
    /// again, so the reply stays in flight here (the heartbeat renews its
    /// lease) for as long as Redis refuses writes, as the finish does.
    async fn reply_sent(&self, id: &str, key: &str) {
        until_stored("mark the reply sent", || self.store.reply_sent(id, key)).await;
    }

    pub(super) async fn dead_letter_kept(
        &self,
        id: &str,
        kept: &Kept,
        reason: &str,
        deliveries: u64,
    ) {
        let body = kept.to_json();
        let request = DeadLetterRequest {
            id,
            update_id: Some(kept.update_id),
            key: &kept.key,
            // The update itself was handled (its writes applied): replaying
            // it would be skipped as a duplicate. The reply is kept instead,
            // and `replay-dead` sends it.
            update: b"",
            error: reason,
            deliveries,
            reply: &body,
        };
        if let Err(e) = self.store.dead_letter(request).await {
            warn!(error = %e, "could not dead-letter the reply; its lease runs out and it is tried again");
        } else {
            self.metrics.dead_lettered.inc();
        }
    }
}

/// Runs a store step that must happen once what it records has happened
/// (a reply went out), until Redis takes it. Each try is bounded by the
/// store's command timeout; the waits between tries are short, to be done
/// soon after Redis is back and before any other worker could take the
/// work over. Logged once, then once a minute: a long refusal must not
/// flood the log with a line per retry.
async fn until_stored<T, F, Fut>(what: &str, mut step: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, shared::queue::StoreError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let started = Instant::now();
    let mut next_report = Duration::from_secs(60);
    let mut tries = 0u32;
    loop {
        tries += 1;
        match step().await {
            Ok(v) => {
                if started.elapsed() >= Duration::from_secs(60) {
                    info!(
                        waited_s = started.elapsed().as_secs(),
                        "could {what} at last"
                    );
                }
                return v;
            }
            Err(e) if started.elapsed() < next_report => {
                if tries == 1 {
                    warn!(error = %e, "could not {what}; retrying");
                } else {
                    debug!(error = %e, "could not {what}; retrying");
                }
            }
            Err(e) => {
                next_report += Duration::from_secs(60);
                error!(error = %e, waited_s = started.elapsed().as_secs(), "still cannot {what}; holding it (never done twice) and retrying");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
