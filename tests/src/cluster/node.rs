//! One `redis-server` process of a test cluster: its ports, its own data
//! directory (which keeps `nodes-<port>.conf`, so a restarted node rejoins
//! as itself), and short queries the harness uses to watch it.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::ClusterOptions;
use crate::harness::{die_with_parent, free_port, tail};

/// How far a node's cluster bus port is from its client port (fixed by
/// Redis).
pub const BUS_OFFSET: u16 = 10000;

/// How long one harness query may take; polls retry, so a slow answer only
/// costs a round.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Node {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts a node on a fresh port pair under `base`; retries on other
    /// ports when a port was taken between the check and the bind.
    pub async fn start(base: &Path, taken: &[u16], opts: &ClusterOptions) -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..5 {
            let port = cluster_port(taken);
            let mut node = Self {
                port,
                dir: base.join(format!("node-{port}")),
                child: None,
            };
            std::fs::create_dir_all(&node.dir).map_err(|e| format!("create node dir: {e}"))?;
            match node.spawn_and_wait(opts).await {
                Ok(()) => return Ok(node),
                Err(e) => {
                    last = e;
                    let _ = std::fs::remove_dir_all(&node.dir);
                }
            }
        }
        Err(last)
    }

    /// Starts the process again on the same port and directory.
    pub async fn restart(&mut self, opts: &ClusterOptions) -> Result<(), String> {
        self.kill();
        let mut last = String::new();
        // The ports were ours a moment ago; the kernel may need a moment.
        for _ in 0..20 {
            match self.spawn_and_wait(opts).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The running process's id (for reading its CPU time from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap: a crash, no shutdown work.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "----- redis cluster node {} ({}) {} last {lines} lines -----\n{}\n",
            self.port,
            if self.is_running() {
                "running"
            } else {
                "killed"
            },
            self.dir.join("redis.log").display(),
            tail(&self.log(), lines)
        )
    }

    fn spawn(&mut self, opts: &ClusterOptions) {
        let port = self.port.to_string();
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &opts.node_timeout_ms.to_string()])
            // A replica whose master died is promoted however long the
            // link was down: on a loaded test machine, the default (10 node
            // timeouts) can wrongly rule a replica too stale to fail over.
            .args(["--cluster-replica-validity-factor", "0"])
            // A master waits 5 s by default before a diskless full sync, in
            // case more replicas come: every replica (and every restarted
            // node) would take 5 s to come up.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no", "--save", ""])
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if opts.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&opts.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn redis-server"));
    }

    async fn spawn_and_wait(&mut self, opts: &ClusterOptions) -> Result<(), String> {
        self.spawn(opts);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "redis-server (cluster node) exited with {st} on port {}; log:\n{}",
                    self.port,
                    tail(&self.log(), 20)
                ));
            }
            if query::<String>(self.port, &redis::cmd("PING"))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server (cluster node) on port {} did not answer PING",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A client port below 55535 that is free, and whose bus port (+10000) is
/// free too, neither clashing with the ports already `taken` by this
/// cluster.
fn cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..10_000 {
        let p = free_port();
        if p >= u16::MAX - BUS_OFFSET {
            continue;
        }
        let bus = p + BUS_OFFSET;
        let clash = taken
            .iter()
            .any(|&t| t == p || t == bus || t + BUS_OFFSET == p || t + BUS_OFFSET == bus);
        if !clash && std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair (port, port + {BUS_OFFSET}) for a cluster node");
}

/// One command on a fresh connection to a node, bounded: for the harness's
/// polls, where a dead or busy node must read as "not yet", not hang.
pub(super) async fn query<T: redis::FromRedisValue>(
    port: u16,
    cmd: &redis::Cmd,
) -> Result<T, String> {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(QUERY_TIMEOUT))
        .set_connection_timeout(Some(QUERY_TIMEOUT));
    let fut = async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut c = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        cmd.query_async::<T>(&mut c).await
    };
    match tokio::time::timeout(QUERY_TIMEOUT * 2, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("node {port}: {e}")),
        Err(_) => Err(format!(
            "node {port}: no answer within {:?}",
            QUERY_TIMEOUT * 2
        )),
    }
}

/// A `field:value` line of an `INFO`/`CLUSTER INFO` reply.
pub(super) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}
