//! The consumption loop: read from the group, run handlers with bounded
//! concurrency, and end every entry in exactly one of three ways - handled,
//! deduplicated, or dead-lettered with its reason.
//!
//! Three tasks share one consumer name:
//! - the reader takes new entries (`XREADGROUP >`) only when a handler slot
//!   is free, so the backlog stays in Redis, not in memory;
//! - the reclaimer takes over entries idle longer than the claim timeout
//!   (their consumer died) and removes consumers that are long gone;
//! - the heartbeat keeps this process's in-flight entries from looking
//!   idle, so a handler waiting out a long 429 is not robbed.
//!
//! Every entry goes through [`Consumer::dispatch`], which decides when it
//! may run.
//!
//! # Per-chat order across workers
//!
//! The ingress appends each keyed entry's id to its conversation's list
//! (`tgbot:order:<key>`, see `shared::keys::order`) in the same script as
//! the XADD, and the script that ends an entry (handled, duplicate or dead)
//! removes it from that list. So the head of the list is always the oldest
//! entry of that chat not yet ended, and only the head may run. An entry
//! that is not the head is *parked*: held in memory (the backlog it can
//! cause is bounded by what was already read), kept alive by the heartbeat,
//! without a handler slot - so parked entries can never starve the slot the
//! head needs. A park task checks the heads of all parked chats in one
//! pipelined round trip whenever an entry ends here, and every few
//! milliseconds otherwise (the head may end on another worker).
//!
//! Nothing blocks a chat forever: a head held by a dead worker is
//! reclaimed after the claim timeout like any entry; a dead-lettered or
//! duplicate head leaves the list in the script that ends it; a head whose
//! entry vanished from the stream (a Redis restart without its data) is
//! dropped after two claim periods. Cost: one list push and one list
//! removal per update, a hop through the park task, and chats are
//! sequential - different chats still run in parallel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};

use shared::envelope::Entry;
use shared::signals::Backoff;

use crate::dispatch::Handler;
use crate::metrics::Metrics;
use shared::store::{id_order, DeadLetterRequest, Store, UserTouch};

/// How long one XREADGROUP waits for new entries before looping (and
/// noticing a shutdown).
/// Claim periods without a sign of life after which a consumer name with
/// nothing pending is removed (SPEC: "ten claim-idle periods").
const DEAD_AFTER_PERIODS: u32 = 10;
const BLOCK: Duration = Duration::from_millis(1000);

pub struct Settings {
    pub name: String,
    pub concurrency: usize,
    pub max_deliveries: u32,
    pub claim_idle: Duration,
    /// How long in-flight handlers may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Keep each chat's updates in acceptance order (see module docs).
    pub per_chat_order: bool,
}

/// Entries a process may hold (waiting for a slot, parked or running), as a
/// multiple of its concurrency. Reading ahead keeps slots busy; the bound
/// keeps the backlog in Redis rather than in memory.
const HOLD_FACTOR: usize = 4;

/// A place in the read-ahead budget; `None` for reclaimed entries, which
/// must never wait for budget (the budget may be full of entries waiting
/// for exactly the one being reclaimed).
type Hold = Option<OwnedSemaphorePermit>;

/// How often parked chats look at their heads when nothing ended here.
const PARK_POLL: Duration = Duration::from_millis(5);

/// One chat's parked entries, oldest first.
type ChatQueue = BTreeMap<(u64, u64), (Entry, Hold)>;

#[derive(Default)]
struct Parked {
    by_key: HashMap<String, ChatQueue>,
    /// The head each parked chat waits for, and since when.
    waiting_on: HashMap<String, (String, Instant)>,
}

pub struct Consumer {
    settings: Settings,
    store: Arc<dyn Store>,
    handler: Arc<dyn Handler>,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    holds: Arc<Semaphore>,
    inflight: Mutex<HashSet<String>>,
    parked: Mutex<Parked>,
    wake: Notify,
    tasks: TaskTracker,
}

