//! The Redis key layout. Every key the system touches is named here, so an
//! operator reading `redis-cli --scan` can map each key back to its owner.
//!
//! Every name starts with one prefix (`REDIS_KEY_PREFIX`, default
//! `tgbot:`), so two bots can share one Redis without touching each
//! other's queue, dedupe marks, users or locks. The prefix is a runtime
//! value: a [`Keys`] is built once from the configuration and handed to
//! whatever names a key.

use std::sync::Arc;

mod layout;

pub use layout::slot_of;

/// The prefix when `REDIS_KEY_PREFIX` is unset: the names every deployment
/// before the variable existed already has in its Redis.
pub const DEFAULT_PREFIX: &str = "tgbot:";

/// The single consumer group all workers join. Not prefixed: a group lives
/// inside its (prefixed) stream, so it cannot collide.
pub const GROUP: &str = "workers";

/// Why a key prefix is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPrefix {
    #[error("must not be empty")]
    Empty,
    #[error("must not contain whitespace or control characters")]
    Whitespace,
}

/// One bit of a dedupe bitmap: which update ids were seen (or handled).
///
/// Ids are kept as bits in buckets of [`MARK_BUCKET`] consecutive ids - one
/// Redis string of at most 8 KiB per bucket - instead of a key per id:
/// a key per update costs Redis ~100 bytes and one entry in its keyspace,
/// which for a busy bot (a million updates a day, remembered for a week)
/// is most of a gigabyte; the bitmaps for the same hold ~1 MiB. Membership,
/// not "greater than the last id", so ids that jump are fine: a jump only
/// starts a new bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub key: String,
    pub bit: u64,
}

/// Ids per dedupe bitmap.
pub const MARK_BUCKET: i64 = 1 << 16;

/// How long the ingress remembers an update id, at least: a bucket expires
/// this long after the last id was added to it. Telegram keeps an
/// undelivered update for 24 h, so two days cover every resend.
pub const SEEN_TTL_SECS: u64 = 2 * 24 * 3600;

/// At least how long a handled id is remembered (per bucket, like
/// [`SEEN_TTL_SECS`]): longer than any redelivery can come.
pub const DONE_TTL_SECS: u64 = 7 * 24 * 3600;

/// The names of one bot's keys. Cheap to clone (the names' starts are
/// shared).
///
/// A `Keys` names the keys of one *home*: shard 0's (every bot-wide key
/// lives there too) unless made with [`Keys::shard`]. On one Redis with one
/// shard every home is the plain prefix, today's names; on a cluster or
/// with several shards each home is a hash tag ([`layout`]), so each
/// script's keys share one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: Arc<str>,
    home: Arc<str>,
    homes: Arc<[Arc<str>]>,
}

impl Default for Keys {
    fn default() -> Self {
        Self::plain(DEFAULT_PREFIX.into())
    }
}

