//! Phases 3 and 4: end to end - updates posted until the fake has every
//! reply, with each worker count, without ordering and the inline
//! baseline - and the memory, CPU and Redis commands each run cost.

use std::time::{Duration, Instant};

use anyhow::bail;
use e2e::harness::{self, Service};

use crate::cli::Settings;
use crate::env::{CmdStat, Env};
use crate::load::{self, Mode, RunResult};
use crate::procfs::{cpu_secs, cpu_total, mem, Mem, RssSampler};
use crate::progress;

#[derive(Clone)]
pub(crate) enum E2eKind {
    Queue {
        workers: usize,
        ordering: &'static str,
    },
    /// `baseline-xadd` in front, `baseline-consumer` behind: the floor of a
    /// durable design (see `baselines`).
    Floor,
    Inline,
}

impl E2eKind {
    pub(crate) fn label(&self) -> String {
        match self {
            E2eKind::Queue { workers, ordering } => {
                format!(
                    "ingress + {workers} worker{} (ordering={ordering})",
                    if *workers == 1 { "" } else { "s" }
                )
            }
            E2eKind::Floor => "baseline-floor (XADD; XREADGROUP, reply, XACK+XDEL)".into(),
            E2eKind::Inline => "baseline-inline (no queue)".into(),
        }
    }
}

pub(crate) struct E2eResult {
    pub(crate) kind: E2eKind,
    /// Redis commands executed during the run (commands run by scripts are
    /// counted both on their own and inside the script's time).
    pub(crate) redis_cmds: Vec<CmdStat>,
    pub(crate) post: RunResult,
    /// 2xx-answered updates, i.e. the replies waited for.
    pub(crate) target: u64,
    pub(crate) replies: u64,
    /// Start of posting to the last awaited reply; `None`: timed out.
    pub(crate) time_to_all: Option<Duration>,
    pub(crate) front_idle: Mem,
    pub(crate) front_peak_rss: u64,
    pub(crate) front_after: Mem,
    pub(crate) worker_idle: Vec<Mem>,
    pub(crate) worker_peak_rss: Vec<u64>,
    pub(crate) worker_after: Vec<Mem>,
    /// CPU seconds spent during the run.
    pub(crate) cpu_front: f64,
    pub(crate) cpu_workers: f64,
    pub(crate) cpu_redis: f64,
    pub(crate) cpu_bench: f64,
    /// Redis `used_memory` and key count before posting and once every
    /// reply is in: what handled updates leave behind (dedupe marks, user
    /// records, stream remnants).
    pub(crate) redis_before: (u64, u64),
    pub(crate) redis_after: (u64, u64),
}

impl E2eResult {
    pub(crate) fn rate(&self) -> Option<f64> {
        self.time_to_all
            .map(|t| self.target as f64 / t.as_secs_f64().max(1e-9))
    }
}

