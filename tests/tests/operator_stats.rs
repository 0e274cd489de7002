//! `worker queue stats` during an incident: it names the Redis it reads
//! (password redacted), speaks in human units, and reports a worker killed
//! without a goodbye as gone within about two claim periods - not after
//! the ten its alive mark lives.

use std::time::{Duration, Instant};

use e2e::harness::run_to_exit;
use e2e::stack::Stack;
use e2e::RedisServer;
use serde_json::Value;

const T: Duration = Duration::from_secs(20);
const CLAIM_MS: u64 = 1_000;
const PASSWORD: &str = "Stats-Pw-51c0de";

async fn stats_json(s: &Stack) -> Value {
    let (st, out, err) = s.worker_command(&["queue", "stats", "--json"]).await;
    assert!(st.success(), "{st}\n{out}\n{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("JSON ({e}):\n{out}\n{err}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_name_the_redis_they_read_without_its_password() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Set after start: the harness checks readiness with an unauthenticated PING.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query_async(&mut redis.conn().await)
        .await
        .expect("CONFIG SET requirepass");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", redis.port());
    let env = [("REDIS_URL", url.as_str())];
    let shown = format!("redis://:***@127.0.0.1:{}/0", redis.port());

    let (st, out, err) = run_to_exit("worker", &["queue", "stats"], &env, T).await;
    assert!(st.success(), "{st}\n{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("Redis:"))
        .unwrap_or_default();
    println!("STATS human: {line}");
    assert!(line.contains(&shown), "names {shown}:\n{out}");

    let (st, out, err) = run_to_exit("worker", &["queue", "stats", "--json"], &env, T).await;
    assert!(st.success(), "{st}\n{out}\n{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    println!("STATS json redis: {}", v["redis"]);
    assert_eq!(v["redis"], shown, "{v}");
    for f in [
        "stream",
        "length",
        "lag",
        "pending",
        "oldest_pending_ms",
        "consumers",
        "dead_letters",
    ] {
        assert!(v.get(f).is_some(), "the existing field {f} stays: {v}");
    }
    let all = format!("{out}{err}");
    assert!(!all.contains(PASSWORD), "the password is printed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_is_gone_within_two_claim_periods() {
    let claim = CLAIM_MS.to_string();
    let Some(mut s) = Stack::builder()
        .workers(1)
        .worker_env("WORKER_CLAIM_IDLE_MS", &claim)
        .start()
        .await
    else {
        return;
    };
    // A live worker stays "running" across several renewals: the bound is
    // not so tight that a healthy worker flickers to gone.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(4 * CLAIM_MS) {
        let v = stats_json(&s).await;
        let c = &v["consumers"][0];
        assert_eq!(c["alive"], true, "a live worker reads as gone: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, out, _) = s.worker_command(&["queue", "stats"]).await;
    println!("STATS live worker:\n{out}");
    assert!(out.contains("running"), "{out}");

    assert!(s.workers[0].kill().await.is_some(), "SIGKILL");
    let killed = Instant::now();
    let mut gone_after = None;
    while killed.elapsed() < Duration::from_millis(15 * CLAIM_MS) {
        let v = stats_json(&s).await;
        if v["consumers"][0]["alive"] == false {
            gone_after = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_after = gone_after.expect("the killed worker is never reported gone");
    println!(
        "STATS killed worker reported gone after {:.2} s (claim period {:.1} s; its alive mark lives {:.0} s)",
        gone_after.as_secs_f64(),
        CLAIM_MS as f64 / 1000.0,
        10.0 * CLAIM_MS as f64 / 1000.0
    );
    // Two periods without a renewal, plus the one that may have just begun
    // and a period of slack for the reclaim tick and process start-up.
    assert!(
        gone_after <= Duration::from_millis(4 * CLAIM_MS),
        "gone only after {gone_after:?}"
    );
    let (_, out, _) = s.worker_command(&["queue", "stats"]).await;
    println!("STATS killed worker:\n{out}");
    assert!(out.contains("gone (last seen "), "{out}");
}
