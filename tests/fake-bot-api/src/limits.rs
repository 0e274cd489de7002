//! Telegram's flood limits as the fake answers them: a chat in flood wait
//! (every call to it answered 429 until lifted), a bot-wide window (every
//! send-like call answered 429 for a while, whatever the chat) and the
//! bot-wide rate ([`crate::flood`]: more than so many sends a second).
//!
//! Both answer exactly as Telegram does - status 429 and
//! `{"ok":false,"error_code":429,"description":"Too Many Requests: retry
//! after N","parameters":{"retry_after":N}}`, no `Retry-After` header (the
//! fake's other 429s send none either) - and both keep records, so a test
//! can tell a client that waits `retry_after` from one that keeps sending:
//! each 429 opens a [`RateLimitWindow`] for the chat, a call for that chat
//! before the window ends is an [`EarlyRetry`], and every send-like call
//! inside a bot-wide window is a [`LimitedSend`].
//!
//! Checked after the parameters are validated (a call the real API refuses
//! outright is a violation, not a flood) and before any other fault.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::fake::FakeBotApi;
use crate::flood::{Flood, FLOOD_RETRY_AFTER};
use crate::record::{chat_i64, chat_key, BotRateLimit, EarlyRetry, LimitedSend, RateLimitWindow};
use crate::server::{lock, too_many, Answer, Inner};

/// Whether a bot-wide limit applies to `method` (the spec's spelling): the
/// calls that post or change messages - `send*` (sendChatAction too),
/// `editMessage*`, copy/forward, stopPoll, stopMessageLiveLocation. Not
/// getMe, getUpdates, the webhook methods, the `answer*` methods, deletions
/// or settings.
pub fn is_send_like(method: &str) -> bool {
    method.starts_with("send")
        || method.starts_with("editMessage")
        || matches!(
            method,
            "copyMessage"
                | "copyMessages"
                | "forwardMessage"
                | "forwardMessages"
                | "stopPoll"
                | "stopMessageLiveLocation"
        )
}

/// The limits in force and their records; behind `Inner::limits`.
#[derive(Default)]
pub(crate) struct Limits {
    /// Chats in flood wait and the `retry_after` they are answered.
    chats: HashMap<i64, u64>,
    /// Calls answered 429 because of `chats`, per chat.
    chat_429s: HashMap<i64, usize>,
    bot: Vec<BotRateLimit>,
    limited: Vec<LimitedSend>,
    /// Per chat key: when the last 429 these limits gave it ends, and
    /// whether every method was refused (a chat limit) or only send-like
    /// ones (a bot-wide limit) - what counts as an early retry.
    until: HashMap<String, (Instant, bool)>,
    pub(crate) flood: Flood,
}

impl Inner {
    /// The 429 a limit gives this call, if any; records it, and records an
    /// early retry whether or not the call is refused now.
    pub(crate) fn check_limits(
        &self,
        method: &str,
        params: &Map<String, Value>,
        at: Instant,
    ) -> Option<Answer> {
        let chat_value = params.get("chat_id");
        let chat = chat_value.and_then(chat_i64);
        let key = chat_value.map(chat_key);
        let send = is_send_like(method);
        let mut l = lock(&self.limits);

        if let Some((allowed_at, all)) = key.as_ref().and_then(|k| l.until.get(k)) {
            if at < *allowed_at && (*all || send) {
                lock(&self.early).push(EarlyRetry {
                    chat: key.clone().unwrap_or_default(),
                    at,
                    allowed_at: *allowed_at,
                });
            }
        }

        let chat_limit = chat.and_then(|c| l.chats.get(&c).copied());
        let bot_limit = if send {
            l.bot.iter_mut().rev().find(|w| w.covers(at)).map(|w| {
                w.first_429.get_or_insert(at);
                w.retry_after
            })
        } else {
            None
        };
        if bot_limit.is_some() {
            l.limited.push(LimitedSend {
                at,
                chat,
                method: method.to_owned(),
            });
        }
        if let (Some(c), Some(_)) = (chat, chat_limit) {
            *l.chat_429s.entry(c).or_default() += 1;
        }
        // Checked last: a call refused above is not answered 200, so it
        // takes no place in the flood window.
        let flood = (send && chat_limit.is_none() && bot_limit.is_none() && !l.flood.admit(at))
            .then_some(FLOOD_RETRY_AFTER);
        let retry_after = chat_limit.max(bot_limit).or(flood)?;
        if let Some(key) = key {
            let allowed_at = at + Duration::from_secs(retry_after);
            l.until
                .insert(key.clone(), (allowed_at, chat_limit.is_some()));
            lock(&self.windows).push(RateLimitWindow {
                chat: key,
                issued_at: at,
                retry_after,
                allowed_at,
            });
        }
        Some(too_many(retry_after))
    }

