//! Bad or missing configuration: one clear line naming the variable,
//! non-zero exit, before anything else happens (SPEC.md "Configuration").

use std::time::Duration;

use e2e::harness::{free_port, run_to_exit};
use e2e::{FakeBotApi, TOKEN};

/// Generous for a process that must fail at once; a hang fails the test.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// Runs `bin` with `env` and expects a fast failure naming `var`.
async fn expect_config_error(bin: &str, env: &[(&str, &str)], var: &str) -> String {
    let api = FakeBotApi::start().await;
    let api_url = api.url();
    // Nothing listens on this Redis port: a binary that ignored the error
    // and went on would hang or retry, and the timeout catches it.
    let redis_url = format!("redis://127.0.0.1:{}", free_port());
    let port = free_port().to_string();
    let mut full: Vec<(&str, &str)> = vec![
        ("TELEGRAM_API_URL", api_url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("PORT", port.as_str()),
        ("HOST", "127.0.0.1"),
    ];
    full.extend_from_slice(env);
    let (status, stdout, stderr) = run_to_exit(bin, &[], &full, EXIT_WITHIN).await;
    assert!(
        !status.success(),
        "{bin} with bad {var} must exit non-zero (got {status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains(var),
        "{bin}: stderr must name {var}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked at"),
        "{bin}: a configuration error is not a panic:\n{stderr}"
    );
    assert!(
        api.calls().is_empty(),
        "{bin} called the Bot API before rejecting its configuration: {:?}",
        api.calls().iter().map(|c| &c.method).collect::<Vec<_>>()
    );
    e2e::assert_token_absent(&stdout);
    e2e::assert_token_absent(&stderr);
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn ingress_refuses_http_webhook_url() {
    expect_config_error(
        "ingress",
        &[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            (
                "TELEGRAM_WEBHOOK_URL",
                "http://bot.example.test/telegram/webhook/",
            ),
        ],
        "TELEGRAM_WEBHOOK_URL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ingress_requires_a_token() {
    expect_config_error(
        "ingress",
        &[(
            "TELEGRAM_WEBHOOK_URL",
            "https://bot.example.test/telegram/webhook/",
        )],
        "TELEGRAM_BOT_TOKEN",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_requires_a_token() {
    expect_config_error(
        "worker",
        &[("TELEGRAM_WEBAPP_URL", "https://bot.example.test/app/")],
        "TELEGRAM_BOT_TOKEN",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_refuses_http_webapp_url() {
    expect_config_error(
        "worker",
        &[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("TELEGRAM_WEBAPP_URL", "http://bot.example.test/app/"),
        ],
        "TELEGRAM_WEBAPP_URL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_token_is_named_but_not_echoed() {
    // Shaped wrong (no colon); its text must not be printed back.
    let bad = "AAE_test-token-DO-NOT-LEAK_xyz";
    for bin in ["ingress", "worker"] {
        let stderr = expect_config_error(
            bin,
            &[
                ("TELEGRAM_BOT_TOKEN", bad),
                (
                    "TELEGRAM_WEBHOOK_URL",
                    "https://bot.example.test/telegram/webhook/",
                ),
            ],
            "TELEGRAM_BOT_TOKEN",
        )
        .await;
        assert!(
            !stderr.contains(bad),
            "{bin} echoed the bad token:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_numbers_are_named() {
    expect_config_error(
        "worker",
        &[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("WORKER_CONCURRENCY", "lots"),
        ],
        "WORKER_CONCURRENCY",
    )
    .await;
    expect_config_error(
        "ingress",
        &[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            (
                "TELEGRAM_WEBHOOK_URL",
                "https://bot.example.test/telegram/webhook/",
            ),
            ("PORT", "eighty"),
        ],
        "PORT",
    )
    .await;
}
