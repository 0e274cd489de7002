//! A fake Telegram Bot API server that behaves like the real one where the
//! system can tell the difference.
//!
//! - URL scheme `/bot<token>/<method>`, method names case-insensitive; a
//!   wrong token is answered 401, an unknown method 404, as Telegram does.
//! - Parameters from JSON bodies, `application/x-www-form-urlencoded`
//!   bodies and query strings (form values are strings; object and array
//!   parameters arrive JSON-encoded, as with real Telegram).
//! - Every call is checked against the machine-readable Bot API spec in
//!   `shared/telegram/bot-api-spec.json` (see [`spec_path`]): an unknown or missing parameter or
//!   a value of the wrong type is answered 400 *and* recorded as a spec
//!   violation, so [`FakeBotApi::assert_no_violations`] fails a test whose
//!   binaries sent anything the real API would reject (or silently ignore).
//!   Object parameters (`reply_markup`, `reply_parameters`, ...) are checked
//!   recursively against the spec's types. A few behavioural rules of the
//!   real server are enforced too: HTML/MarkdownV2 entity parsing, message
//!   length, `web_app` buttons refused in groups (`BUTTON_TYPE_INVALID`),
//!   command names for setMyCommands, webhook URL rules and setWebhook's
//!   one-per-second limit.
//! - Scriptable faults (429 with `retry_after`, 403 blocked, 400 chat not
//!   found, 500/502, delays, getMe failures) through [`Faults`], and
//!   Telegram's flood limits - a chat in flood wait, a bot-wide 429 window,
//!   a bot-wide rate of sends per second - through [`limits`] and
//!   [`flood`].
//! - Every call is recorded ([`Call`]) with its parsed parameters, arrival
//!   time and the HTTP status it got.
//!
//! Locking is kept to short critical sections on `std` mutexes so the fake
//! is never the bottleneck at thousands of calls per second.
//!
//! Its own crate so that both the end-to-end suite (`e2e`, real binaries)
//! and the engine's in-process test kit (`worker::testkit`) check calls
//! against the same fake.
//!
//! # Layout
//!
//! - [`fake`]: the handle tests hold ([`FakeBotApi`]): start, records, state;
//! - [`faults`]: [`Faults`] and the methods that script them;
//! - [`limits`]: per-chat and bot-wide 429s and what reached the fake
//!   while they held;
//! - [`flood`]: the bot-wide rate limit, a sliding one-second window;
//! - [`record`]: what is remembered ([`Call`], 429 windows, early retries,
//!   the webhook);
//! - `server`: the axum handler - parse, check, delay, record, answer;
//! - `params`: parameters from query, JSON or form bodies, checked
//!   against the method's spec;
//! - [`mod@spec`]: the spec file, loaded once, and the recursive type checks;
//! - `methods`, `polling`: what each method does (getUpdates on its own);
//! - `rules`: inline keyboard, HTML and MarkdownV2 rules of the real API;
//! - [`updates`]: realistic updates to feed a bot (shaped after the real
//!   payloads in `shared/telegram/updates/`).

pub mod fake;
pub mod faults;
pub mod flood;
pub mod limits;
mod methods;
mod params;
mod polling;
pub mod record;
mod rules;
mod server;
pub mod spec;
pub mod updates;

pub use fake::FakeBotApi;
pub use faults::Faults;
pub use limits::is_send_like;
pub use record::{BotRateLimit, Call, EarlyRetry, LimitedSend, RateLimitWindow, WebhookState};
pub use rules::{check_html, check_markdown_v2};
pub use spec::{spec, spec_path, Field, MethodSpec, Spec, SPEC_PATH};

/// The bot token [`FakeBotApi::start`] accepts. Shaped like a real one, and
/// loud enough to spot if it ever reaches a log line.
pub const TOKEN: &str = "123456789:AAE_test-token-DO-NOT-LEAK_xyz";
/// The username getMe reports.
pub const BOT_USERNAME: &str = "test_queue_bot";
/// The first name getMe reports.
pub const BOT_FIRST_NAME: &str = "Test Queue Bot";
