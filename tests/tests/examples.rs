//! A team's own bot on the queue (SPEC.md "Writing your own bot"): the
//! `echo-bot` example, built only on the engine's public API, runs as the
//! worker beside the stock `ingress` against real Redis, and as the
//! all-in-one on the embedded queue.

use std::time::{Duration, Instant};

use e2e::harness::{eventually, free_port, http_get, Service};
use e2e::updates::{next_update_id, private_command, private_text};
use e2e::{FakeBotApi, Stack, TOKEN};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn echo_menu() -> Value {
    json!([
        {"command": "start", "description": "Say hello"},
        {"command": "ping", "description": "Is the bot alive?"}
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_echo_example_works_beside_the_stock_ingress() {
    let Some(mut stack) = Stack::builder()
        .worker_bin("echo-bot", &["worker"])
        .start()
        .await
    else {
        return;
    };
    let uid = 830_001;
    let t = Instant::now();
    stack
        .post_ok(&private_command(
            next_update_id(),
            uid,
            "Eve",
            Some("en"),
            "/ping",
        ))
        .await;
    let pong = stack.wait_nth_reply(uid, 1, T).await;
    let first = t.elapsed();
    stack
        .post_ok(&private_text(
            next_update_id(),
            uid,
            "Eve",
            Some("en"),
            "through the queue and back",
        ))
        .await;
    let echoed = stack.wait_nth_reply(uid, 2, T).await;
    println!(
        "echo-bot worker beside the stock ingress: /ping -> {} in {first:?}; text -> {}",
        pong.param("text"),
        echoed.param("text")
    );
    assert_eq!(pong.param("text"), "pong");
    assert_eq!(echoed.param("text"), "through the queue and back");

    let menu = eventually(T, || async { stack.api.commands() == Some(echo_menu()) }).await;
    assert!(
        menu,
        "the worker publishes the example's menu: {:?}",
        stack.api.commands()
    );

    // The operator CLI comes with the bot's binary.
    stack.wait_drained(T).await;
    let (st, out, err) = stack.worker_command(&["queue", "stats", "--json"]).await;
    assert!(st.success(), "echo-bot queue stats: {st}\n{out}\n{err}");
    let stats: Value = serde_json::from_str(out.trim()).expect("JSON stats");
    println!("echo-bot queue stats --json: {stats}");
    assert_eq!(stats["pending"], 0, "{stats}");
    assert_eq!(stats["dead_letters"], 0, "{stats}");

    let worker = &mut stack.workers[0];
    worker.terminate();
    let code = worker.wait_exit(T).await;
    assert!(
        code.success(),
        "SIGTERM exits 0: {code}\n{}",
        worker.logs_tail()
    );
    stack.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_echo_example_runs_as_the_all_in_one_on_the_embedded_queue() {
    let api = FakeBotApi::start().await;
    let port = free_port();
    // No REDIS_URL, no webhook URL: polling, embedded queue.
    let env: Vec<(String, String)> = [
        ("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()),
        ("TELEGRAM_API_URL", api.url()),
        ("TELEGRAM_SEND_RATE", "0".to_owned()),
        ("PORT", port.to_string()),
        ("HOST", "127.0.0.1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut bot = Service::spawn_owned("echo-bot", &[], &env);
    assert!(
        bot.wait_for_log("queue: embedded", T).await,
        "{}",
        bot.logs_tail()
    );
    let healthy = eventually(T, || async {
        http_get(&format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(healthy, "echo-bot serves /healthz\n{}", bot.logs_tail());

    let uid = 830_002;
    let t = Instant::now();
    api.push_update(private_command(
        next_update_id(),
        uid,
        "Solo",
        Some("en"),
        "/start",
    ));
    api.push_update(private_text(
        next_update_id(),
        uid,
        "Solo",
        Some("en"),
        "polled, queued, echoed",
    ));
    assert!(
        api.wait_for_sent(2, T).await,
        "the all-in-one answers polled updates ({} sent)\n{}",
        api.sent_count(),
        bot.logs_tail()
    );
    let sent = api.sent_to(uid);
    println!(
        "echo-bot all-in-one (embedded queue): 2 replies in {:?}: {:?}",
        t.elapsed(),
        sent.iter().map(|m| &m["text"]).collect::<Vec<_>>()
    );
    assert!(
        sent[0]["text"]
            .as_str()
            .unwrap_or("")
            .starts_with("Hello, Solo!"),
        "{sent:?}"
    );
    assert_eq!(sent[1]["text"], "polled, queued, echoed");
    assert_eq!(api.conflicts(), 0);
    api.assert_no_violations();

    bot.terminate();
    let code = bot.wait_exit(T).await;
    assert!(
        code.success(),
        "SIGTERM exits 0: {code}\n{}",
        bot.logs_tail()
    );
    e2e::assert_token_absent(&bot.logs());
}
