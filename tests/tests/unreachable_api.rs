//! With no route to the Bot API, the worker's and the ingress's retry lines
//! say where they tried to go and why it failed (a refused connection, a
//! name that does not resolve), so an operator can act on the first line;
//! the token, which sits in the request path, stays out.

use std::time::Duration;

use e2e::harness::{free_port, tail};
use e2e::stack::{ingress_env, merge_env, worker_env};
use e2e::{FakeBotApi, RedisServer, Service};

/// Long enough for a resolver that times out instead of failing at once.
const T: Duration = Duration::from_secs(30);

/// The first line of `svc`'s log containing `needle`.
async fn line_with(svc: &Service, needle: &str) -> String {
    let seen = svc.wait_for_log(needle, T).await;
    assert!(seen, "no line with {needle:?}:\n{}", svc.logs_tail());
    svc.logs()
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Starts a worker and an ingress against `api_url` and checks each one's
/// getMe retry line names `host` and contains `cause` (case-insensitive).
async fn check(api_url: &str, host: &str, cause: &str) {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // Only for the env helpers' other variables; never called.
    let fake = FakeBotApi::start().await;
    let over = [("TELEGRAM_API_URL", api_url)];
    let mut worker =
        Service::spawn_owned("worker", &[], &merge_env(worker_env(&fake, &redis), &over));
    let ingress_env = merge_env(ingress_env(&fake, &redis, free_port()), &over);
    let mut ingress = Service::spawn_owned("ingress", &[], &ingress_env);

    for (svc, needle) in [
        (&worker, "cannot reach the Bot API"),
        (&ingress, "getMe failed; retrying"),
    ] {
        let line = line_with(svc, needle).await;
        println!("UNREACHABLE {api_url}: {line}");
        assert!(line.contains(host), "names the host {host}: {line}");
        assert!(
            line.to_lowercase().contains(&cause.to_lowercase()),
            "names the cause {cause:?}: {line}"
        );
    }
    worker.kill().await;
    ingress.kill().await;
    for svc in [&worker, &ingress] {
        let logs = svc.logs();
        e2e::assert_token_absent(&logs);
        assert!(
            !logs.contains("/bot"),
            "no request path: {}",
            tail(&logs, 20)
        );
    }
    assert!(
        fake.calls().is_empty(),
        "the fake API is not the one configured"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_port_is_named_with_connection_refused() {
    let port = free_port();
    check(
        &format!("http://127.0.0.1:{port}"),
        &format!("127.0.0.1:{port}"),
        "connection refused",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unresolvable_host_is_named_with_the_dns_error() {
    check(
        "http://nonexistent.invalid",
        "nonexistent.invalid:80",
        "dns error",
    )
    .await;
}
