//! The markdown report: header, fake capacity, accept rate (sections 3 and
//! 4 are in `e2e_and_memory`), printed and written to `--out`. Apart from
//! the runs so the phases only measure and the report only formats.

mod e2e_and_memory;

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::accept::{AcceptKind, AcceptResult};
use crate::cli::Settings;
use crate::end_to_end::E2eResult;
use crate::env::Env;
use crate::fake::{kind_name, FakeRate};
use crate::{git_rev, machine, progress, WEBHOOK_URL};

pub(crate) fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// The header rows both reports share: the load generator, the updates
/// (`sizes`: min, mean, max bytes) and the fake Bot API.
pub(crate) fn load_rows(w: &mut String, s: &Settings, sizes: (usize, usize, usize)) {
    let (bmin, bmean, bmax) = sizes;
    let _ = writeln!(
        w,
        "| load generator | in the bench process: hyper HTTP/1.1 client, C = {} keep-alive connections, one request in flight each |",
        s.connections
    );
    let _ = writeln!(
        w,
        "| updates | private-chat commands (/start 50%, /help 30%, /stats 20%) from {} users, unique `update_id`s, {bmin}-{bmax} bytes (mean {bmean}) |",
        s.chats
    );
    let _ = writeln!(
        w,
        "| fake Bot API | {}, in the bench process |",
        kind_name(s.fake)
    );
}

pub(crate) fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

/// What a run gathered for its report: the phases' results and failures,
/// and the context taken before them (the command, the machine with its
/// load average at the start, the update bodies' sizes).
pub(crate) struct Outcome {
    pub(crate) started: Instant,
    pub(crate) command: String,
    pub(crate) nproc: usize,
    pub(crate) model: String,
    pub(crate) memtotal: String,
    pub(crate) load_start: String,
    pub(crate) bmin: usize,
    pub(crate) bmean: usize,
    pub(crate) bmax: usize,
    pub(crate) fake_rates: Vec<FakeRate>,
    pub(crate) accepts: Vec<AcceptResult>,
    pub(crate) e2es: Vec<E2eResult>,
    pub(crate) cluster: Option<String>,
    pub(crate) failures: Vec<String>,
}

