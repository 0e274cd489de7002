//! The cluster section's markdown, its capacity model, and the short report
//! header of a `--cluster-only` run.

use std::fmt::Write as _;
use std::time::Instant;

use super::{chats_per_shard, shard_stream, Section, Setup, ShardRuns, WORKERS};
use crate::bodies::Bodies;
use crate::cli::Settings;
use crate::fake::Fake;
use crate::report::{load_rows, ms, pct};

const TITLE: &str = "## 5. Redis Cluster: 3 masters, QUEUE_SHARDS=1 and 3";

/// The section when it could not run.
pub fn skipped(note: &str) -> String {
    format!("{TITLE}\n\n**{note}**\n\n")
}

/// `A`, `B`, ...: the masters in slot order.
fn label(i: usize) -> char {
    char::from(b'A' + i as u8)
}

/// Each part as a share of their sum: `"97% / 2% / 1%"`.
fn shares(parts: &[f64]) -> String {
    let sum: f64 = parts.iter().sum();
    parts
        .iter()
        .map(|p| pct(if sum > 0.0 { p / sum } else { 0.0 }))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The busiest part's index and share of the sum.
fn busiest(parts: &[f64]) -> (usize, f64) {
    let sum: f64 = parts.iter().sum();
    parts.iter().enumerate().fold((0, 0.0), |best, (i, &p)| {
        let share = if sum > 0.0 { p / sum } else { 0.0 };
        if share > best.1 {
            (i, share)
        } else {
            best
        }
    })
}

/// Microseconds per update.
fn per(cpu_secs: f64, updates: u64) -> f64 {
    cpu_secs * 1e6 / updates.max(1) as f64
}

/// Where each shard's home landed: `"shard 0 on A, 1 on B, 2 on C"`.
fn placement(setup: &Setup, shards: u16) -> String {
    let on = |i: u16| {
        let key = shard_stream(i, shards);
        setup
            .masters
            .iter()
            .position(|m| m.owns_key(&key))
            .map_or('?', label)
    };
    let list: Vec<String> = (0..shards).map(|i| format!("{i} on {}", on(i))).collect();
    format!("shard {}", list.join(", "))
}

pub fn markdown(setup: &Setup, runs: &[ShardRuns], s: &Settings) -> String {
    let mut r = String::new();
    let w = &mut r;
    let n = setup.masters.len();
    let letters: Vec<String> = (0..n).map(|i| label(i).to_string()).collect();
    let letters = letters.join(" / ");
    let _ = writeln!(w, "{TITLE}\n\n| | |\n|---|---|");
    let masters: Vec<String> = setup
        .masters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let slots: Vec<String> = m.slots.iter().map(|(a, b)| format!("{a}-{b}")).collect();
            format!("{} = :{} (slots {})", label(i), m.port, slots.join(","))
        })
        .collect();
    let _ = writeln!(
        w,
        "| cluster | redis-server {}, {n} masters without replicas on 127.0.0.1 (`e2e::cluster::RedisCluster`): {}; no persistence; `FLUSHALL` on every master (its own connection) before every run |",
        setup.version,
        masters.join(", ")
    );
    let placements: Vec<String> = runs
        .iter()
        .map(|r| format!("QUEUE_SHARDS={}: {}", r.shards, placement(setup, r.shards)))
        .collect();
    let split: Vec<String> = chats_per_shard(s.chats, 3)
        .iter()
        .map(u64::to_string)
        .collect();
    let _ = writeln!(
        w,
        "| shards | {}; shard 0's master also holds every bot-wide key (users, counters, send budget). The updates come from {} chats, {} per shard with 3 shards |",
        placements.join("; "),
        s.chats,
        split.join(" / ")
    );
    let _ = writeln!(
        w,
        "| services | ingress (and {WORKERS} workers end to end) with REDIS_URL = one seed node (the cluster is detected), QUEUE_SHARDS as in the row, TELEGRAM_SEND_RATE=0, WORKER_ORDERING=chat |"
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "### Ingress alone (closed loop, C = {}, {} after {}s warm-up)\n",
        s.connections,
        s.accept_desc(),
        s.warmup.as_secs_f64()
    );
    let _ = writeln!(w, "| QUEUE_SHARDS | accepted/s | p50 ms | p99 ms | non-2xx + errors | CPU µs per accepted update: ingress / Redis (all masters) | Redis CPU share {letters} |");
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let Some(a) = &r.accept else {
            let _ = writeln!(w, "| {} | failed | | | | | |", r.shards);
            continue;
        };
        let x = &a.closed;
        let redis: f64 = a.cpu_masters.iter().sum();
        let _ = writeln!(
            w,
            "| {} | {:.0} | {} | {} | {} | {:.0} / {:.1} | {} |",
            r.shards,
            x.ok_per_sec(),
            ms(x.service.pct_ms(50.0)),
            ms(x.service.pct_ms(99.0)),
            x.non_2xx + x.errors,
            per(a.cpu_ingress, x.ok),
            per(redis, x.ok),
            shares(&a.cpu_masters)
        );
    }

    let _ = writeln!(
        w,
        "\n### End to end: {} updates posted at max rate (C = {}), {WORKERS} workers, time until the fake Bot API has every reply\n",
        s.updates, s.connections
    );
    let _ = writeln!(w, "| QUEUE_SHARDS | posting: accepted/s | time to all replies s | updates/s | replies | Redis CPU µs per handled update (all masters) | Redis CPU share {letters} | CPU µs per update: ingress / workers / Redis / whole system | keys left {letters} |");
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let Some(e) = &r.e2e else {
            let _ = writeln!(w, "| {} | failed | | | | | | | |", r.shards);
            continue;
        };
        let redis: f64 = e.cpu_masters.iter().sum();
        let t = e.time_to_all.map_or_else(
            || format!("timeout ({:.0}s)", s.e2e_timeout.as_secs_f64()),
            |t| format!("{:.2}", t.as_secs_f64()),
        );
        let keys: Vec<String> = e.keys.iter().map(u64::to_string).collect();
        let _ = writeln!(
            w,
            "| {} | {:.0} | {t} | {} | {}/{} | {:.1} | {} | {:.0} / {:.0} / {:.0} / {:.0} | {} |",
            r.shards,
            e.post.ok_per_sec(),
            e.rate().map_or_else(|| "-".into(), |r| format!("{r:.0}")),
            e.replies,
            e.target,
            per(redis, e.target),
            shares(&e.cpu_masters),
            per(e.cpu_ingress, e.target),
            per(e.cpu_workers, e.target),
            per(redis, e.target),
            per(e.cpu_ingress + e.cpu_workers + redis, e.target),
            keys.join(" / ")
        );
    }
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        w,
        "\nCPU: user+system time of each process during the run (ingress alone: the closed-loop run; end to end: first POST to last reply) per accepted or handled update. The Redis figure sums the masters' processes; the share is each master's part of that sum (an idle master still spends a little on cluster gossip and its cron). Whole system = ingress + workers + every Redis node, without the bench's load generator and fake. Every process shares this machine's {nproc} cores, so the measured updates/s cannot grow with the masters here; the capacity model below says what the Redis side carries with a core per master.\n"
    );
    let _ = writeln!(w, "{}\n", capacity(runs));
    r
}

