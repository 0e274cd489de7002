//! The Redis key layout. Every key the system touches is named here, so an
//! operator reading `redis-cli --scan` can map each key back to its owner.

/// The stream the ingress appends to and the workers consume.
pub const STREAM: &str = "tgbot:updates";
/// The single consumer group all workers join.
pub const GROUP: &str = "workers";
/// Dead letters: entries that failed `WORKER_MAX_DELIVERIES` times.
pub const DEAD_STREAM: &str = "tgbot:dead";
/// Failure counts per stream entry id (hash), cleared when the entry ends.
pub const FAILURES: &str = "tgbot:failures";

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

fn mark(kind: &str, update_id: i64) -> Mark {
    Mark {
        key: format!("tgbot:{kind}-bits:{}", update_id.div_euclid(MARK_BUCKET)),
        bit: update_id.rem_euclid(MARK_BUCKET) as u64,
    }
}

/// Set by the ingress atomically with the XADD: a resent update (Telegram
/// resends when our 200 got lost) is answered 200 without a second entry.
pub fn seen(update_id: i64) -> Mark {
    mark("seen", update_id)
}
/// How long the ingress remembers an update id, at least: a bucket expires
/// this long after the last id was added to it. Telegram keeps an
/// undelivered update for 24 h, so two days cover every resend.
pub const SEEN_TTL_SECS: u64 = 2 * 24 * 3600;

/// Set by a worker once an update is handled; a redelivered entry (crash
/// between handling and XACK) is then acknowledged and skipped.
pub fn done(update_id: i64) -> Mark {
    mark("done", update_id)
}
/// At least how long a handled id is remembered (per bucket, like
/// [`SEEN_TTL_SECS`]): longer than any redelivery can come.
pub const DONE_TTL_SECS: u64 = 7 * 24 * 3600;

/// Per ordering key (`c<chat>` / `u<user>`), the ids of its entries still
/// in the stream, in the order the ingress accepted them. Appended in the
/// same script as the XADD and trimmed in the same script that ends an
/// entry, so it always matches the stream. A worker may start an entry only
/// when it is the head of its list.
pub fn order(key: &str) -> String {
    format!("tgbot:order:{key}")
}

/// Present while the worker using this consumer name runs: it renews the
/// key every claim period. Redis's own idle time cannot tell a dead
/// consumer from a live one with no work (7.0 does not refresh it on a
/// blocking read that returns nothing), so only names without this key
/// are removed.
pub fn alive(consumer: &str) -> String {
    format!("tgbot:consumer-alive:{consumer}")
}

/// Hash per user: first_name, username, language_code, first_seen,
/// last_seen (ms since epoch), start_payload, messages.
pub fn user(user_id: i64) -> String {
    format!("tgbot:user:{user_id}")
}
/// Sorted set user id -> first_seen ms (total and "new in 24 h").
pub const USERS_FIRST_SEEN: &str = "tgbot:users:first_seen";
/// Sorted set user id -> last_seen ms ("active in 24 h").
pub const USERS_LAST_SEEN: &str = "tgbot:users:last_seen";
/// Replies of handled updates not yet sent (hash: entry id -> JSON), and
/// when each may be taken over by another worker (sorted set: entry id ->
/// lease end, ms). A reply is kept here from the moment its update's
/// writes are applied until Telegram has it, so a crash in between loses
/// neither the writes nor the reply. While kept, its chat's order list
/// still holds the entry, so the chat's next update waits for it.
pub const REPLIES: &str = "tgbot:replies";
pub const REPLIES_DUE: &str = "tgbot:replies:due";

/// A bot's own hash, written through exactly-once writes (`ctx.incr` ...).
pub fn kv(hash: &str) -> String {
    format!("tgbot:kv:{hash}")
}

/// Hash of bot-wide counters (`updates_handled`, ...).
pub const COUNTERS: &str = "tgbot:counters";

/// Webhook registration happens once per configuration change, not once per
/// replica: a lock plus the fingerprint of what was applied.
pub const WEBHOOK_LOCK: &str = "tgbot:webhook:lock";
pub const WEBHOOK_FINGERPRINT: &str = "tgbot:webhook:fingerprint";

/// The update kinds the bot's handlers take (JSON array), published by the
/// workers; the ingress asks Telegram for exactly these (setWebhook or
/// getUpdates `allowed_updates`).
pub const ALLOWED_UPDATES: &str = "tgbot:allowed-updates";

/// The command menu, published by the workers from their registry: the
/// same lock-plus-fingerprint agreement as the webhook.
pub const MENU_LOCK: &str = "tgbot:menu:lock";
pub const MENU_FINGERPRINT: &str = "tgbot:menu:fingerprint";

/// The polling lease (exactly one poller across replicas) and its offset.
pub const POLLER_LEASE: &str = "tgbot:poller:lease";
pub const POLLER_OFFSET: &str = "tgbot:poller:offset";

/// Never created: the ingress's readiness check writes nothing to it (an
/// empty SETRANGE) to learn whether Redis would accept a write.
pub const WRITE_PROBE: &str = "tgbot:write-probe";

/// Shared send budget (GCRA state) for the whole bot and per chat.
pub const RATE_GLOBAL: &str = "tgbot:rate:global";
pub fn rate_chat(chat_id: i64) -> String {
    format!("tgbot:rate:chat:{chat_id}")
}

#[cfg(test)]
mod mark_tests {
    use super::*;

    #[test]
    fn neighbouring_ids_share_a_bucket_and_never_a_bit() {
        let a = seen(1_000_000);
        let b = seen(1_000_001);
        assert_eq!(a.key, b.key);
        assert_ne!(a.bit, b.bit);
        assert_eq!(a.key, "tgbot:seen-bits:15");
        assert_eq!(a.bit, 1_000_000 - 15 * 65_536);
    }

    #[test]
    fn bucket_edges_and_odd_ids_map_into_range() {
        for id in [0, 65_535, 65_536, -1, -65_536, -65_537, i64::MAX, i64::MIN] {
            let m = done(id);
            assert!(m.bit < MARK_BUCKET as u64, "{id}: {m:?}");
            let bucket: i64 = m.key.rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(bucket * MARK_BUCKET + m.bit as i64, id, "{id}: {m:?}");
        }
        assert_ne!(done(65_535).key, done(65_536).key);
        assert_ne!(done(-1).key, done(0).key);
        assert_ne!(seen(7).key, done(7).key);
    }
}
