//! Moving one slot, with its keys, to another master while clients keep
//! using it - the steps `redis-cli --cluster reshard` takes, done by hand
//! because `reshard` picks the slots itself and a test needs a given one.
//!
//! While the slot moves, the source answers `ASK` for keys it no longer
//! has and the target accepts them after `ASKING`; once done, every node
//! answers `MOVED` to the target. Clients must follow both.

use std::time::{Duration, Instant};

use super::{topology, RedisCluster, SETTLE_TIMEOUT};

/// Keys moved per `MIGRATE` (redis-cli's default pipeline is 10).
const BATCH: usize = 100;
/// `MIGRATE`'s own timeout for one batch, in ms.
const MIGRATE_TIMEOUT_MS: u64 = 10_000;

impl RedisCluster {
    /// Moves `slot` and its keys to the master on `to_port`, then waits
    /// until every node agrees. Nothing to do when it is already there.
    pub async fn migrate_slot(&self, slot: u16, to_port: u16) {
        let nodes = self.nodes().await;
        let from_port = topology::owner_of(&nodes, slot)
            .unwrap_or_else(|| panic!("no master owns slot {slot}: {nodes:#?}"));
        if from_port == to_port {
            return;
        }
        let id_of = |port: u16| {
            nodes
                .iter()
                .find(|n| n.port == port && n.is_master())
                .map(|n| n.id.clone())
                .unwrap_or_else(|| panic!("no master on port {port}: {nodes:#?}"))
        };
        let (from_id, to_id) = (id_of(from_port), id_of(to_port));
        let mut from = self.node_conn(from_port).await;
        let mut to = self.node_conn(to_port).await;

        // Target first: were the source set MIGRATING alone, it would send
        // clients to a target that does not accept the slot yet.
        self.setslot(&mut to, to_port, slot, "IMPORTING", &from_id)
            .await;
        self.setslot(&mut from, from_port, slot, "MIGRATING", &to_id)
            .await;

        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(BATCH)
                .query_async(&mut from)
                .await
                .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT {slot} on {from_port}: {e}"));
            if keys.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} still has keys on {from_port} after {SETTLE_TIMEOUT:?}\n{}",
                self.logs_tail()
            );
            let mut cmd = redis::cmd("MIGRATE");
            cmd.arg("127.0.0.1")
                .arg(to_port)
                .arg("")
                .arg(0)
                .arg(MIGRATE_TIMEOUT_MS)
                .arg("KEYS")
                .arg(&keys);
            // "NOKEY" when a client deleted them meanwhile: fine.
            let reply: redis::RedisResult<String> = cmd.query_async(&mut from).await;
            if let Err(e) = reply {
                panic!(
                    "MIGRATE of {} keys of slot {slot} from {from_port} to {to_port}: {e}\n{}",
                    keys.len(),
                    self.logs_tail()
                );
            }
        }

        // The target first (it takes a new config epoch, which makes its
        // claim win in gossip), then the source (which stops redirecting
        // with ASK), then every other master, so no node answers with the
        // old owner for long.
        self.setslot(&mut to, to_port, slot, "NODE", &to_id).await;
        self.setslot(&mut from, from_port, slot, "NODE", &to_id)
            .await;
        for m in nodes.iter().filter(|n| n.is_master() && !n.is_failed()) {
            if m.port != from_port && m.port != to_port && self.live_ports().contains(&m.port) {
                let mut c = self.node_conn(m.port).await;
                self.setslot(&mut c, m.port, slot, "NODE", &to_id).await;
            }
        }
        self.wait_agreed(
            SETTLE_TIMEOUT,
            &format!("moving slot {slot} from {from_port} to {to_port}"),
            |v| match topology::owner_of(v, slot) {
                Some(p) if p == to_port => Ok(()),
                other => Err(format!("slot {slot} still owned by {other:?}")),
            },
        )
        .await;
    }

    /// `CLUSTER SETSLOT <slot> <state> <node_id>` on one node; panics
    /// with the logs when refused.
    async fn setslot(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        port: u16,
        slot: u16,
        state: &str,
        node_id: &str,
    ) {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(slot).arg(state).arg(node_id);
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            cmd.query_async::<redis::Value>(conn),
        )
        .await;
        let what = format!("CLUSTER SETSLOT {slot} {state} {node_id} on node {port}");
        match reply {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{what}: {e}\n{}", self.logs_tail()),
            Err(_) => panic!("{what}: no answer\n{}", self.logs_tail()),
        }
    }
}
