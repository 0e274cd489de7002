//! Where the queue and the bot's state live: the operations ingress and
//! worker need, behind one trait, with two implementations.
//!
//! - [`RedisStore`]: the production path. The stream, consumer group, order
//!   lists, dedupe marks, stats and the shared send budget live in Redis,
//!   and every multi-step change is one Lua script.
//! - [`MemoryStore`]: the all-in-one's embedded queue when `REDIS_URL` is
//!   unset. The same operations with the same semantics (dedupe by
//!   `update_id` on the way in and on the way out, acknowledgement only
//!   when handled, per-chat order, failure counts and dead letters) inside
//!   one process; nothing to install, nothing survives a restart.
//!
//! In Redis, calls that arrive together share one script call
//! (`group_commit`, the store's batches in `redis_batches`): many updates
//! stored, entries ended or sends budgeted per call.
//!
//! The trait speaks in the queue's terms (enqueue, read, claim, finish,
//! dead-letter), not in Redis commands, so the two stay interchangeable.

mod group_commit;
mod lane;
mod layout_guard;
mod memory;
mod redis_batches;
pub mod redis_ops;
mod redis_outbound;
mod redis_store;
pub mod scripts;

use std::time::Duration;

use futures::future::BoxFuture;

pub use lane::{
    entry_id, id_tag, locate, BadDeadlines, Deadlines, Lane, Urgent, DEFAULT_DEADLINES,
};
pub use layout_guard::LayoutChanged;
pub use memory::{MemoryDeadLetter, MemoryStore};
pub use redis_store::{RedisLayout, RedisStore};

use crate::envelope::{Enqueued, Entry, Probe};
use crate::outbound::{
    Audience, BroadcastStatus, Control, OutMessage, Recipient, RecipientOutcome,
};
use crate::stats::{BotStats, UserRecord};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}{hint}", hint = crate::redis_conn::cluster_hint(.0).map(|h| format!(" ({h})")).unwrap_or_default())]
    Redis(#[from] redis::RedisError),
    #[error("timed out")]
    Timeout,
    /// `REDIS_WAIT_REPLICAS`: the write is on the master, but fewer
    /// replicas than asked confirmed it in time - a failover now could
    /// lose it, so it is not acknowledged.
    #[error("only {got} of {want} Redis replicas confirmed the write in time")]
    NotReplicated { got: u32, want: u32 },
    /// The embedded queue does not do this (broadcasts need Redis).
    #[error("{0}")]
    Unsupported(&'static str),
    /// A batch of calls (`group_commit`) went wrong as a whole: its runner
    /// stopped, or its answer did not match what it was given.
    #[error("batch: {0}")]
    Batch(&'static str),
}

impl StoreError {
    /// The consumer group (or the whole stream) is gone: Redis restarted
    /// without its data, or someone deleted it.
    pub fn is_nogroup(&self) -> bool {
        matches!(self, Self::Redis(e) if e.code() == Some("NOGROUP"))
    }

    /// Redis answers but refuses writes: it reached its `maxmemory` limit
    /// under `noeviction`. Reads, and writes that free memory, still work.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Self::Redis(e) if redis_ops::is_oom(e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
pub type StoreFuture<'a, T> = BoxFuture<'a, StoreResult<T>>;

/// What the handler learnt about the sender, written with the "handled"
/// marker so counts are exact under redelivery.
#[derive(Debug, Clone, Default)]
pub struct UserTouch {
    pub id: i64,
    pub first_name: String,
    pub username: String,
    pub language_code: String,
    /// A `message` update from the user (not an edit, reaction, ...).
    pub is_message: bool,
    pub start_payload: String,
}

/// A write a handler asked for, applied exactly once: with its update's
/// completion, and only if the update had not been handled before - so a
/// redelivery (crash, reclaim, resend) never applies it twice. Hashes live
/// in the bot's own namespace (`<prefix>kv:<hash>`); the queue knows no
/// bot's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `HINCRBY`: add `by` to a counter.
    Incr {
        hash: String,
        field: String,
        by: i64,
    },
    /// `HSET`: set a field.
    Set {
        hash: String,
        field: String,
        value: String,
    },
    /// `HSETNX`: set a field unless it exists (first visit, first payment...).
    SetOnce {
        hash: String,
        field: String,
        value: String,
    },
}

impl Write {
    pub fn hash(&self) -> &str {
        match self {
            Write::Incr { hash, .. } | Write::Set { hash, .. } | Write::SetOnce { hash, .. } => {
                hash
            }
        }
    }

    /// (operation, field, value) as the finish script reads them.
    pub fn parts(&self) -> (&'static str, &str, String) {
        match self {
            Write::Incr { field, by, .. } => ("incr", field, by.to_string()),
            Write::Set { field, value, .. } => ("set", field, value.clone()),
            Write::SetOnce { field, value, .. } => ("setnx", field, value.clone()),
        }
    }
}

/// Everything an update's completion applies, atomically with its
/// "handled" mark.
#[derive(Debug, Clone, Copy, Default)]
pub struct Completion<'a> {
    /// The sender, for the user directory.
    pub user: Option<&'a UserTouch>,
    pub writes: &'a [Write],
    /// The reply still to send (opaque to the store). Kept until
    /// [`Store::reply_sent`]; meanwhile the entry's chat waits for it.
    pub reply: Option<&'a str>,
    /// Until when no other worker may take the reply over (ms since epoch).
    pub reply_lease_until_ms: i64,
}

/// A reply whose worker stopped renewing its lease, taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanReply {
    pub id: String,
    pub body: String,
    /// Times it was taken over, this time included.
    pub takeovers: u64,
}

