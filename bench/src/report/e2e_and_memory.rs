//! Sections 3 and 4 of the report: end to end (with the Redis commands per
//! update) and memory - the longest part of the report, so a file of its own.

use std::fmt::Write as _;

use super::{mib, ratio};
use crate::accept::AcceptResult;
use crate::cli::Settings;
use crate::end_to_end::{E2eKind, E2eResult};

/// Section 3 with each end-to-end run, section 4 with every process's
/// memory (only the accept runs' when there was no end-to-end run).
pub(super) fn sections(
    w: &mut String,
    s: &Settings,
    nproc: usize,
    e2es: Vec<E2eResult>,
    accepts: Vec<AcceptResult>,
) {
    if !e2es.is_empty() {
        let _ = writeln!(
            w,
            "## 3. End to end: {} updates posted at max rate (C = {}), time until the fake Bot API has the replies\n",
            s.updates, s.connections
        );
        let _ = writeln!(w, "| run | posting: accepted/s | non-2xx+errors | time to all replies s | updates/s | replies | CPU µs per update: front / workers / redis / bench | system CPU µs per update (front + workers + redis) |");
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for e in &e2es {
            let t = e.time_to_all.map_or_else(
                || format!("timeout ({:.0}s)", s.e2e_timeout.as_secs_f64()),
                |t| format!("{:.2}", t.as_secs_f64()),
            );
            let per = |cpu: f64| cpu * 1e6 / (e.target.max(1) as f64);
            let _ = writeln!(
                w,
                "| {} | {:.0} | {} | {} | {} | {}/{} | {:.0} / {:.0} / {:.0} / {:.0} | {:.0} |",
                e.kind.label(),
                e.post.ok_per_sec(),
                e.post.non_2xx + e.post.errors,
                t,
                e.rate().map_or_else(|| "-".into(), |r| format!("{r:.0}")),
                e.replies,
                e.target,
                per(e.cpu_front),
                per(e.cpu_workers),
                per(e.cpu_redis),
                per(e.cpu_bench),
                per(e.cpu_front + e.cpu_workers + e.cpu_redis),
            );
        }
        let rate_of = |workers: usize, ordering: &str| {
            e2es.iter()
                .find(|e| matches!(&e.kind, E2eKind::Queue { workers: w, ordering: o } if *w == workers && *o == ordering))
                .and_then(E2eResult::rate)
        };
        let _ = writeln!(w);
        if let Some(one) = rate_of(1, "chat") {
            for &n in s.workers.iter().filter(|&&n| n > 1) {
                if let Some(r) = rate_of(n, "chat") {
                    let _ = writeln!(
                        w,
                        "- scaling {n} workers / 1 worker: {} (ideal {n}.00 on a machine with enough cores; this one has {nproc})",
                        ratio(r, one)
                    );
                }
            }
            if let Some(none) = rate_of(1, "none") {
                let _ = writeln!(
                    w,
                    "- per-chat ordering cost (1 worker): ordering=none / ordering=chat = {} ({:+.0}% throughput without ordering)",
                    ratio(none, one),
                    (none / one - 1.0) * 100.0
                );
            }
            let baseline = |kind: E2eKind| {
                e2es.iter()
                    .find(|e| std::mem::discriminant(&e.kind) == std::mem::discriminant(&kind))
                    .and_then(E2eResult::rate)
            };
            let best = s
                .workers
                .iter()
                .filter_map(|&n| rate_of(n, "chat"))
                .fold(one, f64::max);
            let floor = baseline(E2eKind::Floor);
            if let Some(inline) = baseline(E2eKind::Inline) {
                let _ = writeln!(
                    w,
                    "- queue (best worker count) / inline baseline: {}",
                    ratio(best, inline)
                );
                if let Some(floor) = floor {
                    let _ = writeln!(
                        w,
                        "- durable floor / inline baseline: {} (what storing before answering and replying from another process costs, with nothing else)",
                        ratio(floor, inline)
                    );
                }
            }
            if let Some(floor) = floor {
                let _ = writeln!(
                    w,
                    "- queue (best worker count) / durable floor: {} (what dedupe, per-chat order, the directory, kept replies and the budget cost)",
                    ratio(best, floor)
                );
            }
        }
        let _ = writeln!(
            w,
            "\n| run (queue) | Redis memory retained per handled update | keys retained per handled update |\n|---|---:|---:|"
        );
        for e in e2es
            .iter()
            .filter(|e| matches!(e.kind, E2eKind::Queue { .. }))
        {
            let n = e.target.max(1) as f64;
            let _ = writeln!(
                w,
                "| {} | {:.1} B | {:.3} |",
                e.kind.label(),
                (e.redis_after.0 as f64 - e.redis_before.0 as f64) / n,
                (e.redis_after.1 as f64 - e.redis_before.1 as f64) / n,
            );
        }
        let _ = writeln!(
            w,
            "\nTime is measured from the first POST to the last awaited sendMessage; CPU is the user+system time of the processes during that window divided by the updates (front = ingress or the baseline server; workers = the workers summed, or the floor's consumer; the bench process runs the load generator and the fake)."
        );
        let _ = writeln!(w);

        let _ = writeln!(
            w,
            "### Redis commands per update (`INFO commandstats` during the run)\n"
        );
        let queue_runs: Vec<&E2eResult> = e2es
            .iter()
            .filter(|e| matches!(e.kind, E2eKind::Queue { .. }))
            .collect();
        let mut names: Vec<&str> = Vec::new();
        for e in &queue_runs {
            for c in &e.redis_cmds {
                if !names.contains(&c.name.as_str()) {
                    names.push(&c.name);
                }
            }
        }
        let _ = write!(w, "| command |");
        for e in &queue_runs {
            let _ = write!(w, " {} |", e.kind.label());
        }
        let _ = write!(w, "\n|---|");
        for _ in &queue_runs {
            let _ = write!(w, "---:|");
        }
        let _ = writeln!(w);
        let mut totals = vec![(0u64, 0u64); queue_runs.len()];
        for name in &names {
            let _ = write!(w, "| {name} |");
            for (i, e) in queue_runs.iter().enumerate() {
                let n = e.target.max(1) as f64;
                match e.redis_cmds.iter().find(|c| c.name == *name) {
                    Some(c) => {
                        if !matches!(c.name.as_str(), "evalsha" | "eval") {
                            totals[i].0 += c.calls;
                        }
                        totals[i].1 += c.usec;
                        let _ = write!(
                            w,
                            " {:.2} calls, {:.1} µs |",
                            c.calls as f64 / n,
                            c.usec as f64 / n
                        );
                    }
                    None => {
                        let _ = write!(w, " - |");
                    }
                }
            }
            let _ = writeln!(w);
        }
        let _ = write!(w, "| **commands executed (incl. inside scripts)** |");
        for (i, e) in queue_runs.iter().enumerate() {
            let _ = write!(w, " {:.1} |", totals[i].0 as f64 / e.target.max(1) as f64);
        }
        let _ = writeln!(
            w,
            "\n\nPer update: calls and Redis-side execution time. Commands run by a script appear on their own line and again inside `evalsha`'s time, so the time column does not add up; the Redis process's own CPU per update is in the table above.\n"
        );

        let _ = writeln!(w, "## 4. Memory (MiB)\n");
        let _ = writeln!(w, "| process | run | idle VmRSS | idle VmHWM | under load: max VmRSS (50 ms samples) | VmHWM after load |");
        let _ = writeln!(w, "|---|---|---:|---:|---:|---:|");
        for e in &e2es {
            let front = match e.kind {
                E2eKind::Queue { .. } => "ingress",
                E2eKind::Floor => "baseline-xadd",
                E2eKind::Inline => "baseline-inline",
            };
            let _ = writeln!(
                w,
                "| {front} | {} | {} | {} | {} | {} |",
                e.kind.label(),
                mib(e.front_idle.rss_kb),
                mib(e.front_idle.hwm_kb),
                mib(e.front_peak_rss),
                mib(e.front_after.hwm_kb)
            );
            if !e.worker_idle.is_empty() {
                let max = |v: &mut dyn Iterator<Item = u64>| v.max().unwrap_or(0);
                let n = e.worker_idle.len();
                let _ = writeln!(
                    w,
                    "| worker{} | {} | {} | {} | {} | {} |",
                    if n > 1 {
                        " (largest of the workers)"
                    } else {
                        ""
                    },
                    e.kind.label(),
                    mib(max(&mut e.worker_idle.iter().map(|m| m.rss_kb))),
                    mib(max(&mut e.worker_idle.iter().map(|m| m.hwm_kb))),
                    mib(max(&mut e.worker_peak_rss.iter().copied())),
                    mib(max(&mut e.worker_after.iter().map(|m| m.hwm_kb)))
                );
            }
        }
        for a in &accepts {
            let _ = writeln!(
                w,
                "| {} | accept runs (max rate + fixed rate) | {} | {} | - | {} |",
                a.kind.name(),
                mib(a.idle.rss_kb),
                mib(a.idle.hwm_kb),
                mib(a.after.hwm_kb)
            );
        }
        let _ = writeln!(w);
    } else if !accepts.is_empty() {
        let _ = writeln!(w, "## 4. Memory (MiB)\n");
        let _ = writeln!(
            w,
            "| process | idle VmRSS | idle VmHWM | VmHWM after the accept runs |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|");
        for a in &accepts {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} |",
                a.kind.name(),
                mib(a.idle.rss_kb),
                mib(a.idle.hwm_kb),
                mib(a.after.hwm_kb)
            );
        }
        let _ = writeln!(w);
    }
}
