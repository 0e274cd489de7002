//! A Redis password in `REDIS_URL`'s query (`?pass=`, the form redis-rs
//! reads for unix sockets) never reaches the logs: the worker connects with
//! it and its "using Redis" line shows `pass=***`.

use std::time::Duration;

use e2e::accounting::{consumer_of_pid, consumers};
use e2e::harness::{eventually, free_port, RedisOptions};
use e2e::{FakeBotApi, RedisServer, Service, TOKEN};

const T: Duration = Duration::from_secs(30);
const PASSWORD: &str = "Unix-Sock-Pw-7f3a9c";

#[tokio::test(flavor = "multi_thread")]
async fn query_password_is_used_and_not_logged() {
    let sock = std::env::temp_dir().join(format!("e2e-redis-{}.sock", std::process::id()));
    let Some(redis) = RedisServer::start_with(RedisOptions {
        args: vec![
            "--unixsocket".into(),
            sock.display().to_string(),
            "--unixsocketperm".into(),
            "700".into(),
        ],
        ..Default::default()
    })
    .await
    else {
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
    let tcp_with_password = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port());

    let api = FakeBotApi::start().await;
    let url = format!("redis+unix://{}?pass={PASSWORD}", sock.display());
    let mut worker = Service::spawn_owned(
        "worker",
        &[],
        &[
            ("TELEGRAM_BOT_TOKEN".into(), TOKEN.into()),
            ("TELEGRAM_API_URL".into(), api.url()),
            ("REDIS_URL".into(), url),
            ("PORT".into(), free_port().to_string()),
        ],
    );
    let pid = worker.pid();
    let joined = eventually(T, || async {
        consumer_of_pid(&consumers(&tcp_with_password).await, pid).is_some()
    })
    .await;
    assert!(
        joined,
        "the worker joins the group over the password-protected socket\n{}",
        worker.logs_tail()
    );
    worker.terminate();
    let st = worker.wait_exit(T).await;
    assert!(st.success(), "{st}\n{}", worker.logs_tail());
    let logs = worker.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("using Redis"))
        .unwrap_or_default()
        .to_owned();
    println!("REDACT worker's Redis line: {}", line.trim());
    assert!(line.contains("pass=***"), "{}", worker.logs_tail());
    assert!(
        !logs.contains(PASSWORD),
        "the Redis password is in the worker's output:\n{}",
        logs.replace(PASSWORD, "<PASSWORD>")
    );
    let _ = std::fs::remove_file(&sock);
}
