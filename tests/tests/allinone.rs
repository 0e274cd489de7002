//! The all-in-one `bot` binary (SPEC.md "Local and small deployments"):
//! polling mode when no public URL is set, Redis when REDIS_URL is set, an
//! embedded queue otherwise.

use std::time::Duration;

use e2e::harness::{free_port, http_get, Service};
use e2e::updates::{next_update_id, private_command, private_text};
use e2e::{FakeBotApi, RedisServer, TOKEN, WEBAPP_URL};

const T: Duration = Duration::from_secs(30);

fn env(api: &FakeBotApi, port: u16, redis: Option<&RedisServer>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()),
        ("TELEGRAM_API_URL", api.url()),
        ("TELEGRAM_WEBAPP_URL", WEBAPP_URL.to_owned()),
        ("TELEGRAM_SEND_RATE", "0".to_owned()),
        ("PORT", port.to_string()),
        ("HOST", "127.0.0.1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(r) = redis {
        v.push(("REDIS_URL".into(), r.url()));
    }
    v
}

async fn converse(api: &FakeBotApi, bot: &mut Service, port: u16) {
    let healthy = e2e::harness::eventually(T, || async {
        http_get(&format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(healthy, "bot serves /healthz\n{}", bot.logs_tail());
    let uid = 810_001;
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
        "just text",
    ));
    api.push_update(private_command(
        next_update_id(),
        uid,
        "Solo",
        Some("en"),
        "/app",
    ));
    let ok = api.wait_for_sent(2, T).await;
    assert!(
        ok,
        "the all-in-one answers polled updates ({} sent)\n{}",
        api.sent_count(),
        bot.logs_tail()
    );
    let sent = api.sent_messages();
    assert!(
        sent[0]["text"].as_str().unwrap_or("").contains("Solo"),
        "{sent:?}"
    );
    assert!(
        e2e::inline_buttons(&sent[1])
            .iter()
            .any(|b| b["web_app"]["url"] == WEBAPP_URL),
        "{sent:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.sent_count(), 2, "plain text is not answered");
    assert_eq!(api.conflicts(), 0);
    api.assert_no_violations();

    bot.terminate();
    let st = bot.wait_exit(T).await;
    assert!(
        st.success(),
        "SIGTERM exits 0, got {st}\n{}",
        bot.logs_tail()
    );
    e2e::assert_token_absent(&bot.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn all_in_one_with_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let api = FakeBotApi::start().await;
    let port = free_port();
    let mut bot = Service::spawn_owned("bot", &[], &env(&api, port, Some(&redis)));
    converse(&api, &mut bot, port).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn all_in_one_without_redis_uses_the_embedded_queue() {
    // Without REDIS_URL the binary must not look for a Redis at all (this
    // machine may run one on the default port): it says so, and works.
    let api = FakeBotApi::start().await;
    let port = free_port();
    let mut bot = Service::spawn_owned("bot", &[], &env(&api, port, None));
    assert!(
        bot.wait_for_log("queue: embedded", T).await,
        "{}",
        bot.logs_tail()
    );
    converse(&api, &mut bot, port).await;
    assert!(!bot.logs().contains(":6379"), "{}", bot.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_queue_dedupes_webhook_resends_and_keeps_chat_order() {
    let api = FakeBotApi::start().await;
    let port = free_port();
    let mut vars = env(&api, port, None);
    vars.push(("TELEGRAM_WEBHOOK_URL".into(), e2e::WEBHOOK_URL.into()));
    vars.push(("TELEGRAM_WEBHOOK_SECRET".into(), "embedded-secret".into()));
    let mut bot = Service::spawn_owned("bot", &[], &vars);
    let ready = e2e::harness::eventually(T, || async {
        http_get(&format!("http://127.0.0.1:{port}/readyz"))
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(ready, "{}", bot.logs_tail());
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        let client = client.clone();
        async move {
            client
                .post(format!("http://127.0.0.1:{port}/telegram/webhook/"))
                .header("X-Telegram-Bot-Api-Secret-Token", "embedded-secret")
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    // One chat, 20 commands in order, the first one sent three times.
    let chat = -100_555_000_i64;
    let first =
        e2e::updates::group_command(next_update_id(), chat, 820_001, "Emb", Some("en"), "/help");
    for _ in 0..3 {
        assert_eq!(post(first.clone()).await, 200);
    }
    let mut ids = vec![first["message"]["message_id"].as_i64().unwrap()];
    for _ in 1..20 {
        let u = e2e::updates::group_command(
            next_update_id(),
            chat,
            820_001,
            "Emb",
            Some("en"),
            "/help",
        );
        ids.push(u["message"]["message_id"].as_i64().unwrap());
        assert_eq!(post(u).await, 200);
    }
    assert!(api.wait_for_sent(20, T).await, "{}", bot.logs_tail());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replied: Vec<i64> = api
        .sent_messages()
        .iter()
        .map(|m| m["reply_parameters"]["message_id"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(replied, ids, "one reply per update, in the chat's order");
    api.assert_no_violations();
    bot.terminate();
    assert!(bot.wait_exit(T).await.success(), "{}", bot.logs_tail());
}