/// A page of entries taken over from other consumers.
#[derive(Debug, Default)]
pub struct Claimed {
    pub next_cursor: String,
    pub entries: Vec<Entry>,
    /// Entries that cannot be read (id, reason): to be dead-lettered.
    pub unreadable: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct Read {
    pub entries: Vec<Entry>,
    pub unreadable: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    pub name: String,
    pub pending: u64,
    pub idle_ms: u64,
    /// The worker behind the name renewed its alive key in time.
    pub alive: bool,
}

/// Numbers for gauges: entries in the stream, not yet delivered, delivered
/// and not acknowledged, and how long ago the oldest was stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Depth {
    pub length: u64,
    pub lag: u64,
    pub pending: u64,
    pub oldest_age_ms: u64,
}

/// What the budget says about one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Booked: send now.
    Go,
    /// The rate leaves no room yet: try again after this many µs.
    Rate(u64),
    /// Telegram asked the whole bot to pause (a bot-wide 429), this many
    /// µs more.
    BotPaused(u64),
    /// Telegram asked this chat to pause, this many µs more.
    ChatPaused(u64),
}

/// Whether a 429 was taken as the bot's limit or one chat's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Bot,
    Chat,
}

/// A send-budget request: the shared bot-wide rate and, for groups, the
/// per-chat one (intervals and burst tolerances in microseconds). An
/// urgent send (the answer to a deadline update) gets a larger global
/// tolerance: it may use headroom the backlog's sends may not.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Paid broadcasts (`allow_paid_broadcast`) draw from a budget of their
    /// own, apart from the bot's 30 messages/s.
    pub paid: bool,
    pub chat_id: i64,
    pub interval_us: u64,
    pub tolerance_us: u64,
    pub chat_interval_us: u64,
    pub chat_tolerance_us: u64,
}

/// The whole queue as the services use it: each capability below, plus
/// what names it. Code that needs one capability takes that trait (an
/// `Arc<dyn Store>` upcasts to any of them).
pub trait Store:
    Intake
    + Coordination
    + ConsumerGroup
    + Delivery
    + Directory
    + SendBudget
    + Outbound
    + Send
    + Sync
    + 'static
{
    /// Which implementation, for logs.
    fn kind(&self) -> &'static str;

    /// The names of this bot's keys: the locks, leases and fingerprints
    /// callers pass to [`Store::get`], [`Store::lease`] ... come from here,
    /// so they carry the same prefix as everything the store names itself.
    fn keys(&self) -> &crate::keys::Keys;
}

