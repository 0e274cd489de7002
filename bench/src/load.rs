//! The load generator: `C` keep-alive HTTP/1.1 connections (hyper's
//! low-level client, one request in flight per connection), either closed
//! loop (each connection sends its next request as soon as the previous
//! answer is read, for a duration or a request count) or open loop (a fixed
//! rate: request `i` is due at `start + i/rate`, whatever happened before).
//!
//! Open-loop latency is measured from the request's due time, not from when
//! it was actually written, so a stalled server cannot hide its queueing
//! delay by slowing the client down (coordinated omission). Tokio's timer
//! has a 1 ms resolution, so a due time can be missed by up to ~1 ms; the
//! plain service time (write to answer) is reported next to it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Produces the body of request number `i`.
pub type BodyFn = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

/// Where to send and what.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: BodyFn,
}

impl Target {
    pub fn new(addr: SocketAddr, path: &str, body: BodyFn) -> Self {
        Self {
            addr,
            path: path.to_owned(),
            headers: Vec::new(),
            body,
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("header value"),
        ));
        self
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Closed loop for this long.
    For(Duration),
    /// Closed loop until this many requests were sent.
    Count(u64),
    /// Open loop: `rate` requests per second for `secs`.
    Rate { rate: f64, secs: f64 },
}

/// Sorted latencies in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    fn from_unsorted(mut v: Vec<u32>) -> Self {
        v.sort_unstable();
        Self(v)
    }

    /// The `p`-th percentile (0..=100) in milliseconds; NaN when empty.
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        let idx = rank.clamp(1, self.0.len()) - 1;
        self.0[idx] as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.0.last().map_or(f64::NAN, |&v| v as f64 / 1000.0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// 2xx answers.
    pub ok: u64,
    /// Answers that were not 2xx.
    pub non_2xx: u64,
    /// Transport failures (connect, reset, timeout).
    pub errors: u64,
    /// First request to last answer.
    pub elapsed: Duration,
    /// Write-to-answer times of 2xx answers.
    pub service: Latencies,
    /// Open loop only: due-time-to-answer times of 2xx answers.
    pub corrected: Latencies,
}

impl RunResult {
    /// 2xx answers per second.
    pub fn ok_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }
}

#[derive(Default)]
struct ConnStats {
    answered: u64,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    service: Vec<u32>,
    corrected: Vec<u32>,
    last_answer: Option<Instant>,
}

/// Upper bound on one request; a slower answer counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// Runs the load with `connections` connections. Request numbers given to
/// the body function start at 0 in every run.
pub async fn run(target: &Target, connections: usize, mode: Mode) -> RunResult {
    let target = Arc::new(target.clone());
    let next = Arc::new(AtomicU64::new(0));
    let host = HeaderValue::from_str(&target.addr.to_string()).expect("host header");
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let target = target.clone();
        let next = next.clone();
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let mut st = ConnStats::default();
            let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let due = match mode {
                    Mode::For(d) => {
                        if start.elapsed() >= d {
                            break;
                        }
                        None
                    }
                    Mode::Count(n) => {
                        if i >= n {
                            break;
                        }
                        None
                    }
                    Mode::Rate { rate, secs } => {
                        if i as f64 >= rate * secs {
                            break;
                        }
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        if due > Instant::now() {
                            tokio::time::sleep_until(due.into()).await;
                        }
                        Some(due)
                    }
                };
                if sender.is_none() {
                    match connect(target.addr).await {
                        Ok(s) => sender = Some(s),
                        Err(_) => {
                            st.errors += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    }
                }
                let s = sender.as_mut().expect("connected");
                let mut req = Request::post(target.path.as_str())
                    .header(HOST, host.clone())
                    .header(CONTENT_TYPE, "application/json");
                for (k, v) in &target.headers {
                    req = req.header(k, v);
                }
                let req = req.body(Full::new((target.body)(i))).expect("request");
                let sent_at = Instant::now();
                let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                    s.ready().await?;
                    let resp = s.send_request(req).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    Ok::<_, hyper::Error>(status)
                })
                .await;
                let done = Instant::now();
                match answer {
                    Ok(Ok(status)) => {
                        st.answered += 1;
                        st.last_answer = Some(done);
                        if status.is_success() {
                            st.ok += 1;
                            st.service.push(micros(done - sent_at));
                            if let Some(due) = due {
                                st.corrected
                                    .push(micros(done.saturating_duration_since(due)));
                            }
                        } else {
                            st.non_2xx += 1;
                        }
                    }
                    _ => {
                        st.errors += 1;
                        sender = None;
                    }
                }
            }
            st
        }));
    }
    let mut total = ConnStats::default();
    for t in tasks {
        if let Ok(st) = t.await {
            total.answered += st.answered;
            total.ok += st.ok;
            total.non_2xx += st.non_2xx;
            total.errors += st.errors;
            total.service.extend(st.service);
            total.corrected.extend(st.corrected);
            total.last_answer = total.last_answer.max(st.last_answer);
        }
    }
    RunResult {
        ok: total.ok,
        non_2xx: total.non_2xx,
        errors: total.errors,
        elapsed: total
            .last_answer
            .map_or(start.elapsed(), |t| t.duration_since(start)),
        service: Latencies::from_unsorted(total.service),
        corrected: Latencies::from_unsorted(total.corrected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let l = Latencies::from_unsorted((1..=100).rev().map(|v| v * 1000).collect());
        assert_eq!(l.pct_ms(50.0), 50.0);
        assert_eq!(l.pct_ms(99.0), 99.0);
        assert_eq!(l.pct_ms(100.0), 100.0);
        assert_eq!(l.max_ms(), 100.0);
        assert!(Latencies::default().pct_ms(50.0).is_nan());
    }
}
