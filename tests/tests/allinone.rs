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
    // If a Redis listens on the default port, the binary could silently use
    // it and this test would prove nothing (and touch someone's data).
    if std::net::TcpStream::connect("127.0.0.1:6379").is_ok() {
        e2e::harness::loud(
            "SKIPPED all_in_one_without_redis_uses_the_embedded_queue: something listens on \
             127.0.0.1:6379, so the embedded queue cannot be told from it",
        );
        return;
    }
    let api = FakeBotApi::start().await;
    let port = free_port();
    let mut bot = Service::spawn_owned("bot", &[], &env(&api, port, None));
    converse(&api, &mut bot, port).await;
}
