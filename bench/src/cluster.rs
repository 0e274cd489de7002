//! Section 5: the services on a local 3-master Redis Cluster, with one
//! update stream (`QUEUE_SHARDS=1`) and with three (`QUEUE_SHARDS=3`, one
//! per master). The question it answers is how the Redis work divides: the
//! Redis CPU per update summed over the masters, and each master's share of
//! it. On a machine with few cores the measured updates/s cannot grow with
//! the masters (every process shares the same cores), so the report turns
//! the CPU figures into a capacity model instead.
//!
//! The same cluster serves both shard counts; between runs every master is
//! flushed over its own connection (a cluster connection would send
//! `FLUSHALL` to one node only, and the keys live on all of them).

mod report;
mod runs;
mod setup;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use e2e::harness;
use shared::keys::{Keys, DEFAULT_PREFIX};

use crate::bodies::{Bodies, FIRST_USER};
use crate::load::RunResult;
use crate::{progress, Fake, Settings};
use setup::Setup;

/// Shard counts measured, on the same cluster.
const SHARD_COUNTS: [u16; 2] = [1, 3];
/// Workers in the end-to-end runs.
const WORKERS: usize = 2;

/// The section's markdown and the runs that failed.
pub struct Section {
    pub markdown: String,
    pub failures: Vec<String>,
}

struct AcceptRun {
    closed: RunResult,
    cpu_ingress: f64,
    /// CPU seconds of each master (in `Setup::masters` order).
    cpu_masters: Vec<f64>,
}

struct E2eRun {
    post: RunResult,
    /// 2xx-answered updates: the replies waited for.
    target: u64,
    replies: u64,
    /// First POST to the last awaited reply; `None`: timed out.
    time_to_all: Option<Duration>,
    cpu_ingress: f64,
    cpu_workers: f64,
    cpu_masters: Vec<f64>,
    /// `DBSIZE` of each master once every reply is in.
    keys: Vec<u64>,
}

impl E2eRun {
    fn rate(&self) -> Option<f64> {
        self.time_to_all
            .map(|t| self.target as f64 / t.as_secs_f64().max(1e-9))
    }
}

/// Both runs for one shard count.
struct ShardRuns {
    shards: u16,
    accept: Option<AcceptRun>,
    e2e: Option<E2eRun>,
}

/// Runs the section; a missing Redis program or a failing cluster start
/// gives a section that says so, a failing run is listed in `failures`.
pub async fn section(fake: &Fake, bodies: &Arc<Bodies>, s: &Settings) -> Section {
    let mut failures = Vec::new();
    let missing: Vec<&str> = ["redis-server", "redis-cli"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if !missing.is_empty() {
        let note = format!(
            "SKIPPED: the Redis Cluster section needs {} on PATH (apt-get install redis-server)",
            missing.join(" and ")
        );
        progress(&note);
        return Section {
            markdown: report::skipped(&note),
            failures,
        };
    }
    progress("cluster: starting a local 3-master Redis Cluster");
    let setup = match Setup::start().await {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("the local Redis Cluster did not start: {e:#}");
            progress(&format!("cluster: FAILED: {msg}"));
            failures.push(msg.clone());
            return Section {
                markdown: report::skipped(&format!("NOT RUN: {msg}")),
                failures,
            };
        }
    };
    let mut runs = Vec::new();
    for shards in SHARD_COUNTS {
        let mut r = ShardRuns {
            shards,
            accept: None,
            e2e: None,
        };
        match setup.accept(fake, bodies, shards, s).await {
            Ok(a) => r.accept = Some(a),
            Err(e) => {
                progress(&format!("cluster: accept, {shards} shard(s) FAILED: {e:#}"));
                failures.push(format!("cluster accept run, QUEUE_SHARDS={shards}: {e:#}"));
            }
        }
        match setup.e2e(fake, bodies, shards, s).await {
            Ok(e) => r.e2e = Some(e),
            Err(e) => {
                progress(&format!("cluster: e2e, {shards} shard(s) FAILED: {e:#}"));
                failures.push(format!(
                    "cluster end-to-end run, QUEUE_SHARDS={shards}: {e:#}"
                ));
            }
        }
        runs.push(r);
    }
    Section {
        markdown: report::markdown(&setup, &runs, s),
        failures,
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// How many of the bench's chats fall in each of `shards` shards.
fn chats_per_shard(chats: u64, shards: u16) -> Vec<u64> {
    let keys = Keys::new(DEFAULT_PREFIX)
        .expect("default prefix")
        .laid_out(true, shards);
    let mut n = vec![0u64; usize::from(shards)];
    for k in 0..chats {
        n[usize::from(keys.shard_of_chat(FIRST_USER + k as i64))] += 1;
    }
    n
}

/// The stream key of shard `i` of `shards` on a cluster.
fn shard_stream(i: u16, shards: u16) -> String {
    Keys::new(DEFAULT_PREFIX)
        .expect("default prefix")
        .laid_out(true, shards)
        .shard(i)
        .stream()
}

/// `--cluster-only`: this section alone, with its own short report header
/// (no single `redis-server` is started).
pub async fn run_alone(s: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    for bin in ["ingress", "worker"] {
        let p = harness::profile_dir().join(bin);
        if !p.is_file() {
            bail!(
                "{} is missing: build the release binaries first (scripts/bench does)",
                p.display()
            );
        }
    }
    let bodies = Arc::new(Bodies::new(s.chats));
    let fake = Fake::start(s.fake).await?;
    let section = section(&fake, &bodies, &s).await;
    let r = report::alone(&s, &bodies, &fake, &section, started);
    print!("{r}");
    if let Some(dir) = s.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&s.out, &r).with_context(|| format!("write {}", s.out.display()))?;
    progress(&format!("report written to {}", s.out.display()));
    if !section.failures.is_empty() {
        bail!("{} run(s) failed (see the report)", section.failures.len());
    }
    Ok(())
}
