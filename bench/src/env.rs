//! The system under test: redis-server, the fake, the update bodies, and
//! how the services and baselines are started against them. Both phases
//! (accept, end to end) run in this one environment, flushed between runs.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use e2e::harness::{free_port, RedisServer, Service};
use e2e::stack::try_wait_ready;

use crate::bodies::Bodies;
use crate::fake::Fake;
use crate::load::Target;
use crate::{
    start_ingress_with, SECRET_HEADER, WEBAPP_URL, WEBHOOK_PATH, WEBHOOK_SECRET, WEBHOOK_URL,
};

pub(crate) struct Env {
    pub(crate) redis: RedisServer,
    pub(crate) redis_pid: u32,
    pub(crate) redis_version: String,
    pub(crate) fake: Fake,
    pub(crate) bodies: Arc<Bodies>,
}

pub(crate) async fn redis_info(redis: &RedisServer) -> anyhow::Result<(u32, String)> {
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
    pub(crate) async fn flush(&self) -> anyhow::Result<()> {
        let mut c = self.redis.conn().await;
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut c)
            .await
            .context("FLUSHALL")
    }

    /// `used_memory` and `DBSIZE`: what the data set holds right now.
    pub(crate) async fn footprint(&self) -> anyhow::Result<(u64, u64)> {
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

    pub(crate) async fn reset_stats(&self) -> anyhow::Result<()> {
        let mut c = self.redis.conn().await;
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut c)
            .await
            .context("CONFIG RESETSTAT")
    }

    /// `INFO commandstats`: (command, calls, microseconds), most time first.
    pub(crate) async fn command_stats(&self) -> anyhow::Result<Vec<CmdStat>> {
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

    pub(crate) fn worker_env(&self, ordering: &str) -> Vec<(String, String)> {
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

    pub(crate) fn target(&self, port: u16) -> Target {
        Target::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            WEBHOOK_PATH,
            self.bodies.clone().into_body_fn(),
        )
        .header(SECRET_HEADER, WEBHOOK_SECRET)
    }

    /// Starts the ingress and waits until it is ready and has finished the
    /// webhook registration (so idle memory is measured after start-up).
    pub(crate) async fn start_ingress(&self) -> anyhow::Result<(Service, u16)> {
        start_ingress_with(|port| self.ingress_env(port)).await
    }

    pub(crate) async fn start_baseline(&self, args: &[&str]) -> anyhow::Result<(Service, u16)> {
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

/// One line of Redis's `INFO commandstats`.
pub(crate) struct CmdStat {
    pub(crate) name: String,
    pub(crate) calls: u64,
    pub(crate) usec: u64,
}
