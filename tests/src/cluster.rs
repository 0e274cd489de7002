//! A real local Redis Cluster for end-to-end tests: `redis-server` nodes in
//! cluster mode on free ports, joined with `redis-cli --cluster create`,
//! with the faults a cluster deployment meets - a master crashing (and its
//! replica taking over), a slot moving to another master while clients run.
//!
//! Like [`crate::RedisServer`], it skips loudly (`SKIPPED: ...`, or a
//! failure under `E2E_REQUIRE_REDIS=1`) when `redis-server` or `redis-cli`
//! is missing, bounds every wait, panics with the nodes' log tails, and
//! kills its nodes and removes their data on drop.
//!
//! Every check reads the cluster live (`CLUSTER NODES`, `CLUSTER INFO`):
//! after a failover or a migration the harness knows only what the nodes
//! say, as a client would.

mod migrate;
mod node;
mod settle;
pub mod topology;

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{redis_tool_missing, target_dir, test_name, unique, which};
use node::Node;
pub use topology::{NodeInfo, SLOTS};

/// Bound on every wait for the cluster to settle (creation, migration,
/// restart).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines per node in a failure message.
const NODE_TAIL: usize = 25;

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Masters sharing the 16384 slots (`redis-cli` wants at least 3).
    pub masters: usize,
    /// Replicas of each master.
    pub replicas_per_master: usize,
    /// `cluster-node-timeout`: how long a silent master goes before it is
    /// failed over. Short by default so failover tests stay short.
    pub node_timeout_ms: u64,
    /// `--appendonly yes --appendfsync always` on every node.
    pub aof: bool,
    /// More `redis-server` arguments for every node.
    pub args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas_per_master: 0,
            node_timeout_ms: 1000,
            aof: false,
            args: Vec::new(),
        }
    }
}

/// A running Redis Cluster on 127.0.0.1; every node is killed on drop.
pub struct RedisCluster {
    dir: PathBuf,
    opts: ClusterOptions,
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Three masters, no replicas; `None` (after a loud message) when
    /// `redis-server` or `redis-cli` is not installed.
    pub async fn start() -> Option<Self> {
        Self::start_with(ClusterOptions::default()).await
    }

