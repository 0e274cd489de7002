//! Sending to the Bot API under the bot-wide budget, with the retry policy
//! the queue depends on.
//!
//! Telegram's limits (about 30 messages/s per bot, 20/min per group) are for
//! the bot as a whole, so the budget lives in Redis and every worker draws
//! from it (GCRA: one timestamp per key, no per-request bookkeeping). Adding
//! workers therefore adds throughput up to the limit, never a 429 storm.
//!
//! # 429s and their scope
//!
//! Telegram's 429 does not say which limit was hit. A 429 pauses the chat
//! it was for; 429s for two or more chats within [`BOT_LIMIT_WINDOW`] mean
//! the bot's limit, and pause every chat - for every worker at once, since
//! the pause lives in Redis and the budget checks it before each send. A
//! wait longer than [`HOLD_AT_MOST`] is not slept in a handler slot: the
//! send comes back as [`SendError::Wait`] and the caller puts the reply
//! aside until it is due.
//!
//! Answers to queries (`answerCallbackQuery`, `answerPreCheckoutQuery`...)
//! are not messages: they draw nothing from the message budget, so a
//! backlog of messages never makes a button or a payment wait.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{info, warn};

use shared::queue::{Admit, Budget, Scope, SendBudget, StoreError};
use shared::telegram::{BotApi, BotApiError, SEND_TIMEOUT};

use crate::metrics::Metrics;

/// Groups: 20 messages a minute. An interval of 3.5 s with a burst of 3
/// keeps any 60 s window at 3 + 60/3.5 < 20.
const GROUP_INTERVAL_US: u64 = 3_500_000;
const GROUP_BURST: u64 = 3;
/// Short bursts above the steady rate, as Telegram tolerates.
const GLOBAL_BURST: u64 = 5;
/// Extra headroom of urgent sends (answers to deadline updates) over the
/// backlog's: with the budget saturated by ordinary replies, an urgent one
/// still goes at once.
const URGENT_BURST: u64 = 10;

/// Who goes first when the budget is short. Each level may use headroom
/// the next one may not (GCRA tolerance), so under a saturated budget an
/// urgent answer passes a reply, and a reply passes an outbound message:
/// broadcasts use what the budget leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Urgent,
    Reply,
    Outbound,
}
/// Waits up to this long are slept where they happen; longer ones give
/// the handler slot back ([`SendError::Wait`]).
pub const HOLD_AT_MOST: Duration = Duration::from_secs(1);
/// 429s for different chats this close together mean the bot's limit.
pub const BOT_LIMIT_WINDOW: Duration = Duration::from_secs(2);
/// Transient failures retried inside one delivery: those Telegram
/// answered (5xx) or that never reached it (connect errors). A failure
/// with an unknown outcome is never retried (see [`SendError::Unknown`]).
const TRANSIENT_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Final for this request (400/403/404): the update ends here.
    #[error("{0}")]
    Final(BotApiError),
    /// Still failing after retries: counts toward dead-lettering.
    #[error("{0}")]
    Transient(BotApiError),
    /// The request may have reached Telegram but no verdict came back (the
    /// answer timed out or the connection broke after sending). Telegram
    /// has no idempotency key for sends, so resending could give the user
    /// a second copy; the caller ends the update instead, and the message
    /// was sent at most once.
    #[error("outcome unknown, not resent: {0}")]
    Unknown(BotApiError),
    #[error("send budget unavailable: {0}")]
    Store(StoreError),
    /// Telegram asked this chat or the whole bot to wait longer than a
    /// handler slot should be held: put the reply aside, send it later.
    #[error("Telegram asks to wait {}s ({})", wait.as_secs(), scope_label(*scope))]
    Wait { wait: Duration, scope: Scope },
}

fn scope_label(s: Scope) -> &'static str {
    match s {
        Scope::Bot => "the whole bot",
        Scope::Chat => "this chat",
    }
}

/// Methods that answer a query rather than send a message: they draw
/// nothing from the budget.
pub fn is_answer(method: &str) -> bool {
    method.starts_with("answer")
}

pub struct Sender {
    pub api: BotApi,
    /// Only the budget: a sender books sends, it never touches the queue.
    pub store: Arc<dyn SendBudget>,
    /// Messages per second for the whole bot; 0 = unlimited.
    pub rate: u32,
    /// Until when this process knows the whole bot is paused: the reader
    /// takes no new work meanwhile (it could only put replies aside).
    paused_until: Mutex<Option<Instant>>,
    /// Draws from the paid-broadcast budget (`TELEGRAM_PAID_BROADCAST_RATE`).
    paid: bool,
}

impl Sender {
    pub fn new(api: BotApi, store: Arc<dyn SendBudget>, rate: u32) -> Self {
        Self {
            api,
            store,
            rate,
            paused_until: Mutex::new(None),
            paid: false,
        }
    }

    /// A sender for paid broadcasts: its own budget at `rate` messages/s,
    /// every send with `allow_paid_broadcast` (Telegram charges for what
    /// goes above the free 30/s).
    pub fn paid(api: BotApi, store: Arc<dyn SendBudget>, rate: u32) -> Self {
        Self {
            paid: true,
            ..Self::new(api, store, rate)
        }
    }

