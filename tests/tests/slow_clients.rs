//! The ingress is public: slow or hostile clients must not hold it. Bounds
//! under test (ingress/src/server.rs): headers (and an idle keep-alive)
//! within 10 s, a body within 10 s of its headers, SIGTERM drains for at
//! most 5 s; a failing accept (out of file descriptors) is logged.

use std::time::{Duration, Instant};

use e2e::harness::{eventually, http_get, webhook_post};
use e2e::slow_client::{self, Clients, Slow};
use e2e::stack::Stack;
use e2e::updates::{next_update_id, private_command};
use e2e::WEBHOOK_SECRET;

/// ingress::server::HEADER_TIMEOUT and BODY_TIMEOUT.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// ingress::server::DRAIN_TIMEOUT.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Scheduling slack on a busy test machine, on top of each bound.
const SLACK: Duration = Duration::from_secs(5);
/// How long a slow client waits for the server before calling it "open
/// forever" (the old behaviour).
const GIVE_UP: Duration = Duration::from_secs(30);

async fn ingress_only() -> Option<Stack> {
    Stack::builder().workers(0).start().await
}

/// Sequential valid webhook POSTs; each must be answered 200. Returns the
/// latencies, sorted.
async fn post_latencies(s: &Stack, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let u = private_command(next_update_id(), 880_000 + i as i64, "Sam", None, "/start");
        let t = Instant::now();
        let r = webhook_post(&s.webhook_url(), Some(WEBHOOK_SECRET), u.to_string())
            .await
            .unwrap_or_else(|e| panic!("a valid POST failed: {e}\n{}", s.logs_tail()));
        out.push(t.elapsed());
        assert_eq!(r.status, 200, "{}\n{}", r.body, s.logs_tail());
    }
    out.sort();
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_do_not_delay_webhooks() {
    let Some(s) = ingress_only().await else {
        return;
    };
    let len0 = s.stream_len().await;
    let base = post_latencies(&s, 20).await;

    // 500 trickling one byte a second (half in the head, half in the body),
    // plus requests whose body is shorter than declared and idle keep-alives.
    let trickling = Clients::spawn(s.ingress_port, &[Slow::Headers, Slow::Body], 500, GIVE_UP);
    let others = Clients::spawn(
        s.ingress_port,
        &[Slow::ShortBody, Slow::IdleKeepAlive],
        40,
        GIVE_UP,
    );
    let t = Duration::from_secs(10);
    assert!(trickling.all_open(t).await && others.all_open(t).await);
    let during = post_latencies(&s, 20).await;
    assert_eq!(s.stream_len().await, len0 + 40, "every valid POST stored");
    println!(
        "valid webhook POST latency: without slow clients p50 {:.1} ms max {:.1} ms; \
         with 540 slow connections open p50 {:.1} ms max {:.1} ms",
        ms(base[base.len() / 2]),
        ms(base[base.len() - 1]),
        ms(during[during.len() / 2]),
        ms(during[during.len() - 1]),
    );

    let mut outcomes = trickling.join().await;
    outcomes.extend(others.join().await);
    println!("{}", slow_client::summary(&outcomes));
    assert!(
        outcomes.iter().all(|o| o.connected),
        "every slow client could connect"
    );
    for o in &outcomes {
        let bound = match o.kind {
            Slow::Headers | Slow::IdleKeepAlive | Slow::Quick => HEADER_TIMEOUT + SLACK,
            // The body clock starts once the head is in: at once here.
            Slow::Body | Slow::ShortBody => BODY_TIMEOUT + SLACK,
        };
        let closed = o.closed_after.unwrap_or_else(|| {
            panic!(
                "{:?} connection still open after {GIVE_UP:?}\n{}",
                o.kind,
                s.logs_tail()
            )
        });
        assert!(
            closed <= bound,
            "{:?} closed after {closed:?} > {bound:?}",
            o.kind
        );
        match o.kind {
            Slow::Body | Slow::ShortBody => assert_eq!(
                o.status,
                Some(408),
                "{:?}: an incomplete body is answered 408",
                o.kind
            ),
            Slow::IdleKeepAlive | Slow::Quick => assert_eq!(o.status, Some(200)),
            Slow::Headers => assert!(o.status.is_none_or(|c| c == 408), "{o:?}"),
        }
    }
    assert_eq!(s.stream_len().await, len0 + 40, "nothing partial stored");
    // Still serving normally afterwards.
    post_latencies(&s, 1).await;
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_within_the_drain_bound_while_slow_clients_are_open() {
    let Some(mut s) = ingress_only().await else {
        return;
    };
    let port = s.ingress_port;
    let clients = Clients::spawn(port, &Slow::ALL, 100, GIVE_UP);
    assert!(clients.all_open(Duration::from_secs(10)).await);
    // The last openings reach the server.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let ingress = s.ingress.as_mut().expect("ingress");
    let t = Instant::now();
    ingress.terminate();
    // Below the 10 s request timeouts: only the drain bound can end it.
    let st = ingress
        .wait_exit(DRAIN_TIMEOUT + Duration::from_secs(3))
        .await;
    let took = t.elapsed();
    println!(
        "SIGTERM with 100 slow connections open: exited in {:.2} s ({st}; drain bound {DRAIN_TIMEOUT:?})",
        took.as_secs_f64()
    );
    assert!(st.success(), "a drained stop exits 0: {st}");
    let outcomes = clients.join().await;
    println!("{}", slow_client::summary(&outcomes));
    let open: Vec<_> = outcomes
        .iter()
        .filter(|o| o.closed_after.is_none())
        .collect();
    assert!(
        open.is_empty(),
        "every connection ends with the process: {open:?}"
    );
}

/// The all-in-one `bot` serves the ingress through the same server: the
/// same bounds hold there.
#[tokio::test(flavor = "multi_thread")]
async fn the_all_in_one_bot_drains_within_the_bound_too() {
    let api = e2e::FakeBotApi::start().await;
    let port = e2e::harness::free_port();
    let env = [
        ("TELEGRAM_BOT_TOKEN", e2e::TOKEN.to_owned()),
        ("TELEGRAM_API_URL", api.url()),
        ("PORT", port.to_string()),
        ("HOST", "127.0.0.1".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let mut bot = e2e::Service::spawn_owned("bot", &[], &env);
    let up = eventually(Duration::from_secs(30), || async {
        http_get(&format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(up, "bot serves /healthz\n{}", bot.logs_tail());
    let clients = Clients::spawn(port, &[Slow::Headers, Slow::IdleKeepAlive], 20, GIVE_UP);
    assert!(clients.all_open(Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    bot.terminate();
    let st = bot.wait_exit(DRAIN_TIMEOUT + Duration::from_secs(3)).await;
    println!(
        "bot: SIGTERM with 20 slow connections open: exited in {:.2} s ({st})",
        t.elapsed().as_secs_f64()
    );
    assert!(st.success(), "{st}");
    let outcomes = clients.join().await;
    let open: Vec<_> = outcomes
        .iter()
        .filter(|o| o.closed_after.is_none())
        .collect();
    assert!(
        open.is_empty(),
        "every connection ends with the process: {open:?}"
    );
    e2e::assert_token_absent(&bot.logs());
}

/// `/proc/<pid>/stat` user + system CPU time.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 (1-based) of the whole line.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Lowers the soft open-files limit of a running process.
fn set_nofile(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to rlimit structs for the duration of the calls.
    unsafe {
        assert_eq!(
            libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old),
            0
        );
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        assert_eq!(
            libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()),
            0,
            "prlimit: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_file_descriptors_is_logged_and_recovers() {
    let Some(s) = ingress_only().await else {
        return;
    };
    let pid = s.ingress().pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0) as u64;
    let limit = open + 16;
    set_nofile(pid, limit);
    println!("ingress had {open} files open; open-files limit lowered to {limit}");

    // More connections than descriptors left: the kernel completes them
    // (listen backlog), the ingress cannot accept them all.
    let mut held = Vec::new();
    for _ in 0..40 {
        if let Ok(c) = tokio::net::TcpStream::connect(("127.0.0.1", s.ingress_port)).await {
            held.push(c);
        }
    }
    let needle = "cannot accept connections";
    s.ingress()
        .expect_log(needle, Duration::from_secs(10))
        .await;
    let cpu0 = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_time(pid) - cpu0;
    let lines = s.ingress().logs().matches(needle).count();
    println!(
        "out of descriptors for 3 s: {lines} log line(s), {} ms CPU used",
        cpu.as_millis()
    );
    let line = s
        .ingress()
        .logs()
        .lines()
        .find(|l| l.contains(needle))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        line.contains("ERROR") || line.contains("WARN") || line.contains("error"),
        "logged at warn/error: {line}"
    );
    assert!(
        line.contains("Too many open files"),
        "names the cause: {line}"
    );
    assert!(lines <= 3, "rate-limited, not one line per failed accept");

    // Descriptors come back: it serves again without a restart.
    drop(held);
    let u = private_command(next_update_id(), 881_000, "Fd", None, "/start");
    let ok = eventually(Duration::from_secs(20), || async {
        webhook_post(&s.webhook_url(), Some(WEBHOOK_SECRET), u.to_string())
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(
        ok,
        "serving again once descriptors are free\n{}",
        s.logs_tail()
    );
    // The recovery is logged on the next accept (pooled HTTP clients may
    // not make one): open a fresh connection.
    let (port, ingress) = (s.ingress_port, s.ingress());
    let recovered = eventually(Duration::from_secs(10), || async move {
        let _ = slow_client::run(port, Slow::Quick, Duration::from_secs(5)).await;
        ingress.logs().contains("accepting connections again")
    })
    .await;
    assert!(recovered, "recovery logged\n{}", s.logs_tail());
    let m = http_get(&format!("{}/metrics", s.base_url()))
        .await
        .unwrap();
    let errors: f64 = m
        .body
        .lines()
        .find(|l| l.starts_with("ingress_accept_errors_total"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    println!("ingress_accept_errors_total {errors}");
    assert!(errors >= 1.0, "{}", m.body);
    // Retries are paced (10 ms doubling to 1 s): about ten failures over
    // these few seconds; without the pacing, thousands.
    assert!(
        errors < 200.0,
        "the accept loop backs off: {errors} failures"
    );
    s.assert_clean();
}
