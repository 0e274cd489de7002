//! Real parts for the end-to-end tests: a `redis-server` on a free port and
//! the workspace's binaries as child processes with captured logs.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// How many trailing log lines a failure message shows.
pub const TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// `target/<profile>/`: where cargo puts the binaries. The running test
/// executable is `target/<profile>/deps/<test>-<hash>`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a parent dir");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The `target/` directory.
pub fn target_dir() -> PathBuf {
    let p = profile_dir();
    p.parent().map(Path::to_path_buf).unwrap_or(p)
}

/// Path of a workspace binary (`ingress`, `worker`, `bot`); panics with a
/// clear message when it was not built.
pub fn bin_path(name: &str) -> PathBuf {
    let p = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !p.is_file() {
        panic!(
            "binary `{name}` not found at {}: run `cargo build --workspace --bins` first (scripts/test does this)",
            p.display()
        );
    }
    p
}

/// Where service logs go: `target/e2e-logs/`.
pub fn log_dir() -> PathBuf {
    let d = target_dir().join("e2e-logs");
    let _ = std::fs::create_dir_all(&d);
    d
}

pub(crate) fn unique() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// The running test's name (libtest names each test thread after it), made
/// file-name safe; falls back to the test executable's name.
pub fn test_name() -> String {
    let from_thread = std::thread::current()
        .name()
        .filter(|n| *n != "main" && !n.starts_with("tokio-runtime"))
        .map(str::to_owned);
    let name = from_thread.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .map(|s| s.rsplit_once('-').map(|(a, _)| a.to_owned()).unwrap_or(s))
            .unwrap_or_else(|| "e2e".into())
    });
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .replace("__", "_")
}

/// A TCP port that was free a moment ago, picked below the kernel's
/// ephemeral range (32768-60999 on Linux): a port the kernel handed out
/// (`bind :0`) is where it also puts the next outgoing connection of any
/// process, so between the pick and the service's own bind a Redis or HTTP
/// client could take it - one start in a few hundred failed that way.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let p = rand::random_range(20_000..32_000u16);
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

pub(crate) fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Children die with the test process, even when it is killed (a timeout
/// in CI): no stray redis-server or service keeps a port or a CPU busy.
/// Linux ties this to the spawning thread, which for these helpers is the
/// test's own thread, alive as long as the test.
pub(crate) fn die_with_parent<C: std::os::unix::process::CommandExt>(cmd: &mut C) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

fn signal(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// Writes to the real stderr, past libtest's output capture (which only
/// intercepts `print!`/`eprint!`), so a skip is seen even in passing runs.
pub fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn msg_box(msg: &str) -> String {
    format!("\n{}\n{msg}\n{}\n", "!".repeat(78), "!".repeat(78))
}

/// Strips ANSI colour sequences, in case a logger colours despite NO_COLOR.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            it.next();
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls an async condition until it holds; false on timeout.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `--appendonly yes --appendfsync always`: every acknowledged write
    /// survives `stop()`/`kill()` + `restart()`.
    pub aof: bool,
    /// More `redis-server` arguments, e.g. `["--maxmemory", "100mb"]`.
    pub args: Vec<String>,
}

/// A `redis-server` child on 127.0.0.1 and a free port, killed on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    opts: RedisOptions,
    child: Option<std::process::Child>,
    /// A second handle on another test's server ([`RedisServer::share`]):
    /// dropping it leaves the server and its data alone.
    shared: bool,
}

fn redis_missing() -> Option<RedisServer> {
    redis_tool_missing("redis-server")
}

/// The loud skip (or, under `E2E_REQUIRE_REDIS`, the failure) when a Redis
/// program (`redis-server`, `redis-cli`) is not installed.
pub(crate) fn redis_tool_missing<T>(tool: &str) -> Option<T> {
    let require = std::env::var("E2E_REQUIRE_REDIS")
        .map(|v| matches!(v.as_str(), "1" | "true" | "yes"))
        .unwrap_or(false);
    let msg = format!(
        "SKIPPED: {tool} not found on PATH - this end-to-end test did NOT run. \
         Install it (apt-get install redis-server) to run the e2e tests."
    );
    if require {
        panic!("{msg} (E2E_REQUIRE_REDIS is set, so this is a failure)");
    }
    loud(&msg_box(&msg));
    None
}

