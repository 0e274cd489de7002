//! Redis connections with timeouts chosen for this system.
//!
//! redis-rs gives async connections a 500 ms response timeout by default; a
//! `XREADGROUP BLOCK` would be cut off by it, so blocking reads get their own
//! connection with a timeout longer than the block. Everything else shares
//! one multiplexed, self-reconnecting [`ConnectionManager`].

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long a command may take before the caller treats Redis as down. Short
/// enough that a webhook answers 503 long before Telegram's 60 s patience.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

fn config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// A lazy manager: creating it never fails because Redis is down, so the
/// service can start, answer `/healthz` and report not-ready meanwhile.
pub fn manager(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    ConnectionManager::new_lazy_with_config(client, config(COMMAND_TIMEOUT))
}

/// A connection for blocking commands that wait up to `block`.
pub fn blocking_manager(url: &str, block: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    ConnectionManager::new_lazy_with_config(client, config(block + COMMAND_TIMEOUT))
}

/// `PING` with a hard deadline: readiness must never hang on a dead Redis.
pub async fn ping(conn: &mut ConnectionManager) -> bool {
    let cmd = redis::cmd("PING");
    let fut = cmd.query_async::<String>(conn);
    matches!(tokio::time::timeout(COMMAND_TIMEOUT, fut).await, Ok(Ok(_)))
}
