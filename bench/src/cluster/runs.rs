//! The two measured runs on the cluster: the ingress alone, and end to end
//! with workers; CPU time read per process around each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use e2e::harness::Service;

use super::setup::Setup;
use super::{AcceptRun, E2eRun};
use crate::bodies::Bodies;
use crate::load::{self, Mode};
use crate::procfs::{cpu_secs, cpu_total};
use crate::{progress, Fake, Settings};

fn cpu_each(pids: &[u32]) -> Vec<f64> {
    pids.iter().map(|&p| cpu_secs(p).unwrap_or(0.0)).collect()
}

fn delta(after: &[f64], before: &[f64]) -> Vec<f64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

impl Setup {
    /// The ingress alone, closed loop, like the single-Redis accept run.
    pub(super) async fn accept(
        &self,
        fake: &Fake,
        bodies: &Arc<Bodies>,
        shards: u16,
        s: &Settings,
    ) -> anyhow::Result<AcceptRun> {
        self.flush().await?;
        let (mut svc, port) = self.start_ingress(fake, shards).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let target = Self::target(port, bodies);
        progress(&format!("cluster: accept, QUEUE_SHARDS={shards}: warm-up"));
        load::run(&target, s.connections, Mode::For(s.warmup)).await;
        let pid = svc.pid();
        let masters = self.master_pids();
        let (i0, m0) = (cpu_secs(pid).unwrap_or(0.0), cpu_each(&masters));
        progress(&format!(
            "cluster: accept, QUEUE_SHARDS={shards}: closed loop, C={}, {}",
            s.connections,
            s.accept_desc()
        ));
        let closed = load::run(&target, s.connections, s.accept).await;
        let (i1, m1) = (cpu_secs(pid).unwrap_or(0.0), cpu_each(&masters));
        if let Some(st) = svc.has_exited() {
            bail!(
                "the ingress exited during the run ({st})\n{}",
                svc.logs_tail()
            );
        }
        svc.kill().await;
        Ok(AcceptRun {
            closed,
            cpu_ingress: i1 - i0,
            cpu_masters: delta(&m1, &m0),
        })
    }

    /// `s.updates` updates posted at full speed, 2 workers, until the fake
    /// Bot API has every reply.
    pub(super) async fn e2e(
        &self,
        fake: &Fake,
        bodies: &Arc<Bodies>,
        shards: u16,
        s: &Settings,
    ) -> anyhow::Result<E2eRun> {
        self.flush().await?;
        fake.reset();
        progress(&format!("cluster: e2e, QUEUE_SHARDS={shards}: starting"));
        let (mut ingress, port) = self.start_ingress(fake, shards).await?;
        let mut workers = self.start_workers(fake, shards).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ingress_pid = ingress.pid();
        let worker_pids: Vec<u32> = workers.iter().map(Service::pid).collect();
        let masters = self.master_pids();
        let c0 = (
            cpu_secs(ingress_pid).unwrap_or(0.0),
            cpu_total(&worker_pids),
            cpu_each(&masters),
        );
        progress(&format!(
            "cluster: e2e, QUEUE_SHARDS={shards}: posting {} updates",
            s.updates
        ));
        let t0 = Instant::now();
        let post = load::run(
            &Self::target(port, bodies),
            s.connections,
            Mode::Count(s.updates),
        )
        .await;
        let target = post.ok;
        let deadline = t0 + s.e2e_timeout;
        let time_to_all = loop {
            if fake.sent() >= target {
                break Some(t0.elapsed());
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(fake.poll_interval()).await;
        };
        let c1 = (
            cpu_secs(ingress_pid).unwrap_or(0.0),
            cpu_total(&worker_pids),
            cpu_each(&masters),
        );
        // Late or duplicate replies would show up here.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let replies = fake.sent();
        let keys = self.dbsizes().await;
        for w in workers.iter_mut() {
            if let Some(st) = w.has_exited() {
                bail!("a worker exited during the run ({st})\n{}", w.logs_tail());
            }
        }
        if time_to_all.is_none() {
            progress(&format!(
                "cluster: e2e, QUEUE_SHARDS={shards}: TIMED OUT with {replies} of {target} replies"
            ));
        }
        for mut w in workers {
            w.kill().await;
        }
        ingress.kill().await;
        Ok(E2eRun {
            post,
            target,
            replies,
            time_to_all,
            cpu_ingress: c1.0 - c0.0,
            cpu_workers: c1.1 - c0.1,
            cpu_masters: delta(&c1.2, &c0.2),
            keys,
        })
    }
}
