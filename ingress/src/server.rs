//! The HTTP/1 server under the router, with the bounds `axum::serve` lacks.
//!
//! The ingress is public: anyone can open connections and send nothing, or
//! one byte a second. Each such connection costs a file descriptor, so
//! without bounds a few hundred of them exhaust the process and hold a
//! redeploy until the platform's SIGKILL. Every phase of a connection is
//! therefore bounded (see the constants), the shutdown drain is bounded, and
//! a failing `accept` (EMFILE: out of file descriptors) is logged and backed
//! off instead of silently spinning.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use shared::signals::Backoff;

use crate::metrics::Metrics;

/// A request's headers must arrive within this time, and an idle keep-alive
/// connection is closed after it (hyper runs the same timer while waiting
/// for the next request). Telegram sends a whole request at once and
/// reconnects when a kept-alive connection was closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body must arrive within this time of its headers (a total,
/// not an inactivity timeout: a byte a second never finishes).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SIGTERM waits for connections with a request in progress;
/// the rest are closed. Requests are answered in milliseconds, so anything
/// still open after this is a slow client, and the platform's own kill
/// (10 s on Docker, often less elsewhere) must not come first.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one accept-error log line per this period (the count of the
/// others is in the next line and in the metric).
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` fires, then drains for at
/// most [`DRAIN_TIMEOUT`].
pub async fn run(
    listener: TcpListener,
    app: Router,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    let connections = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                errors.recovered();
                stream
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                metrics.accept_errors.inc();
                let wait = errors.failed(&e);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let (shutdown, hard_stop) = (shutdown.clone(), hard_stop.clone());
        connections.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    // Idle connections close now; one with a request in
                    // progress finishes it, or is dropped at the drain bound.
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        r = conn.as_mut() => r,
                        _ = hard_stop.cancelled() => return,
                    }
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "closing connections still open {DRAIN_TIMEOUT:?} after shutdown began"
        );
        hard_stop.cancel();
        connections.wait().await;
    }
}

/// Errors about one connection (it was reset before we took it): the
/// listener itself is fine, so accept again at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Accept failures that are about the process (EMFILE, ENFILE, ENOBUFS):
/// retrying at once would fail again and spin a core, and logging each one
/// would flood the log, so both are paced.
struct AcceptErrors {
    backoff: Backoff,
    failing_since: Option<Instant>,
    last_log: Option<Instant>,
    unlogged: u64,
    total: u64,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        Self {
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_secs(1)),
            failing_since: None,
            last_log: None,
            unlogged: 0,
            total: 0,
        }
    }
}

impl AcceptErrors {
    /// Records a failure; returns how long to wait before accepting again.
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        let now = Instant::now();
        self.failing_since.get_or_insert(now);
        self.total += 1;
        let wait = self.backoff.next_delay();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_EVERY)
        {
            error!(
                error = %e,
                failures_since_last_log = self.unlogged,
                retry_in_ms = wait.as_millis() as u64,
                "cannot accept connections (at the open-files limit? see `ulimit -n`); new requests wait"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        wait
    }

    fn recovered(&mut self) {
        if let Some(since) = self.failing_since.take() {
            info!(
                failures = self.total,
                after_ms = since.elapsed().as_millis() as u64,
                "accepting connections again"
            );
            self.backoff.reset();
            self.last_log = None;
            self.unlogged = 0;
            self.total = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_and_log_once_per_period() {
        let mut errs = AcceptErrors::default();
        let e = std::io::Error::from_raw_os_error(24); // EMFILE
        let waits: Vec<Duration> = (0..10).map(|_| errs.failed(&e)).collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), Duration::from_secs(1));
        // One line logged, the other nine counted for the next one.
        assert_eq!(errs.unlogged, 9);
        errs.recovered();
        assert_eq!(errs.failed(&e), Duration::from_millis(10), "reset");
    }
}