pub(crate) async fn e2e_run(env: &Env, kind: E2eKind, s: &Settings) -> anyhow::Result<E2eResult> {
    env.flush().await?;
    env.fake.reset();
    let label = kind.label();
    progress(&format!("e2e: {label}: starting"));
    let (mut front, port) = match &kind {
        E2eKind::Queue { .. } => env.start_ingress().await?,
        E2eKind::Floor => {
            let url = env.redis.url();
            env.start_baseline(&["baseline-xadd", "--redis-url", &url])
                .await?
        }
        E2eKind::Inline => {
            let api = env.fake.url();
            env.start_baseline(&["baseline-inline", "--api-url", &api])
                .await?
        }
    };
    let mut workers = Vec::new();
    if let E2eKind::Queue {
        workers: n,
        ordering,
    } = &kind
    {
        let wenv = env.worker_env(ordering);
        for _ in 0..*n {
            workers.push(Service::spawn_owned("worker", &[], &wenv));
        }
        for w in &workers {
            if !w
                .wait_for_log("worker consuming", Duration::from_secs(30))
                .await
            {
                bail!("a worker did not start consuming\n{}", w.logs_tail());
            }
        }
        let url = env.redis.url();
        let joined = harness::eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move { e2e::stack::blocked_readers(&url).await >= *n }
        })
        .await;
        if !joined {
            progress("note: not every worker is blocked in XREADGROUP yet; going on");
        }
    }
    if let E2eKind::Floor = &kind {
        let (api, url) = (env.fake.url(), env.redis.url());
        let consumer = Service::spawn(
            "bench",
            &["baseline-consumer", "--api-url", &api, "--redis-url", &url],
            &[],
        );
        if !consumer
            .wait_for_log("floor consumer reading", Duration::from_secs(30))
            .await
        {
            bail!("the floor consumer did not start\n{}", consumer.logs_tail());
        }
        workers.push(consumer);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let front_pid = front.pid();
    let worker_pids: Vec<u32> = workers.iter().map(Service::pid).collect();
    let front_idle = mem(front_pid).unwrap_or_default();
    let worker_idle: Vec<Mem> = worker_pids
        .iter()
        .map(|&p| mem(p).unwrap_or_default())
        .collect();
    let mut pids = vec![front_pid];
    pids.extend(&worker_pids);
    let sampler = RssSampler::start(pids);
    let me = std::process::id();
    let c0 = (
        cpu_secs(front_pid).unwrap_or(0.0),
        cpu_total(&worker_pids),
        cpu_secs(env.redis_pid).unwrap_or(0.0),
        cpu_secs(me).unwrap_or(0.0),
    );

    env.reset_stats().await?;
    let redis_before = env.footprint().await?;
    progress(&format!("e2e: {label}: posting {} updates", s.updates));
    let t0 = Instant::now();
    let post = load::run(&env.target(port), s.connections, Mode::Count(s.updates)).await;
    let target = post.ok;
    progress(&format!(
        "e2e: {label}: posted in {:.2}s ({} accepted); waiting for {target} replies",
        post.elapsed.as_secs_f64(),
        post.ok
    ));
    let deadline = t0 + s.e2e_timeout;
    let poll = env.fake.poll_interval();
    let time_to_all = loop {
        if env.fake.sent() >= target {
            break Some(t0.elapsed());
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(poll).await;
    };
    let c1 = (
        cpu_secs(front_pid).unwrap_or(0.0),
        cpu_total(&worker_pids),
        cpu_secs(env.redis_pid).unwrap_or(0.0),
        cpu_secs(me).unwrap_or(0.0),
    );
    let peaks = sampler.finish().await;
    let redis_cmds = env.command_stats().await.unwrap_or_default();
    // Late or duplicate replies would show up here.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let replies = env.fake.sent();
    let redis_after = env.footprint().await?;
    let front_after = mem(front_pid).unwrap_or_default();
    let worker_after: Vec<Mem> = worker_pids
        .iter()
        .map(|&p| mem(p).unwrap_or_default())
        .collect();
    for w in workers.iter_mut() {
        if let Some(st) = w.has_exited() {
            bail!("a worker exited during the run ({st})\n{}", w.logs_tail());
        }
    }
    if time_to_all.is_none() {
        progress(&format!(
            "e2e: {label}: TIMED OUT with {replies} of {target} replies"
        ));
    }
    for mut w in workers {
        w.kill().await;
    }
    front.kill().await;
    Ok(E2eResult {
        kind,
        redis_cmds,
        target,
        replies,
        time_to_all,
        front_idle,
        front_peak_rss: peaks.first().copied().unwrap_or(0),
        front_after,
        worker_idle,
        worker_peak_rss: peaks.get(1..).map(<[u64]>::to_vec).unwrap_or_default(),
        worker_after,
        cpu_front: c1.0 - c0.0,
        cpu_workers: c1.1 - c0.1,
        cpu_redis: c1.2 - c0.2,
        cpu_bench: c1.3 - c0.3,
        redis_before,
        redis_after,
        post,
    })
}
