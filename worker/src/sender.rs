//! Sending to the Bot API under the bot-wide budget, with the retry policy
//! the queue depends on.
//!
//! Telegram's limits (about 30 messages/s per bot, 20/min per group) are for
//! the bot as a whole, so the budget lives in Redis and every worker draws
//! from it (GCRA: one timestamp per key, no per-request bookkeeping). Adding
//! workers therefore adds throughput up to the limit, never a 429 storm.

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde_json::Value;
use tracing::{info, warn};

use shared::botapi::{BotApi, BotApiError};
use shared::keys;

use crate::metrics::Metrics;

/// Returns 0 when a send may go now (and books it), else microseconds to
/// wait. KEYS: global, chat (may be unused). ARGV: global interval µs,
/// global tolerance µs, chat interval µs (0 = no chat limit), chat tolerance.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function tat_of(key)
  local v = tonumber(redis.call('GET', key) or '0')
  if v < now then return now end
  return v
end
local gi, gt, ci, ct = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local g = tat_of(KEYS[1])
local wait = g - gt - now
local c = 0
if ci > 0 then
  c = tat_of(KEYS[2])
  local w2 = c - ct - now
  if w2 > wait then wait = w2 end
end
if wait > 0 then return wait end
redis.call('SET', KEYS[1], tostring(g + gi), 'PX', math.floor((g + gi - now) / 1000) + 1000)
if ci > 0 then
  redis.call('SET', KEYS[2], tostring(c + ci), 'PX', math.floor((c + ci - now) / 1000) + 1000)
end
return 0
"#;

/// Groups: 20 messages a minute. An interval of 3.5 s with a burst of 3
/// keeps any 60 s window at 3 + 60/3.5 < 20.
const GROUP_INTERVAL_US: u64 = 3_500_000;
const GROUP_BURST: u64 = 3;
/// Short bursts above the steady rate, as Telegram tolerates.
const GLOBAL_BURST: u64 = 5;
/// Transient failures (5xx, network) retried inside one delivery.
const TRANSIENT_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Final for this request (400/403/404): the update ends here.
    #[error("{0}")]
    Final(BotApiError),
    /// Still failing after retries: counts toward dead-lettering.
    #[error("{0}")]
    Transient(BotApiError),
    #[error("rate limiter unavailable: {0}")]
    Redis(redis::RedisError),
}

pub struct Sender {
    pub api: BotApi,
    pub redis: ConnectionManager,
    /// Messages per second for the whole bot; 0 = unlimited.
    pub rate: u32,
    gcra: redis::Script,
}

impl Sender {
    pub fn new(api: BotApi, redis: ConnectionManager, rate: u32) -> Self {
        Self {
            api,
            redis,
            rate,
            gcra: redis::Script::new(GCRA_LUA),
        }
    }

    /// Waits until the shared budget allows one message to `chat_id`.
    async fn admit(&self, chat_id: i64) -> Result<(), redis::RedisError> {
        if self.rate == 0 {
            return Ok(());
        }
        let interval = 1_000_000 / u64::from(self.rate);
        let (ci, ct) = if chat_id < 0 {
            (GROUP_INTERVAL_US, GROUP_INTERVAL_US * (GROUP_BURST - 1))
        } else {
            (0, 0)
        };
        let mut conn = self.redis.clone();
        loop {
            let mut inv = self.gcra.prepare_invoke();
            inv.key(keys::RATE_GLOBAL)
                .key(keys::rate_chat(chat_id))
                .arg(interval)
                .arg(interval * (GLOBAL_BURST - 1))
                .arg(ci)
                .arg(ct);
            let wait_us: i64 = inv.invoke_async(&mut conn).await?;
            if wait_us <= 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_micros(wait_us as u64)).await;
        }
    }

    /// Calls `method` for `chat_id`: 429 waits as asked and is not a
    /// failure; 5xx and network errors are retried with backoff; 400/403
    /// come back as [`SendError::Final`]. A group upgraded to a supergroup
    /// (400 with `migrate_to_chat_id`) is followed once.
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
            self.admit(chat_id).await.map_err(SendError::Redis)?;
            match self.api.call::<_, Value>(method, &params).await {
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
