//! Writing to stderr without letting stderr stop the process.
//!
//! stderr is whatever the operator gave: a terminal, a file, nothing, or a
//! pipe to a log collector, which may exit (every write then fails) or stall
//! (writes block once the pipe buffer is full). Each binary runs one thread,
//! so one blocked write stops everything, signal handling included; and
//! `eprintln!` panics when the write fails. So log lines go through a bounded
//! queue to a writer thread, and are dropped (and counted) when it is full;
//! the few lines printed directly (a fatal error) are written from a helper
//! thread that the caller waits for only briefly.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines waiting for a stalled stderr before new ones are dropped: a few MB
/// at most, and plenty for a collector that pauses for a moment.
const BUFFERED_LINES: usize = 10_000;
/// How long the exit waits for the queued lines to reach stderr.
const FLUSH_WAIT: Duration = Duration::from_millis(1500);
/// How long a directly printed line may take.
const PRINT_WAIT: Duration = Duration::from_millis(500);

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();
/// Global rather than only in [`LogGuard`] so that a forced exit (a second
/// signal) can flush too.
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

pub(super) fn writer() -> (NonBlocking, LogGuard) {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("stderr-writer")
        .finish(Coalesced::default());
    let _ = DROPPED.set(writer.error_counter());
    *GUARD.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    (writer, LogGuard(()))
}

/// What the writer thread writes to: the lines it drains from the queue
/// in one go leave in one write (it flushes after each drain), not a
/// syscall per line. A failed write loses what it carried, as a failed
/// line always did, and is never reported as an error (the writer thread
/// would print it to the same broken stderr).
#[derive(Default)]
struct Coalesced {
    buf: Vec<u8>,
}

/// Bytes gathered before a write is forced mid-drain.
const COALESCE_BYTES: usize = 64 * 1024;

impl Write for Coalesced {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + line.len() > COALESCE_BYTES {
            self.flush()?;
        }
        self.buf.extend_from_slice(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let _ = std::io::stderr().write_all(&self.buf);
            self.buf.clear();
        }
        Ok(())
    }
}

/// Keeps the log writer thread; dropped at the end of `main`, it writes out
/// what is queued, waiting at most [`FLUSH_WAIT`] for a stalled stderr.
#[must_use = "logs are written only while the guard lives"]
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        flush();
    }
}

/// Writes out the queued log lines, waiting at most [`FLUSH_WAIT`]. The
/// writer's own shutdown can block on a full stdout (it prints there when
/// its queue is full), hence the helper thread.
pub fn flush() {
    let guard = GUARD.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(g) = guard {
        run_bounded(FLUSH_WAIT, move || drop(g));
    }
}

/// Prints one line on stderr for a human (a fatal error): never panics,
/// and waits at most [`PRINT_WAIT`] when stderr is stalled.
pub fn print_line(line: &str) {
    let line = format!("{line}\n");
    run_bounded(PRINT_WAIT, move || {
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
}

fn run_bounded(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("stderr-bounded".into())
        .spawn(move || {
            f();
            let _ = done_tx.send(());
        });
    if spawned.is_ok() {
        let _ = done_rx.recv_timeout(limit);
    }
}

/// Log lines dropped because stderr did not take them fast enough.
pub fn dropped_log_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// `log_lines_dropped_total` for a service's metrics registry: a stalled
/// log collector shows as a rising count instead of a frozen service.
#[derive(Debug)]
pub struct DroppedLogLines;

impl Collector for DroppedLogLines {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(dropped_log_lines());
        let metric = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because stderr was not taking them (a stalled log reader)",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_lines_show_as_a_counter() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(DroppedLogLines));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        assert!(out.contains("# TYPE log_lines_dropped counter"), "{out}");
        assert!(out.contains("log_lines_dropped_total 0"), "{out}");
    }
}
