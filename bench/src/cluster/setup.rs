//! The cluster under test: a local 3-master Redis Cluster, its masters'
//! processes (for their CPU time), and the services started on it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use e2e::cluster::RedisCluster;
use e2e::harness::{self, Service};
use shared::keys::slot_of;

use super::WORKERS;
use crate::bodies::Bodies;
use crate::load::Target;
use crate::{progress, Fake};

/// One master of the cluster, as it was at the start.
pub(super) struct Master {
    pub port: u16,
    pub pid: u32,
    pub slots: Vec<(u16, u16)>,
}

impl Master {
    pub fn owns_key(&self, key: &str) -> bool {
        let s = slot_of(key);
        self.slots.iter().any(|&(a, b)| a <= s && s <= b)
    }
}

/// The cluster under test: its masters in slot order.
pub(super) struct Setup {
    pub cluster: RedisCluster,
    pub masters: Vec<Master>,
    pub version: String,
}

fn owned(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

impl Setup {
    pub(super) async fn start() -> anyhow::Result<Self> {
        let Some(cluster) = RedisCluster::start().await else {
            bail!("redis-server or redis-cli is missing");
        };
        let pids = cluster.pids();
        let mut masters = Vec::new();
        for m in cluster.masters().await {
            let pid = pids
                .iter()
                .find(|(port, _)| *port == m.port)
                .map(|&(_, pid)| pid)
                .with_context(|| format!("no process for master {}", m.port))?;
            masters.push(Master {
                port: m.port,
                pid,
                slots: m.slots,
            });
        }
        if masters.len() < 3 {
            bail!("want 3 masters, the cluster shows {}", masters.len());
        }
        let mut c = cluster.node_conn(masters[0].port).await;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut c).await?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        Ok(Self {
            cluster,
            masters,
            version,
        })
    }

    pub(super) fn master_pids(&self) -> Vec<u32> {
        self.masters.iter().map(|m| m.pid).collect()
    }

    /// `FLUSHALL` on every master, each over its own connection.
    pub(super) async fn flush(&self) -> anyhow::Result<()> {
        for m in &self.masters {
            let mut c = self.cluster.node_conn(m.port).await;
            redis::cmd("FLUSHALL")
                .query_async::<()>(&mut c)
                .await
                .with_context(|| format!("FLUSHALL on master {}", m.port))?;
        }
        Ok(())
    }

    pub(super) async fn dbsizes(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for m in &self.masters {
            let mut c = self.cluster.node_conn(m.port).await;
            out.push(redis::cmd("DBSIZE").query_async(&mut c).await.unwrap_or(0));
        }
        out
    }

    /// Blocking `XREADGROUP`s on all masters together.
    pub(super) async fn blocked_readers(&self) -> usize {
        let mut n = 0;
        for m in &self.masters {
            n += e2e::stack::blocked_readers(&format!("redis://127.0.0.1:{}", m.port)).await;
        }
        n
    }

    pub(super) fn base_env(&self, fake: &Fake, shards: u16) -> Vec<(&'static str, String)> {
        vec![
            ("TELEGRAM_BOT_TOKEN", e2e::TOKEN.to_owned()),
            ("TELEGRAM_API_URL", fake.url()),
            ("REDIS_URL", self.cluster.url()),
            ("QUEUE_SHARDS", shards.to_string()),
        ]
    }

    /// Starts the ingress and waits until it is ready and has registered
    /// its webhook (as `Env::start_ingress` does on one Redis).
    pub(super) async fn start_ingress(
        &self,
        fake: &Fake,
        shards: u16,
    ) -> anyhow::Result<(Service, u16)> {
        crate::start_ingress_with(|port| {
            let mut env = self.base_env(fake, shards);
            env.extend([
                ("TELEGRAM_WEBHOOK_URL", crate::WEBHOOK_URL.to_owned()),
                ("TELEGRAM_WEBHOOK_SECRET", crate::WEBHOOK_SECRET.to_owned()),
                ("PORT", port.to_string()),
                ("HOST", "127.0.0.1".to_owned()),
            ]);
            owned(&env)
        })
        .await
        .context("the ingress on the cluster")
    }

    pub(super) async fn start_workers(
        &self,
        fake: &Fake,
        shards: u16,
    ) -> anyhow::Result<Vec<Service>> {
        let mut env = self.base_env(fake, shards);
        env.extend([
            ("TELEGRAM_WEBAPP_URL", crate::WEBAPP_URL.to_owned()),
            ("TELEGRAM_SEND_RATE", "0".to_owned()),
            ("WORKER_ORDERING", "chat".to_owned()),
        ]);
        let env = owned(&env);
        let workers: Vec<Service> = (0..WORKERS)
            .map(|_| Service::spawn_owned("worker", &[], &env))
            .collect();
        for w in &workers {
            if !w
                .wait_for_log("worker consuming", Duration::from_secs(30))
                .await
            {
                bail!(
                    "a worker did not start consuming on the cluster\n{}",
                    w.logs_tail()
                );
            }
        }
        // Each worker blocks on every shard's stream with its own
        // connection.
        let want = WORKERS * usize::from(shards);
        if !harness::eventually(Duration::from_secs(10), || async move {
            self.blocked_readers().await >= want
        })
        .await
        {
            progress("note: not every shard reader is blocked in XREADGROUP yet; going on");
        }
        Ok(workers)
    }

    pub(super) fn target(port: u16, bodies: &Arc<Bodies>) -> Target {
        Target::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            crate::WEBHOOK_PATH,
            bodies.clone().into_body_fn(),
        )
        .header(crate::SECRET_HEADER, crate::WEBHOOK_SECRET)
    }
}
