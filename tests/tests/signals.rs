//! SIGTERM and Ctrl-C stop every binary whatever its stderr is (SPEC.md,
//! "What is never acceptable"): closed, piped to a reader that went away
//! (`bot 2>&1 | head`, a log collector restarting), or piped to a reader that
//! stopped reading (the pipe buffer full). A log line that cannot be written
//! must never stand between a signal and the shutdown.
//!
//! Readiness is read from HTTP, Redis and the fake Bot API, never from the
//! logs: the logs are what is broken here.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::accounting::{consumer_of_pid, consumers};
use e2e::harness::{bin_path, eventually, free_port, http_get};
use e2e::{FakeBotApi, RedisServer, TOKEN, WEBHOOK_SECRET, WEBHOOK_URL};
use tokio::sync::Semaphore;

/// Tries per binary, signal and kind of stderr.
const TRIES: usize = 20;
/// The longest a stop may take: the worker's grace for in-flight handlers
/// (`worker::SHUTDOWN_GRACE`, 20 s) and a margin. These services are idle,
/// so a healthy stop takes well under a second; a process still running at
/// the bound ignored the signal.
const DRAIN_BOUND: Duration = Duration::from_secs(25);
/// How long a process may take to become ready.
const READY: Duration = Duration::from_secs(30);