/// The way in: storing updates, and what the ingress's probes ask.
pub trait Intake: Send + Sync {
    /// Stores an update in its lane (and marks its id seen, and appends an
    /// ordinary one to its chat's order) atomically; a seen id is a
    /// [`Enqueued::Duplicate`].
    fn enqueue<'a>(
        &'a self,
        probe: &'a Probe,
        lane: Lane,
        raw: &'a [u8],
    ) -> StoreFuture<'a, Enqueued>;
    fn ping(&self) -> StoreFuture<'_, ()>;
    /// Whether a write would be accepted now, without writing: a full
    /// Redis answers PING but refuses every update. Always true for a
    /// store without such limits.
    fn accepts_writes(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn depth(&self, lane: Lane) -> StoreFuture<'_, Depth>;
    /// The ordinary lane's depth per shard (`QUEUE_SHARDS`).
    fn shard_depths(&self) -> StoreFuture<'_, Vec<Depth>> {
        Box::pin(async move { Ok(vec![self.depth(Lane::Ordinary).await?]) })
    }
}

/// Agreement between replicas: values, locks and leases.
pub trait Coordination: Send + Sync {
    fn get(&self, key: &str) -> StoreFuture<'_, Option<String>>;
    fn set(&self, key: &str, value: &str) -> StoreFuture<'_, ()>;
    /// SET NX with a time to live; true when taken.
    fn try_lock(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreFuture<'_, bool>;
    /// Takes the lease if free or renews it if `holder` has it.
    fn lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreFuture<'_, bool>;
    /// Gives the lease or lock up, only if `holder` has it.
    fn release(&self, key: &str, holder: &str) -> StoreFuture<'_, ()>;
}

/// Membership and reading: the consumer group, reclaiming, liveness.
pub trait ConsumerGroup: Send + Sync {
    /// Creates the consumer group if missing and adds `consumer` to it.
    fn join_group<'a>(&'a self, consumer: &'a str) -> StoreFuture<'a, ()>;
    /// How many shards the ordinary lane has (`QUEUE_SHARDS`); each is
    /// read by its own loop.
    fn shards(&self) -> u16 {
        1
    }
    /// New entries of `lane` (of its shard `shard`) for `consumer`,
    /// waiting up to `block_ms` for some. The lanes and shards are read by
    /// separate loops, each blocking on its own.
    fn read_new<'a>(
        &'a self,
        consumer: &'a str,
        lane: Lane,
        shard: u16,
        count: usize,
        block_ms: u64,
    ) -> StoreFuture<'a, Read>;
    /// Takes over entries idle at least `min_idle_ms`, one page per call.
    fn autoclaim<'a>(
        &'a self,
        consumer: &'a str,
        lane: Lane,
        shard: u16,
        min_idle_ms: u64,
        cursor: &'a str,
        count: usize,
    ) -> StoreFuture<'a, Claimed>;
    /// Times each entry has been delivered (claims included).
    fn delivery_counts<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<(String, u64)>>;
    /// Resets the idle time of entries `consumer` is still working on.
    fn heartbeat<'a>(&'a self, consumer: &'a str, ids: &'a [String]) -> StoreFuture<'a, ()>;
    fn consumers(&self) -> StoreFuture<'_, Vec<ConsumerInfo>>;
    /// Takes `consumer` out of the group when its worker stops, unless it
    /// still owns pending entries (then the others reclaim them and remove
    /// the name later). True when it left.
    fn leave_group<'a>(&'a self, consumer: &'a str) -> StoreFuture<'a, bool>;
    /// Says `consumer`'s worker is running, for `ttl` from now.
    fn mark_alive<'a>(&'a self, consumer: &'a str, ttl: Duration) -> StoreFuture<'a, ()>;
    /// Removes a consumer name; true once it is gone.
    fn delete_consumer<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool>;
}

