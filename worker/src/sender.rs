//! Sending to the Bot API under the bot-wide budget, with the retry policy
//! the queue depends on.
//!
//! Telegram's limits (about 30 messages/s per bot, 20/min per group) are for
//! the bot as a whole, so the budget lives in Redis and every worker draws
//! from it (GCRA: one timestamp per key, no per-request bookkeeping). Adding
//! workers therefore adds throughput up to the limit, never a 429 storm.

use std::time::Duration;

use std::sync::Arc;

use serde_json::Value;
use tracing::{info, warn};

use shared::queue::{Budget, SendBudget, StoreError};
use shared::telegram::{BotApi, BotApiError, SEND_TIMEOUT};

use crate::metrics::Metrics;

/// Groups: 20 messages a minute. An interval of 3.5 s with a burst of 3
/// keeps any 60 s window at 3 + 60/3.5 < 20.
const GROUP_INTERVAL_US: u64 = 3_500_000;
const GROUP_BURST: u64 = 3;
/// Short bursts above the steady rate, as Telegram tolerates.
const GLOBAL_BURST: u64 = 5;
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
}

pub struct Sender {
    pub api: BotApi,
    /// Only the budget: a sender books sends, it never touches the queue.
    pub store: Arc<dyn SendBudget>,
    /// Messages per second for the whole bot; 0 = unlimited.
    pub rate: u32,
}

impl Sender {
    pub fn new(api: BotApi, store: Arc<dyn SendBudget>, rate: u32) -> Self {
        Self { api, store, rate }
    }

    /// Waits until the shared budget allows one message to `chat_id`.
    async fn admit(&self, chat_id: i64) -> Result<(), StoreError> {
        if self.rate == 0 {
            return Ok(());
        }
        let interval = 1_000_000 / u64::from(self.rate);
        let (chat_interval_us, chat_tolerance_us) = if chat_id < 0 {
            (GROUP_INTERVAL_US, GROUP_INTERVAL_US * (GROUP_BURST - 1))
        } else {
            (0, 0)
        };
        let budget = Budget {
            chat_id,
            interval_us: interval,
            tolerance_us: interval * (GLOBAL_BURST - 1),
            chat_interval_us,
            chat_tolerance_us,
        };
        loop {
            let wait_us = self.store.admit(budget).await?;
            if wait_us == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_micros(wait_us)).await;
        }
    }

    /// Calls `method` for `chat_id`: 429 waits as asked and is not a
    /// failure; 5xx and connect errors are retried with backoff; 400/403
    /// come back as [`SendError::Final`]; a request that may have been
    /// carried out without a verdict comes back as [`SendError::Unknown`]
    /// at once, never resent. A group upgraded to a supergroup (400 with
    /// `migrate_to_chat_id`) is followed once.
    pub async fn send(
        &self,
        method: &str,
        mut params: Value,
        metrics: &Metrics,
    ) -> Result<Value, SendError> {
        let mut chat_id = params.get("chat_id").and_then(Value::as_i64).unwrap_or(0);
        let mut transient = 0;
        let mut migrated = false;
        loop {
            self.admit(chat_id).await.map_err(SendError::Store)?;
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
                        warn!(
                            chat_id,
                            wait_s = wait.as_secs(),
                            "Telegram asked to slow down (429); waiting"
                        );
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
