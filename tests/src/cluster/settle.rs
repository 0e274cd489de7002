//! Waiting for a cluster to settle: every running node is asked, and the
//! wait ends only when they all agree - one node's view alone says nothing
//! about what a client connected elsewhere is told.

use std::time::{Duration, Instant};

use super::node::{info_field, query};
use super::{topology, NodeInfo, RedisCluster, SLOTS};

impl RedisCluster {
    /// Polls until every running node reports `cluster_state:ok`, all
    /// slots assigned and every node known, all agree on every node's role
    /// (master of which slots, replica of whom), every running replica's
    /// link to its master is up, and
    /// `extra` accepts the agreed view; returns that view.
    pub(super) async fn wait_agreed(
        &self,
        timeout: Duration,
        what: &str,
        extra: impl Fn(&[NodeInfo]) -> Result<(), String>,
    ) -> Vec<NodeInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.agreed_view().await {
                Ok(view) => match extra(&view) {
                    Ok(()) => return view,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "Redis Cluster did not settle {what} within {timeout:?}: {last}\n{}",
                    self.logs_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn agreed_view(&self) -> Result<Vec<NodeInfo>, String> {
        let mut agreed: Option<(u16, Vec<NodeInfo>)> = None;
        for port in self.live_ports() {
            let info: String = query(port, redis::cmd("CLUSTER").arg("INFO")).await?;
            let field = |f| info_field(&info, f).unwrap_or("?");
            if field("cluster_state") != "ok" {
                return Err(format!(
                    "node {port}: cluster_state {}",
                    field("cluster_state")
                ));
            }
            if field("cluster_slots_assigned") != SLOTS.to_string() {
                return Err(format!(
                    "node {port}: {} slots assigned",
                    field("cluster_slots_assigned")
                ));
            }
            if field("cluster_known_nodes") != self.nodes.len().to_string() {
                return Err(format!(
                    "node {port}: knows {} of {} nodes",
                    field("cluster_known_nodes"),
                    self.nodes.len()
                ));
            }
            let view = self.view(port).await?;
            let me = view
                .iter()
                .find(|n| n.flags.iter().any(|f| f == "myself"))
                .ok_or_else(|| format!("node {port}: no `myself` in CLUSTER NODES"))?;
            if me.is_replica() {
                let repl: String = query(port, redis::cmd("INFO").arg("replication")).await?;
                let link = info_field(&repl, "master_link_status").unwrap_or("?");
                if link != "up" {
                    return Err(format!("replica {port}: master_link_status {link}"));
                }
            }
            match &agreed {
                None => agreed = Some((port, view)),
                Some((first, v)) if topology::roles(v) != topology::roles(&view) => {
                    return Err(format!(
                        "nodes {first} and {port} disagree on the cluster's shape \
                         (port, master, master's port, slots): {:?} vs {:?}",
                        topology::roles(v),
                        topology::roles(&view)
                    ));
                }
                Some(_) => {}
            }
        }
        agreed
            .map(|(_, v)| v)
            .ok_or_else(|| "no cluster node is running".into())
    }

    pub(super) async fn view(&self, port: u16) -> Result<Vec<NodeInfo>, String> {
        let text: String = query(port, redis::cmd("CLUSTER").arg("NODES")).await?;
        topology::parse_nodes(&text).map_err(|e| format!("node {port}: {e}"))
    }
}