    /// Lifts the chat and bot-wide limits, keeping the records (the flood
    /// limit stays: it is how the API behaves, not a fault).
    pub(crate) fn lift_limits(&self) {
        let now = Instant::now();
        let mut l = lock(&self.limits);
        l.chats.clear();
        for w in &mut l.bot {
            w.until = w.until.min(now);
        }
    }

    /// Lifts every limit and forgets their records.
    pub(crate) fn reset_limits(&self) {
        *lock(&self.limits) = Limits::default();
    }
}

impl FakeBotApi {
    /// Puts `chat_id` in flood wait: every call whose `chat_id` is this chat
    /// (numeric or as a string; any method - sendMessage, editMessageText,
    /// sendPhoto, copyMessage's target ...) is answered 429 with
    /// `retry_after_secs`, until [`Self::clear_rate_limit_chat`].
    pub fn rate_limit_chat(&self, chat_id: i64, retry_after_secs: u64) {
        lock(&self.inner.limits)
            .chats
            .insert(chat_id, retry_after_secs);
    }

    /// Ends `chat_id`'s flood wait; its count stays.
    pub fn clear_rate_limit_chat(&self, chat_id: i64) {
        lock(&self.inner.limits).chats.remove(&chat_id);
    }

    /// Calls answered 429 because `chat_id` was in flood wait.
    pub fn rate_limited_calls_to(&self, chat_id: i64) -> usize {
        lock(&self.inner.limits)
            .chat_429s
            .get(&chat_id)
            .copied()
            .unwrap_or(0)
    }

    /// Opens a bot-wide limit from now for `duration`: every send-like call
    /// ([`is_send_like`]) arriving meanwhile is answered 429 with
    /// `retry_after_secs`, whatever its chat. Returns the window.
    pub fn rate_limit_all_for(&self, duration: Duration, retry_after_secs: u64) -> BotRateLimit {
        let from = Instant::now();
        let w = BotRateLimit {
            from,
            until: from + duration,
            retry_after: retry_after_secs,
            first_429: None,
        };
        lock(&self.inner.limits).bot.push(w.clone());
        w
    }

    /// Every bot-wide limit opened, with the arrival of its first 429.
    pub fn bot_rate_limits(&self) -> Vec<BotRateLimit> {
        lock(&self.inner.limits).bot.clone()
    }

    /// Every send-like call that arrived during a bot-wide limit, in
    /// arrival order.
    pub fn calls_in_rate_limit_windows(&self) -> Vec<LimitedSend> {
        lock(&self.inner.limits).limited.clone()
    }

    /// Arrival of the first call a bot-wide limit answered 429.
    pub fn first_bot_rate_limit_at(&self) -> Option<Instant> {
        lock(&self.inner.limits)
            .bot
            .iter()
            .filter_map(|w| w.first_429)
            .min()
    }

    /// Send-like calls that arrived in `from..to`, however answered.
    pub fn sends_during(&self, from: Instant, to: Instant) -> usize {
        lock(&self.inner.calls)
            .iter()
            .filter(|c| from <= c.at && c.at < to && is_send_like(&c.method))
            .count()
    }

    /// Each bot-wide limit cut into `retry_after` slices from its first
    /// 429 to its end, and the send-like calls that arrived in each, all
    /// windows in order. A client that waits `retry_after` after each 429
    /// sends at most once per slice, so with `n` workers no slice should
    /// exceed about `n`; one that keeps sending fills them.
    pub fn sends_per_retry_window(&self) -> Vec<usize> {
        let windows = self.bot_rate_limits();
        let mut out = Vec::new();
        for w in windows {
            let Some(mut start) = w.first_429 else {
                continue;
            };
            let step = Duration::from_secs(w.retry_after.max(1));
            while start < w.until {
                let end = (start + step).min(w.until);
                out.push(self.sends_during(start, end));
                start = end;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_like_methods() {
        for m in [
            "sendMessage",
            "sendPhoto",
            "sendChatAction",
            "sendMediaGroup",
            "copyMessage",
            "forwardMessages",
            "editMessageText",
            "editMessageReplyMarkup",
            "stopPoll",
        ] {
            assert!(is_send_like(m), "{m} is a send");
        }
        for m in [
            "getMe",
            "getUpdates",
            "setWebhook",
            "deleteWebhook",
            "getWebhookInfo",
            "answerCallbackQuery",
            "answerPreCheckoutQuery",
            "answerInlineQuery",
            "answerShippingQuery",
            "setMyCommands",
            "deleteMessage",
            "editChatInviteLink",
        ] {
            assert!(!is_send_like(m), "{m} is not a send");
        }
    }
}
