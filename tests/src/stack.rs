//! The standard test setup: fake Bot API + redis-server + `ingress` +
//! `worker`(s) with the standard environment, and the waits every test
//! needs, each bounded and failing with the services' log tails.

use std::time::Duration;

use serde_json::Value;
use shared::keys::{self, Keys};

use crate::accounting::{consumer_of_pid, consumers_of};
use crate::fake_bot_api::{Call, FakeBotApi};
use crate::harness::{
    eventually, free_port, http_get, kv, value_i64, value_str, webhook_post, HttpReply,
    RedisOptions, RedisServer, Service,
};
use crate::{TOKEN, WEBAPP_URL, WEBHOOK_SECRET, WEBHOOK_URL};

/// How long a service may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment for `ingress` in webhook mode.
pub fn ingress_env(api: &FakeBotApi, redis: &RedisServer, port: u16) -> Vec<(String, String)> {
    [
        ("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()),
        ("TELEGRAM_WEBHOOK_URL", WEBHOOK_URL.to_owned()),
        ("TELEGRAM_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("TELEGRAM_API_URL", api.url()),
        ("REDIS_URL", redis.url()),
        ("PORT", port.to_string()),
        ("HOST", "127.0.0.1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Environment for `worker`.
pub fn worker_env(api: &FakeBotApi, redis: &RedisServer) -> Vec<(String, String)> {
    [
        ("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()),
        ("TELEGRAM_API_URL", api.url()),
        ("REDIS_URL", redis.url()),
        ("TELEGRAM_WEBAPP_URL", WEBAPP_URL.to_owned()),
        ("TELEGRAM_SEND_RATE", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A JSON integer, or an integer in a string (how the CLI's fields may
/// come).
pub fn json_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// `base` with `extra` applied on top (same key: replaced; empty value:
/// removed).
pub fn merge_env(base: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out = base;
    for (k, v) in extra {
        out.retain(|(ek, _)| ek != k);
        if !v.is_empty() {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

pub struct StackBuilder {
    ingress: bool,
    workers: usize,
    worker_bin: WorkerBin,
    ingress_env: Vec<(String, String)>,
    worker_env: Vec<(String, String)>,
    redis: RedisOptions,
    shared_redis: Option<RedisServer>,
    token: Option<String>,
    keys: Keys,
}

impl StackBuilder {
    /// Start no ingress (tests that write the stream themselves).
    pub fn without_ingress(mut self) -> Self {
        self.ingress = false;
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Run another bot's binary as the workers (a team's bot built on the
    /// engine, e.g. `("echo-bot", &["worker"])`: examples default to the
    /// all-in-one, so they need the argument). Its operator commands
    /// ([`Stack::worker_command`]) go through the same binary.
    pub fn worker_bin(mut self, bin: &str, args: &[&str]) -> Self {
        self.worker_bin = WorkerBin {
            bin: bin.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        self
    }

    pub fn ingress_env(mut self, k: &str, v: &str) -> Self {
        self.ingress_env.push((k.into(), v.into()));
        self
    }

    pub fn worker_env(mut self, k: &str, v: &str) -> Self {
        self.worker_env.push((k.into(), v.into()));
        self
    }

    pub fn redis_aof(mut self) -> Self {
        self.redis.aof = true;
        self
    }

    /// Runs on another stack's redis-server (two bots on one Redis) instead
    /// of starting its own.
    pub fn shared_redis(mut self, redis: &RedisServer) -> Self {
        self.shared_redis = Some(redis.share());
        self
    }

    /// `REDIS_KEY_PREFIX` for both services; the stack's own Redis reads
    /// (queue state, counters ...) use the same prefix.
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.keys = Keys::new(prefix).expect("a valid key prefix");
        self.ingress_env
            .push(("REDIS_KEY_PREFIX".into(), prefix.into()));
        self.worker_env
            .push(("REDIS_KEY_PREFIX".into(), prefix.into()));
        self
    }

    /// Another bot token (its own fake Bot API answers only to it).
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.into());
        self.ingress_env
            .push(("TELEGRAM_BOT_TOKEN".into(), token.into()));
        self.worker_env
            .push(("TELEGRAM_BOT_TOKEN".into(), token.into()));
        self
    }

    /// More `redis-server` arguments.
    pub fn redis_args(mut self, args: &[&str]) -> Self {
        self.redis.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// `None` when redis-server is not installed (the test returns early).
    pub async fn start(self) -> Option<Stack> {
        let redis = match self.shared_redis {
            Some(r) => r,
            None => RedisServer::start_with(self.redis).await?,
        };
        let api = match &self.token {
            Some(t) => FakeBotApi::start_with_token(t).await,
            None => FakeBotApi::start().await,
        };
        let mut stack = Stack {
            api,
            redis,
            keys: self.keys,
            ingress: None,
            ingress_port: 0,
            workers: Vec::new(),
            worker_bin: self.worker_bin,
            extra_ingress_env: self.ingress_env,
            extra_worker_env: self.worker_env,
        };
        if self.ingress {
            stack.start_ingress().await;
        }
        for _ in 0..self.workers {
            stack.spawn_worker(&[]);
        }
        if self.workers > 0 {
            stack.wait_workers_joined(self.workers).await;
        }
        Some(stack)
    }
}

/// The binary the stack runs as its workers, and the arguments that make
/// it one.
#[derive(Debug, Clone)]
struct WorkerBin {
    bin: String,
    args: Vec<String>,
}

impl Default for WorkerBin {
    fn default() -> Self {
        Self {
            bin: "worker".into(),
            args: Vec::new(),
        }
    }
}

/// A running system under test.
pub struct Stack {
    pub api: FakeBotApi,
    pub redis: RedisServer,
    /// The names of this stack's keys (`REDIS_KEY_PREFIX`).
    pub keys: Keys,
    pub ingress: Option<Service>,
    pub ingress_port: u16,
    pub workers: Vec<Service>,
    worker_bin: WorkerBin,
    extra_ingress_env: Vec<(String, String)>,
    extra_worker_env: Vec<(String, String)>,
}

impl Stack {
    /// Ingress + `n` workers by default; see [`StackBuilder`].
    pub fn builder() -> StackBuilder {
        StackBuilder {
            ingress: true,
            workers: 1,
            worker_bin: WorkerBin::default(),
            ingress_env: Vec::new(),
            worker_env: Vec::new(),
            redis: RedisOptions::default(),
            shared_redis: None,
            token: None,
            keys: Keys::default(),
        }
    }

    /// Ingress and one worker.
    pub async fn start() -> Option<Self> {
        Self::builder().start().await
    }

    pub fn ingress_env(&self) -> Vec<(String, String)> {
        let extra: Vec<(&str, &str)> = self
            .extra_ingress_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        merge_env(
            ingress_env(&self.api, &self.redis, self.ingress_port),
            &extra,
        )
    }

    pub fn worker_env(&self) -> Vec<(String, String)> {
        let extra: Vec<(&str, &str)> = self
            .extra_worker_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        merge_env(worker_env(&self.api, &self.redis), &extra)
    }

    /// Starts the ingress on a free port and waits for `/readyz` 200.
    /// Retries on another port if the one picked was taken meanwhile (the
    /// free-port check races with parallel tests).
    pub async fn start_ingress(&mut self) {
        for attempt in 1..=3 {
            self.ingress_port = free_port();
            let env = self.ingress_env();
            let mut svc = Service::spawn_owned("ingress", &[], &env);
            match try_wait_ready(&mut svc, self.ingress_port).await {
                Ok(()) => {
                    self.ingress = Some(svc);
                    return;
                }
                Err(e) if attempt < 3 && svc.logs().to_lowercase().contains("in use") => {
                    crate::harness::loud(&format!("ingress port clash, retrying: {e}"));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// An operator command of the worker binary (`queue ...`), run to its
    /// exit with the stack's worker environment.
    pub async fn worker_command(
        &self,
        args: &[&str],
    ) -> (std::process::ExitStatus, String, String) {
        let env = self.worker_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        crate::harness::run_to_exit(&self.worker_bin.bin, args, &env, Duration::from_secs(30)).await
    }

    /// `worker queue dead --json` as an operator runs it: exit 0, a JSON
    /// array, no token in the output.
    pub async fn queue_dead(&self) -> Vec<Value> {
        let (st, out, err) = self.worker_command(&["queue", "dead", "--json"]).await;
        assert!(st.success(), "queue dead --json: {st}\n{out}\n{err}");
        crate::assert_token_absent(&out);
        crate::assert_token_absent(&err);
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("queue dead --json prints JSON ({e}):\n{out}\n{err}"));
        match v {
            Value::Array(items) => items,
            other => panic!("queue dead --json prints an array: {other}"),
        }
    }

    /// A new ingress on the same port after the old one died (a redeploy or
    /// a crash: the public URL does not change).
    pub async fn restart_ingress(&mut self) {
        if let Some(old) = self.ingress.as_mut() {
            assert!(
                old.has_exited().is_some(),
                "restart_ingress: the old ingress still runs"
            );
        }
        let env = self.ingress_env();
        let mut svc = Service::spawn_owned("ingress", &[], &env);
        if let Err(e) = try_wait_ready(&mut svc, self.ingress_port).await {
            panic!("the restarted ingress is not ready: {e}");
        }
        self.ingress = Some(svc);
    }

    /// Starts one more worker with the stack's env plus `extra`; returns its
    /// index in `workers`. Does not wait for it (see
    /// [`Self::wait_workers_joined`]).
    pub fn spawn_worker(&mut self, extra: &[(&str, &str)]) -> usize {
        let env = merge_env(self.worker_env(), extra);
        let args: Vec<&str> = self.worker_bin.args.iter().map(String::as_str).collect();
        self.workers
            .push(Service::spawn_owned(&self.worker_bin.bin, &args, &env));
        self.workers.len() - 1
    }

    /// Changes the ingress's environment for its next (re)start.
    pub fn set_ingress_env(&mut self, k: &str, v: &str) {
        self.extra_ingress_env.retain(|(ek, _)| ek != k);
        self.extra_ingress_env.push((k.into(), v.into()));
    }

    pub fn ingress(&self) -> &Service {
        self.ingress.as_ref().expect("this stack has no ingress")
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ingress_port)
    }

    /// The local webhook endpoint Telegram would call.
    pub fn webhook_url(&self) -> String {
        format!("{}/telegram/webhook/", self.base_url())
    }

    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        self.redis.conn().await
    }

    /// Every service's log tail, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut s = String::new();
        if let Some(i) = &self.ingress {
            s.push_str(&i.logs_tail());
        }
        for w in &self.workers {
            s.push_str(&w.logs_tail());
        }
        s
    }

    /// Every service's full logs.
    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        if let Some(i) = &self.ingress {
            s.push_str(&i.logs());
        }
        for w in &self.workers {
            s.push_str(&w.logs());
        }
        s
    }

    /// POSTs an update with the right secret; returns the answer.
    pub async fn post(&self, update: &Value) -> HttpReply {
        webhook_post(
            &self.webhook_url(),
            Some(WEBHOOK_SECRET),
            update.to_string(),
        )
        .await
        .unwrap_or_else(|e| panic!("POST to the ingress failed: {e}\n{}", self.logs_tail()))
    }

    /// POSTs an update and requires 200.
    pub async fn post_ok(&self, update: &Value) {
        let r = self.post(update).await;
        assert_eq!(
            r.status,
            200,
            "ingress answered {} ({}) to a valid update\n{}",
            r.status,
            r.body,
            self.logs_tail()
        );
    }

    /// Waits until `pred` holds on the fake API's call record; fails with
    /// `what` and the logs.
    pub async fn wait_calls(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl FnMut(&[Call]) -> bool,
    ) {
        if !self.api.wait_for(timeout, pred).await {
            panic!(
                "timed out after {timeout:?} waiting for: {what}\nsendMessage calls so far: {}\n{}",
                self.api.count("sendMessage"),
                self.logs_tail()
            );
        }
    }

    /// Successful sendMessage calls to `chat_id`, in order.
    pub fn replies_to(&self, chat_id: i64) -> Vec<Call> {
        self.api
            .calls()
            .into_iter()
            .filter(|c| c.ok() && c.method == "sendMessage" && c.chat_id() == Some(chat_id))
            .collect()
    }

    /// Waits for a successful sendMessage to `chat_id` matching `pred` and
    /// returns it.
    pub async fn wait_reply(
        &self,
        chat_id: i64,
        timeout: Duration,
        mut pred: impl FnMut(&Call) -> bool,
    ) -> Call {
        let mut found = None;
        let ok = self
            .api
            .wait_for(timeout, |calls| {
                found = calls
                    .iter()
                    .filter(|c| c.ok() && c.method == "sendMessage" && c.chat_id() == Some(chat_id))
                    .find(|c| pred(c))
                    .cloned();
                found.is_some()
            })
            .await;
        if !ok {
            panic!(
                "timed out after {timeout:?} waiting for a reply to chat {chat_id}; sent to it so far: {:?}\nviolations: {:?}\n{}",
                self.api.sent_to(chat_id),
                self.api.violations(),
                self.logs_tail()
            );
        }
        found.expect("found")
    }

    /// Waits for the `n`-th (1-based) successful sendMessage to `chat_id`.
    pub async fn wait_nth_reply(&self, chat_id: i64, n: usize, timeout: Duration) -> Call {
        let ok = self
            .api
            .wait_for(timeout, |calls| {
                calls
                    .iter()
                    .filter(|c| c.ok() && c.method == "sendMessage" && c.chat_id() == Some(chat_id))
                    .count()
                    >= n
            })
            .await;
        if !ok {
            panic!(
                "timed out after {timeout:?} waiting for reply #{n} to chat {chat_id}; sent to it so far: {:?}\nviolations: {:?}\n{}",
                self.api.sent_to(chat_id),
                self.api.violations(),
                self.logs_tail()
            );
        }
        self.replies_to(chat_id)[n - 1].clone()
    }

    /// Makes the ingress forget it saw `update_id` (as when its memory of
    /// the id expired), so the same update can reach the stream again.
    pub async fn forget_seen(&self, update_id: i64) {
        let mut c = self.redis_conn().await;
        let seen = self.keys.seen(update_id);
        let _: i64 = redis::cmd("SETBIT")
            .arg(&seen.key)
            .arg(seen.bit)
            .arg(0)
            .query_async(&mut c)
            .await
            .expect("SETBIT");
    }

    /// Bot-wide counter from the stats model (`<prefix>counters`).
    pub async fn counter(&self, field: &str) -> i64 {
        let mut c = self.redis_conn().await;
        let v: Option<i64> = redis::cmd("HGET")
            .arg(self.keys.counters())
            .arg(field)
            .query_async(&mut c)
            .await
            .expect("HGET counters");
        v.unwrap_or(0)
    }

    /// Waits until the workers' consumer group exists and every running
    /// worker has joined it under its name (hard requirements: a worker
    /// adds itself at start), then, briefly, until `n` connections are
    /// blocked in XREADGROUP (a hint that they are reading).
    pub async fn wait_workers_joined(&mut self, n: usize) {
        let redis_url = self.redis.url();
        let ok = eventually(READY_TIMEOUT, || {
            let url = redis_url.clone();
            let keys = self.keys.clone();
            async move {
                queue_state_of(&url, &keys)
                    .await
                    .is_some_and(|s| s.group_exists)
            }
        })
        .await;
        if !ok {
            let exited: Vec<String> = self
                .workers
                .iter_mut()
                .filter_map(|w| {
                    w.has_exited()
                        .map(|s| format!("worker pid {} exited: {s}", w.pid()))
                })
                .collect();
            panic!(
                "no consumer group {:?} on {:?} within {READY_TIMEOUT:?} ({:?})\n{}",
                keys::GROUP,
                self.keys.stream(),
                exited,
                self.logs_tail()
            );
        }
        let pids: Vec<u32> = self
            .workers
            .iter_mut()
            .filter_map(|w| w.has_exited().is_none().then(|| w.pid()))
            .collect();
        let joined = eventually(READY_TIMEOUT, || {
            let url = redis_url.clone();
            let pids = pids.clone();
            let keys = self.keys.clone();
            async move {
                let list = consumers_of(&url, &keys).await;
                pids.iter()
                    .all(|&pid| consumer_of_pid(&list, pid).is_some())
            }
        })
        .await;
        assert!(
            joined,
            "workers {pids:?} did not all join the group within {READY_TIMEOUT:?}: {:?}\n{}",
            consumers_of(&redis_url, &self.keys).await,
            self.logs_tail()
        );
        let reading = eventually(Duration::from_secs(10), || {
            let url = redis_url.clone();
            async move { blocked_readers(&url).await >= n }
        })
        .await;
        if !reading {
            eprintln!("note: fewer than {n} connections blocked in XREADGROUP after 10s; going on");
        }
    }

    /// Waits until everything in the stream was delivered to the group and
    /// acknowledged: the group's last-delivered id is the stream's last id
    /// and nothing is pending.
    pub async fn wait_drained(&self, timeout: Duration) {
        let url = self.redis.url();
        let ok = eventually(timeout, || {
            let url = url.clone();
            let keys = self.keys.clone();
            async move {
                queue_state_of(&url, &keys)
                    .await
                    .is_some_and(|s| s.drained())
            }
        })
        .await;
        if !ok {
            panic!(
                "the stream was not drained within {timeout:?}: {:?}\n{}",
                queue_state_of(&url, &self.keys).await,
                self.logs_tail()
            );
        }
    }

    /// Entries in the update streams: the ordinary lane and the fast lane
    /// (updates with a deadline).
    pub async fn stream_len(&self) -> u64 {
        let mut c = self.redis_conn().await;
        let (ordinary, fast): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(self.keys.stream())
            .cmd("XLEN")
            .arg(self.keys.fast_stream())
            .query_async(&mut c)
            .await
            .expect("XLEN");
        ordinary + fast
    }

    /// Fails if any call violated the Bot API spec or any log holds the
    /// token.
    #[track_caller]
    pub fn assert_clean(&self) {
        self.api.assert_no_violations();
        crate::harness::assert_token_absent(&self.all_logs());
    }
}

/// Waits for `GET /readyz` 200; fails early if the process exits.
pub async fn wait_ready(svc: &mut Service, port: u16) {
    if let Err(e) = try_wait_ready(svc, port).await {
        panic!("{e}");
    }
}

/// [`wait_ready`] returning the failure (with the logs tail) instead.
pub async fn try_wait_ready(svc: &mut Service, port: u16) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(r) = http_get(&url).await {
            if r.status == 200 {
                return Ok(());
            }
        }
        if let Some(st) = svc.has_exited() {
            // Let the pumps collect the last lines.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Err(format!(
                "{} exited ({st}) before it was ready\n{}",
                svc.bin,
                svc.logs_tail()
            ));
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "{} not ready (GET /readyz != 200) within {READY_TIMEOUT:?}\n{}",
                svc.bin,
                svc.logs_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Number of client connections whose last command is XREADGROUP.
pub async fn blocked_readers(redis_url: &str) -> usize {
    let Ok(client) = redis::Client::open(redis_url) else {
        return 0;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    list.lines()
        .filter(|l| l.contains("cmd=xreadgroup"))
        .count()
}

/// The stream and group as Redis sees them.
#[derive(Debug, Clone, Default)]
pub struct QueueState {
    pub length: i64,
    pub last_generated_id: String,
    pub group_exists: bool,
    pub last_delivered_id: String,
    pub pending: i64,
    pub consumers: i64,
    /// Replies of handled updates not yet sent (`tgbot:replies`).
    pub kept: i64,
    /// Entries of the fast lane not ended yet (ended ones are deleted).
    pub fast: i64,
}

impl QueueState {
    pub fn drained(&self) -> bool {
        self.group_exists
            && self.pending == 0
            && self.kept == 0
            && self.fast == 0
            && self.last_delivered_id == self.last_generated_id
    }
}

pub async fn queue_state(redis_url: &str) -> Option<QueueState> {
    queue_state_of(redis_url, &Keys::default()).await
}

/// [`queue_state`] of the bot whose keys are `keys`.
pub async fn queue_state_of(redis_url: &str, keys: &Keys) -> Option<QueueState> {
    let client = redis::Client::open(redis_url).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    let stream: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(keys.stream())
        .query_async(&mut c)
        .await
        .ok()?;
    let s = kv(&stream);
    let mut st = QueueState {
        length: s.get("length").and_then(value_i64).unwrap_or(0),
        last_generated_id: s
            .get("last-generated-id")
            .and_then(value_str)
            .unwrap_or_default(),
        ..QueueState::default()
    };
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(keys.stream())
        .query_async(&mut c)
        .await
        .ok()?;
    if let redis::Value::Array(gs) = groups {
        for g in gs {
            let g = kv(&g);
            if g.get("name").and_then(value_str).as_deref() == Some(keys::GROUP) {
                st.group_exists = true;
                st.pending = g.get("pending").and_then(value_i64).unwrap_or(0);
                st.consumers = g.get("consumers").and_then(value_i64).unwrap_or(0);
                st.last_delivered_id = g
                    .get("last-delivered-id")
                    .and_then(value_str)
                    .unwrap_or_default();
            }
        }
    }
    st.kept = redis::cmd("HLEN")
        .arg(keys.replies())
        .query_async(&mut c)
        .await
        .unwrap_or(0);
    st.fast = redis::cmd("XLEN")
        .arg(keys.fast_stream())
        .query_async(&mut c)
        .await
        .unwrap_or(0);
    Some(st)
}
