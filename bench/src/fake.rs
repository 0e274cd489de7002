//! The fake Bot API the services talk to (lean or spec-checking), and the
//! probe of its own capacity: a fake slower than the services would cap
//! every end-to-end figure, so the report says how much headroom it has.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use e2e::FakeBotApi;

use crate::bodies;
use crate::cli::{FakeKind, Settings};
use crate::lean_fake::LeanFake;
use crate::load::{self, Mode, RunResult, Target};
use crate::procfs::cpu_secs;

pub(crate) enum Fake {
    Lean(LeanFake),
    Spec(FakeBotApi),
}

impl Fake {
    pub(crate) async fn start(kind: FakeKind) -> anyhow::Result<Self> {
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

    pub(crate) fn url(&self) -> String {
        match self {
            Fake::Lean(f) => f.url(),
            Fake::Spec(f) => f.url(),
        }
    }

    pub(crate) fn sent(&self) -> u64 {
        match self {
            Fake::Lean(f) => f.sent(),
            Fake::Spec(f) => f.sent_count() as u64,
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Fake::Lean(f) => f.reset(),
            Fake::Spec(f) => f.reset(),
        }
    }

    /// Calls the spec-checking fake refused as spec violations.
    pub(crate) fn violations(&self) -> Vec<String> {
        match self {
            Fake::Lean(_) => Vec::new(),
            Fake::Spec(f) => f.violations(),
        }
    }

    pub(crate) fn poll_interval(&self) -> Duration {
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

pub(crate) fn kind_name(k: FakeKind) -> &'static str {
    match k {
        FakeKind::Lean => "lean (bench/src/lean_fake.rs)",
        FakeKind::Spec => "spec-checking e2e fake (tests/fake-bot-api)",
    }
}

pub(crate) struct FakeRate {
    pub(crate) kind: FakeKind,
    pub(crate) result: RunResult,
    pub(crate) cpu_share: f64,
}

/// Blasts sendMessage at a fresh fake of `kind` with the load generator.
pub(crate) async fn probe_fake(kind: FakeKind, s: &Settings) -> anyhow::Result<FakeRate> {
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