    /// How long the bot stays paused, as far as this process has learnt.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().ok()?)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    fn note_bot_pause(&self, wait: Duration) {
        if let Ok(mut p) = self.paused_until.lock() {
            let until = Instant::now() + wait;
            if p.is_none_or(|u| u < until) {
                *p = Some(until);
            }
        }
    }

    /// The budget one message to `chat_id` draws from, at `priority`.
    pub fn budget(&self, chat_id: i64, priority: Priority) -> Budget {
        // Unlimited rate: still one check, for Telegram's pauses.
        let interval = match self.rate {
            0 => 0,
            r => 1_000_000 / u64::from(r),
        };
        let burst = match priority {
            Priority::Urgent => GLOBAL_BURST + URGENT_BURST,
            Priority::Reply => GLOBAL_BURST,
            Priority::Outbound => 1,
        };
        let (chat_interval_us, chat_tolerance_us) = if chat_id < 0 && self.rate > 0 {
            (GROUP_INTERVAL_US, GROUP_INTERVAL_US * (GROUP_BURST - 1))
        } else {
            (0, 0)
        };
        Budget {
            paid: self.paid,
            chat_id,
            interval_us: interval,
            tolerance_us: interval * (burst - 1),
            chat_interval_us,
            chat_tolerance_us,
        }
    }

    /// Waits until the shared budget allows one message to `chat_id`, or
    /// says how long a pause Telegram asked for still lasts. `asked`: the
    /// budget's answer already given (asked together with the reply's
    /// completion), taken as the first answer.
    async fn admit(
        &self,
        chat_id: i64,
        priority: Priority,
        mut asked: Option<Admit>,
    ) -> Result<(), SendError> {
        let budget = self.budget(chat_id, priority);
        loop {
            let answer = match asked.take() {
                Some(a) => Ok(a),
                None => self.store.admit(budget).await,
            };
            let (wait_us, scope) = match answer {
                Ok(Admit::Go) => return Ok(()),
                Ok(Admit::Rate(us)) => {
                    tokio::time::sleep(Duration::from_micros(us)).await;
                    continue;
                }
                Ok(Admit::BotPaused(us)) => (us, Scope::Bot),
                Ok(Admit::ChatPaused(us)) => (us, Scope::Chat),
                Err(e) => return Err(SendError::Store(e)),
            };
            let wait = Duration::from_micros(wait_us);
            if scope == Scope::Bot {
                self.note_bot_pause(wait);
            }
            if wait > HOLD_AT_MOST {
                return Err(SendError::Wait { wait, scope });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Calls `method` for `chat_id`: 429 waits as asked and is not a
    /// failure; 5xx and connect errors are retried with backoff; 400/403
    /// come back as [`SendError::Final`]; a request that may have been
    /// carried out without a verdict comes back as [`SendError::Unknown`]
    /// at once, never resent. A group upgraded to a supergroup (400 with
    /// `migrate_to_chat_id`) is followed once.
    ///
    /// `priority`: who goes first when the budget is short ([`Priority`]).
    pub async fn send(
        &self,
        method: &str,
        params: Value,
        metrics: &Metrics,
        priority: Priority,
    ) -> Result<Value, SendError> {
        self.send_admitted(method, params, metrics, priority, None)
            .await
    }

    /// [`Sender::send`], with the budget's answer for this message already
    /// asked (see `Delivery::finish_admitting`); `None`: ask it here.
    pub async fn send_admitted(
        &self,
        method: &str,
        mut params: Value,
        metrics: &Metrics,
        priority: Priority,
        mut admitted: Option<Admit>,
    ) -> Result<Value, SendError> {
        if self.paid {
            params["allow_paid_broadcast"] = Value::Bool(true);
        }
        let mut chat_id = params.get("chat_id").and_then(Value::as_i64).unwrap_or(0);
        let mut transient = 0;
        let mut migrated = false;
        loop {
            if !is_answer(method) {
                self.admit(chat_id, priority, admitted.take()).await?;
            }
            match self
                .api
                .call_with_timeout::<_, Value>(method, &params, SEND_TIMEOUT)
                .await
            {
                Ok(v) => {
                    metrics.sent.inc();
                    return Ok(v);
                }
                Err(e) => {
                    if let Some(wait) = e.retry_after() {
                        metrics.rate_limited.inc();
                        // Unknown scope when Redis cannot say: pause the chat
                        // (here, by waiting), the narrowest guess.
                        let scope = self
                            .store
                            .rate_limited(chat_id, wait, BOT_LIMIT_WINDOW)
                            .await
                            .unwrap_or(Scope::Chat);
                        if scope == Scope::Bot {
                            self.note_bot_pause(wait);
                        }
                        warn!(
                            chat_id,
                            wait_s = wait.as_secs(),
                            scope = scope_label(scope),
                            "Telegram asked to slow down (429)"
                        );
                        if wait > HOLD_AT_MOST {
                            return Err(SendError::Wait { wait, scope });
                        }
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if let BotApiError::Api {
                        migrate_to_chat_id: Some(new_id),
                        ..
                    } = &e
                    {
                        if !migrated {
                            info!(
                                chat_id,
                                new_chat_id = new_id,
                                "group migrated to a supergroup; resending there"
                            );
                            migrated = true;
                            chat_id = *new_id;
                            params["chat_id"] = Value::from(*new_id);
                            continue;
                        }
                    }
                    if e.outcome_unknown() {
                        metrics.sends_unknown.inc();
                        return Err(SendError::Unknown(e));
                    }
                    if e.is_transient() {
                        transient += 1;
                        if transient < TRANSIENT_ATTEMPTS {
                            let wait = Duration::from_millis(250 << transient);
                            warn!(error = %e, attempt = transient, "Bot API call failed; retrying in {wait:?}");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        return Err(SendError::Transient(e));
                    }
                    if e.is_final_for_request() {
                        return Err(SendError::Final(e));
                    }
                    // 401 and anything unexpected: a failed delivery.
                    return Err(SendError::Transient(e));
                }
            }
        }
    }
}