/// Renders the report, prints it and writes it to `s.out`; an error once
/// it is out if any run failed.
pub(crate) fn write(s: &Settings, env: &Env, o: Outcome) -> anyhow::Result<()> {
    let Outcome {
        started,
        command,
        nproc,
        model,
        memtotal,
        load_start,
        bmin,
        bmean,
        bmax,
        fake_rates,
        accepts,
        e2es,
        cluster,
        failures,
    } = o;
    let mut r = String::new();
    let w = &mut r;
    let _ = writeln!(w, "# Benchmark: ingress accept, end to end, memory\n");
    if s.quick {
        let _ = writeln!(
            w,
            "> **quick run** (`--quick`: small N, short durations): for validating the benchmark; the numbers are noisy.\n"
        );
    }
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| command | `{command}` |");
    let _ = writeln!(w, "| commit | {} |", git_rev());
    let _ = writeln!(
        w,
        "| machine | `nproc` = {nproc}, {model}, {memtotal} RAM; load average at start {load_start} |"
    );
    let _ = writeln!(
        w,
        "| redis | redis-server {} on 127.0.0.1:{}, `--save \"\" --appendonly no` (no persistence), otherwise default config; `FLUSHALL` before every run |",
        env.redis_version,
        env.redis.port()
    );
    load_rows(w, s, (bmin, bmean, bmax));
    let _ = writeln!(
        w,
        "| services | release binaries `target/release/{{ingress,worker}}`, RUST_LOG=info, webhook {WEBHOOK_URL}, TELEGRAM_SEND_RATE=0, WORKER_CONCURRENCY default |"
    );
    let _ = writeln!(w);

    if !fake_rates.is_empty() {
        let _ = writeln!(
            w,
            "## Fake Bot API capacity (sendMessage blasted directly, C = {}, {}s)\n",
            s.connections, s.fake_secs
        );
        let _ = writeln!(
            w,
            "| fake | sendMessage/s | p50 ms | p99 ms | non-2xx | errors | bench CPU |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|");
        for f in &fake_rates {
            let x = &f.result;
            let _ = writeln!(
                w,
                "| {} | {:.0} | {} | {} | {} | {} | {} |",
                kind_name(f.kind),
                x.ok_per_sec(),
                ms(x.service.pct_ms(50.0)),
                ms(x.service.pct_ms(99.0)),
                x.non_2xx,
                x.errors,
                pct(f.cpu_share)
            );
        }
        let best_e2e = e2es.iter().filter_map(E2eResult::rate).fold(0.0, f64::max);
        if let Some(used) = fake_rates.iter().find(|f| f.kind == s.fake) {
            if best_e2e > 0.0 {
                let head = used.result.ok_per_sec() / best_e2e;
                let _ = writeln!(
                    w,
                    "\nThe fake in use answers {:.1}x the best end-to-end rate below{}.",
                    head,
                    if head < 2.0 {
                        " - **too close: the fake may be limiting the end-to-end numbers**"
                    } else {
                        " (not the bottleneck)"
                    }
                );
            }
        }
        let _ = writeln!(w);
    }

    if !accepts.is_empty() {
        let _ = writeln!(
            w,
            "## 1-2. Accept rate: ingress vs baselines (closed loop, C = {}, {} after {}s warm-up)\n",
            s.connections,
            s.accept_desc(),
            s.warmup.as_secs_f64()
        );
        let _ = writeln!(w, "| target | accepted/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | errors | CPU target / redis / bench | CPU µs per update: target / redis |");
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for a in &accepts {
            let x = &a.closed;
            let _ = writeln!(
                w,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {:.0} / {:.0} |",
                a.kind.name(),
                x.ok_per_sec(),
                ms(x.service.pct_ms(50.0)),
                ms(x.service.pct_ms(90.0)),
                ms(x.service.pct_ms(99.0)),
                ms(x.service.max_ms()),
                x.non_2xx,
                x.errors,
                pct(a.cpu_target),
                pct(a.cpu_redis),
                pct(a.cpu_bench),
                a.cpu_target / x.ok_per_sec().max(1e-9) * 1e6,
                a.cpu_redis / x.ok_per_sec().max(1e-9) * 1e6,
            );
        }
        let _ = writeln!(
            w,
            "\nCPU: user+system time as a share of one core during the run (the machine has {nproc}); per update it is the cost that stays meaningful on a busy machine."
        );
        let get = |k: AcceptKind| accepts.iter().find(|a| a.kind == k);
        if let Some(i) = get(AcceptKind::Ingress) {
            let _ = writeln!(w);
            for b in [AcceptKind::Bare, AcceptKind::Xadd] {
                if let Some(b) = get(b) {
                    let _ = writeln!(
                        w,
                        "- ingress / {}: throughput {}, p50 {}, p99 {}",
                        b.kind.name(),
                        ratio(i.closed.ok_per_sec(), b.closed.ok_per_sec()),
                        ratio(i.closed.service.pct_ms(50.0), b.closed.service.pct_ms(50.0)),
                        ratio(i.closed.service.pct_ms(99.0), b.closed.service.pct_ms(99.0)),
                    );
                }
            }
        }
        let _ = writeln!(
            w,
            "\n### Fixed rate: {} updates/s for {}s (open loop, latency from each request's due time)\n",
            s.rate, s.rate_secs
        );
        let _ = writeln!(w, "| target | achieved/s | p50 ms | p90 ms | p99 ms | max ms | p99 service time ms | non-2xx | errors |");
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for a in &accepts {
            let x = &a.open;
            let _ = writeln!(
                w,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                a.kind.name(),
                x.ok_per_sec(),
                ms(x.corrected.pct_ms(50.0)),
                ms(x.corrected.pct_ms(90.0)),
                ms(x.corrected.pct_ms(99.0)),
                ms(x.corrected.max_ms()),
                ms(x.service.pct_ms(99.0)),
                x.non_2xx,
                x.errors
            );
        }
        let _ = writeln!(
            w,
            "\nLatency from the due time includes up to ~1 ms of timer granularity in the generator; the service time (write to answer) does not, but hides queueing if the server falls behind."
        );
        let _ = writeln!(w);
    }

    e2e_and_memory::sections(w, s, nproc, e2es, accepts);

    if let Some(c) = &cluster {
        let _ = write!(w, "{c}");
    }

    let violations = env.fake.violations();
    if !violations.is_empty() {
        let _ = writeln!(
            w,
            "**{} Bot API call(s) violated the spec** (first: {})\n",
            violations.len(),
            violations[0]
        );
    }
    let _ = writeln!(
        w,
        "All processes (services, redis-server, the bench's load generator and fake) share the machine's {nproc} cores: compare ratios rather than absolute numbers across machines.\n"
    );
    let (_, _, _, load_end) = machine();
    let _ = writeln!(
        w,
        "Total bench time {:.0}s; load average at the end {load_end}. Service logs: target/e2e-logs/bench-*.log.",
        started.elapsed().as_secs_f64()
    );

    if !failures.is_empty() {
        let _ = writeln!(w, "\n## FAILED runs\n");
        for f in &failures {
            let _ = writeln!(w, "```\n{f}\n```");
        }
    }
    print!("{r}");
    if let Some(dir) = s.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&s.out, &r).with_context(|| format!("write {}", s.out.display()))?;
    progress(&format!("report written to {}", s.out.display()));
    if !failures.is_empty() {
        bail!("{} run(s) failed (see the report)", failures.len());
    }
    Ok(())
}
