//! `bench`: ingress accept rate against baselines, end-to-end throughput
//! with 1/2/4 workers, and memory, in one invocation, with the real release
//! binaries and a real `redis-server`. Run through `scripts/bench` (which
//! builds the release binaries first); `--quick` for a short validation run.
//!
//! Results: a markdown report on stdout and in `target/bench/results.md`;
//! progress goes to stderr.

mod baselines;
mod bodies;
mod cluster;
mod lean_fake;
mod load;
mod procfs;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use e2e::harness::{self, free_port, RedisServer, Service};
use e2e::stack::try_wait_ready;
use e2e::FakeBotApi;

use crate::bodies::Bodies;
use crate::lean_fake::LeanFake;
use crate::load::{Mode, RunResult, Target};
use crate::procfs::{cpu_secs, cpu_total, mem, Mem, RssSampler};

const WEBHOOK_URL: &str = "https://bench.example/telegram/webhook/";
const WEBHOOK_SECRET: &str = "bench-secret_0123456789";
const WEBAPP_URL: &str = "https://bench.example/app/";
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
const WEBHOOK_PATH: &str = "/telegram/webhook/";

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Ingress accept rate vs baselines, end-to-end throughput, RSS (see scripts/bench)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand)]
enum Cmd {
    /// Baseline server: reads the body, answers 200.
    BaselineBare {
        #[arg(long)]
        port: u16,
    },
    /// Baseline server: one XADD of the body, then 200.
    BaselineXadd {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        redis_url: String,
    },
    /// Baseline server: 200, and a spawned sendMessage to the Bot API.
    BaselineInline {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        api_url: String,
    },
    /// Prints one generated update body and the body sizes.
    SampleUpdate,
}

#[derive(Args, Clone)]
struct Opts {
    /// Small N and short durations, for validating the benchmark itself.
    #[arg(long)]
    quick: bool,
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Closed-loop accept run length per target, seconds [10; quick 2].
    #[arg(long)]
    duration: Option<f64>,
    /// Closed-loop accept run: this many requests instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Warm-up before each accept run, seconds [2; quick 0.5].
    #[arg(long)]
    warmup: Option<f64>,
    /// Open-loop (fixed-rate) run: updates per second.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Open-loop run length per target, seconds [10; quick 2].
    #[arg(long)]
    rate_duration: Option<f64>,
    /// End-to-end: updates per run [20000; quick 2000].
    #[arg(long)]
    updates: Option<u64>,
    /// End-to-end: worker counts to run with per-chat ordering.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// Distinct private chats (users) the updates come from.
    #[arg(long, default_value_t = 10_000)]
    chats: u64,
    /// The fake Bot API the services talk to.
    #[arg(long, value_enum, default_value_t = FakeKind::Lean)]
    fake: FakeKind,
    /// Fake Bot API capacity probe length, seconds [3; quick 1].
    #[arg(long)]
    fake_duration: Option<f64>,
    /// End-to-end: give up waiting for the replies after this many seconds
    /// [120; quick 60].
    #[arg(long)]
    e2e_timeout: Option<f64>,
    /// Phases to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "fake,accept,e2e,cluster"
    )]
    phases: Vec<Phase>,
    /// Only the Redis Cluster section (`--phases cluster`), without the
    /// single redis-server; report to target/bench/cluster.md unless --out.
    #[arg(long)]
    cluster_only: bool,
    /// Where the markdown report goes [target/bench/results.md].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum FakeKind {
    /// bench/src/lean_fake.rs: minimal answers, counts sendMessage.
    Lean,
    /// tests/fake-bot-api (crate `fake-bot-api`): validates every call against the spec.
    Spec,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Phase {
    Fake,
    Accept,
    E2e,
    /// A local 3-master Redis Cluster, QUEUE_SHARDS=1 and 3 (bench/src/cluster.rs).
    Cluster,
}

/// Options with the quick/full defaults applied.
struct Settings {
    quick: bool,
    connections: usize,
    accept: Mode,
    warmup: Duration,
    rate: f64,
    rate_secs: f64,
    updates: u64,
    workers: Vec<usize>,
    chats: u64,
    fake: FakeKind,
    fake_secs: f64,
    e2e_timeout: Duration,
    phases: Vec<Phase>,
    out: PathBuf,
}