    pub async fn start_with(opts: ClusterOptions) -> Option<Self> {
        which("redis-server").or_else(|| redis_tool_missing("redis-server"))?;
        which("redis-cli").or_else(|| redis_tool_missing("redis-cli"))?;
        assert!(
            opts.masters >= 3,
            "a Redis Cluster needs at least 3 masters (asked for {})",
            opts.masters
        );
        let dir = target_dir().join("e2e-tmp").join(format!(
            "cluster-{}-{}-{}",
            test_name(),
            std::process::id(),
            unique()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        // Built before the nodes start, so a panic part-way kills those
        // already running.
        let mut cluster = Self {
            dir,
            opts,
            nodes: Vec::new(),
        };
        let total = cluster.opts.masters * (1 + cluster.opts.replicas_per_master);
        for _ in 0..total {
            let taken = cluster.ports();
            let node = Node::start(&cluster.dir, &taken, &cluster.opts)
                .await
                .unwrap_or_else(|e| panic!("cluster node did not start: {e}"));
            cluster.nodes.push(node);
        }
        cluster.create().await;
        let (masters, replicas) = (cluster.opts.masters, cluster.opts.replicas_per_master);
        cluster
            .wait_agreed(SETTLE_TIMEOUT, "after `redis-cli --cluster create`", |v| {
                let shape = topology::roles(v);
                let owners: Vec<_> = shape.iter().filter(|r| r.1 && !r.3.is_empty()).collect();
                let all_served = owners
                    .iter()
                    .all(|m| shape.iter().filter(|r| r.2 == Some(m.0)).count() == replicas);
                if owners.len() == masters && all_served {
                    Ok(())
                } else {
                    Err(format!(
                        "want {masters} masters with {replicas} replica(s) each, see {shape:?}"
                    ))
                }
            })
            .await;
        Some(cluster)
    }

    /// Joins the nodes: `redis-cli` makes the first `masters` nodes masters
    /// and hands out the slots and the replicas.
    async fn create(&self) {
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.args(["--cluster", "create"])
            .args(self.ports().iter().map(|p| format!("127.0.0.1:{p}")))
            .args([
                "--cluster-replicas",
                &self.opts.replicas_per_master.to_string(),
                "--cluster-yes",
            ])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = match tokio::time::timeout(SETTLE_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => panic!("run redis-cli --cluster create: {e}"),
            Err(_) => panic!(
                "`redis-cli --cluster create` did not finish within {SETTLE_TIMEOUT:?}\n{}",
                self.logs_tail()
            ),
        };
        if !out.status.success() {
            panic!(
                "`redis-cli --cluster create` failed ({}):\n{}\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.logs_tail()
            );
        }
    }

    // -- addresses ---------------------------------------------------------

    /// Every node's client port, in start order (running or not).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.port)
            .collect()
    }

    /// `(client port, process id)` of every running node, in start order:
    /// what a benchmark needs to read each node's CPU time from `/proc`.
    pub fn pids(&self) -> Vec<(u16, u32)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.port, n.pid()?)))
            .collect()
    }

    /// A seed URL for cluster clients: the first node still running (a
    /// master right after start). Any node works; clients learn the rest.
    pub fn url(&self) -> String {
        let port = self
            .live_ports()
            .first()
            .copied()
            .unwrap_or(self.nodes[0].port);
        format!("redis://127.0.0.1:{port}")
    }

    /// Every node's URL, in start order.
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    pub fn data_dir(&self, port: u16) -> PathBuf {
        self.node(port).dir.clone()
    }

    // -- topology, read live -----------------------------------------------

    /// The cluster as the first running node sees it (`CLUSTER NODES`).
    pub async fn nodes(&self) -> Vec<NodeInfo> {
        let port = *self
            .live_ports()
            .first()
            .expect("no cluster node is running");
        self.view(port)
            .await
            .unwrap_or_else(|e| panic!("read CLUSTER NODES: {e}\n{}", self.logs_tail()))
    }

    /// Masters not marked failed, with their id and slot ranges, in slot
    /// order.
    pub async fn masters(&self) -> Vec<NodeInfo> {
        let mut m: Vec<_> = self
            .nodes()
            .await
            .into_iter()
            .filter(|n| n.is_master() && !n.is_failed())
            .collect();
        m.sort_by_key(|n| n.slots.first().copied());
        m
    }

    /// Ports of the replicas of the master on `port`.
    pub async fn replicas_of(&self, port: u16) -> Vec<u16> {
        let nodes = self.nodes().await;
        let id = &nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port} in {nodes:#?}"))
            .id;
        nodes
            .iter()
            .filter(|n| n.is_replica() && n.master_id.as_ref() == Some(id))
            .map(|n| n.port)
            .collect()
    }

    /// Port of the master serving `slot` now.
    pub async fn master_of_slot(&self, slot: u16) -> u16 {
        let nodes = self.nodes().await;
        topology::owner_of(&nodes, slot)
            .unwrap_or_else(|| panic!("no master owns slot {slot}: {nodes:#?}"))
    }

    /// The hash slot of `key` (CRC16 of its hash tag, per the spec).
    pub fn slot_of(key: &str) -> u16 {
        topology::slot_of(key.as_bytes())
    }

    /// A connection to one node for the test's own checks (no redirects:
    /// it sees that node's data only), with a 10 s response timeout.
    pub async fn node_conn(&self, port: u16) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(10)));
        let url = format!("redis://127.0.0.1:{port}");
        redis::Client::open(url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap_or_else(|e| panic!("connect to cluster node {url}: {e}"))
    }

    // -- faults -------------------------------------------------------------

    /// SIGKILLs the master owning `slot`; returns its port.
    pub async fn kill_master_of_slot(&mut self, slot: u16) -> u16 {
        let port = self.master_of_slot(slot).await;
        self.kill_node(port);
        port
    }

    /// SIGKILLs one node (master or replica).
    pub fn kill_node(&mut self, port: u16) {
        self.node_mut(port).kill();
    }

    /// Waits until a running node is master of `slot` in every running
    /// node's view and the cluster is `ok` again; returns the new master's
    /// port. Panics with the nodes' logs after `timeout`.
    pub async fn wait_failover(&self, slot: u16, timeout: Duration) -> u16 {
        let live = self.live_ports();
        let view =
            self.wait_agreed(timeout, &format!("failing over slot {slot}"), |v| {
                match topology::owner_of(v, slot) {
                    Some(p) if live.contains(&p) => Ok(()),
                    other => Err(format!("slot {slot} owned by {other:?}, not a live node")),
                }
            })
            .await;
        topology::owner_of(&view, slot).expect("checked above")
    }

    /// Starts a killed node again on its port and data (its
    /// `nodes-<port>.conf` makes it rejoin as itself; a failed-over master
    /// comes back as a replica) and waits until the cluster agrees again.
    pub async fn restart_node(&mut self, port: u16) {
        let opts = self.opts.clone();
        if let Err(e) = self.node_mut(port).restart(&opts).await {
            panic!("cluster node {port} did not restart: {e}");
        }
        self.wait_agreed(
            SETTLE_TIMEOUT,
            &format!("restarting node {port}"),
            |v| match v.iter().find(|n| n.port == port) {
                Some(n) if !n.is_failed() && !n.flags.iter().any(|f| f == "fail?") => Ok(()),
                other => Err(format!("node {port} seen as {other:?}")),
            },
        )
        .await;
    }

    // -- plumbing -------------------------------------------------------------

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// One node's `redis-server` log.
    pub fn log(&self, port: u16) -> String {
        self.node(port).log()
    }

    /// The last lines of every node's log, labelled, for failure messages.
    pub fn logs_tail(&self) -> String {
        self.nodes.iter().map(|n| n.log_tail(NODE_TAIL)).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