impl Consumer {
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        handler: Arc<dyn Handler>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            holds: Arc::new(Semaphore::new(settings.concurrency * HOLD_FACTOR)),
            settings,
            store,
            handler,
            metrics,
            inflight: Mutex::new(HashSet::new()),
            parked: Mutex::new(Parked::default()),
            wake: Notify::new(),
            tasks: TaskTracker::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Runs until `cancel`; then stops taking entries, lets in-flight
    /// handlers finish (bounded by the grace period) and returns.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        while let Err(e) = self.store.join_group(&self.settings.name).await {
            warn!(error = %e, "cannot create the consumer group yet (Redis unavailable?)");
            if sleep_or_cancel(backoff.next_delay(), &cancel).await {
                return;
            }
        }
        self.mark_alive().await;
        info!(consumer = %self.settings.name, concurrency = self.settings.concurrency, "worker consuming");

        // The reclaimer stops taking work with the shutdown signal; the
        // heartbeat and the park task must outlive it, until the drain is
        // over - parked entries still need their turn, in-flight ones their
        // heartbeat. Hence an independent token, not a child of `cancel`.
        let background = CancellationToken::new();
        let reclaimer = tokio::spawn(self.clone().reclaim_loop(cancel.clone()));
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(background.clone()));
        let park = tokio::spawn(self.clone().park_loop(background.clone()));

        self.clone().read_loop(cancel.clone()).await;

        info!(
            in_flight = self.in_flight(),
            "stopped taking entries; finishing in-flight updates"
        );
        // Everything already taken - running, waiting for a slot or parked
        // behind its chat's head - is finished before exiting, so a
        // redeploy leaves nothing for the claim timeout.
        let drain = async {
            while self.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.tasks.close();
            self.tasks.wait().await;
        };
        if tokio::time::timeout(self.settings.shutdown_grace, drain)
            .await
            .is_err()
        {
            warn!(
                in_flight = self.in_flight(),
                "grace period over; unfinished entries stay pending and another worker reclaims them"
            );
        }
        background.cancel();
        let _ = reclaimer.await;
        let _ = heartbeat.await;
        let _ = park.await;
        // A redeploy should not leave a name behind for ten claim periods:
        // with nothing pending under it, it goes now.
        match self.store.leave_group(&self.settings.name).await {
            Ok(true) => info!(consumer = %self.settings.name, "left the consumer group"),
            Ok(false) => info!(
                consumer = %self.settings.name,
                "entries still pending under this name; another worker reclaims them, then removes the name"
            ),
            Err(e) => {
                debug!(error = %e, "could not leave the consumer group; the others remove the name later")
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.inflight.lock().map(|s| s.len()).unwrap_or(0)
    }

    async fn read_loop(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut outage = false;
        while !cancel.is_cancelled() {
            let first = tokio::select! {
                p = self.holds.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = cancel.cancelled() => return,
            };
            let mut permits = vec![first];
            while permits.len() < 128 {
                match self.holds.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // Not cancelled mid-read: whatever Redis hands us is ours, and
            // is handled before the loop notices the shutdown.
            match self
                .store
                .read_new(&self.settings.name, permits.len(), BLOCK.as_millis() as u64)
                .await
            {
                Ok(shared::store::Read {
                    entries,
                    unreadable: bad,
                }) => {
                    if outage {
                        info!("Redis reachable again; consuming");
                        outage = false;
                    }
                    backoff.reset();
                    for (id, reason) in bad {
                        self.dead_letter_unreadable(&id, &reason).await;
                    }
                    for entry in entries {
                        let hold = permits.pop();
                        self.dispatch(entry, hold);
                    }
                }
                Err(e) if e.is_nogroup() => {
                    // The stream or group vanished (Redis restarted without
                    // its data, or an operator deleted it): recreate.
                    warn!("consumer group missing; recreating it");
                    let _ = self.store.join_group(&self.settings.name).await;
                }
                Err(e) => {
                    if !outage {
                        warn!(error = %e, "reading the stream failed; retrying with backoff");
                        outage = true;
                    }
                    drop(permits);
                    if sleep_or_cancel(backoff.next_delay(), &cancel).await {
                        return;
                    }
                }
            }
        }
    }

    /// Decides when an entry runs: at once, or (per-chat order) once it is
    /// the head of its chat. The single place where order is decided.
    fn dispatch(self: &Arc<Self>, entry: Entry, hold: Hold) {
        if let Ok(mut s) = self.inflight.lock() {
            s.insert(entry.id.clone());
        }
        if !self.settings.per_chat_order || entry.key.is_empty() {
            return self.start(entry, hold, None);
        }
        if let Ok(mut p) = self.parked.lock() {
            p.by_key
                .entry(entry.key.clone())
                .or_default()
                .insert(id_order(&entry.id), (entry, hold));
        }
        self.wake.notify_one();
    }

    /// Runs an entry as soon as a handler slot is free. `known_done`: the
    /// dedupe check already made when the entry became its chat's head.
    fn start(self: &Arc<Self>, entry: Entry, hold: Hold, known_done: Option<bool>) {
        let span = tracing::info_span!("update", update_id = entry.update_id, entry = %entry.id);
        let this = self.clone();
        self.tasks.spawn(
            async move {
                let Ok(slot) = this.slots.clone().acquire_owned().await else {
                    return;
                };
                this.deliver(entry, slot, known_done).await;
                drop(hold);
            }
            .instrument(span),
        );
    }

    async fn deliver(&self, entry: Entry, permit: OwnedSemaphorePermit, known_done: Option<bool>) {
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
                None => self.store.is_done(entry.update_id).await,
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
                    match self.slots.clone().acquire_owned().await {
                        Ok(p) => permit = Some(p),
                        Err(_) => break,
                    }
                    continue;
                }
            };
            if done {
                let (fresh, _) = self.finish(&entry, None).await;
                if !fresh {
                    self.metrics.deduplicated.inc();
                    info!("update already handled; acknowledged and skipped");
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
                    let outcome = handled.outcome.label();
                    if self.finish(&entry, handled.user.as_ref()).await.0 {
                        self.metrics.handled(outcome);
                        debug!(outcome, "update handled");
                    } else {
                        self.metrics.deduplicated.inc();
                        info!(
                            "update was handled meanwhile by another delivery; not counted twice"
                        );
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
            match self.slots.clone().acquire_owned().await {
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

    /// Runs the finish script until it succeeds. A reply already went out,
    /// so there is no safe way to give up: an entry released without its
    /// finish is reclaimed and, its done bit unset, answered again. Until
    /// then the entry stays in flight here - the heartbeat keeps it from
    /// being reclaimed, the handler slot stays taken (a Redis that cannot
    /// finish entries gets no new ones from this worker) - and a shutdown
    /// leaves it pending after the grace period, like a crash would. Each
    /// try is bounded by the store's command timeout; the waits between
    /// tries are short, to finish soon after Redis is back and before any
    /// other worker could reclaim the entry. Returns whether the update was
    /// fresh (not handled before) and its chat's next entry.
    async fn finish(&self, entry: &Entry, user: Option<&UserTouch>) -> (bool, Option<String>) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let started = Instant::now();
        let mut next_report = Duration::from_secs(60);
        let mut tries = 0u32;
        loop {
            tries += 1;
            match self.store.finish(entry, user).await {
                Ok(fresh) => {
                    if started.elapsed() >= Duration::from_secs(60) {
                        info!(
                            waited_s = started.elapsed().as_secs(),
                            "marked the update handled at last"
                        );
                    }
                    return fresh;
                }
                Err(e) if started.elapsed() < next_report => {
                    // Once per entry and then once a minute: a long refusal
                    // must not flood the log with a line per retry.
                    if tries == 1 {
                        warn!(error = %e, "could not mark the update handled; retrying");
                    } else {
                        debug!(error = %e, "could not mark the update handled; retrying");
                    }
                }
                Err(e) => {
                    next_report += Duration::from_secs(60);
                    error!(error = %e, waited_s = started.elapsed().as_secs(), "still cannot mark the update handled; holding it (never answered twice) and retrying");
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    async fn dead_letter(&self, entry: &Entry, reason: &str, deliveries: u64) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let request = DeadLetterRequest {
            id: &entry.id,
            update_id: Some(entry.update_id),
            key: &entry.key,
            update: &entry.update,
            error: reason,
            deliveries,
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

    async fn dead_letter_unreadable(&self, id: &str, reason: &str) {
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
        };
        if let Err(e) = self.store.dead_letter(request).await {
            warn!(error = %e, "could not dead-letter the unreadable entry; it stays pending");
        } else {
            self.metrics.dead_lettered.inc();
        }
    }

    async fn reclaim_loop(self: Arc<Self>, cancel: CancellationToken) {
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
            let mut cursor = "0-0".to_string();
            for _ in 0..20 {
                if cancel.is_cancelled() {
                    return;
                }
                let page = self
                    .store
                    .autoclaim(&self.settings.name, idle.as_millis() as u64, &cursor, 32)
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
                        self.dispatch(entry, None);
                    }
                }
                if next == "0-0" {
                    break;
                }
                cursor = next;
            }
            if last_cleanup.elapsed() >= idle {
                last_cleanup = Instant::now();
                self.remove_dead_consumers().await;
            }
        }
    }

    /// Renewed every claim period, valid for ten: a worker that misses
    /// ten renewals is dead or cut off from Redis. Joining again each time
    /// (a no-op while the name exists) puts an idle worker back in the
    /// group after Redis lost it (a restart without data).
    async fn mark_alive(&self) {
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
    async fn remove_dead_consumers(&self) {
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

    async fn park_loop(self: Arc<Self>, cancel: CancellationToken) {
        let stuck_after = self.settings.claim_idle * 2;
        loop {
            let idle = self
                .parked
                .lock()
                .map(|p| p.by_key.is_empty())
                .unwrap_or(true);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(PARK_POLL), if !idle => {}
                _ = cancel.cancelled() => return,
            }
            // Each chat with the update id of its oldest parked entry: the
            // one that runs if it is the head, so its dedupe check rides
            // along with the head lookup.
            let asked: Vec<(String, i64)> = match self.parked.lock() {
                Ok(p) => p
                    .by_key
                    .iter()
                    .filter_map(|(k, q)| {
                        q.first_key_value()
                            .map(|(_, (e, _))| (k.clone(), e.update_id))
                    })
                    .collect(),
                Err(_) => continue,
            };
            if asked.is_empty() {
                continue;
            }
            let heads = match self.store.heads(&asked).await {
                Ok(h) => h,
                Err(e) => {
                    debug!(error = %e, "reading chat heads failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = cancel.cancelled() => return,
                    }
                    continue;
                }
            };
            let mut ready = Vec::new();
            let mut stuck = Vec::new();
            if let Ok(mut p) = self.parked.lock() {
                let Parked { by_key, waiting_on } = &mut *p;
                for ((key, asked_id), head) in asked.iter().zip(heads) {
                    let Some(queue) = by_key.get_mut(key) else {
                        continue;
                    };
                    match head.entry {
                        Some(h) => {
                            let h_order = id_order(&h);
                            // Entries older than the head are no longer
                            // listed: they ended elsewhere (a reclaim race)
                            // and only need their duplicate acknowledged.
                            while let Some(first) = queue.first_key_value().map(|(k, _)| *k) {
                                if first >= h_order {
                                    break;
                                }
                                if let Some((e, hold)) = queue.remove(&first) {
                                    ready.push((e, hold, None));
                                }
                            }
                            if let Some((e, hold)) = queue.remove(&h_order) {
                                // The answer is about this entry only if it
                                // was the one asked about.
                                let known = (e.update_id == *asked_id).then_some(head.asked_done);
                                ready.push((e, hold, known));
                                waiting_on.remove(key);
                            } else {
                                match waiting_on.get(key) {
                                    Some((w, since)) if *w == h => {
                                        if since.elapsed() > stuck_after {
                                            stuck.push((key.clone(), h));
                                            waiting_on.remove(key);
                                        }
                                    }
                                    _ => {
                                        waiting_on.insert(key.clone(), (h, Instant::now()));
                                    }
                                }
                            }
                        }
                        // Nothing listed: these entries were never listed
                        // (an older writer) or already ended; run them.
                        None => {
                            ready.extend(
                                std::mem::take(queue)
                                    .into_values()
                                    .map(|(e, hold)| (e, hold, None)),
                            );
                            waiting_on.remove(key);
                        }
                    }
                    if queue.is_empty() {
                        by_key.remove(key);
                    }
                }
            }
            for (key, head) in stuck {
                match self.store.heal_head(&key, &head).await {
                    Ok(true) => {
                        warn!(chat = %key, entry = %head, "chat was blocked by an entry missing from the stream; skipped it")
                    }
                    Ok(false) => {
                        debug!(chat = %key, entry = %head, "chat head still exists; waiting for it")
                    }
                    Err(e) => debug!(error = %e, "healing a chat head failed"),
                }
            }
            for (entry, hold, known_done) in ready {
                self.start(entry, hold, known_done);
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, cancel: CancellationToken) {
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
            }
        }
    }
}

/// Sleeps unless cancelled first; returns true when cancelled.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = cancel.cancelled() => true,
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