impl Settings {
    fn from(o: Opts) -> Self {
        let q = o.quick;
        let pick =
            |v: Option<f64>, full: f64, quick: f64| v.unwrap_or(if q { quick } else { full });
        let phases = if o.cluster_only {
            vec![Phase::Cluster]
        } else {
            o.phases
        };
        let accept = match o.requests {
            Some(n) => Mode::Count(n),
            None => Mode::For(Duration::from_secs_f64(pick(o.duration, 10.0, 2.0))),
        };
        Self {
            quick: q,
            connections: o.connections.max(1),
            accept,
            warmup: Duration::from_secs_f64(pick(o.warmup, 2.0, 0.5)),
            rate: o.rate.max(1.0),
            rate_secs: pick(o.rate_duration, 10.0, 2.0),
            updates: o.updates.unwrap_or(if q { 2_000 } else { 20_000 }),
            workers: o.workers,
            chats: o.chats.max(1),
            fake: o.fake,
            fake_secs: pick(o.fake_duration, 3.0, 1.0),
            e2e_timeout: Duration::from_secs_f64(pick(o.e2e_timeout, 120.0, 60.0)),
            out: o.out.unwrap_or_else(|| {
                // A cluster-only run does not overwrite the full report.
                let name = if phases == [Phase::Cluster] {
                    "cluster.md"
                } else {
                    "results.md"
                };
                harness::target_dir().join("bench").join(name)
            }),
            phases,
        }
    }

    fn accept_desc(&self) -> String {
        match self.accept {
            Mode::For(d) => format!("{}s", d.as_secs_f64()),
            Mode::Count(n) => format!("{n} requests"),
            Mode::Rate { .. } => unreachable!(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::BaselineBare { port }) => baselines::bare(port).await,
        Some(Cmd::BaselineXadd { port, redis_url }) => baselines::xadd(port, &redis_url).await,
        Some(Cmd::BaselineInline { port, api_url }) => {
            baselines::inline(port, &api_url, e2e::TOKEN).await
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

// ---------------------------------------------------------------------------
// Fakes
// ---------------------------------------------------------------------------

enum Fake {
    Lean(LeanFake),
    Spec(FakeBotApi),
}

impl Fake {
    async fn start(kind: FakeKind) -> anyhow::Result<Self> {
        Ok(match kind {
            FakeKind::Lean => Fake::Lean(LeanFake::start(e2e::TOKEN).await?),
            FakeKind::Spec => {
                let api = FakeBotApi::start().await;
                // Services restart many times in one invocation.
                api.faults(|f| f.set_webhook_rate_limit = false);
                Fake::Spec(api)
            }
        })
    }

    fn url(&self) -> String {
        match self {
            Fake::Lean(f) => f.url(),
            Fake::Spec(f) => f.url(),
        }
    }

    fn sent(&self) -> u64 {
        match self {
            Fake::Lean(f) => f.sent(),
            Fake::Spec(f) => f.sent_count() as u64,
        }
    }

    fn reset(&self) {
        match self {
            Fake::Lean(f) => f.reset(),
            Fake::Spec(f) => f.reset(),
        }
    }

    /// Calls the spec-checking fake refused as spec violations.
    fn violations(&self) -> Vec<String> {
        match self {
            Fake::Lean(_) => Vec::new(),
            Fake::Spec(f) => f.violations(),
        }
    }

    fn poll_interval(&self) -> Duration {
        match self {
            Fake::Lean(_) => Duration::from_millis(2),
            // Counting walks the whole call record under its lock.
            Fake::Spec(_) => Duration::from_millis(20),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.url()
            .trim_start_matches("http://")
            .parse()
            .expect("fake address")
    }
}

fn kind_name(k: FakeKind) -> &'static str {
    match k {
        FakeKind::Lean => "lean (bench/src/lean_fake.rs)",
        FakeKind::Spec => "spec-checking e2e fake (tests/fake-bot-api)",
    }
}

struct FakeRate {
    kind: FakeKind,
    result: RunResult,
    cpu_share: f64,
}

/// Blasts sendMessage at a fresh fake of `kind` with the load generator.
async fn probe_fake(kind: FakeKind, s: &Settings) -> anyhow::Result<FakeRate> {
    let fake = Fake::start(kind).await?;
    let chats = s.chats;
    let body: load::BodyFn = Arc::new(move |i| {
        bytes::Bytes::from(format!(
            r#"{{"chat_id":{},"text":"Hello, Anna! Nice to see you again. Type /help for the list of commands."}}"#,
            bodies::FIRST_USER + (i % chats) as i64
        ))
    });
    let path = format!("/bot{}/sendMessage", e2e::TOKEN);
    let target = Target::new(fake.addr(), &path, body);
    let me = std::process::id();
    let cpu0 = cpu_secs(me).unwrap_or(0.0);
    let result = load::run(
        &target,
        s.connections,
        Mode::For(Duration::from_secs_f64(s.fake_secs)),
    )
    .await;
    let cpu = cpu_secs(me).unwrap_or(0.0) - cpu0;
    if fake.sent() < result.ok {
        bail!("the {kind:?} fake counted fewer calls than it answered");
    }
    Ok(FakeRate {
        kind,
        cpu_share: cpu / result.elapsed.as_secs_f64().max(1e-9),
        result,
    })
}

// ---------------------------------------------------------------------------
// The system under test
// ---------------------------------------------------------------------------

struct Env {
    redis: RedisServer,
    redis_pid: u32,
    redis_version: String,
    fake: Fake,
    bodies: Arc<Bodies>,
}

async fn redis_info(redis: &RedisServer) -> anyhow::Result<(u32, String)> {
    let mut c = redis.conn().await;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut c).await?;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    Ok((
        field("process_id:").parse().unwrap_or(0),
        field("redis_version:"),
    ))
}

impl Env {
    async fn flush(&self) -> anyhow::Result<()> {
        let mut c = self.redis.conn().await;
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut c)
            .await
            .context("FLUSHALL")
    }

    /// `used_memory` and `DBSIZE`: what the data set holds right now.
    async fn footprint(&self) -> anyhow::Result<(u64, u64)> {
        let mut c = self.redis.conn().await;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut c)
            .await
            .context("INFO memory")?;
        let used = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let keys: u64 = redis::cmd("DBSIZE")
            .query_async(&mut c)
            .await
            .context("DBSIZE")?;
        Ok((used, keys))
    }

    async fn reset_stats(&self) -> anyhow::Result<()> {
        let mut c = self.redis.conn().await;
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut c)
            .await
            .context("CONFIG RESETSTAT")
    }

