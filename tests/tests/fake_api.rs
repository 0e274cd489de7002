//! The fake Bot API itself: it must behave like the real one, or every
//! other test proves less than it claims. (No binaries needed.)

use std::time::{Duration, Instant};

use e2e::fake_bot_api::FakeBotApi;
use e2e::harness::http;
use e2e::TOKEN;
use serde_json::{json, Value};

async fn post_json(api: &FakeBotApi, path: &str, body: Value) -> (u16, Value) {
    let r = http()
        .post(format!("{}{path}", api.url()))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn call(api: &FakeBotApi, method: &str, body: Value) -> (u16, Value) {
    post_json(api, &format!("/bot{TOKEN}/{method}"), body).await
}

#[tokio::test]
async fn token_and_method_routing() {
    let api = FakeBotApi::start().await;
    let (s, b) = post_json(&api, "/bot1:wrong/getMe", json!({})).await;
    assert_eq!(s, 401);
    assert_eq!(
        b,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );

    let (s, b) = call(&api, "getMe", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(b["result"]["is_bot"], true);
    assert_eq!(b["result"]["username"], "test_queue_bot");
    assert_eq!(b["result"]["id"], 123456789);

    // Method names are case-insensitive, like Telegram's.
    let (s, _) = call(&api, "GETME", json!({})).await;
    assert_eq!(s, 200);
    // Recorded, including the one with the wrong token.
    assert_eq!(api.calls_to("getMe").len(), 3);
    assert_eq!(api.calls_to("getMe")[0].status, 401);

    let (s, b) = call(&api, "sendMesage", json!({"chat_id": 1, "text": "x"})).await;
    assert_eq!(s, 404);
    assert_eq!(b["description"], "Not Found: method not found");
    assert_eq!(
        api.violations().len(),
        1,
        "an unknown method is a client bug"
    );
}

#[tokio::test]
async fn validates_against_the_spec() {
    let api = FakeBotApi::start().await;
    let (s, b) = call(&api, "sendMessage", json!({"chat_id": 1, "text": "hi"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["text"], "hi");
    assert_eq!(b["result"]["chat"]["id"], 1);
    assert_eq!(b["result"]["chat"]["type"], "private");
    let first_id = b["result"]["message_id"].as_i64().unwrap();
    let (_, b) = call(
        &api,
        "sendMessage",
        json!({"chat_id": "@chan", "text": "hi"}),
    )
    .await;
    assert_eq!(b["result"]["message_id"].as_i64().unwrap(), first_id + 1);
    api.assert_no_violations();

    let bad = [
        json!({"chat_id": 1}),                               // text missing
        json!({"chat_id": 1, "text": "x", "colour": "red"}), // unknown parameter
        json!({"chat_id": true, "text": "x"}),               // wrong type
        json!({"chat_id": 1, "text": 5}),                    // wrong type
        json!({"chat_id": 1, "text": "x", "reply_parameters": {"message_id": "7"}}),
        json!({"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [{"text": "a", "url": "https://x"}]}}),
        json!({"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [[{"text": "a", "web_app": {"link": "https://x"}}]]}}),
        json!({"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [[{"text": "a"}]]}}),
        json!({"chat_id": -1001234567890i64, "text": "x", "reply_markup": {"inline_keyboard": [[{"text": "a", "web_app": {"url": "https://x"}}]]}}),
        json!({"chat_id": 1, "text": "Hi <Bob>", "parse_mode": "HTML"}),
        json!({"chat_id": 1, "text": "Hi Anne-Marie", "parse_mode": "MarkdownV2"}),
        json!({"chat_id": 1, "text": "x".repeat(4097)}),
        json!({"chat_id": 1, "text": "   "}),
    ];
    for (i, body) in bad.iter().enumerate() {
        let (s, b) = call(&api, "sendMessage", body.clone()).await;
        assert_eq!(s, 400, "case {i}: {body} -> {b}");
        assert!(
            b["description"]
                .as_str()
                .unwrap()
                .starts_with("Bad Request: "),
            "{b}"
        );
        assert_eq!(api.violations().len(), i + 1, "case {i} not recorded");
    }
    assert_eq!(api.sent_messages().len(), 2);

    // Nested types: a group /app with a url button and reply_parameters is fine.
    api.reset();
    let (s, b) = call(
        &api,
        "sendMessage",
        json!({
            "chat_id": -1001234567890i64,
            "text": "Open the app",
            "reply_parameters": {"message_id": 77, "allow_sending_without_reply": true},
            "reply_markup": {"inline_keyboard": [[{"text": "Open", "url": "https://t.me/test_queue_bot?start=app"}]]},
        }),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["chat"]["type"], "supergroup");
    api.assert_no_violations();
}

#[tokio::test]
async fn form_and_query_parameters() {
    let api = FakeBotApi::start().await;
    let r = http()
        .post(format!("{}/bot{TOKEN}/sendMessage", api.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            "chat_id=42&text=hello+there&reply_markup=%7B%22inline_keyboard%22%3A%5B%5B%7B%22text%22%3A%22a%22%2C%22callback_data%22%3A%22b%22%7D%5D%5D%7D",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = api.sent_messages();
    assert_eq!(
        sent[0]["chat_id"], 42,
        "form values are typed after parsing"
    );
    assert_eq!(sent[0]["text"], "hello there");
    assert_eq!(
        sent[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
        "b"
    );

    let r = http()
        .get(format!(
            "{}/bot{TOKEN}/setWebhook?url=https://x.example/hook&drop_pending_updates=true&allowed_updates=%5B%22message%22%5D",
            api.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let w = api.webhook();
    assert_eq!(w.url, "https://x.example/hook");
    assert_eq!(w.drop_pending_updates, Some(true));
    assert_eq!(w.allowed_updates, Some(json!(["message"])));

    let r = http()
        .get(format!("{}/bot{TOKEN}/getUpdates?timeout=abc", api.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a non-integer timeout is refused");
    api.reset();
    // A JSON-encoded object inside a JSON body is accepted, as Telegram does.
    let (s, _) = call(
        &api,
        "sendMessage",
        json!({"chat_id": 1, "text": "x", "reply_markup": "{\"inline_keyboard\":[[{\"text\":\"a\",\"url\":\"https://a.example\"}]]}"}),
    )
    .await;
    assert_eq!(s, 200);
    api.assert_no_violations();
}

#[tokio::test]
async fn webhook_lifecycle() {
    let api = FakeBotApi::start().await;
    let (s, b) = call(
        &api,
        "setWebhook",
        json!({"url": "http://insecure.example/hook"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    api.reset();

    let (s, b) = call(
        &api,
        "setWebhook",
        json!({"url": "https://bot.example.test/hook", "secret_token": "abc_DEF-1", "max_connections": 40, "allowed_updates": ["message"], "drop_pending_updates": false}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // One setWebhook per second, like Telegram.
    let (s, b) = call(
        &api,
        "setWebhook",
        json!({"url": "https://bot.example.test/hook"}),
    )
    .await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["parameters"]["retry_after"], 1);

    let (_, b) = call(&api, "getWebhookInfo", json!({})).await;
    let info = &b["result"];
    assert_eq!(info["url"], "https://bot.example.test/hook");
    assert_eq!(info["pending_update_count"], 0);
    assert_eq!(info["has_custom_certificate"], false);
    assert_eq!(info["max_connections"], 40);
    assert_eq!(info["allowed_updates"], json!(["message"]));
    assert_eq!(api.webhook().secret_token.as_deref(), Some("abc_DEF-1"));

    api.faults(|f| {
        f.webhook_last_error = Some((
            1_700_000_000,
            "Wrong response from the webhook: 503 Service Unavailable".into(),
        ));
        f.pending_update_count = Some(12);
    });
    let (_, b) = call(&api, "getWebhookInfo", json!({})).await;
    assert_eq!(b["result"]["pending_update_count"], 12);
    assert_eq!(b["result"]["last_error_date"], 1_700_000_000);

    let (s, _) = call(&api, "getUpdates", json!({})).await;
    assert_eq!(s, 409, "getUpdates while a webhook is set");
    let (s, _) = call(
        &api,
        "deleteWebhook",
        json!({"drop_pending_updates": false}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(api.webhook().url, "");

    let (s, _) = call(
        &api,
        "setMyCommands",
        json!({"commands": [{"command": "start", "description": "Start"}]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(api.commands().unwrap()[0]["command"], "start");
    let (s, _) = call(
        &api,
        "setMyCommands",
        json!({"commands": [{"command": "/Start", "description": "Start"}]}),
    )
    .await;
    assert_eq!(s, 400, "command names are lowercase without the slash");
    // Any other method from the spec answers true.
    let (s, b) = call(
        &api,
        "sendChatAction",
        json!({"chat_id": 1, "action": "typing"}),
    )
    .await;
    assert_eq!((s, b["result"].clone()), (200, json!(true)));
    assert_eq!(api.violations().len(), 1, "{:?}", api.violations());
}

#[tokio::test]
async fn get_updates_offset_long_poll_and_conflict() {
    let api = FakeBotApi::start().await;
    let a = api.push_update(json!({"message": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}, "text": "a"}}));
    let b = api.push_update(json!({"update_id": a + 5, "message": {"message_id": 2, "date": 0, "chat": {"id": 1, "type": "private"}, "text": "b"}}));
    let (s, r) = call(&api, "getUpdates", json!({"limit": 1})).await;
    assert_eq!(s, 200);
    assert_eq!(r["result"].as_array().unwrap().len(), 1);
    assert_eq!(r["result"][0]["update_id"], a);
    let (_, r) = call(&api, "getUpdates", json!({"offset": a + 1})).await;
    assert_eq!(
        r["result"][0]["update_id"], b,
        "offset confirms earlier updates"
    );
    assert_eq!(api.pending_updates(), 1);

    // Long poll: waits for a pushed update.
    let api2 = api.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        call(&api2, "getUpdates", json!({"offset": b + 1, "timeout": 10})).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = api.push_update(json!({"message": {"message_id": 3, "date": 0, "chat": {"id": 1, "type": "private"}, "text": "c"}}));
    let (s, r) = poll.await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(r["result"][0]["update_id"], c);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the long poll returned on the new update"
    );

    // A second poller terminates the first with 409.
    let api2 = api.clone();
    let first = tokio::spawn(async move {
        call(&api2, "getUpdates", json!({"offset": c + 1, "timeout": 10})).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let api3 = api.clone();
    let second = tokio::spawn(async move {
        call(&api3, "getUpdates", json!({"offset": c + 1, "timeout": 1})).await
    });
    let (s1, r1) = first.await.unwrap();
    assert_eq!(s1, 409, "{r1}");
    assert!(r1["description"]
        .as_str()
        .unwrap()
        .contains("terminated by other getUpdates"));
    let (s2, r2) = second.await.unwrap();
    assert_eq!((s2, r2["result"].clone()), (200, json!([])));
    assert_eq!(api.conflicts(), 1);
}

#[tokio::test]
async fn scripted_faults() {
    let api = FakeBotApi::start().await;
    api.rate_limit_every(2, 2);
    let (s, _) = call(&api, "sendMessage", json!({"chat_id": 5, "text": "1"})).await;
    assert_eq!(s, 200);
    let (s, b) = call(&api, "sendMessage", json!({"chat_id": 5, "text": "2"})).await;
    assert_eq!(s, 429);
    assert_eq!(b["parameters"]["retry_after"], 2);
    assert_eq!(b["description"], "Too Many Requests: retry after 2");
    // Retrying at once is too early: answered 429 again and recorded.
    let (s, _) = call(&api, "sendMessage", json!({"chat_id": 5, "text": "2"})).await;
    assert_eq!(s, 429);
    assert_eq!(api.early_retries().len(), 1);
    assert_eq!(api.rate_limit_windows().len(), 1);
    // Other chats are not affected by chat 5's window.
    let (s, _) = call(&api, "sendMessage", json!({"chat_id": 6, "text": "x"})).await;
    assert!(s == 200 || s == 429);
    api.clear_faults();

    api.block_chat(7);
    api.chat_not_found(8);
    let (s, b) = call(&api, "sendMessage", json!({"chat_id": 7, "text": "x"})).await;
    assert_eq!(
        (s, b["description"].as_str().unwrap()),
        (403, "Forbidden: bot was blocked by the user")
    );
    let (s, b) = call(&api, "sendMessage", json!({"chat_id": 8, "text": "x"})).await;
    assert_eq!(
        (s, b["description"].as_str().unwrap()),
        (400, "Bad Request: chat not found")
    );
    api.server_errors_every(1, 502);
    let r = http()
        .post(format!("{}/bot{TOKEN}/sendMessage", api.url()))
        .json(&json!({"chat_id": 9, "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("Bad Gateway"));
    api.clear_faults();

    api.faults(|f| f.get_me_failures.extend([429, 502]));
    assert_eq!(call(&api, "getMe", json!({})).await.0, 429);
    assert_eq!(call(&api, "getMe", json!({})).await.0, 502);
    assert_eq!(call(&api, "getMe", json!({})).await.0, 200);
    api.faults(|f| f.get_me_unauthorized = true);
    assert_eq!(call(&api, "getMe", json!({})).await.0, 401);

    api.clear_faults();
    api.set_delay(Duration::from_millis(200));
    let t = Instant::now();
    call(&api, "getMe", json!({})).await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    api.assert_no_violations();
}

/// The workspace's own Bot API client against the fake: the error
/// classification the worker relies on sees what it would see in production.
#[tokio::test]
async fn shared_client_reads_the_fake() {
    use shared::config::BotToken;
    use shared::telegram::BotApi;
    let api = FakeBotApi::start().await;
    let client = BotApi::new(
        &url::Url::parse(&api.url()).unwrap(),
        &BotToken::parse(TOKEN).unwrap(),
    );
    let me = client.get_me().await.expect("getMe");
    assert_eq!(me.username.as_deref(), Some("test_queue_bot"));
    api.rate_limit_every(1, 3);
    let e = client
        .call::<_, Value>("sendMessage", &json!({"chat_id": 1, "text": "x"}))
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    api.clear_faults();
    api.server_errors_every(1, 502);
    let e = client
        .call::<_, Value>("sendMessage", &json!({"chat_id": 2, "text": "x"}))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    let bad = BotApi::new(
        &url::Url::parse(&api.url()).unwrap(),
        &BotToken::parse("1:wrong").unwrap(),
    );
    assert!(bad.get_me().await.unwrap_err().is_unauthorized());
}

/// A poller that died mid-poll (its connection closed) is not "terminated
/// by" the next one: nobody receives that 409, so it is not a conflict.
#[tokio::test]
async fn a_dead_pollers_request_is_not_a_conflict() {
    let api = FakeBotApi::start().await;
    let r = http()
        .post(format!("{}/bot{TOKEN}/getUpdates", api.url()))
        .json(&json!({"timeout": 20}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(r.is_err(), "the client gave up");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _) = call(&api, "getUpdates", json!({"timeout": 0})).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(api.conflicts(), 0);
}
