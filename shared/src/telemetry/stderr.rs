//! Writing to stderr without letting stderr stop the process.
//!
//! stderr is whatever the operator gave: a terminal, a file, nothing, or a
//! pipe to a log collector, which may exit (every write then fails) or stall
//! (writes block once the pipe buffer is full). Each binary runs one thread,
//! so one blocked write stops everything, signal handling included; and
//! `eprintln!` panics when the write fails. So log lines go through a bounded
//! queue to a writer thread, which writes what gathered in one write, and
//! are dropped (and counted) when the queue is full;
//! the few lines printed directly (a fatal error) are written from a helper
//! thread that the caller waits for only briefly.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use tracing_subscriber::fmt::MakeWriter;

/// Bytes of lines waiting for a stalled stderr before new ones are
/// dropped: about ten thousand lines, plenty for a collector that pauses
/// for a moment.
const BUFFERED_BYTES: usize = 4 << 20;
/// How long the writer thread lets lines gather after a write, so a busy
/// process wakes it a few hundred times a second rather than once per
/// line (a profile showed a worker's log thread spending its time in
/// wake-ups, not in writes). A line reaches stderr this much later at
/// most.
const GATHER: Duration = Duration::from_millis(2);
/// How long the exit waits for the queued lines to reach stderr.
const FLUSH_WAIT: Duration = Duration::from_millis(1500);
/// How long a directly printed line may take.
const PRINT_WAIT: Duration = Duration::from_millis(500);

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Global rather than only in [`LogGuard`] so that a forced exit (a second
/// signal) can flush too.
static GUARD: Mutex<Option<Writer>> = Mutex::new(None);

/// Lines not written yet, and whether the process is exiting.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Queue {
    pending: Mutex<Pending>,
    /// Signalled when lines arrive in an empty queue, or at the exit.
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one formatted line; drops (and counts) it when the queue is
    /// full. Wakes the writer only when it may be waiting: lines that
    /// arrive while it writes or gathers cost no wake-up.
    fn push(&self, line: &[u8]) {
        let mut p = self.lock();
        if p.buf.len() + line.len() > BUFFERED_BYTES {
            drop(p);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_empty = p.buf.is_empty();
        p.buf.extend_from_slice(line);
        drop(p);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// The writer thread: takes everything queued, writes it in one go,
    /// lets the next lines gather, and ends once the exit has been asked
    /// and nothing is left. A failed write loses what it carried, as a
    /// failed line always did, and is never reported (it would go to the
    /// same broken stderr).
    fn run(&self, sink: &mut dyn Write) {
        let mut out = Vec::new();
        loop {
            {
                let mut p = self.lock();
                while p.buf.is_empty() && !p.closed {
                    p = self.ready.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                if p.buf.is_empty() {
                    return;
                }
                std::mem::swap(&mut p.buf, &mut out);
            }
            let _ = sink.write_all(&out);
            out.clear();
            if out.capacity() > BUFFERED_BYTES / 4 {
                out = Vec::new();
            }
            std::thread::sleep(GATHER);
        }
    }
}

/// The log writer thread and its queue.
struct Writer {
    queue: Arc<Queue>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Asks the thread to write what is queued and end, and waits for it.
    fn close(self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_one();
        let _ = self.thread.join();
    }
}

/// What `tracing_subscriber::fmt` writes each formatted line to: the
/// queue of the writer thread, never stderr itself.
#[derive(Clone)]
pub(super) struct LogWriter(Arc<Queue>);

impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

pub(super) fn writer() -> (LogWriter, LogGuard) {
    let queue: Arc<Queue> = Arc::default();
    let spawned = std::thread::Builder::new()
        .name("stderr-writer".into())
        .spawn({
            let queue = queue.clone();
            move || queue.run(&mut std::io::stderr())
        });
    // Without a thread (none can be made) lines are queued until full and
    // then dropped and counted: stderr never blocks the process.
    if let Ok(thread) = spawned {
        *GUARD.lock().unwrap_or_else(|e| e.into_inner()) = Some(Writer {
            queue: queue.clone(),
            thread,
        });
    }
    (LogWriter(queue), LogGuard(()))
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

/// Writes out the queued log lines, waiting at most [`FLUSH_WAIT`]: the
/// writer thread may be stuck on a stalled stderr, hence the helper
/// thread.
pub fn flush() {
    let writer = GUARD.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(w) = writer {
        run_bounded(FLUSH_WAIT, move || w.close());
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
    DROPPED.load(Ordering::Relaxed)
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

    /// Lines reach the sink whole and in order, also those queued just
    /// before the exit; a full queue drops and counts instead of growing.
    #[test]
    fn lines_arrive_in_order_and_a_full_queue_drops() {
        let queue: Arc<Queue> = Arc::default();
        let mut sink = Vec::new();
        let reader = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                queue.run(&mut sink);
                sink
            })
        };
        let mut w = LogWriter(queue.clone());
        for i in 0..1000 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let dropped_before = dropped_log_lines();
        queue.lock().closed = true;
        queue.ready.notify_one();
        let written = String::from_utf8(reader.join().unwrap()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));

        // No thread takes lines now: the queue fills, then drops.
        let big = vec![b'x'; BUFFERED_BYTES / 2 + 1];
        w.write_all(&big).unwrap();
        w.write_all(&big).unwrap();
        assert!(dropped_log_lines() > dropped_before);
        assert_eq!(queue.lock().buf.len(), big.len());
    }

    #[test]
    fn dropped_lines_show_as_a_counter() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(DroppedLogLines));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        assert!(out.contains("# TYPE log_lines_dropped counter"), "{out}");
        assert!(out.contains("log_lines_dropped_total"), "{out}");
    }
}
