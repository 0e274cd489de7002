//! `bench`: ingress accept rate against baselines, end-to-end throughput
//! with 1/2/4 workers, and memory, in one invocation, with the real release
//! binaries and a real `redis-server`. Run through `scripts/bench` (which
//! builds the release binaries first); `--quick` for a short validation run.
//!
//! Results: a markdown report on stdout and in `target/bench/results.md`;
//! progress goes to stderr.
//!
//! Layout: `cli` (options and settings), `env` (redis-server, the fake,
//! starting services), `fake` (the fake Bot API and its capacity probe),
//! `accept` and `end_to_end` (the phases), `cluster` (section 5),
//! `report` (the markdown); `load`, `bodies`, `procfs`, `baselines` and
//! `lean_fake` are the tools they share. Here: `main`, the run's flow, and
//! what the modules share (webhook settings, progress lines, the machine and
//! commit, starting an ingress).

mod accept;
mod baselines;
mod bodies;
mod cli;
mod cluster;
mod end_to_end;
mod env;
mod fake;
mod lean_fake;
mod load;
mod procfs;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use e2e::harness::{self, free_port, RedisServer, Service};
use e2e::stack::try_wait_ready;

use crate::accept::{accept, AcceptKind};
use crate::bodies::Bodies;
use crate::cli::{Cli, Cmd, FakeKind, Phase, Settings};
use crate::end_to_end::{e2e_run, E2eKind};
use crate::env::{redis_info, Env};
use crate::fake::{probe_fake, Fake};
use crate::report::Outcome;

const WEBHOOK_URL: &str = "https://bench.example/telegram/webhook/";
const WEBHOOK_SECRET: &str = "bench-secret_0123456789";
const WEBAPP_URL: &str = "https://bench.example/app/";
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
const WEBHOOK_PATH: &str = "/telegram/webhook/";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::BaselineBare { port }) => baselines::bare(port).await,
        Some(Cmd::BaselineXadd { port, redis_url }) => baselines::xadd(port, &redis_url).await,
        Some(Cmd::BaselineInline { port, api_url }) => {
            baselines::inline(port, &api_url, e2e::TOKEN).await
        }
        Some(Cmd::BaselineConsumer { api_url, redis_url }) => {
            baselines::consumer(&api_url, &redis_url, e2e::TOKEN).await
        }
        Some(Cmd::SampleUpdate) => {
            let b = Bodies::new(10);
            println!("{}", String::from_utf8_lossy(&b.body(0)));
            let (min, mean, max) = b.sizes();
            println!("sizes: min {min} B, mean {mean} B, max {max} B");
            Ok(())
        }
        None => {
            let s = Settings::from(cli.opts);
            if s.phases == [Phase::Cluster] {
                cluster::run_alone(s).await
            } else {
                run(s).await
            }
        }
    }
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

fn machine() -> (usize, String, String, String) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
        );
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    (nproc, model, mem, load)
}

fn git_rev() -> String {
    let root = harness::target_dir()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let out = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match out(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = out(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{rev}{}", if dirty { " (uncommitted changes)" } else { "" })
        }
        None => "unknown".into(),
    }
}

async fn run(s: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let command = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
        let args: Vec<String> = std::env::args().collect();
        args.join(" ")
    });
    let (nproc, model, memtotal, load_start) = machine();
    let bodies = Arc::new(Bodies::new(s.chats));
    let (bmin, bmean, bmax) = bodies.sizes();

    for bin in ["ingress", "worker", "bench"] {
        let p = harness::profile_dir().join(bin);
        if !p.is_file() {
            bail!(
                "{} is missing: build the release binaries first (scripts/bench does)",
                p.display()
            );
        }
    }
    let mut failures: Vec<String> = Vec::new();
    progress("starting redis-server");
    let Some(redis) = RedisServer::start().await else {
        bail!("redis-server is not installed (apt-get install redis-server)");
    };
    let (redis_pid, redis_version) = redis_info(&redis).await?;

    let mut fake_rates = Vec::new();
    if s.phases.contains(&Phase::Fake) {
        for kind in [FakeKind::Lean, FakeKind::Spec] {
            progress(&format!("fake capacity: {kind:?}"));
            fake_rates.push(probe_fake(kind, &s).await?);
        }
    }

    let fake = Fake::start(s.fake).await?;
    let env = Env {
        redis,
        redis_pid,
        redis_version,
        fake,
        bodies,
    };

    let mut accepts = Vec::new();
    if s.phases.contains(&Phase::Accept) {
        for kind in [AcceptKind::Ingress, AcceptKind::Bare, AcceptKind::Xadd] {
            match accept(&env, kind, &s).await {
                Ok(a) => accepts.push(a),
                Err(e) => {
                    progress(&format!("accept: {} FAILED: {e:#}", kind.name()));
                    failures.push(format!("accept run against {}: {e:#}", kind.name()));
                }
            }
        }
    }

    let mut e2es = Vec::new();
    if s.phases.contains(&Phase::E2e) {
        let mut kinds: Vec<E2eKind> = s
            .workers
            .iter()
            .map(|&w| E2eKind::Queue {
                workers: w.max(1),
                ordering: "chat",
            })
            .collect();
        kinds.push(E2eKind::Queue {
            workers: 1,
            ordering: "none",
        });
        kinds.push(E2eKind::Floor);
        kinds.push(E2eKind::Inline);
        for k in kinds {
            let label = k.label();
            match e2e_run(&env, k, &s).await {
                Ok(e) => e2es.push(e),
                Err(e) => {
                    progress(&format!("e2e: {label} FAILED: {e:#}"));
                    failures.push(format!("end-to-end run {label}: {e:#}"));
                }
            }
        }
    }

    let cluster = if s.phases.contains(&Phase::Cluster) {
        let c = cluster::section(&env.fake, &env.bodies, &s).await;
        failures.extend(c.failures);
        Some(c.markdown)
    } else {
        None
    };

    report::write(
        &s,
        &env,
        Outcome {
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
        },
    )
}

/// Starts an ingress with the environment `env` gives for a port, waits
/// until it is ready and has finished the webhook registration (so idle
/// memory is measured after start-up); another port if the first was
/// taken meanwhile.
pub(crate) async fn start_ingress_with(
    env: impl Fn(u16) -> Vec<(String, String)>,
) -> anyhow::Result<(Service, u16)> {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let mut svc = Service::spawn_owned("ingress", &[], &env(port));
        if let Err(e) = try_wait_ready(&mut svc, port).await {
            last = e;
            continue;
        }
        if !svc
            .wait_for_log(
                "Telegram bot configured via webhook",
                Duration::from_secs(30),
            )
            .await
        {
            bail!(
                "the ingress did not finish its webhook setup\n{}",
                svc.logs_tail()
            );
        }
        return Ok((svc, port));
    }
    bail!("the ingress did not start: {last}")
}