    /// `INFO commandstats`: (command, calls, microseconds), most time first.
    async fn command_stats(&self) -> anyhow::Result<Vec<CmdStat>> {
        let mut c = self.redis.conn().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await?;
        let mut out: Vec<CmdStat> = info
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let num = |k: &str| -> Option<u64> {
                    rest.split(',')
                        .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))?
                        .parse()
                        .ok()
                };
                Some(CmdStat {
                    name: name.to_owned(),
                    calls: num("calls")?,
                    usec: num("usec")?,
                })
            })
            .filter(|c| {
                !(c.name.starts_with("config") || matches!(c.name.as_str(), "info" | "ping"))
            })
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.usec));
        Ok(out)
    }

    fn ingress_env(&self, port: u16) -> Vec<(String, String)> {
        [
            ("TELEGRAM_BOT_TOKEN", e2e::TOKEN.to_owned()),
            ("TELEGRAM_WEBHOOK_URL", WEBHOOK_URL.to_owned()),
            ("TELEGRAM_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("TELEGRAM_API_URL", self.fake.url()),
            ("REDIS_URL", self.redis.url()),
            ("PORT", port.to_string()),
            ("HOST", "127.0.0.1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn worker_env(&self, ordering: &str) -> Vec<(String, String)> {
        [
            ("TELEGRAM_BOT_TOKEN", e2e::TOKEN.to_owned()),
            ("TELEGRAM_API_URL", self.fake.url()),
            ("REDIS_URL", self.redis.url()),
            ("TELEGRAM_WEBAPP_URL", WEBAPP_URL.to_owned()),
            ("TELEGRAM_SEND_RATE", "0".to_owned()),
            ("WORKER_ORDERING", ordering.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn target(&self, port: u16) -> Target {
        Target::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            WEBHOOK_PATH,
            self.bodies.clone().into_body_fn(),
        )
        .header(SECRET_HEADER, WEBHOOK_SECRET)
    }

    /// Starts the ingress and waits until it is ready and has finished the
    /// webhook registration (so idle memory is measured after start-up).
    async fn start_ingress(&self) -> anyhow::Result<(Service, u16)> {
        start_ingress_with(|port| self.ingress_env(port)).await
    }

    async fn start_baseline(&self, args: &[&str]) -> anyhow::Result<(Service, u16)> {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let port_s = port.to_string();
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["--port", &port_s]);
            let mut svc = Service::spawn("bench", &all, &[]);
            match try_wait_ready(&mut svc, port).await {
                Ok(()) => return Ok((svc, port)),
                Err(e) => last = e,
            }
        }
        bail!("baseline {args:?} did not start: {last}")
    }
}

// ---------------------------------------------------------------------------
// Phase 1+2: accept rate
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum AcceptKind {
    Ingress,
    Bare,
    Xadd,
}

impl AcceptKind {
    fn name(self) -> &'static str {
        match self {
            AcceptKind::Ingress => "ingress",
            AcceptKind::Bare => "baseline-bare",
            AcceptKind::Xadd => "baseline-xadd",
        }
    }
}

struct AcceptResult {
    kind: AcceptKind,
    closed: RunResult,
    open: RunResult,
    idle: Mem,
    after: Mem,
    /// CPU share (1.0 = one core) during the closed-loop run.
    cpu_target: f64,
    cpu_redis: f64,
    cpu_bench: f64,
}

async fn accept(env: &Env, kind: AcceptKind, s: &Settings) -> anyhow::Result<AcceptResult> {
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

// ---------------------------------------------------------------------------
// Phase 3+4: end to end, memory
// ---------------------------------------------------------------------------

#[derive(Clone)]
enum E2eKind {
    Queue {
        workers: usize,
        ordering: &'static str,
    },
    Inline,
}

impl E2eKind {
    fn label(&self) -> String {
        match self {
            E2eKind::Queue { workers, ordering } => {
                format!(
                    "ingress + {workers} worker{} (ordering={ordering})",
                    if *workers == 1 { "" } else { "s" }
                )
            }
            E2eKind::Inline => "baseline-inline (no queue)".into(),
        }
    }
}

/// One line of Redis's `INFO commandstats`.
struct CmdStat {
    name: String,
    calls: u64,
    usec: u64,
}

struct E2eResult {
    kind: E2eKind,
    /// Redis commands executed during the run (commands run by scripts are
    /// counted both on their own and inside the script's time).
    redis_cmds: Vec<CmdStat>,
    post: RunResult,
    /// 2xx-answered updates, i.e. the replies waited for.
    target: u64,
    replies: u64,
    /// Start of posting to the last awaited reply; `None`: timed out.
    time_to_all: Option<Duration>,
    front_idle: Mem,
    front_peak_rss: u64,
    front_after: Mem,
    worker_idle: Vec<Mem>,
    worker_peak_rss: Vec<u64>,
    worker_after: Vec<Mem>,
    /// CPU seconds spent during the run.
    cpu_front: f64,
    cpu_workers: f64,
    cpu_redis: f64,
    cpu_bench: f64,
    /// Redis `used_memory` and key count before posting and once every
    /// reply is in: what handled updates leave behind (dedupe marks, user
    /// records, stream remnants).
    redis_before: (u64, u64),
    redis_after: (u64, u64),
}

impl E2eResult {
    fn rate(&self) -> Option<f64> {
        self.time_to_all
            .map(|t| self.target as f64 / t.as_secs_f64().max(1e-9))
    }
}

async fn e2e_run(env: &Env, kind: E2eKind, s: &Settings) -> anyhow::Result<E2eResult> {
    env.flush().await?;
    env.fake.reset();
    let label = kind.label();
    progress(&format!("e2e: {label}: starting"));
    let (mut front, port) = match &kind {
        E2eKind::Queue { .. } => env.start_ingress().await?,
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

// ---------------------------------------------------------------------------
// The run and the report
// ---------------------------------------------------------------------------

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

fn ms(v: f64) -> String {
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

fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
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

    // ------------------------------------------------------------ report
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
        "| fake Bot API | {} , in the bench process |",
        kind_name(s.fake)
    );
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
            if let Some(inline) = e2es
                .iter()
                .find(|e| matches!(e.kind, E2eKind::Inline))
                .and_then(E2eResult::rate)
            {
                let best = s
                    .workers
                    .iter()
                    .filter_map(|&n| rate_of(n, "chat"))
                    .fold(one, f64::max);
                let _ = writeln!(
                    w,
                    "- queue (best worker count) / inline baseline: {}",
                    ratio(best, inline)
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
            "\nTime is measured from the first POST to the last awaited sendMessage; CPU is the user+system time of the processes during that window divided by the updates (front = ingress or the inline baseline; workers summed; the bench process runs the load generator and the fake)."
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
