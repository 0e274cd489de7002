//! `allowed_updates` follows what the bot's handlers take: the workers
//! publish it, the ingress asks Telegram for exactly that - in webhook mode
//! (brought in line by the webhook check) and in polling mode.

use std::time::Duration;

use e2e::harness::{free_port, Service};
use e2e::stack::Stack;
use e2e::{FakeBotApi, TOKEN, WEBAPP_URL};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn sorted(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    k.sort();
    k
}

const SHIPPED: &[&str] = &[
    "callback_query",
    "channel_post",
    "chat_join_request",
    "chat_member",
    "edited_channel_post",
    "edited_message",
    "message",
    "message_reaction",
    "my_chat_member",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_asks_for_what_the_workers_bot_handles() {
    // The echo example handles messages only.
    let Some(s) = Stack::builder()
        .worker_bin("echo-bot", &["worker"])
        .ingress_env("TELEGRAM_WEBHOOK_CHECK_SECS", "1")
        .start()
        .await
    else {
        return;
    };
    let ok = e2e::harness::eventually(T, || async {
        s.api
            .webhook()
            .allowed_updates
            .is_some_and(|a| sorted(&a) == ["message"])
    })
    .await;
    let sets: Vec<Value> = s
        .api
        .calls_to("setWebhook")
        .iter()
        .map(|c| c.param("allowed_updates").clone())
        .collect();
    println!("ALLOWED_UPDATES: setWebhook calls' allowed_updates: {sets:?}");
    assert!(
        ok,
        "the webhook follows the echo bot's kinds: {sets:?}\n{}",
        s.logs_tail()
    );
    assert!(
        sets.len() <= 2,
        "set once at start, once to follow the bot: {sets:?}"
    );
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_bot_asks_for_its_buttons_and_counted_kinds() {
    let Some(s) = Stack::builder()
        .ingress_env("TELEGRAM_WEBHOOK_CHECK_SECS", "1")
        .start()
        .await
    else {
        return;
    };
    let ok = e2e::harness::eventually(T, || async {
        s.api
            .webhook()
            .allowed_updates
            .is_some_and(|a| sorted(&a) == SHIPPED)
    })
    .await;
    assert!(
        ok,
        "{:?}\n{}",
        s.api.webhook().allowed_updates,
        s.logs_tail()
    );
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_poller_asks_for_what_the_bot_handles() {
    let api = FakeBotApi::start().await;
    let port = free_port();
    let env: Vec<(String, String)> = [
        ("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()),
        ("TELEGRAM_API_URL", api.url()),
        ("TELEGRAM_WEBAPP_URL", WEBAPP_URL.to_owned()),
        ("PORT", port.to_string()),
        ("HOST", "127.0.0.1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut bot = Service::spawn_owned("echo-bot", &[], &env);
    let ok = e2e::harness::eventually(T, || async {
        api.calls_to("getUpdates")
            .iter()
            .any(|c| c.param("allowed_updates") == &json!(["message"]))
    })
    .await;
    let polls = api.calls_to("getUpdates");
    println!(
        "ALLOWED_UPDATES: polls asked for {:?}",
        polls
            .iter()
            .map(|c| c.param("allowed_updates").clone())
            .collect::<Vec<_>>()
    );
    assert!(
        ok,
        "getUpdates asks for the echo bot's kinds\n{}",
        bot.logs_tail()
    );
    bot.terminate();
}