/// Starting a debug binary is the costly part of a try; a few at a time
/// keep a loaded two-core machine responsive. Shared by the three tests.
static STARTING: Semaphore = Semaphore::const_new(12);
/// Processes alive at once (on a regression each waits out the bound).
static ALIVE: Semaphore = Semaphore::const_new(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stderr {
    /// fd 1 and 2 closed before exec (`exec 1>&- 2>&-`).
    Closed,
    /// A pipe whose reader (a real `cat`) exits once the service is ready.
    ReaderExited,
    /// A pipe nobody reads, filled to the brim once the service is ready.
    Full,
}

const KINDS: [Stderr; 3] = [Stderr::Closed, Stderr::ReaderExited, Stderr::Full];
const SIGNALS: [(libc::c_int, &str); 2] = [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")];

#[derive(Debug)]
enum Outcome {
    Exited { code: Option<i32>, after: Duration },
    Ignored,
    NotReady(String),
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array; close-on-exec keeps the
    // ends out of the other tries' children, which would otherwise keep a
    // pipe readable after its reader exited.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Fills the pipe whose read end is `read_end` until a write would block.
/// It opens the pipe anew through /proc, so the non-blocking flag stays on
/// the test's own open file and the service keeps its blocking one.
fn fill(read_end: &OwnedFd) -> usize {
    use std::io::Write;
    let path = format!("/proc/self/fd/{}", read_end.as_raw_fd());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {path} for writing: {e}"));
    let mut total = 0;
    for chunk in [&[b'x'; 4096][..], &[b'x'][..]] {
        loop {
            match f.write(chunk) {
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the pipe: {e}"),
            }
        }
    }
    total
}

struct Env {
    redis_url: String,
}

fn command(bin: &str, kind: Stderr, env: &[(String, String)]) -> tokio::process::Command {
    let mut cmd = match kind {
        // `Stdio::null()` is an open fd; closing needs the shell.
        Stderr::Closed => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(r#"exec 1>&- 2>&- "$0""#).arg(bin_path(bin));
            c
        }
        _ => tokio::process::Command::new(bin_path(bin)),
    };
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and
    // exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// Whether the service reached its steady state: HTTP up, and talking to
/// Telegram (and, for the worker, consuming from the group).
async fn ready(bin: &str, port: u16, api: &FakeBotApi, pid: u32, env: &Env) -> bool {
    let healthz = http_get(&format!("http://127.0.0.1:{port}/healthz"))
        .await
        .is_ok_and(|r| r.status == 200);
    healthz
        && match bin {
            "ingress" => api.count("getWebhookInfo") > 0,
            "bot" => api.count("deleteWebhook") > 0,
            _ => consumer_of_pid(&consumers(&env.redis_url).await, pid).is_some(),
        }
}

/// One try; also returns how long the service took to become ready.
async fn try_once(
    bin: &'static str,
    sig: libc::c_int,
    kind: Stderr,
    env: &Env,
) -> (Duration, Outcome) {
    let _alive = ALIVE.acquire().await.expect("semaphore");
    let starting = STARTING.acquire().await.expect("semaphore");
    let api = FakeBotApi::start().await;
    let port = free_port();
    let mut vars: Vec<(String, String)> = vec![
        ("TELEGRAM_BOT_TOKEN".into(), TOKEN.into()),
        ("TELEGRAM_API_URL".into(), api.url()),
        ("TELEGRAM_SEND_RATE".into(), "0".into()),
        ("HOST".into(), "127.0.0.1".into()),
    ];
    match bin {
        "ingress" => vars.extend([
            ("PORT".into(), port.to_string()),
            ("REDIS_URL".into(), env.redis_url.clone()),
            ("TELEGRAM_WEBHOOK_URL".into(), WEBHOOK_URL.into()),
            ("TELEGRAM_WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
        ]),
        "worker" => vars.extend([
            ("PORT".into(), free_port().to_string()),
            ("METRICS_PORT".into(), port.to_string()),
            ("REDIS_URL".into(), env.redis_url.clone()),
        ]),
        // The laptop case of the report: polling, embedded queue.
        _ => vars.push(("PORT".into(), port.to_string())),
    }
    let mut cmd = command(bin, kind, &vars);
    let mut reader = None;
    let mut unread = None;
    match kind {
        Stderr::Closed => {}
        Stderr::ReaderExited | Stderr::Full => {
            let (r, w) = pipe();
            cmd.stdout(Stdio::from(w.try_clone().expect("dup")))
                .stderr(Stdio::from(w));
            if kind == Stderr::ReaderExited {
                let cat = tokio::process::Command::new("cat")
                    .stdin(Stdio::from(r))
                    .stdout(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn cat");
                reader = Some(cat);
            } else {
                unread = Some(r);
            }
        }
    }
    let mut child = cmd.spawn().expect("spawn the service");
    drop(cmd); // the parent's copies of the pipe's write end
    let pid = child.id().expect("pid");
    let t_start = Instant::now();
    let up = eventually(READY, || ready(bin, port, &api, pid, env)).await;
    let ready_after = t_start.elapsed();
    drop(starting);
    if !up {
        let st = child.try_wait().ok().flatten();
        let _ = child.kill().await;
        return (
            ready_after,
            Outcome::NotReady(format!("exit status so far: {st:?}")),
        );
    }
    if let Some(mut cat) = reader.take() {
        let _ = cat.kill().await; // the reader is gone; writes now fail
    }
    if let Some(r) = &unread {
        fill(r);
    }
    let t0 = Instant::now();
    // SAFETY: kill(2) on our own, not yet reaped, child.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
    let outcome = match tokio::time::timeout(DRAIN_BOUND, child.wait()).await {
        Ok(Ok(st)) => Outcome::Exited {
            code: st.code(),
            after: t0.elapsed(),
        },
        Ok(Err(e)) => Outcome::NotReady(format!("wait: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            Outcome::Ignored
        }
    };
    drop(unread);
    (ready_after, outcome)
}

/// Runs every try for `bin`, prints one line per signal and kind of
/// stderr, and fails if any try did not stop with exit code 0 in time.
async fn stops_whatever_stderr_is(bin: &'static str) {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let env = std::sync::Arc::new(Env {
        redis_url: redis.url(),
    });
    let mut runs = Vec::new();
    for (sig, sig_name) in SIGNALS {
        for kind in KINDS {
            for _ in 0..TRIES {
                let env = env.clone();
                runs.push((
                    sig_name,
                    kind,
                    tokio::spawn(async move { try_once(bin, sig, kind, &env).await }),
                ));
            }
        }
    }
    let mut failures = Vec::new();
    let mut results: Vec<(&str, Stderr, Outcome)> = Vec::new();
    let mut ready_times = Vec::new();
    for (sig_name, kind, h) in runs {
        let (ready_after, outcome) = h.await.expect("try panicked");
        ready_times.push(ready_after);
        results.push((sig_name, kind, outcome));
    }
    for (_, sig_name) in SIGNALS {
        for kind in KINDS {
            let these: Vec<&Outcome> = results
                .iter()
                .filter(|(s, k, _)| *s == sig_name && *k == kind)
                .map(|(_, _, o)| o)
                .collect();
            let mut times: Vec<Duration> = Vec::new();
            let (mut clean, mut other_code, mut ignored, mut not_ready) = (0, 0, 0, 0);
            for o in &these {
                match o {
                    Outcome::Exited {
                        code: Some(0),
                        after,
                    } => {
                        clean += 1;
                        times.push(*after);
                    }
                    Outcome::Exited { code, after } => {
                        other_code += 1;
                        times.push(*after);
                        failures.push(format!(
                            "{bin} {sig_name} {kind:?}: exit {code:?} after {after:?}"
                        ));
                    }
                    Outcome::Ignored => {
                        ignored += 1;
                        failures.push(format!(
                            "{bin} {sig_name} {kind:?}: still running after {DRAIN_BOUND:?}"
                        ));
                    }
                    Outcome::NotReady(why) => {
                        not_ready += 1;
                        failures.push(format!("{bin} {sig_name} {kind:?}: never ready ({why})"));
                    }
                }
            }
            times.sort();
            let median = times.get(times.len() / 2).copied().unwrap_or_default();
            let slowest = times.last().copied().unwrap_or_default();
            println!(
                "SIGNALS {bin:7} {sig_name:7} stderr={kind:12?} tries={} exit0={clean} other_exit={other_code} ignored={ignored} not_ready={not_ready} median_stop={:.0}ms slowest_stop={:.0}ms",
                these.len(),
                median.as_secs_f64() * 1000.0,
                slowest.as_secs_f64() * 1000.0,
            );
        }
    }
    ready_times.sort();
    println!(
        "SIGNALS {bin}: {} processes, ready (HTTP + Telegram{}) in median {:.0} ms, slowest {:.0} ms",
        ready_times.len(),
        if bin == "worker" { " + consumer group" } else { "" },
        ready_times[ready_times.len() / 2].as_secs_f64() * 1000.0,
        ready_times.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
    assert!(
        failures.is_empty(),
        "{} of {} tries did not stop cleanly:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ingress_stops_on_signal_whatever_stderr_is() {
    stops_whatever_stderr_is("ingress").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_stops_on_signal_whatever_stderr_is() {
    stops_whatever_stderr_is("worker").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bot_stops_on_signal_whatever_stderr_is() {
    stops_whatever_stderr_is("bot").await;
}

/// A second signal during the drain ends the process at once (exit 1)
/// instead of waiting out the grace for a handler that hangs on Telegram.
#[tokio::test(flavor = "multi_thread")]
async fn second_signal_during_the_drain_exits_at_once() {
    use e2e::harness::Service;
    use e2e::updates::{next_update_id, private_command};
    let api = FakeBotApi::start().await;
    let chat = 820_001;
    api.faults(|f| {
        f.stalled_chats.insert(chat);
    });
    let port = free_port();
    let vars: Vec<(String, String)> = vec![
        ("TELEGRAM_BOT_TOKEN".into(), TOKEN.into()),
        ("TELEGRAM_API_URL".into(), api.url()),
        ("TELEGRAM_SEND_RATE".into(), "0".into()),
        ("HOST".into(), "127.0.0.1".into()),
        ("PORT".into(), port.to_string()),
    ];
    let mut bot = Service::spawn_owned("bot", &[], &vars);
    api.push_update(private_command(
        next_update_id(),
        chat,
        "Stuck",
        Some("en"),
        "/start",
    ));
    let stuck = eventually(READY, || async { api.faults(|f| f.stalled_calls) > 0 }).await;
    assert!(
        stuck,
        "the handler reached the stalled send\n{}",
        bot.logs_tail()
    );

    // SAFETY: kill(2) on our own, not yet reaped, child.
    unsafe { libc::kill(bot.pid() as libc::pid_t, libc::SIGTERM) };
    bot.expect_log("shutdown signal received", READY).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        bot.has_exited().is_none(),
        "the first signal drains: the in-flight handler keeps the process\n{}",
        bot.logs_tail()
    );
    let t0 = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(bot.pid() as libc::pid_t, libc::SIGINT) };
    let st = bot.wait_exit(Duration::from_secs(5)).await;
    println!(
        "SIGNALS second signal during a drain held by a hung handler: exit {:?} after {:.0} ms",
        st.code(),
        t0.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(st.code(), Some(1), "{}", bot.logs_tail());
    assert!(
        bot.logs().contains("second shutdown signal"),
        "{}",
        bot.logs_tail()
    );
}