/// How an entry ends: dedupe, completion, kept replies, failures, dead letters, per-chat heads.
pub trait Delivery: Send + Sync {
    /// Whether the update of entry `entry_id` was handled already.
    fn is_done<'a>(&'a self, entry_id: &'a str, update_id: i64) -> StoreFuture<'a, bool>;
    /// Marks the update handled (once), counts it, records the user,
    /// applies the handler's writes, removes the entry and - unless a reply
    /// is kept for sending - takes it off its chat's order, atomically.
    /// Returns whether it was fresh (a duplicate applies nothing and keeps
    /// no reply) and the chat's next entry id.
    fn finish<'a>(
        &'a self,
        entry: &'a Entry,
        done: Completion<'a>,
    ) -> StoreFuture<'a, (bool, Option<String>)>;
    /// [`Delivery::finish`], and the send budget asked for the kept
    /// reply's first message in the same step where the store can (one
    /// round trip instead of two, on the path every answered update
    /// takes). `None` in the answer: not asked, the sender asks itself (the
    /// default). The send is booked even when the update turns out to be
    /// a duplicate, which costs the budget one unused send in that rare
    /// case.
    fn finish_admitting<'a>(
        &'a self,
        entry: &'a Entry,
        done: Completion<'a>,
        _first_send: Option<Budget>,
    ) -> StoreFuture<'a, (bool, Option<String>, Option<Admit>)> {
        Box::pin(async move {
            let (fresh, head) = self.finish(entry, done).await?;
            Ok((fresh, head, None))
        })
    }
    /// The reply kept for `entry_id` went out (or ended for good): forget it
    /// and let its chat go on. Returns the chat's next entry id.
    fn reply_sent<'a>(&'a self, entry_id: &'a str, key: &'a str)
        -> StoreFuture<'a, Option<String>>;
    /// Puts a kept reply aside until `due_ms` (a long `retry_after`, a
    /// pause): stored with its progress, taken by any worker once due, in
    /// its chat's order (the chat still waits for it); being taken again
    /// then does not count as a failed delivery.
    fn delay_reply<'a>(
        &'a self,
        entry_id: &'a str,
        body: &'a str,
        due_ms: i64,
    ) -> StoreFuture<'a, ()>;
    /// Replies put aside and the earliest due time (ms), for the operator.
    fn delayed_replies(&self) -> StoreFuture<'_, (u64, Option<i64>)>;
    /// Replies and outbox messages stored and not sent yet.
    fn kept_replies(&self) -> StoreFuture<'_, u64>;
    /// Extends the leases of replies this worker is still sending.
    fn renew_replies<'a>(&'a self, ids: &'a [String], until_ms: i64) -> StoreFuture<'a, ()>;
    /// Replies whose lease ran out (their worker died), each now leased to
    /// the caller until `until_ms`.
    fn orphan_replies(&self, until_ms: i64, count: usize) -> StoreFuture<'_, Vec<OrphanReply>>;
    /// Counts a failed delivery; returns the failures so far.
    fn count_failure<'a>(&'a self, entry_id: &'a str) -> StoreFuture<'a, u64>;
    /// Moves the entry to the dead letters with the reason, atomically.
    fn dead_letter<'a>(&'a self, dead: DeadLetterRequest<'a>) -> StoreFuture<'a, ()>;
    /// For each `(chat, update_id)`: the first entry id of the chat's order
    /// list, and whether `update_id` (the oldest update parked for that
    /// chat, i.e. the likely head) is already handled. One round trip for
    /// both: the dedupe check belongs at the moment an entry becomes the
    /// head, because that is when every earlier entry of its chat - a
    /// duplicate of it included - has ended.
    fn heads<'a>(&'a self, chats: &'a [(String, i64)]) -> StoreFuture<'a, Vec<Head>>;
    /// Drops a chat's head if it is still the head and its entry is gone.
    fn heal_head<'a>(&'a self, key: &'a str, head: &'a str) -> StoreFuture<'a, bool>;
}

/// What handlers read: the user directory, the numbers, the bots' own hashes.
pub trait Directory: Send + Sync {
    /// A field of a bot's own hash, as its exactly-once writes left it.
    fn kv_get<'a>(&'a self, hash: &'a str, field: &'a str) -> StoreFuture<'a, Option<String>>;

    fn user(&self, user_id: i64) -> StoreFuture<'_, Option<UserRecord>>;
    fn bot_stats(&self, now_ms: i64) -> StoreFuture<'_, BotStats>;
}

