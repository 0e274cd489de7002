//! End-to-end test infrastructure: a fake Telegram Bot API checked against
//! the real spec, a real `redis-server`, the workspace binaries as child
//! processes, and realistic updates. The tests live in `tests/tests/`.
//!
//! # Layout
//!
//! - [`harness`]: spawning binaries and `redis-server` on free ports,
//!   bounded waits, log capture, loud skips;
//! - [`stack`]: the standard setup (fake Bot API + Redis + `ingress` +
//!   workers) and the waits every test needs;
//! - [`accounting`]: where every update of a burst went (answered,
//!   duplicated, dead-lettered, lost);
//! - [`updates`]: realistic updates (builders from `fake_bot_api`, plus the
//!   real payloads in `shared/telegram/updates/`);
//! - [`slow_client`]: hostile HTTP clients; [`container`]: the image check;
//! - [`cluster`]: a real local Redis Cluster (failover, slot migration).

pub mod accounting;
pub mod cluster;
pub mod container;
pub mod harness;
pub mod slow_client;
pub mod stack;
pub mod updates;

/// The fake Bot API (its own crate, shared with `worker::testkit`), still
/// reachable as `e2e::fake_bot_api`.
pub use fake_bot_api;
pub use fake_bot_api::{FakeBotApi, BOT_USERNAME};
pub use harness::{assert_token_absent, RedisServer, Service};
pub use stack::Stack;

pub use cluster::{ClusterOptions, RedisCluster};

/// The bot token every test uses (the fake's). Shaped like a real one, and
/// loud enough to spot if it ever reaches a log line.
pub const TOKEN: &str = fake_bot_api::TOKEN;
/// The public webhook URL the ingress registers.
pub const WEBHOOK_URL: &str = "https://bot.example.test/telegram/webhook/";
pub const WEBHOOK_SECRET: &str = "testsecret";
/// The Mini App URL the worker's /app button opens.
pub const WEBAPP_URL: &str = "https://bot.example.test/app/";

/// Whether `s` contains Cyrillic letters (a Russian reply).
pub fn has_cyrillic(s: &str) -> bool {
    s.chars().any(|c| matches!(c, '\u{0400}'..='\u{04FF}'))
}

/// Every whole number written in `s` (digit runs), in order.
pub fn numbers_in(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// All inline keyboard buttons of a sendMessage's params, row by row.
pub fn inline_buttons(params: &serde_json::Value) -> Vec<serde_json::Value> {
    params["reply_markup"]["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .collect()
}

/// The successful setWebhook calls that registered the webhook, not
/// counting those that only brought `allowed_updates` in line with the
/// workers' bot (same URL, secret and settings as the call before, other
/// update kinds, no deleteWebhook in between): when that happens depends on
/// whether the ingress or the worker started first, so tests that count
/// registrations skip them.
pub fn webhook_registrations(api: &FakeBotApi) -> usize {
    let mut n = 0;
    let mut prev: Option<(serde_json::Value, serde_json::Value)> = None;
    for c in api.calls().into_iter().filter(|c| c.ok()) {
        if c.method == "deleteWebhook" {
            prev = None;
            continue;
        }
        if c.method != "setWebhook" {
            continue;
        }
        let mut rest = c.params.clone();
        let kinds = rest
            .as_object_mut()
            .and_then(|o| o.remove("allowed_updates"))
            .unwrap_or_default();
        let kinds_only = prev
            .as_ref()
            .is_some_and(|(r, k)| *r == rest && *k != kinds);
        if !kinds_only {
            n += 1;
        }
        prev = Some((rest, kinds));
    }
    n
}
