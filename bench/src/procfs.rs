//! Memory and CPU of a process from `/proc` (Linux).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Resident memory, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// Current resident set (`VmRSS`).
    pub rss_kb: u64,
    /// Peak resident set since start (`VmHWM`).
    pub hwm_kb: u64,
}

pub fn mem(pid: u32) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Mem {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
    })
}

/// User + system CPU time consumed so far, seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields are
    // counted after the last ')'. utime and stime are fields 14 and 15.
    let after = &text[text.rfind(')')? + 1..];
    let mut f = after.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on; `getconf`
    // confirms it when available.
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Total CPU seconds of several processes (missing ones count 0).
pub fn cpu_total(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_secs(p)).sum()
}

/// Samples `VmRSS` of some processes every 50 ms and keeps the largest
/// value seen for each, until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Vec<AtomicU64>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let task = {
            let stop = stop.clone();
            let peaks = peaks.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for (i, &pid) in pids.iter().enumerate() {
                        if let Some(m) = mem(pid) {
                            peaks[i].fetch_max(m.rss_kb, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Self { stop, peaks, task }
    }

    /// Largest `VmRSS` seen per process, KiB, in the order given.
    pub async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peaks
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }
}