/// The bot-wide send budget shared by every worker.
pub trait SendBudget: Send + Sync {
    /// Books a send if the rate and Telegram's pauses allow it now.
    fn admit(&self, budget: Budget) -> StoreFuture<'_, Admit>;
    /// Records Telegram's 429 for `chat_id` and pauses what it applies to:
    /// that chat alone, or - when another chat was refused within
    /// `window` too - the whole bot, for the shortest `retry_after` seen
    /// in that window (a chat's long wait must not stop every chat).
    fn rate_limited(
        &self,
        chat_id: i64,
        retry_after: Duration,
        window: Duration,
    ) -> StoreFuture<'_, Scope>;
}

/// The app's own messages and broadcasts (see [`crate::outbound`]).
pub trait Outbound: Send + Sync {
    /// Stores one message, durable from this moment, sent by a worker
    /// once `due_ms` has come. With an idempotency key seen before (a
    /// day), stores nothing and answers the first id. Returns the id and
    /// whether it was stored now.
    fn outbox_put<'a>(
        &'a self,
        msg: &'a OutMessage,
        due_ms: i64,
        idempotency_key: Option<&'a str>,
    ) -> StoreFuture<'a, (String, bool)>;
    /// Creates a broadcast job (running at once) and returns its id.
    fn broadcast_create<'a>(
        &'a self,
        msg: &'a OutMessage,
        audience: &'a Audience,
    ) -> StoreFuture<'a, String>;
    fn broadcast_status<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<BroadcastStatus>>;
    /// The broadcast's message, for the workers sending it.
    fn broadcast_message<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<OutMessage>>;
    /// Every broadcast, newest first.
    fn broadcast_list(&self) -> StoreFuture<'_, Vec<BroadcastStatus>>;
    /// Pauses, resumes or cancels; `None` for an unknown id.
    fn broadcast_control<'a>(
        &'a self,
        id: &'a str,
        control: Control,
    ) -> StoreFuture<'a, Option<BroadcastStatus>>;
    /// The running broadcasts' ids.
    fn broadcasts_running(&self) -> StoreFuture<'_, Vec<String>>;
    /// Takes up to `count` recipients of a running broadcast, each leased
    /// until `lease_ms` from now; recipients whose lease ran out (their
    /// worker died mid-send) come back first.
    fn broadcast_take<'a>(
        &'a self,
        id: &'a str,
        count: usize,
        lease_ms: u64,
    ) -> StoreFuture<'a, Vec<Recipient>>;
    /// Records how a recipient's send ended (only while its lease is
    /// held: a recipient taken over by another worker is counted once).
    fn broadcast_record<'a>(
        &'a self,
        recipient: &'a Recipient,
        outcome: RecipientOutcome,
    ) -> StoreFuture<'a, ()>;
    /// A 403 from a send to `chat_id`: the user blocked the bot (or was
    /// deactivated, or the bot was kicked).
    fn mark_blocked(&self, chat_id: i64) -> StoreFuture<'_, ()>;
}

/// A chat's head, as [`Store::heads`] answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// The oldest entry of the chat not yet ended; `None`: none listed.
    pub entry: Option<String>,
    /// Whether the update id asked about is already handled.
    pub asked_done: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct DeadLetterRequest<'a> {
    pub id: &'a str,
    pub update_id: Option<i64>,
    pub key: &'a str,
    pub update: &'a [u8],
    pub error: &'a str,
    pub deliveries: u64,
    /// A kept reply that could not be sent (its update was handled):
    /// `replay-dead` sends it again instead of re-running the update.
    pub reply: &'a str,
}

/// A stream id as a sortable pair.
pub fn id_order(id: &str) -> (u64, u64) {
    // A shard's or the fast lane's tag says where the id comes from, not
    // when: only the stream id orders.
    let (_, _, id) = locate(id);
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}
