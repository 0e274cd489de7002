//! Hostile HTTP clients over raw TCP: the connections a public endpoint
//! gets from scanners and slowloris attacks, each recording when (and with
//! what status) the server ended it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::SECRET_HEADER;
use crate::WEBHOOK_SECRET;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slow {
    /// Sends a request head one byte a second, never finishing it.
    Headers,
    /// Sends a complete webhook head (right secret, Content-Length 10000),
    /// then the body one byte a second.
    Body,
    /// Declares Content-Length 100, sends 10 bytes, then waits.
    ShortBody,
    /// Makes one quick request, then keeps the connection open, idle.
    IdleKeepAlive,
    /// One quick request with `Connection: close` (not slow: a control).
    Quick,
}

impl Slow {
    pub const ALL: [Slow; 4] = [
        Slow::Headers,
        Slow::Body,
        Slow::ShortBody,
        Slow::IdleKeepAlive,
    ];

    fn trickles(self) -> bool {
        matches!(self, Slow::Headers | Slow::Body)
    }

    fn opening(self, port: u16) -> String {
        let host = format!("Host: 127.0.0.1:{port}\r\n");
        match self {
            Slow::Headers => format!("POST /telegram/webhook/ HTTP/1.1\r\n{host}X-Slow: "),
            Slow::Body => format!(
                "POST /telegram/webhook/ HTTP/1.1\r\n{host}{SECRET_HEADER}: {WEBHOOK_SECRET}\r\n\
                 Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{{"
            ),
            Slow::ShortBody => format!(
                "POST /telegram/webhook/ HTTP/1.1\r\n{host}{SECRET_HEADER}: {WEBHOOK_SECRET}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"update_i"
            ),
            Slow::IdleKeepAlive => format!("GET /healthz HTTP/1.1\r\n{host}\r\n"),
            Slow::Quick => format!("GET /healthz HTTP/1.1\r\n{host}Connection: close\r\n\r\n"),
        }
    }
}

/// How one hostile connection ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: Slow,
    /// Since the connection was opened; `None`: still open at `give_up`.
    pub closed_after: Option<Duration>,
    /// The status of the last response the server sent on it, if any.
    pub status: Option<u16>,
    /// Whether the connection could be opened at all.
    pub connected: bool,
}

/// Opens one connection to `127.0.0.1:port`, behaves as `kind` and waits
/// (at most `give_up`) for the server to close it.
pub async fn run(port: u16, kind: Slow, give_up: Duration) -> Outcome {
    run_counted(port, kind, give_up, &AtomicUsize::new(0)).await
}

/// [`run`], counting the connection in `opened` once its opening is sent.
async fn run_counted(port: u16, kind: Slow, give_up: Duration, opened: &AtomicUsize) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome {
        kind,
        closed_after: None,
        status: None,
        connected: false,
    };
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return out;
    };
    out.connected = true;
    let (mut rd, mut wr) = stream.into_split();
    let _ = wr.write_all(kind.opening(port).as_bytes()).await;
    opened.fetch_add(1, Ordering::SeqCst);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let deadline = tokio::time::Instant::from_std(start + give_up);
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        tokio::select! {
            // Write errors (the server closed) show up on the read side.
            _ = tick.tick(), if kind.trickles() => { let _ = wr.write_all(b" ").await; }
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => {
                    out.closed_after = Some(start.elapsed());
                    break;
                }
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    out.status = last_status(&received);
    out
}

/// The status code of the last `HTTP/1.1 NNN` line in `bytes`.
fn last_status(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.rmatch_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .next()
}

/// Many slow clients at once.
pub struct Clients {
    handles: Vec<tokio::task::JoinHandle<Outcome>>,
    opened: Arc<AtomicUsize>,
}

impl Clients {
    /// Opens `n` connections, of the `kinds` in turn.
    pub fn spawn(port: u16, kinds: &[Slow], n: usize, give_up: Duration) -> Self {
        let opened = Arc::new(AtomicUsize::new(0));
        let handles = (0..n)
            .map(|i| {
                let (kind, opened) = (kinds[i % kinds.len()], opened.clone());
                tokio::spawn(async move { run_counted(port, kind, give_up, &opened).await })
            })
            .collect();
        Self { handles, opened }
    }

    /// Waits (at most `timeout`) until every connection is open and has
    /// sent its opening; false on timeout.
    pub async fn all_open(&self, timeout: Duration) -> bool {
        let n = self.handles.len();
        crate::harness::eventually(timeout, || async {
            self.opened.load(Ordering::SeqCst) >= n
        })
        .await
    }

    /// The outcomes, once every client is done.
    pub async fn join(self) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(self.handles.len());
        for h in self.handles {
            out.push(h.await.expect("slow client task"));
        }
        out
    }
}

/// Per kind: connections, how many the server closed, the slowest close
/// and the statuses seen - the figure the tests print.
pub fn summary(outcomes: &[Outcome]) -> String {
    let mut lines = Vec::new();
    for kind in Slow::ALL {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == kind).collect();
        if of.is_empty() {
            continue;
        }
        let closed: Vec<Duration> = of.iter().filter_map(|o| o.closed_after).collect();
        let max = closed.iter().max().copied().unwrap_or_default();
        let mut statuses: Vec<String> = of
            .iter()
            .map(|o| o.status.map_or("none".into(), |s| s.to_string()))
            .collect();
        statuses.sort();
        statuses.dedup();
        lines.push(format!(
            "{kind:?}: {} connections, {} closed by the server, slowest close {:.1} s, statuses {statuses:?}",
            of.len(),
            closed.len(),
            max.as_secs_f64()
        ));
    }
    lines.join("\n")
}
