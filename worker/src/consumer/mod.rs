//! The consumption loop: read from the group, run handlers with bounded
//! concurrency, and end every entry in exactly one of three ways - handled,
//! deduplicated, or dead-lettered with its reason.
//!
//! Four tasks share one consumer name:
//! - two readers, one per lane, take new entries (`XREADGROUP >`) only
//!   when a handler slot of their lane is free, so the backlog stays in
//!   Redis, not in memory. The fast lane (updates with a deadline) has
//!   slots of its own: a backlog of messages never holds a button's or a
//!   payment's answer back, and a fast-lane update past its deadline ends
//!   `expired`, unanswered (see [`Consumer::expired`]);
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
//! (`<prefix>order:<key>`, see `shared::keys::Keys::order`) in the same script as
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use shared::envelope::{now_ms, Entry};
use shared::queue::{Deadlines, Lane};
use shared::signals::Backoff;

mod deliver;
mod park;
mod reclaim;

use crate::dispatch::Handler;
use crate::metrics::Metrics;
use crate::sender::Sender;
use shared::queue::{id_order, Store};

/// Claim periods without a sign of life after which a consumer name with
/// nothing pending is removed (SPEC: "ten claim-idle periods").
pub(crate) const DEAD_AFTER_PERIODS: u32 = 10;
/// How long one XREADGROUP waits for new entries before looping (and
/// noticing a shutdown).
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
    /// Deadlines of the fast lane's kinds.
    pub deadlines: Deadlines,
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
    sender: Sender,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    holds: Arc<Semaphore>,
    fast_slots: Arc<Semaphore>,
    fast_holds: Arc<Semaphore>,
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
        sender: Sender,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            holds: Arc::new(Semaphore::new(settings.concurrency * HOLD_FACTOR)),
            fast_slots: Arc::new(Semaphore::new(settings.concurrency)),
            fast_holds: Arc::new(Semaphore::new(settings.concurrency * HOLD_FACTOR)),
            settings,
            store,
            handler,
            sender,
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
        let due = tokio::spawn(self.clone().due_loop(cancel.clone()));
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(background.clone()));
        let park = tokio::spawn(self.clone().park_loop(background.clone()));

        // One loop per stream: the fast lane and every shard of the
        // ordinary one. The shards' loops share the ordinary lane's slots,
        // taken in turn (the semaphore is fair), so every shard is served.
        let readers = Lane::ALL
            .into_iter()
            .flat_map(|lane| (0..self.shards_of(lane)).map(move |shard| (lane, shard)));
        futures::future::join_all(
            readers.map(|(lane, shard)| self.clone().read_loop(lane, shard, cancel.clone())),
        )
        .await;

        info!(
            in_flight = self.in_flight(),
            "stopped taking entries; finishing in-flight updates"
        );
        // Everything already taken - running, waiting for a slot or parked
        // behind its chat's head - is finished before exiting, so a
        // redeploy leaves nothing for the claim timeout.
        // Entries parked behind a head that is not running here (a reply
        // put aside to wait out a 429, another worker's entry) could wait
        // far past the grace period: once only those are left - for a
        // moment longer than the park pass takes to start a successor -
        // they stay pending and another worker reclaims them.
        let drain = async {
            let mut settled = 0;
            while self.in_flight() > 0 && settled < 10 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if self.in_flight() <= self.parked_count() {
                    settled += 1;
                } else {
                    settled = 0;
                }
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
        let _ = due.await;
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

    fn parked_count(&self) -> usize {
        self.parked
            .lock()
            .map(|p| p.by_key.values().map(|q| q.len()).sum())
            .unwrap_or(0)
    }

    fn in_flight(&self) -> usize {
        self.inflight.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// How many streams a lane has: the fast lane one, the ordinary lane
    /// one per shard.
    pub(super) fn shards_of(&self, lane: Lane) -> u16 {
        match lane {
            Lane::Ordinary => self.store.shards().max(1),
            Lane::Fast => 1,
        }
    }

    /// A lane's handler slots.
    pub(super) fn slots(&self, lane: Lane) -> Arc<Semaphore> {
        match lane {
            Lane::Ordinary => self.slots.clone(),
            Lane::Fast => self.fast_slots.clone(),
        }
    }

    /// How old a fast-lane entry is, if it is past its kind's deadline.
    /// Age counts from when the ingress stored it: a callback query
    /// carries no time of its own.
    pub(super) fn expired(&self, entry: &Entry) -> Option<(&'static str, Duration)> {
        if entry.lane != Lane::Fast {
            return None;
        }
        let kind = shared::envelope::kind(&entry.update);
        let deadline = self.settings.deadlines.get(kind)?;
        let age =
            Duration::from_millis(now_ms().saturating_sub(entry.received_at_ms).max(0) as u64);
        (age >= deadline).then_some((kind, age))
    }

    async fn read_loop(self: Arc<Self>, lane: Lane, shard: u16, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut outage = false;
        let holds = match lane {
            Lane::Ordinary => self.holds.clone(),
            Lane::Fast => self.fast_holds.clone(),
        };
        while !cancel.is_cancelled() {
            // The whole bot is paused by Telegram: new work could only put
            // its replies aside. The fast lane goes on (its answers are no
            // messages).
            if lane == Lane::Ordinary {
                if let Some(wait) = self.sender.paused_for() {
                    debug!(
                        wait_ms = wait.as_millis() as u64,
                        "bot paused by Telegram; not reading"
                    );
                    if sleep_or_cancel(wait, &cancel).await {
                        return;
                    }
                    continue;
                }
            }
            let first = tokio::select! {
                p = holds.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = cancel.cancelled() => return,
            };
            let mut permits = vec![first];
            while permits.len() < 128 {
                match holds.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // Not cancelled mid-read: whatever Redis hands us is ours, and
            // is handled before the loop notices the shutdown.
            match self
                .store
                .read_new(
                    &self.settings.name,
                    lane,
                    shard,
                    permits.len(),
                    BLOCK.as_millis() as u64,
                )
                .await
            {
                Ok(shared::queue::Read {
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
                        self.dispatch(entry, hold, true);
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
    ///
    /// `first_delivery`: read new, not reclaimed. Such an entry stored as
    /// its chat's first ([`Entry::first_in_chat`]) is the head and not
    /// handled yet - the ingress stores an update once, and only its own
    /// entry could mark it handled - so it runs at once, asking nothing.
    /// A reclaimed one may have been handled by the worker that died, and
    /// takes the usual way.
    fn dispatch(self: &Arc<Self>, entry: Entry, hold: Hold, first_delivery: bool) {
        if let Ok(mut s) = self.inflight.lock() {
            s.insert(entry.id.clone());
        }
        if !self.settings.per_chat_order || entry.key.is_empty() {
            return self.start(entry, hold, None);
        }
        if first_delivery && entry.first_in_chat {
            return self.start(entry, hold, Some(false));
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
                let Ok(slot) = this.slots(entry.lane).acquire_owned().await else {
                    return;
                };
                this.deliver(entry, slot, known_done).await;
                drop(hold);
            }
            .instrument(span),
        );
    }
}

/// Sleeps unless cancelled first; returns true when cancelled.
pub(super) async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = cancel.cancelled() => true,
    }
}

pub(super) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