/// One line: updates/s one Redis core carries, and how three shards divide
/// the work (the busiest master saturates first).
fn capacity(runs: &[ShardRuns]) -> String {
    let e2e = |n: u16| {
        runs.iter()
            .find(|r| r.shards == n)
            .and_then(|r| r.e2e.as_ref())
            .filter(|e| e.time_to_all.is_some())
    };
    let (Some(one), Some(three)) = (e2e(1), e2e(3)) else {
        return "**Capacity model:** not available (an end-to-end run failed or timed out).".into();
    };
    let x1 = per(one.cpu_masters.iter().sum(), one.target);
    let x3 = per(three.cpu_masters.iter().sum(), three.target);
    let (i, b) = busiest(&three.cpu_masters);
    let c1 = 1e6 / x1.max(1e-9);
    let c3 = 1e6 / (x3 * b).max(1e-9);
    let even = 1e6 / (x3 / three.cpu_masters.len() as f64).max(1e-9);
    format!(
        "**Capacity model** (Redis CPU per handled update, end to end): one Redis core carries 1e6 / {x1:.1} µs = **{c1:.0} updates/s** (QUEUE_SHARDS=1); with QUEUE_SHARDS=3 an update costs {x3:.1} µs of Redis CPU in all and the busiest master ({}) does {} of it, so the cluster fills that master's core at 1e6 / ({x3:.1} µs × {b:.2}) = **{c3:.0} updates/s**, {:.2}x one Redis (an even split would give {even:.0}).",
        label(i),
        pct(b),
        c3 / c1
    )
}

/// The whole report of a `--cluster-only` run.
pub fn alone(
    s: &Settings,
    bodies: &Bodies,
    fake: &Fake,
    section: &Section,
    started: Instant,
) -> String {
    let command = std::env::var("BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let (nproc, model, memtotal, load_start) = crate::machine();
    let mut r = String::new();
    let w = &mut r;
    let _ = writeln!(w, "# Benchmark: Redis Cluster section only\n");
    if s.quick {
        let _ = writeln!(
            w,
            "> **quick run** (`--quick`: small N, short durations): for validating the benchmark; the numbers are noisy.\n"
        );
    }
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| command | `{command}` |");
    let _ = writeln!(w, "| commit | {} |", crate::git_rev());
    let _ = writeln!(
        w,
        "| machine | `nproc` = {nproc}, {model}, {memtotal} RAM; load average at start {load_start} |"
    );
    load_rows(w, s, bodies.sizes());
    let _ = writeln!(
        w,
        "| services | release binaries `target/release/{{ingress,worker}}`, RUST_LOG=info, webhook {} |\n",
        crate::WEBHOOK_URL
    );
    let _ = write!(w, "{}", section.markdown);
    let violations = fake.violations();
    if !violations.is_empty() {
        let _ = writeln!(
            w,
            "**{} Bot API call(s) violated the spec** (first: {})\n",
            violations.len(),
            violations[0]
        );
    }
    let (_, _, _, load_end) = crate::machine();
    let _ = writeln!(
        w,
        "Total bench time {:.0}s; load average at the end {load_end}. Service logs: target/e2e-logs/bench-*.log.",
        started.elapsed().as_secs_f64()
    );
    if !section.failures.is_empty() {
        let _ = writeln!(w, "\n## FAILED runs\n");
        for f in &section.failures {
            let _ = writeln!(w, "```\n{f}\n```");
        }
    }
    r
}