impl Keys {
    /// Any prefix without whitespace: it must survive being typed into
    /// `redis-cli` and pasted from logs unchanged.
    pub fn new(prefix: &str) -> Result<Self, BadPrefix> {
        if prefix.is_empty() {
            return Err(BadPrefix::Empty);
        }
        if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(BadPrefix::Whitespace);
        }
        Ok(Self::plain(prefix.into()))
    }

    fn plain(prefix: Arc<str>) -> Self {
        Self {
            home: prefix.clone(),
            homes: Arc::new([prefix.clone()]),
            prefix,
        }
    }

    /// The same names laid out for a cluster (`tagged`) and/or `shards`
    /// update streams: every home becomes a hash tag, chosen so that the
    /// shards spread evenly over the slot space. One server with one shard
    /// keeps the plain names.
    pub fn laid_out(&self, tagged: bool, shards: u16) -> Self {
        let shards = shards.max(1);
        if !tagged && shards == 1 {
            return Self::plain(self.prefix.clone());
        }
        let homes: Arc<[Arc<str>]> = (0..shards)
            .map(|i| Arc::from(layout::home(&self.prefix, i, shards)))
            .collect();
        Self {
            prefix: self.prefix.clone(),
            home: homes[0].clone(),
            homes,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many update streams (shards) the layout has.
    pub fn shards(&self) -> u16 {
        self.homes.len() as u16
    }

    /// Whether names carry hash tags (a cluster, or several shards).
    pub fn tagged(&self) -> bool {
        self.homes[0] != self.prefix
    }

    /// The names of shard `i`'s home: its stream, its conversations' order
    /// lists, its dedupe marks, failures, kept replies, counters and dead
    /// letters - everything one entry's scripts touch.
    pub fn shard(&self, i: u16) -> Self {
        let home = self.homes[usize::from(i) % self.homes.len()].clone();
        Self {
            prefix: self.prefix.clone(),
            home,
            homes: self.homes.clone(),
        }
    }

    /// Shard 0's names: the bot-wide keys' home.
    pub fn bot(&self) -> Self {
        self.shard(0)
    }

    /// The shard a conversation's updates live in, by its ordering key
    /// (`c<chat>` / `u<user>`): all of one chat's updates in one stream,
    /// so its order and dedupe hold. Updates with no key go to shard 0.
    pub fn shard_of(&self, order_key: &str) -> u16 {
        if self.homes.len() == 1 || order_key.is_empty() {
            return 0;
        }
        layout::crc16(order_key.as_bytes()) % self.homes.len() as u16
    }

    /// The shard of a chat (outbound messages join their chat's shard).
    pub fn shard_of_chat(&self, chat_id: i64) -> u16 {
        self.shard_of(&format!("c{chat_id}"))
    }

    fn name(&self, rest: &str) -> String {
        format!("{}{rest}", self.home)
    }

    /// The send budget and Telegram's pauses live in the last shard's
    /// home: every reply asks them, and shard 0's master already carries
    /// the other bot-wide keys (one shard: the same home, today's names).
    fn budget_name(&self, rest: &str) -> String {
        format!("{}{rest}", self.homes[self.homes.len() - 1])
    }

    fn mark(&self, kind: &str, update_id: i64) -> Mark {
        Mark {
            key: self.name(&format!(
                "{kind}-bits:{}",
                update_id.div_euclid(MARK_BUCKET)
            )),
            bit: update_id.rem_euclid(MARK_BUCKET) as u64,
        }
    }

    /// The stream the ingress appends to and the workers consume.
    pub fn stream(&self) -> String {
        self.name("updates")
    }

    /// The fast lane: updates with a deadline (callback and inline
    /// queries, payments, kinds a bot marks urgent), read by every worker
    /// before the ordinary backlog. Its entry ids are tagged
    /// ([`crate::queue::Lane::tag`]) wherever they leave the stream, since
    /// two streams can hand out the same id.
    pub fn fast_stream(&self) -> String {
        self.name("updates:fast")
    }

    /// Update kinds the workers' bot marks urgent beyond the defaults
    /// (comma-separated), published by the workers for the ingress.
    pub fn urgent_kinds(&self) -> String {
        self.name("urgent-kinds")
    }

    /// Which layout the queue in Redis has (`shards=N`): one plain key,
    /// named the same whatever the layout, so a process with another
    /// `QUEUE_SHARDS` finds it.
    pub fn queue_layout(&self) -> String {
        format!("{}queue-layout", self.prefix)
    }

    /// Dead letters: entries that failed `WORKER_MAX_DELIVERIES` times.
    pub fn dead(&self) -> String {
        self.name("dead")
    }

    /// Failure counts per stream entry id (hash), cleared when the entry ends.
    pub fn failures(&self) -> String {
        self.name("failures")
    }

    /// Set by the ingress atomically with the XADD: a resent update (Telegram
    /// resends when our 200 got lost) is answered 200 without a second entry.
    pub fn seen(&self, update_id: i64) -> Mark {
        self.mark("seen", update_id)
    }

    /// Set by a worker once an update is handled; a redelivered entry (crash
    /// between handling and XACK) is then acknowledged and skipped.
    pub fn done(&self, update_id: i64) -> Mark {
        self.mark("done", update_id)
    }

    /// Set when an update's user record and writes were applied, for
    /// updates finished in two steps (a shard in another slot than the
    /// bot's keys): the writes stay exactly-once across a crash between
    /// the steps.
    pub fn applied(&self, update_id: i64) -> Mark {
        self.mark("applied", update_id)
    }

    /// Per ordering key (`c<chat>` / `u<user>`), the ids of its entries still
    /// in the stream, in the order the ingress accepted them. Appended in the
    /// same script as the XADD and trimmed in the same script that ends an
    /// entry, so it always matches the stream. A worker may start an entry only
    /// when it is the head of its list.
    pub fn order(&self, key: &str) -> String {
        self.name(&format!("order:{key}"))
    }

    /// Present while the worker using this consumer name runs: it renews the
    /// key every claim period. Redis's own idle time cannot tell a dead
    /// consumer from a live one with no work (7.0 does not refresh it on a
    /// blocking read that returns nothing), so only names without this key
    /// are removed.
    pub fn alive(&self, consumer: &str) -> String {
        self.name(&format!("consumer-alive:{consumer}"))
    }

    /// Hash per user: first_name, username, language_code, first_seen,
    /// last_seen (ms since epoch), start_payload, messages.
    pub fn user(&self, user_id: i64) -> String {
        self.name(&format!("user:{user_id}"))
    }

    /// Sorted set user id -> first_seen ms (total and "new in 24 h").
    pub fn users_first_seen(&self) -> String {
        self.name("users:first_seen")
    }

    /// Sorted set user id -> last_seen ms ("active in 24 h").
    pub fn users_last_seen(&self) -> String {
        self.name("users:last_seen")
    }

    /// Replies of handled updates not yet sent (hash: entry id -> JSON), and
    /// when each may be taken over by another worker ([`Keys::replies_due`],
    /// sorted set: entry id -> lease end, ms). A reply is kept here from the
    /// moment its update's writes are applied until Telegram has it, so a
    /// crash in between loses neither the writes nor the reply. While kept,
    /// its chat's order list still holds the entry, so the chat's next
    /// update waits for it.
    pub fn replies(&self) -> String {
        self.name("replies")
    }

    pub fn replies_due(&self) -> String {
        self.name("replies:due")
    }

    /// Kept replies waiting out a long `retry_after` or pause (sorted set:
    /// entry id -> due ms), for the operator's view; [`Keys::replies_due`]
    /// is what brings them back.
    pub fn replies_delayed(&self) -> String {
        self.name("replies:delayed")
    }

    /// A bot's own hash, written through exactly-once writes (`ctx.incr` ...).
    pub fn kv(&self, hash: &str) -> String {
        self.name(&format!("kv:{hash}"))
    }

    /// Hash of bot-wide counters (`updates_handled`, ...).
    pub fn counters(&self) -> String {
        self.name("counters")
    }

    /// Webhook registration happens once per configuration change, not once
    /// per replica: a lock plus the fingerprint of what was applied.
    pub fn webhook_lock(&self) -> String {
        self.name("webhook:lock")
    }

    pub fn webhook_fingerprint(&self) -> String {
        self.name("webhook:fingerprint")
    }

    /// The update kinds the bot's handlers take (JSON array), published by
    /// the workers; the ingress asks Telegram for exactly these (setWebhook
    /// or getUpdates `allowed_updates`).
    pub fn allowed_updates(&self) -> String {
        self.name("allowed-updates")
    }

    /// The command menu, published by the workers from their registry: the
    /// same lock-plus-fingerprint agreement as the webhook.
    pub fn menu_lock(&self) -> String {
        self.name("menu:lock")
    }

    pub fn menu_fingerprint(&self) -> String {
        self.name("menu:fingerprint")
    }

    /// The polling lease (exactly one poller across replicas) and its offset.
    pub fn poller_lease(&self) -> String {
        self.name("poller:lease")
    }

    pub fn poller_offset(&self) -> String {
        self.name("poller:offset")
    }

    /// Never created: the ingress's readiness check writes nothing to it (an
    /// empty SETRANGE) to learn whether Redis would accept a write.
    pub fn write_probe(&self) -> String {
        self.name("write-probe")
    }

    /// Shared send budget (GCRA state) for the whole bot and per chat.
    pub fn rate_global(&self) -> String {
        self.budget_name("rate:global")
    }

    pub fn rate_chat(&self, chat_id: i64) -> String {
        self.budget_name(&format!("rate:chat:{chat_id}"))
    }

    /// Pauses Telegram asked for (429 `retry_after`): the whole bot, or one
    /// chat. Plain keys with a time to live, holding when the pause ends
    /// (ms; `1` from earlier versions): the pause is over then, or when the
    /// key is gone.
    pub fn pause_bot(&self) -> String {
        self.budget_name("pause:bot")
    }

    pub fn pause_chat(&self, chat_id: i64) -> String {
        self.budget_name(&format!("pause:chat:{chat_id}"))
    }

    /// Users who blocked the bot (sorted set: chat id -> ms of the 403):
    /// broadcasts skip them; a message from them again takes them out.
    pub fn users_blocked(&self) -> String {
        self.name("users:blocked")
    }

    /// An outbox request's `Idempotency-Key` -> the id it got (a day).
    pub fn outbox_idempotency(&self, key: &str) -> String {
        self.name(&format!("outbox:idem:{key}"))
    }

    /// Numbers outbox message ids.
    pub fn outbox_seq(&self) -> String {
        self.name("outbox:seq")
    }

    /// A broadcast: its hash (state, message, counts), its recipients not
    /// reached yet (list), those being sent to (sorted set: chat id ->
    /// lease end ms).
    pub fn broadcast(&self, id: &str) -> String {
        self.name(&format!("broadcast:{id}"))
    }

    pub fn broadcast_todo(&self, id: &str) -> String {
        self.name(&format!("broadcast:{id}:todo"))
    }

    pub fn broadcast_inflight(&self, id: &str) -> String {
        self.name(&format!("broadcast:{id}:inflight"))
    }

    /// Every broadcast (sorted set: id -> created ms) and those running.
    pub fn broadcasts(&self) -> String {
        self.name("broadcasts")
    }

    pub fn broadcasts_running(&self) -> String {
        self.name("broadcasts:running")
    }

    /// The paid-broadcast budget (GCRA), apart from the bot's.
    pub fn rate_paid(&self) -> String {
        self.budget_name("rate:paid")
    }

    /// Recent 429s (sorted set: chat id -> ms): several chats refused at
    /// once mean the bot's limit, not a chat's.
    pub fn recent_429s(&self) -> String {
        self.budget_name("rate:429s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_prefix_keeps_every_existing_name() {
        let k = Keys::default();
        assert_eq!(k.stream(), "tgbot:updates");
        assert_eq!(k.dead(), "tgbot:dead");
        assert_eq!(k.failures(), "tgbot:failures");
        assert_eq!(k.order("c-5"), "tgbot:order:c-5");
        assert_eq!(k.alive("w1"), "tgbot:consumer-alive:w1");
        assert_eq!(k.user(7), "tgbot:user:7");
        assert_eq!(k.users_first_seen(), "tgbot:users:first_seen");
        assert_eq!(k.users_last_seen(), "tgbot:users:last_seen");
        assert_eq!(k.replies(), "tgbot:replies");
        assert_eq!(k.replies_due(), "tgbot:replies:due");
        assert_eq!(k.kv("visits"), "tgbot:kv:visits");
        assert_eq!(k.counters(), "tgbot:counters");
        assert_eq!(k.webhook_lock(), "tgbot:webhook:lock");
        assert_eq!(k.webhook_fingerprint(), "tgbot:webhook:fingerprint");
        assert_eq!(k.menu_lock(), "tgbot:menu:lock");
        assert_eq!(k.menu_fingerprint(), "tgbot:menu:fingerprint");
        assert_eq!(k.poller_lease(), "tgbot:poller:lease");
        assert_eq!(k.poller_offset(), "tgbot:poller:offset");
        assert_eq!(k.write_probe(), "tgbot:write-probe");
        assert_eq!(k.rate_global(), "tgbot:rate:global");
        assert_eq!(k.rate_chat(-100), "tgbot:rate:chat:-100");
        assert_eq!(k.fast_stream(), "tgbot:updates:fast");
        assert_eq!(k.pause_chat(5), "tgbot:pause:chat:5");
        assert_eq!(k.done(1).key, "tgbot:done-bits:0");
        assert_eq!(Keys::new(DEFAULT_PREFIX), Ok(k));
    }

    #[test]
    fn another_prefix_renames_every_key() {
        let k = Keys::new("b:").unwrap();
        assert_eq!(k.stream(), "b:updates");
        assert_eq!(k.seen(3).key, "b:seen-bits:0");
        assert_eq!(k.order("u1"), "b:order:u1");
        assert_eq!(Keys::new(""), Err(BadPrefix::Empty));
        assert_eq!(Keys::new("my bot:"), Err(BadPrefix::Whitespace));
        assert_eq!(Keys::new("a:\n"), Err(BadPrefix::Whitespace));
    }

    #[test]
    fn one_server_one_shard_keeps_the_plain_names() {
        let k = Keys::default().laid_out(false, 1);
        assert_eq!(k, Keys::default());
        assert!(!k.tagged());
        assert_eq!(k.shard(0).stream(), "tgbot:updates");
        assert_eq!(k.shard_of("c42"), 0);
    }

    #[test]
    fn a_cluster_tags_every_name_so_each_home_is_one_slot() {
        let k = Keys::default().laid_out(true, 1);
        assert!(k.tagged());
        assert_eq!(k.stream(), "{tgbot:0}updates");
        // Every key of the bot's home hashes to one slot, whatever it is.
        let slot = slot_of(&k.stream());
        for name in [
            k.fast_stream(),
            k.order("c-5"),
            k.done(7).key,
            k.seen(7).key,
            k.user(3),
            k.kv("x"),
            k.rate_chat(1),
            k.pause_bot(),
            k.broadcast_todo("b1"),
        ] {
            assert_eq!(slot_of(&name), slot, "{name}");
        }
    }

    #[test]
    fn shards_are_homes_of_their_own_and_a_chat_keeps_its_shard() {
        let k = Keys::new("b:").unwrap().laid_out(false, 3);
        assert!(k.tagged(), "several shards tag even on one server");
        let slots: std::collections::BTreeSet<u16> =
            (0..3).map(|s| slot_of(&k.shard(s).stream())).collect();
        assert_eq!(slots.len(), 3);
        assert_eq!(k.bot().stream(), k.shard(0).stream());
        assert_eq!(k.shard_of("c-100"), k.shard_of("c-100"));
        assert_eq!(k.shard_of(""), 0);
        let used: std::collections::BTreeSet<u16> =
            (0..300).map(|c| k.shard_of(&format!("c{c}"))).collect();
        assert_eq!(used.len(), 3, "chats spread over every shard");
        assert_eq!(k.shard_of_chat(77), k.shard_of("c77"));
    }

    #[test]
    fn neighbouring_ids_share_a_bucket_and_never_a_bit() {
        let k = Keys::default();
        let a = k.seen(1_000_000);
        let b = k.seen(1_000_001);
        assert_eq!(a.key, b.key);
        assert_ne!(a.bit, b.bit);
        assert_eq!(a.key, "tgbot:seen-bits:15");
        assert_eq!(a.bit, 1_000_000 - 15 * 65_536);
    }

    #[test]
    fn bucket_edges_and_odd_ids_map_into_range() {
        let k = Keys::default();
        for id in [0, 65_535, 65_536, -1, -65_536, -65_537, i64::MAX, i64::MIN] {
            let m = k.done(id);
            assert!(m.bit < MARK_BUCKET as u64, "{id}: {m:?}");
            let bucket: i64 = m.key.rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(bucket * MARK_BUCKET + m.bit as i64, id, "{id}: {m:?}");
        }
        assert_ne!(k.done(65_535).key, k.done(65_536).key);
        assert_ne!(k.done(-1).key, k.done(0).key);
        assert_ne!(k.seen(7).key, k.done(7).key);
    }
}
