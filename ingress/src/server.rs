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
/// would flood the log, so both are paced. At the limit, accepts succeed and
/// fail by turns (each closed connection frees one descriptor): the error
/// line is limited per period across such episodes, and a recovery line is
/// written only for an episode whose error line was.
struct AcceptErrors {
    backoff: Backoff,
    /// When the current episode began, if one is open.
    failing_since: Option<Instant>,
    episode_logged: bool,
    last_log: Option<Instant>,
    unlogged: u64,
    total: u64,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        Self {
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_secs(1)),
            failing_since: None,
            episode_logged: false,
            last_log: None,
            unlogged: 0,
            total: 0,
        }
    }
}

impl AcceptErrors {
    /// Records a failure; returns how long to wait before accepting again.
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.failed_at(Instant::now(), e).0
    }

    fn recovered(&mut self) {
        if self.failing_since.is_some() {
            self.recovered_at(Instant::now());
        }
    }

    /// The wait, and whether a line was logged.
    fn failed_at(&mut self, now: Instant, e: &std::io::Error) -> (Duration, bool) {
        self.failing_since.get_or_insert(now);
        self.total += 1;
        let wait = self.backoff.next_delay();
        if self
            .last_log
            .is_some_and(|t| now.duration_since(t) < ACCEPT_LOG_EVERY)
        {
            self.unlogged += 1;
            return (wait, false);
        }
        error!(
            error = %e,
            failures_since_last_log = self.unlogged,
            retry_in_ms = wait.as_millis() as u64,
            "cannot accept connections (at the open-files limit? see `ulimit -n`); new requests wait"
        );
        self.last_log = Some(now);
        self.unlogged = 0;
        self.episode_logged = true;
        (wait, true)
    }

    /// Closes the episode; whether a line was logged.
    fn recovered_at(&mut self, now: Instant) -> bool {
        self.backoff.reset();
        let since = self.failing_since.take();
        let logged = std::mem::take(&mut self.episode_logged);
        let failures = std::mem::take(&mut self.total);
        match since {
            Some(since) if logged => {
                info!(
                    failures,
                    after_ms = now.duration_since(since).as_millis() as u64,
                    "accepting connections again"
                );
                true
            }
            _ => false,
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
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let runs: Vec<(Duration, bool)> = (0..10).map(|i| errs.failed_at(at(i), &e)).collect();
        let waits: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(waits[9], Duration::from_secs(1));
        let logged = runs.iter().filter(|r| r.1).count();
        assert_eq!((logged, errs.unlogged), (1, 9), "one line, nine counted");
        assert!(
            errs.recovered_at(at(20)),
            "the logged episode's end is logged"
        );

        // Flapping at the limit: success and failure by turns log nothing
        // more within the period, and the retry wait starts small again.
        for ms in [30, 50, 70] {
            assert_eq!(
                errs.failed_at(at(ms), &e),
                (Duration::from_millis(10), false)
            );
            assert!(!errs.recovered_at(at(ms + 10)));
        }
        // The next period logs again, counting the silent failures.
        assert!(errs.failed_at(at(5_100), &e).1);
        assert_eq!(errs.unlogged, 0);
    }
}
