//! The command line: subcommands (the baseline servers), options, and the
//! settings a run uses once the quick/full defaults are applied - apart so
//! the phases read `Settings` without wading through clap's attributes.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use e2e::harness;

use crate::load::Mode;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Ingress accept rate vs baselines, end-to-end throughput, RSS (see scripts/bench)"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Option<Cmd>,
    #[command(flatten)]
    pub(crate) opts: Opts,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
    /// Baseline consumer (with `baseline-xadd` in front): reads the stream
    /// through a consumer group, replies, acknowledges and deletes.
    BaselineConsumer {
        #[arg(long)]
        api_url: String,
        #[arg(long)]
        redis_url: String,
    },
    /// Prints one generated update body and the body sizes.
    SampleUpdate,
}

#[derive(Args, Clone)]
pub(crate) struct Opts {
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
pub(crate) enum FakeKind {
    /// bench/src/lean_fake.rs: minimal answers, counts sendMessage.
    Lean,
    /// tests/fake-bot-api (crate `fake-bot-api`): validates every call against the spec.
    Spec,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub(crate) enum Phase {
    Fake,
    Accept,
    E2e,
    /// A local 3-master Redis Cluster, QUEUE_SHARDS=1 and 3 (bench/src/cluster.rs).
    Cluster,
}

/// Options with the quick/full defaults applied.
pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) connections: usize,
    pub(crate) accept: Mode,
    pub(crate) warmup: Duration,
    pub(crate) rate: f64,
    pub(crate) rate_secs: f64,
    pub(crate) updates: u64,
    pub(crate) workers: Vec<usize>,
    pub(crate) chats: u64,
    pub(crate) fake: FakeKind,
    pub(crate) fake_secs: f64,
    pub(crate) e2e_timeout: Duration,
    pub(crate) phases: Vec<Phase>,
    pub(crate) out: PathBuf,
}

impl Settings {
    pub(crate) fn from(o: Opts) -> Self {
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

    pub(crate) fn accept_desc(&self) -> String {
        match self.accept {
            Mode::For(d) => format!("{}s", d.as_secs_f64()),
            Mode::Count(n) => format!("{n} requests"),
            Mode::Rate { .. } => unreachable!(),
        }
    }
}
