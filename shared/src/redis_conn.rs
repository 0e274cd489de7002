//! Redis connections with timeouts chosen for this system, to one server or
//! to a Redis Cluster.
//!
//! redis-rs gives async connections a 500 ms response timeout by default; a
//! `XREADGROUP BLOCK` would be cut off by it, so blocking reads get their own
//! connection with a timeout longer than the block. Everything else shares
//! one multiplexed, self-reconnecting [`Conn`].
//!
//! A cluster is told from one server by asking the server (`INFO cluster`),
//! or forced with `REDIS_CLUSTER=true`. On a cluster every command goes to
//! the master owning its key's slot, and redirects (MOVED, ASK, TRYAGAIN
//! during a resharding) are followed by the client instead of failing the
//! caller.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

/// How long a command may take before the caller treats Redis as down. Short
/// enough that a webhook answers 503 long before Telegram's 60 s patience.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// How long start-up waits to learn whether `REDIS_URL` names a cluster.
const DETECT_FOR: Duration = Duration::from_secs(5);

fn config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// Where the queue lives: one server, or a cluster reached through any of
/// its nodes.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    cluster: bool,
}

impl Target {
    /// `forced` is `REDIS_CLUSTER` when set. Otherwise the server is asked,
    /// for at most a few seconds: an unreachable Redis at start-up must not
    /// keep the service from starting (it reports not-ready meanwhile), so
    /// then one server is assumed - and said so, since a cluster reached
    /// that way answers every command with a redirect.
    pub async fn resolve(url: &str, forced: Option<bool>) -> RedisResult<Self> {
        redis::Client::open(url)?;
        let cluster = match forced {
            Some(c) => c,
            None => match tokio::time::timeout(DETECT_FOR, detect(url)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not ask Redis whether it is a cluster; assuming one server (set REDIS_CLUSTER to say)");
                    false
                }
                Err(_) => {
                    tracing::warn!("Redis did not answer within 5 s; assuming one server, not a cluster (set REDIS_CLUSTER to say)");
                    false
                }
            },
        };
        Ok(Self {
            url: url.to_owned(),
            cluster,
        })
    }

    /// A target known without asking (tests, tools).
    pub fn single(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            cluster: false,
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The shared connection. Lazy: creating it never fails because Redis
    /// is down, so the service can start, answer `/healthz` and report
    /// not-ready meanwhile.
    pub fn manager(&self) -> RedisResult<Conn> {
        self.open(COMMAND_TIMEOUT)
    }

    /// A connection for blocking commands that wait up to `block`.
    pub fn blocking(&self, block: Duration) -> RedisResult<Conn> {
        self.open(block + COMMAND_TIMEOUT)
    }

    fn open(&self, response_timeout: Duration) -> RedisResult<Conn> {
        if self.cluster {
            let client = ClusterClient::builder(vec![self.url.as_str()])
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(response_timeout)
                // Redirects and TRYAGAIN during a slot migration are
                // retried with a short backoff, well inside the caller's
                // own deadline.
                .retries(8)
                .retry_wait_formula(10, 2)
                .build()?;
            return Ok(Conn::Cluster(LazyCluster {
                client: Arc::new(client),
                conn: Arc::new(OnceCell::new()),
            }));
        }
        let client = redis::Client::open(self.url.as_str())?;
        Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
            client,
            config(response_timeout),
        )?))
    }
}

async fn detect(url: &str) -> RedisResult<bool> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut c)
        .await?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

/// One server's self-reconnecting connection, or a cluster's.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(LazyCluster),
}

/// A cluster connection made on first use: making one asks a node for the
/// slot map, which must not be needed to start the service.
#[derive(Clone)]
pub struct LazyCluster {
    client: Arc<ClusterClient>,
    conn: Arc<OnceCell<ClusterConnection>>,
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Waits until `replicas` replicas of the master holding `key` have
    /// every write this connection made so far, for at most `timeout`.
    /// Returns how many did. On one server `WAIT` goes down the same
    /// connection as the writes; on a cluster to the master of the key's
    /// slot, over the same per-node connection its writes took.
    pub async fn wait_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<u32> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout.as_millis() as u64);
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::new(crate::keys::slot_of(key), SlotAddr::Master);
                let v = c
                    .get()
                    .await?
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(v)?)
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => {
                Box::pin(async move { c.get().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => Box::pin(async move {
                c.get()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// `PING` with a hard deadline: readiness must never hang on a dead Redis.
pub async fn ping(conn: &mut Conn) -> bool {
    let cmd = redis::cmd("PING");
    let fut = cmd.query_async::<String>(conn);
    matches!(tokio::time::timeout(COMMAND_TIMEOUT, fut).await, Ok(Ok(_)))
}

/// What a Redis error means when the layout does not fit the server: the
/// words an operator needs instead of "Redis unavailable".
pub fn cluster_hint(e: &redis::RedisError) -> Option<&'static str> {
    match e.code() {
        Some("CROSSSLOT") => Some(
            "Redis is a cluster but this process uses the one-server key layout: set REDIS_CLUSTER=true (or restart once the cluster answers)",
        ),
        Some("MOVED") | Some("ASK") => Some(
            "Redis is a cluster but this process talks to one node: set REDIS_CLUSTER=true (or restart once the cluster answers)",
        ),
        Some("CLUSTERDOWN") => Some("the Redis Cluster is down (not every slot is served)"),
        _ => None,
    }
}
