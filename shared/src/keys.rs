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

/// Set by the ingress atomically with the XADD: a resent update (Telegram
/// resends when our 200 got lost) is answered 200 without a second entry.
pub fn seen(update_id: i64) -> String {
    format!("tgbot:seen:{update_id}")
}
/// How long the ingress remembers an update id. Telegram keeps an
/// undelivered update for 24 h, so two days cover every resend.
pub const SEEN_TTL_SECS: u64 = 2 * 24 * 3600;

/// Set by a worker once an update is handled; a redelivered entry (crash
/// between handling and XACK) is then acknowledged and skipped.
pub fn done(update_id: i64) -> String {
    format!("tgbot:done:{update_id}")
}
/// `update_id`s are not monotonic, so dedupe is by membership, and the
/// marker only needs to outlive any possible redelivery.
pub const DONE_TTL_SECS: u64 = 7 * 24 * 3600;

/// Per ordering key (`c<chat>` / `u<user>`), the ids of its entries still
/// in the stream, in the order the ingress accepted them. Appended in the
/// same script as the XADD and trimmed in the same script that ends an
/// entry, so it always matches the stream. A worker may start an entry only
/// when it is the head of its list.
pub fn order(key: &str) -> String {
    format!("tgbot:order:{key}")
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
/// Hash of bot-wide counters (`updates_handled`, ...).
pub const COUNTERS: &str = "tgbot:counters";

/// Webhook registration happens once per configuration change, not once per
/// replica: a lock plus the fingerprint of what was applied.
pub const WEBHOOK_LOCK: &str = "tgbot:webhook:lock";
pub const WEBHOOK_FINGERPRINT: &str = "tgbot:webhook:fingerprint";

/// The polling lease (exactly one poller across replicas) and its offset.
pub const POLLER_LEASE: &str = "tgbot:poller:lease";
pub const POLLER_OFFSET: &str = "tgbot:poller:offset";

/// Shared send budget (GCRA state) for the whole bot and per chat.
pub const RATE_GLOBAL: &str = "tgbot:rate:global";
pub fn rate_chat(chat_id: i64) -> String {
    format!("tgbot:rate:chat:{chat_id}")
}