impl RedisServer {
    /// Starts a throwaway server without persistence; `None` (after a loud
    /// message on stderr) when `redis-server` is not installed.
    pub async fn start() -> Option<Self> {
        Self::start_with(RedisOptions::default()).await
    }

    pub async fn start_with(opts: RedisOptions) -> Option<Self> {
        which("redis-server").or_else(|| {
            redis_missing();
            None
        })?;
        let dir = target_dir().join("e2e-tmp").join(format!(
            "redis-{}-{}-{}",
            test_name(),
            std::process::id(),
            unique()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create redis data dir");
        let mut last_err = String::new();
        for _ in 0..5 {
            let mut s = Self {
                port: free_port(),
                dir: dir.clone(),
                opts: opts.clone(),
                child: None,
                shared: false,
            };
            match s.spawn_and_wait().await {
                Ok(()) => return Some(s),
                Err(e) => last_err = e,
            }
        }
        panic!("redis-server did not start: {last_err}");
    }

    fn spawn(&mut self) {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .arg("--save")
            .arg("");
        if self.opts.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.opts.args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn redis-server"));
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "redis-server exited with {st} on port {}; log:\n{}",
                    self.port,
                    tail(&self.log(), 20)
                ));
            }
            if self.ping().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let fut = async {
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), fut).await,
            Ok(Some(_))
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle on this same server for a second stack (two bots on one
    /// Redis). It cannot stop the server; the original keeps owning it and
    /// must outlive the handle's users.
    pub fn share(&self) -> Self {
        Self {
            port: self.port,
            dir: self.dir.clone(),
            opts: self.opts.clone(),
            child: None,
            shared: true,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The server's own log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A fresh multiplexed connection.
    /// A connection for the test's own checks. redis-rs's default 500 ms
    /// response timeout is too short on a machine loaded by parallel tests:
    /// a check must fail for a wrong answer, not for a slow one.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(10)));
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// Graceful stop (SIGTERM: with AOF, everything written is on disk).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Crash: SIGKILL, no shutdown work.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data dir.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut last = String::new();
        // The port was ours a moment ago; give the kernel a moment if the
        // bind races with the old socket.
        for _ in 0..20 {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not restart on port {}: {last}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.shared {
            return;
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Converts an `XINFO`-style reply (flat array of pairs, or a RESP3 map)
/// into a map.
pub fn kv(v: &redis::Value) -> HashMap<String, redis::Value> {
    let mut out = HashMap::new();
    match v {
        redis::Value::Array(items) => {
            for pair in items.chunks(2) {
                if let [k, v] = pair {
                    if let Some(k) = value_str(k) {
                        out.insert(k, v.clone());
                    }
                }
            }
        }
        redis::Value::Map(pairs) => {
            for (k, v) in pairs {
                if let Some(k) = value_str(k) {
                    out.insert(k, v.clone());
                }
            }
        }
        _ => {}
    }
    out
}

pub fn value_str(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        redis::Value::Okay => Some("OK".into()),
        redis::Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

pub fn value_i64(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(i) => Some(*i),
        other => value_str(other).and_then(|s| s.parse().ok()),
    }
}

// ---------------------------------------------------------------------------
// Services (the workspace binaries)
// ---------------------------------------------------------------------------

struct LogSink {
    mem: Mutex<String>,
    file: Mutex<Option<std::fs::File>>,
    /// Number of output streams (stdout, stderr) that reached EOF.
    eof: AtomicUsize,
}

impl LogSink {
    fn push(&self, line: &str) {
        let line = strip_ansi(line);
        {
            let mut m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
            m.push_str(&line);
            if !line.ends_with('\n') {
                m.push('\n');
            }
        }
        if let Some(f) = self.file.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = f.write_all(line.as_bytes());
            if !line.ends_with('\n') {
                let _ = f.write_all(b"\n");
            }
        }
    }
}

fn pump(reader: impl AsyncRead + Unpin + Send + 'static, sink: Arc<LogSink>) {
    tokio::spawn(async move {
        let mut r = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => sink.push(&String::from_utf8_lossy(&buf)),
            }
        }
        sink.eof.fetch_add(1, Ordering::SeqCst);
    });
}

fn base_command(bin: &str, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin_path(bin));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "RUST_LOG",
            std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: as in `die_with_parent`.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// A running workspace binary. Its stdout and stderr are captured in memory
/// and in `target/e2e-logs/<test>-<bin>-<n>.log`. Killed on drop.
pub struct Service {
    pub bin: String,
    child: tokio::process::Child,
    pid: u32,
    sink: Arc<LogSink>,
    log_path: PathBuf,
    exited: Option<ExitStatus>,
    terminated: AtomicBool,
}

impl Service {
    /// Starts `bin` with a clean environment (only PATH, RUST_LOG=info,
    /// NO_COLOR=1, RUST_BACKTRACE=1 and `env`; later entries win).
    pub fn spawn(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log_path = log_dir().join(format!("{}-{bin}-{}.log", test_name(), unique()));
        let file = std::fs::File::create(&log_path).ok();
        let mut cmd = base_command(bin, args, env);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin_path(bin).display()));
        let pid = child.id().expect("child pid");
        let sink = Arc::new(LogSink {
            mem: Mutex::new(String::new()),
            file: Mutex::new(file),
            eof: AtomicUsize::new(0),
        });
        pump(child.stdout.take().expect("stdout"), sink.clone());
        pump(child.stderr.take().expect("stderr"), sink.clone());
        Self {
            bin: bin.to_owned(),
            child,
            pid,
            sink,
            log_path,
            exited: None,
            terminated: AtomicBool::new(false),
        }
    }

    /// Same, with owned pairs (handy when building env lists).
    pub fn spawn_owned(bin: &str, args: &[&str], env: &[(String, String)]) -> Self {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::spawn(bin, args, &env)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process printed so far (stdout and stderr, interleaved
    /// by line).
    pub fn logs(&self) -> String {
        self.sink
            .mem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last [`TAIL_LINES`] lines, labelled, for failure messages.
    pub fn logs_tail(&self) -> String {
        format!(
            "----- {} (pid {}, {}) last {TAIL_LINES} lines -----\n{}\n",
            self.bin,
            self.pid,
            self.log_path.display(),
            tail(&self.logs(), TAIL_LINES)
        )
    }

    /// Whether both output streams were closed (the process is gone or
    /// closed them).
    pub fn output_closed(&self) -> bool {
        self.sink.eof.load(Ordering::SeqCst) >= 2
    }

    /// Has the process exited? (Reaps it if so.)
    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits until the logs contain `needle`; false on timeout or when the
    /// process closed its output without printing it.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().contains(needle) {
                return true;
            }
            if self.output_closed() {
                // One last look: the pump may have pushed the final lines.
                return self.logs().contains(needle);
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Self::wait_for_log`] that fails the test with the logs tail.
    #[track_caller]
    pub fn expect_log<'a>(
        &'a self,
        needle: &'a str,
        timeout: Duration,
    ) -> impl std::future::Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            if !self.wait_for_log(needle, timeout).await {
                panic!(
                    "[{caller}] {} did not log {needle:?} within {timeout:?}\n{}",
                    self.bin,
                    self.logs_tail()
                );
            }
        }
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) -> Option<ExitStatus> {
        if self.has_exited().is_none() {
            let _ = self.child.start_kill();
            self.exited = self.child.wait().await.ok();
        }
        self.drain_output().await;
        self.exited
    }

    /// SIGTERM (graceful shutdown request).
    pub fn terminate(&mut self) {
        if self.has_exited().is_none() {
            self.terminated.store(true, Ordering::SeqCst);
            signal(self.pid, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit; panics with the logs tail on timeout
    /// (the process is then killed by drop).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(st) = self.has_exited() {
            self.drain_output().await;
            return st;
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(st)) => {
                self.exited = Some(st);
                self.drain_output().await;
                st
            }
            Ok(Err(e)) => panic!("waiting for {}: {e}", self.bin),
            Err(_) => panic!(
                "{} (pid {}) did not exit within {timeout:?}{}\n{}",
                self.bin,
                self.pid,
                if self.terminated.load(Ordering::SeqCst) {
                    " after SIGTERM"
                } else {
                    ""
                },
                self.logs_tail()
            ),
        }
    }

    async fn drain_output(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.output_closed() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Runs `bin` to completion (clean environment as for [`Service::spawn`]);
/// panics if it does not exit within `timeout` (it is killed then).
pub async fn run_to_exit(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let mut cmd = base_command(bin, args, env);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin_path(bin).display()));
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => panic!("running {bin}: {e}"),
        Err(_) => panic!(
            "`{bin} {}` did not exit within {timeout:?} (it must fail fast, never hang)",
            args.join(" ")
        ),
    };
    let stdout = strip_ansi(&String::from_utf8_lossy(&out.stdout));
    let stderr = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    let log_path = log_dir().join(format!("{}-{bin}-{}.log", test_name(), unique()));
    let _ = std::fs::write(
        &log_path,
        format!(
            "$ {bin} {}\nexit: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            args.join(" "),
            out.status
        ),
    );
    (out.status, stdout, stderr)
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A shared client that never goes through a proxy (the test machine's
/// proxy settings must not reroute 127.0.0.1).
pub fn http() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .expect("reqwest client")
    })
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

/// POSTs a webhook delivery the way Telegram does (JSON, secret header).
pub async fn webhook_post(
    url: &str,
    secret: Option<&str>,
    body: impl Into<Vec<u8>>,
) -> Result<HttpReply, reqwest::Error> {
    let mut req = http()
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.into());
    if let Some(s) = secret {
        req = req.header(SECRET_HEADER, s);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

/// Any request; `Err` only for transport errors.
pub async fn http_request(method: reqwest::Method, url: &str) -> Result<HttpReply, reqwest::Error> {
    let resp = http().request(method, url).send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

pub async fn http_get(url: &str) -> Result<HttpReply, reqwest::Error> {
    http_request(reqwest::Method::GET, url).await
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// Fails if the bot token (or its secret half) appears anywhere in `logs`.
#[track_caller]
pub fn assert_token_absent(logs: &str) {
    assert_secret_absent(logs, crate::TOKEN);
}

#[track_caller]
pub fn assert_secret_absent(logs: &str, token: &str) {
    let secret_half = token.split_once(':').map(|(_, s)| s).unwrap_or(token);
    for (i, line) in logs.lines().enumerate() {
        if line.contains(token) || line.contains(secret_half) {
            panic!(
                "the bot token leaked into the logs (line {}): {}",
                i + 1,
                line.replace(token, "<TOKEN>")
                    .replace(secret_half, "<TOKEN>")
            );
        }
    }
}

/// POSTs `body` over a raw TCP connection, writing and reading at the same
/// time, and returns the status code of the answer.
///
/// For oversized bodies: a server may answer 413 as soon as it sees the
/// Content-Length and close the connection; a regular client that is still
/// uploading then reports a broken pipe instead of the answer. Reading while
/// writing sees what the server said.
pub async fn raw_post_status(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<u16, String> {
    raw_post(url, headers, body, false).await
}

/// Like [`raw_post_status`], with `Transfer-Encoding: chunked` (no
/// Content-Length: the server only learns the size by reading).
pub async fn raw_post_chunked_status(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<u16, String> {
    raw_post(url, headers, body, true).await
}

async fn raw_post(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    chunked: bool,
) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    let addr = format!(
        "{}:{}",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port_or_known_default().unwrap_or(80)
    );
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut rd, mut wr) = stream.into_split();
    let length = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\n{length}\r\nConnection: close\r\n",
        u.path()
    );
    let body = if chunked {
        let mut b = Vec::with_capacity(body.len() + 1024);
        for c in body.chunks(16 * 1024) {
            b.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            b.extend_from_slice(c);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"0\r\n\r\n");
        b
    } else {
        body
    };
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        let _ = wr.flush().await;
        // Keep the write half open until the reader is done.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let res = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                let code = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("bad status line {line:?}"))?;
                return Ok(code);
            }
            match rd.read(&mut chunk).await {
                Ok(0) => {
                    return Err(format!(
                        "connection closed before a status line ({} bytes)",
                        buf.len()
                    ))
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read: {e} after {} bytes", buf.len())),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no answer within 30s".into()));
    writer.abort();
    res
}
