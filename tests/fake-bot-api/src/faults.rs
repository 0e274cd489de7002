//! Scriptable misbehaviour: what the fake does wrong on purpose (429s,
//! blocked users, 5xx, hangs, slow or cut answers, getMe failures) and the
//! handle's methods that script it.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crate::fake::FakeBotApi;
use crate::record::{EarlyRetry, RateLimitWindow};
use crate::server::lock;

/// Scriptable misbehaviour. Change through [`FakeBotApi::faults`].
#[derive(Debug, Clone)]
pub struct Faults {
    /// Every k-th sendMessage (counting all sendMessage calls that passed
    /// validation) is answered 429.
    pub rate_limit_every: Option<u64>,
    /// Probability in `[0, 1]` that a sendMessage is answered 429.
    pub rate_limit_probability: f64,
    /// `retry_after` for scripted 429s, seconds.
    pub retry_after_secs: u64,
    /// sendMessage to these chats: 403 "Forbidden: bot was blocked by the user".
    pub blocked_chats: HashSet<i64>,
    /// sendMessage to these chats: 400 "Bad Request: chat not found".
    pub missing_chats: HashSet<i64>,
    /// Every k-th sendMessage is answered with `server_error_status`.
    pub server_error_every: Option<u64>,
    /// Probability in `[0, 1]` that a sendMessage gets `server_error_status`.
    pub server_error_probability: f64,
    /// 500 (JSON error body) or 502 (an nginx HTML page, as Telegram's
    /// front end answers when the back end is down).
    pub server_error_status: u16,
    /// sendMessage to these chats is taken and never answered: the worker
    /// handling it hangs there until it is killed (a handler that wedges or
    /// kills its process on one update).
    pub stalled_chats: HashSet<i64>,
    /// sendMessage calls taken by `stalled_chats` so far.
    pub stalled_calls: usize,
    /// Telegram slow to answer: every sendMessage is carried out at once
    /// (recorded; the user has the message) and its answer is held this
    /// long. A client that gives up first cannot know it was sent.
    pub send_answer_delay: Duration,
    /// sendMessage to these chats is carried out (the user has it), then
    /// the connection is cut halfway through the answer.
    pub cut_send_answers: HashSet<i64>,
    /// Added to every call except getUpdates (which long-polls anyway).
    pub delay: Duration,
    /// Each sendMessage additionally waits a random time, uniform in
    /// `0..=send_jitter` (a handler whose duration varies per call).
    pub send_jitter: Duration,
    /// sendMessage to `(chat_id, reply_parameters.message_id)`: answered
    /// 500, every time - a failure specific to one update of a chat.
    pub server_error_replies: HashSet<(i64, i64)>,
    /// getMe answers 401: the token is rejected.
    pub get_me_unauthorized: bool,
    /// getMe answers these statuses first (429 with retry_after 1, 500,
    /// 502), one per call, then succeeds.
    pub get_me_failures: VecDeque<u16>,
    /// Telegram allows one setWebhook per second per bot; a faster one is
    /// answered 429 retry_after 1. On by default, as in real life.
    pub set_webhook_rate_limit: bool,
    /// Reported by getWebhookInfo: (unix time, message).
    pub webhook_last_error: Option<(i64, String)>,
    /// Reported by getWebhookInfo instead of the getUpdates queue length.
    pub pending_update_count: Option<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limit_every: None,
            rate_limit_probability: 0.0,
            retry_after_secs: 1,
            blocked_chats: HashSet::new(),
            missing_chats: HashSet::new(),
            server_error_every: None,
            server_error_probability: 0.0,
            server_error_status: 500,
            stalled_chats: HashSet::new(),
            stalled_calls: 0,
            send_answer_delay: Duration::ZERO,
            cut_send_answers: HashSet::new(),
            delay: Duration::ZERO,
            send_jitter: Duration::ZERO,
            server_error_replies: HashSet::new(),
            get_me_unauthorized: false,
            get_me_failures: VecDeque::new(),
            set_webhook_rate_limit: true,
            webhook_last_error: None,
            pending_update_count: None,
        }
    }
}

impl FakeBotApi {
    /// Changes the faults: `api.faults(|f| f.blocked_chats.insert(42));`
    pub fn faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut lock(&self.inner.faults))
    }

    /// Every `k`-th sendMessage gets 429 with `retry_after` seconds.
    pub fn rate_limit_every(&self, k: u64, retry_after: u64) {
        self.faults(|f| {
            f.rate_limit_every = Some(k.max(1));
            f.retry_after_secs = retry_after;
        });
    }

    pub fn block_chat(&self, chat_id: i64) {
        self.faults(|f| f.blocked_chats.insert(chat_id));
    }

    pub fn chat_not_found(&self, chat_id: i64) {
        self.faults(|f| f.missing_chats.insert(chat_id));
    }

    /// Every `k`-th sendMessage gets `status` (500 or 502).
    pub fn server_errors_every(&self, k: u64, status: u16) {
        self.faults(|f| {
            f.server_error_every = Some(k.max(1));
            f.server_error_status = status;
        });
    }

    /// sendMessage to `chat_id` hangs, never answered.
    pub fn stall_chat(&self, chat_id: i64) {
        self.faults(|f| f.stalled_chats.insert(chat_id));
    }

    /// Every sendMessage is carried out at once and answered after `d`.
    pub fn slow_send_answers(&self, d: Duration) {
        self.faults(|f| f.send_answer_delay = d);
    }

    /// sendMessage to `chat_id` is carried out, then its answer is cut.
    pub fn cut_send_answers(&self, chat_id: i64) {
        self.faults(|f| f.cut_send_answers.insert(chat_id));
    }

    /// sendMessage calls that hung so far.
    pub fn stalled_calls(&self) -> usize {
        self.faults(|f| f.stalled_calls)
    }

    pub fn set_delay(&self, d: Duration) {
        self.faults(|f| f.delay = d);
    }

    /// Every sendMessage waits a random time, uniform in `0..=max`.
    pub fn set_send_jitter(&self, max: Duration) {
        self.faults(|f| f.send_jitter = max);
    }

    /// sendMessage to `chat_id` quoting `message_id` gets 500, always.
    pub fn fail_reply_to(&self, chat_id: i64, message_id: i64) {
        self.faults(|f| f.server_error_replies.insert((chat_id, message_id)));
    }

    /// Back to no faults, the chat and bot-wide limits lifted too (their
    /// records stay until [`FakeBotApi::reset`]).
    pub fn clear_faults(&self) {
        self.inner.lift_limits();
        self.faults(|f| *f = Faults::default());
    }

    /// Every 429 window the fake opened.
    pub fn rate_limit_windows(&self) -> Vec<RateLimitWindow> {
        lock(&self.inner.windows).clone()
    }

    /// sendMessage calls that came for a chat before its 429 window ended.
    pub fn early_retries(&self) -> Vec<EarlyRetry> {
        lock(&self.inner.early).clone()
    }
}
