//! Phases 1 and 2: the accept rate of the ingress and of the two baselines
//! (bare 200, one XADD), closed loop then fixed rate, with CPU and memory.

use std::time::Duration;

use anyhow::bail;

use crate::cli::Settings;
use crate::env::Env;
use crate::load::{self, Mode, RunResult};
use crate::procfs::{cpu_secs, mem, Mem};
use crate::progress;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptKind {
    Ingress,
    Bare,
    Xadd,
}

impl AcceptKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            AcceptKind::Ingress => "ingress",
            AcceptKind::Bare => "baseline-bare",
            AcceptKind::Xadd => "baseline-xadd",
        }
    }
}

pub(crate) struct AcceptResult {
    pub(crate) kind: AcceptKind,
    pub(crate) closed: RunResult,
    pub(crate) open: RunResult,
    pub(crate) idle: Mem,
    pub(crate) after: Mem,
    /// CPU share (1.0 = one core) during the closed-loop run.
    pub(crate) cpu_target: f64,
    pub(crate) cpu_redis: f64,
    pub(crate) cpu_bench: f64,
}

pub(crate) async fn accept(
    env: &Env,
    kind: AcceptKind,
    s: &Settings,
) -> anyhow::Result<AcceptResult> {
    env.flush().await?;
    let redis_url = env.redis.url();
    let (mut svc, port) = match kind {
        AcceptKind::Ingress => env.start_ingress().await?,
        AcceptKind::Bare => env.start_baseline(&["baseline-bare"]).await?,
        AcceptKind::Xadd => {
            env.start_baseline(&["baseline-xadd", "--redis-url", &redis_url])
                .await?
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = svc.pid();
    let idle = mem(pid).unwrap_or_default();
    let target = env.target(port);
    progress(&format!("accept: {} warm-up", kind.name()));
    load::run(&target, s.connections, Mode::For(s.warmup)).await;
    let me = std::process::id();
    let c0 = (
        cpu_secs(pid).unwrap_or(0.0),
        cpu_secs(env.redis_pid).unwrap_or(0.0),
        cpu_secs(me).unwrap_or(0.0),
    );
    progress(&format!(
        "accept: {} closed loop, C={}, {}",
        kind.name(),
        s.connections,
        s.accept_desc()
    ));
    let closed = load::run(&target, s.connections, s.accept).await;
    let c1 = (
        cpu_secs(pid).unwrap_or(0.0),
        cpu_secs(env.redis_pid).unwrap_or(0.0),
        cpu_secs(me).unwrap_or(0.0),
    );
    progress(&format!(
        "accept: {} open loop, {}/s for {}s",
        kind.name(),
        s.rate,
        s.rate_secs
    ));
    let open = load::run(
        &target,
        s.connections,
        Mode::Rate {
            rate: s.rate,
            secs: s.rate_secs,
        },
    )
    .await;
    let after = mem(pid).unwrap_or_default();
    if let Some(st) = svc.has_exited() {
        bail!(
            "{} exited during the run ({st})\n{}",
            kind.name(),
            svc.logs_tail()
        );
    }
    svc.kill().await;
    let secs = closed.elapsed.as_secs_f64().max(1e-9);
    Ok(AcceptResult {
        kind,
        idle,
        after,
        cpu_target: (c1.0 - c0.0) / secs,
        cpu_redis: (c1.1 - c0.1) / secs,
        cpu_bench: (c1.2 - c0.2) / secs,
        closed,
        open,
    })
}
