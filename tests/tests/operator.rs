//! Operator commands against a live system (SPEC.md "Operator commands").

use std::time::Duration;

use e2e::harness::run_to_exit;
use e2e::stack::{ingress_env, Stack};
use e2e::updates::{next_update_id, private_command};
use e2e::WEBHOOK_URL;
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_stats_reports_the_stream() {
    let Some(s) = Stack::start().await else {
        return;
    };
    for i in 0..5 {
        s.post_ok(&private_command(
            next_update_id(),
            610_000 + i,
            "Op",
            Some("en"),
            "/help",
        ))
        .await;
    }
    s.api.wait_for_sent(5, T).await;
    s.wait_drained(T).await;

    let env = s.worker_env();
    let (st, out, err) =
        run_to_exit("worker", &["queue", "stats", "--json"], &borrowed(&env), T).await;
    assert!(st.success(), "{st}\n{out}\n{err}");
    let v: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("queue stats --json prints JSON ({e}):\n{out}\n{err}"));
    for f in [
        "stream",
        "length",
        "lag",
        "pending",
        "oldest_pending_ms",
        "consumers",
        "dead_letters",
    ] {
        assert!(v.get(f).is_some(), "field {f} in {v}");
    }
    assert_eq!(v["stream"], shared::keys::Keys::default().stream());
    assert_eq!(v["length"].as_u64(), Some(s.stream_len().await), "{v}");
    assert_eq!(v["pending"], 0, "{v}");
    assert_eq!(v["dead_letters"], 0, "{v}");
    let consumers = v["consumers"].as_array().expect("consumers array");
    assert!(!consumers.is_empty(), "{v}");
    for c in consumers {
        for f in ["name", "pending", "idle_ms", "alive"] {
            assert!(c.get(f).is_some(), "consumer field {f}: {c}");
        }
    }
    // The one worker runs, so its name is alive.
    assert_eq!(consumers.len(), 1, "{v}");
    assert_eq!(consumers[0]["alive"], true, "{v}");

    // The human form works too.
    let (st, out, err) = run_to_exit("worker", &["queue", "stats"], &borrowed(&env), T).await;
    assert!(st.success() && !out.trim().is_empty(), "{st}\n{out}\n{err}");
    assert!(out.contains("running"), "{out}");
    e2e::assert_token_absent(&out);
    e2e::assert_token_absent(&err);
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_info_set_and_delete() {
    let Some(redis) = e2e::RedisServer::start().await else {
        return;
    };
    let api = e2e::FakeBotApi::start().await;
    api.preset_webhook(WEBHOOK_URL, Some("testsecret"));
    api.faults(|f| {
        f.webhook_last_error = Some((
            1_700_000_000,
            "Wrong response from the webhook: 503 Service Unavailable".into(),
        ))
    });
    let env = ingress_env(&api, &redis, e2e::harness::free_port());
    let env = borrowed(&env);

    let (st, out, err) = run_to_exit("ingress", &["webhook", "info"], &env, T).await;
    assert!(st.success(), "{st}\n{out}\n{err}");
    assert!(out.contains(WEBHOOK_URL), "{out}");
    assert!(
        out.contains("Wrong response from the webhook: 503 Service Unavailable"),
        "the last error is shown: {out}"
    );

    let (st, out, err) = run_to_exit("ingress", &["webhook", "delete"], &env, T).await;
    assert!(st.success(), "{st}\n{out}\n{err}");
    assert_eq!(api.webhook().url, "", "deleted");

    let (st, out, err) = run_to_exit("ingress", &["webhook", "set"], &env, T).await;
    assert!(st.success(), "{st}\n{out}\n{err}");
    let w = api.webhook();
    assert_eq!(w.url, WEBHOOK_URL);
    assert_eq!(w.secret_token.as_deref(), Some("testsecret"));
    e2e::assert_token_absent(&out);
    e2e::assert_token_absent(&err);
    api.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_has_help_and_meaningful_exit_codes() {
    let env: [(&str, &str); 0] = [];
    for (bin, args) in [
        ("ingress", vec!["--help"]),
        ("ingress", vec!["webhook", "--help"]),
        ("ingress", vec!["webhook", "info", "--help"]),
        ("ingress", vec!["webhook", "set", "--help"]),
        ("ingress", vec!["webhook", "delete", "--help"]),
        ("worker", vec!["--help"]),
        ("worker", vec!["queue", "--help"]),
        ("worker", vec!["queue", "stats", "--help"]),
        ("worker", vec!["queue", "dead", "--help"]),
        ("worker", vec!["queue", "replay-dead", "--help"]),
        ("bot", vec!["--help"]),
    ] {
        let (st, out, err) = run_to_exit(bin, &args, &env, T).await;
        assert!(st.success(), "{bin} {args:?}: {st}\n{out}\n{err}");
        assert!(
            out.contains("Usage:"),
            "{bin} {args:?} prints usage:\n{out}"
        );
    }
    // A wrong subcommand is a usage error (2), not a crash or a success.
    let (st, _, err) = run_to_exit("worker", &["queue", "nonsense"], &env, T).await;
    assert_eq!(st.code(), Some(2), "{err}");
    let (st, _, err) = run_to_exit("bot", &["serve"], &env, T).await;
    assert_eq!(st.code(), Some(2), "`bot` takes no arguments: {err}");
    // `webhook set` with no webhook URL configured: configuration (2).
    let no_url = [(
        "TELEGRAM_BOT_TOKEN",
        "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )];
    let (st, _, err) = run_to_exit("ingress", &["webhook", "set"], &no_url, T).await;
    assert_eq!(st.code(), Some(2), "a missing URL is configuration: {err}");
    // Redis unreachable: a runtime failure (1) with a clear message, no hang.
    let dead = [("REDIS_URL", "redis://127.0.0.1:1")];
    let (st, _, err) = run_to_exit("worker", &["queue", "stats"], &dead, T).await;
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("Redis"), "{err}");
    // The Bot API rejecting the token: failure, token not echoed.
    let api = e2e::FakeBotApi::start().await;
    let url = api.url();
    let bad = [
        ("TELEGRAM_BOT_TOKEN", "999:WrongTokenWrongToken"),
        ("TELEGRAM_API_URL", url.as_str()),
    ];
    let (st, out, err) = run_to_exit("ingress", &["webhook", "info"], &bad, T).await;
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(
        !format!("{out}{err}").contains("WrongTokenWrongToken"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_commands_end_while_the_bot_api_is_unreachable() {
    // Nothing listens there: every call fails with a connection error.
    let dead_api = format!("http://127.0.0.1:{}", e2e::harness::free_port());
    let env = [
        ("TELEGRAM_BOT_TOKEN", e2e::TOKEN),
        ("TELEGRAM_WEBHOOK_URL", WEBHOOK_URL),
        ("TELEGRAM_WEBHOOK_SECRET", e2e::WEBHOOK_SECRET),
        ("TELEGRAM_API_URL", dead_api.as_str()),
        ("REDIS_URL", "redis://127.0.0.1:1"),
    ];
    // `set` retries a blip for at most 15 s (ingress::cli::SET_BUDGET).
    let bound = Duration::from_secs(15) + Duration::from_secs(10);
    for cmd in ["info", "delete", "set"] {
        let t = std::time::Instant::now();
        let (st, out, err) = run_to_exit("ingress", &["webhook", cmd], &env, bound).await;
        println!(
            "`ingress webhook {cmd}` with the Bot API unreachable: exit code {:?} after {:.1} s: {}",
            st.code(),
            t.elapsed().as_secs_f64(),
            err.lines().last().unwrap_or_default()
        );
        assert_eq!(st.code(), Some(1), "{out}\n{err}");
        assert!(
            err.contains("ingress webhook:"),
            "one clear error line: {err}"
        );
        e2e::assert_token_absent(&out);
        e2e::assert_token_absent(&err);
    }
}
