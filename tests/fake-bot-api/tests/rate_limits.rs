//! The flood limits over HTTP: a chat in flood wait and a bot-wide window
//! answer as Telegram does, and their records tell a client that waits
//! `retry_after` from one that keeps sending.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fake_bot_api::{FakeBotApi, TOKEN};
use serde_json::{json, Value};

fn http() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client")
    })
}

async fn call(api: &FakeBotApi, method: &str, body: Value) -> (u16, Value) {
    let r = http()
        .post(format!("{}/bot{TOKEN}/{method}", api.url()))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    assert!(
        r.headers().get("retry-after").is_none(),
        "the fake's 429s carry retry_after in the body only"
    );
    (status, r.json().await.unwrap_or(Value::Null))
}

fn too_many(n: u64) -> Value {
    json!({
        "ok": false,
        "error_code": 429,
        "description": format!("Too Many Requests: retry after {n}"),
        "parameters": {"retry_after": n}
    })
}

#[tokio::test]
async fn a_chat_in_flood_wait_is_refused_until_cleared() {
    let api = FakeBotApi::start().await;
    api.rate_limit_chat(42, 7);

    assert_eq!(
        call(&api, "sendMessage", json!({"chat_id": 42, "text": "hi"})).await,
        (429, too_many(7))
    );
    // Any method naming the chat, the id as a string too.
    let edit = json!({"chat_id": "42", "message_id": 5, "text": "x"});
    assert_eq!(call(&api, "editMessageText", edit).await.0, 429);
    let photo = json!({"chat_id": 42, "photo": "https://example.com/a.jpg"});
    assert_eq!(call(&api, "sendPhoto", photo).await.0, 429);
    // Other chats, and calls that name no chat, are untouched.
    assert_eq!(
        call(&api, "sendMessage", json!({"chat_id": 43, "text": "hi"}))
            .await
            .0,
        200
    );
    assert_eq!(call(&api, "getMe", json!({})).await.0, 200);
    let copy = json!({"chat_id": 43, "from_chat_id": 42, "message_id": 5});
    assert_eq!(call(&api, "copyMessage", copy).await.0, 200);
    assert_eq!(api.rate_limited_calls_to(42), 3);
    assert_eq!(api.rate_limited_calls_to(43), 0);
    // Each 429 opened a window; the two calls after the first came
    // inside it.
    assert_eq!(api.rate_limit_windows().len(), 3);
    assert_eq!(api.early_retries().len(), 2);
    assert!(api.early_retries()[0].early_by() > Duration::from_secs(6));

    api.clear_rate_limit_chat(42);
    let (s, b) = call(&api, "sendMessage", json!({"chat_id": 42, "text": "hi"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(api.rate_limited_calls_to(42), 3);
    // Answered now, but still sooner than the last 429 allowed.
    assert_eq!(api.early_retries().len(), 3);
    api.assert_no_violations();
}

#[tokio::test]
async fn a_bot_wide_window_refuses_every_send_then_passes() {
    let api = FakeBotApi::start().await;
    let w = api.rate_limit_all_for(Duration::from_millis(1500), 2);

    let sends = [
        ("sendMessage", json!({"chat_id": 1, "text": "hi"})),
        ("sendChatAction", json!({"chat_id": 2, "action": "typing"})),
        (
            "editMessageReplyMarkup",
            json!({"chat_id": 3, "message_id": 9}),
        ),
        (
            "copyMessage",
            json!({"chat_id": 4, "from_chat_id": 1, "message_id": 9}),
        ),
    ];
    for (m, p) in &sends {
        assert_eq!(call(&api, m, p.clone()).await, (429, too_many(2)), "{m}");
    }
    let others = [
        ("getMe", json!({})),
        ("getWebhookInfo", json!({})),
        ("answerCallbackQuery", json!({"callback_query_id": "77"})),
        ("getUpdates", json!({"timeout": 0})),
    ];
    for (m, p) in &others {
        assert_eq!(call(&api, m, p.clone()).await.0, 200, "{m}");
    }

    let limited = api.calls_in_rate_limit_windows();
    let seen: Vec<_> = limited
        .iter()
        .map(|l| (l.method.as_str(), l.chat))
        .collect();
    assert_eq!(
        seen,
        [
            ("sendMessage", Some(1)),
            ("sendChatAction", Some(2)),
            ("editMessageReplyMarkup", Some(3)),
            ("copyMessage", Some(4)),
        ]
    );
    let first = api.first_bot_rate_limit_at().expect("a first 429");
    assert_eq!(first, limited[0].at);
    assert!(w.covers(first));
    assert_eq!(api.sends_during(w.from, w.until), 4);
    assert_eq!(api.bot_rate_limits()[0].first_429, Some(first));

    tokio::time::sleep_until(w.until.into()).await;
    let (s, b) = call(&api, "sendMessage", json!({"chat_id": 5, "text": "hi"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(api.calls_in_rate_limit_windows().len(), 4);
    api.assert_no_violations();
}

/// Sends to `chat` until answered 200 or `give_up` passes, waiting
/// `retry_after` after each 429 when `patient`, 50 ms otherwise.
async fn sender(api: FakeBotApi, chat: i64, patient: bool, give_up: Instant) {
    while Instant::now() < give_up {
        let (s, b) = call(&api, "sendMessage", json!({"chat_id": chat, "text": "x"})).await;
        if s != 429 {
            return;
        }
        let wait = if patient {
            Duration::from_secs(b["parameters"]["retry_after"].as_u64().unwrap())
        } else {
            Duration::from_millis(50)
        };
        tokio::time::sleep(wait).await;
    }
}

#[tokio::test]
async fn retry_windows_tell_patient_workers_from_hammering_ones() {
    let api = FakeBotApi::start().await;
    let window = Duration::from_millis(1500);

    let w = api.rate_limit_all_for(window, 1);
    let give_up = w.until + Duration::from_secs(2);
    let workers: Vec<_> = (1..=3)
        .map(|chat| tokio::spawn(sender(api.clone(), chat, true, give_up)))
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let slices = api.sends_per_retry_window();
    assert_eq!(slices.len(), 2, "1.5 s cut into 1 s slices: {slices:?}");
    assert!(slices.iter().all(|&n| n <= 3), "{slices:?}");
    assert_eq!(api.sent_count(), 3, "every worker got through after it");
    assert!(api.early_retries().is_empty(), "{:?}", api.early_retries());

    api.reset();
    assert!(api.sends_per_retry_window().is_empty());
    let w = api.rate_limit_all_for(window, 1);
    sender(api.clone(), 1, false, w.until + Duration::from_secs(2)).await;
    let slices = api.sends_per_retry_window();
    assert!(
        slices[0] > 5,
        "a hammering client fills the slice: {slices:?}"
    );
    assert!(!api.early_retries().is_empty());
}

#[tokio::test]
async fn reset_and_clear_faults_lift_the_limits() {
    let api = FakeBotApi::start().await;
    let send = json!({"chat_id": 8, "text": "hi"});
    api.rate_limit_chat(8, 3);
    api.rate_limit_all_for(Duration::from_secs(60), 3);
    assert_eq!(call(&api, "sendMessage", send.clone()).await.0, 429);

    api.clear_faults();
    assert_eq!(call(&api, "sendMessage", send.clone()).await.0, 200);
    // The records stay until reset.
    assert_eq!(api.rate_limited_calls_to(8), 1);
    assert_eq!(api.calls_in_rate_limit_windows().len(), 1);

    api.rate_limit_chat(8, 3);
    api.rate_limit_all_for(Duration::from_secs(60), 3);
    api.reset();
    assert_eq!(call(&api, "sendMessage", send).await.0, 200);
    assert_eq!(api.rate_limited_calls_to(8), 0);
    assert!(api.calls_in_rate_limit_windows().is_empty());
    assert!(api.bot_rate_limits().is_empty());
    assert!(api.early_retries().is_empty(), "reset forgot the windows");
}

/// Checks every recorded send-like call against the flood rule, from the
/// arrival times alone (so it holds however slow the machine): a call was
/// answered 429 exactly when `limit` send-like calls answered 200 had
/// arrived in the second before it. For calls made one at a time.
fn assert_flood_rule(api: &FakeBotApi, limit: usize) {
    let calls: Vec<_> = api
        .calls()
        .into_iter()
        .filter(|c| fake_bot_api::is_send_like(&c.method))
        .collect();
    for (i, c) in calls.iter().enumerate() {
        let before = calls[..i]
            .iter()
            .filter(|p| p.ok() && c.at.duration_since(p.at) < Duration::from_secs(1))
            .count();
        if c.status == 429 {
            assert_eq!(before, limit, "call {i} refused: {:?}", c.params);
            assert_eq!(c.response, too_many(1));
        } else if c.ok() {
            assert!(before < limit, "call {i} passed over the limit");
        }
    }
}

#[tokio::test]
async fn the_flood_limit_refuses_sends_beyond_the_rate_in_a_sliding_second() {
    let api = FakeBotApi::start().await;
    api.flood_limit(3);
    let send = |chat: i64| json!({"chat_id": chat, "text": "hi"});
    let copy = json!({"chat_id": 5, "from_chat_id": 1, "message_id": 9});

    // A call answered otherwise than 200 takes no place (a 400: the
    // fake's chat-not-found fault).
    api.chat_not_found(99);
    let first = Instant::now();
    let mut got = vec![call(&api, "sendMessage", send(99)).await.0];
    for chat in 1..=4 {
        got.push(call(&api, "sendMessage", send(chat)).await.0);
    }
    got.push(call(&api, "copyMessage", copy).await.0);
    // Calls that are not sends are not limited.
    assert_eq!(call(&api, "getMe", json!({})).await.0, 200);
    if first.elapsed() < Duration::from_millis(900) {
        // The fourth send-like call within the second, whatever its chat
        // or method, is refused.
        assert_eq!(got, [400, 200, 200, 200, 429, 429]);
        assert_eq!(api.flood_refusals(), 2);
        // Each refusal opened a window for its chat.
        assert!(api
            .rate_limit_windows()
            .iter()
            .any(|w| w.chat == "4" && w.retry_after == 1));
    }
    assert_flood_rule(&api, 3);

    // Sliding: once those arrivals are a second old, there is room again
    // (and the refused ones never counted).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = Instant::now();
    let mut got = Vec::new();
    for chat in 6..=9 {
        got.push(call(&api, "sendMessage", send(chat)).await.0);
    }
    if again.elapsed() < Duration::from_millis(900) {
        assert_eq!(got, [200, 200, 200, 429]);
    }
    assert_flood_rule(&api, 3);
    let refused = api.flood_refusals();
    assert!(refused >= 1, "{refused}");

    // clear_faults keeps it (it is the API's behaviour, not a fault);
    // reset removes it and its count.
    api.clear_faults();
    let s = call(&api, "sendMessage", send(10)).await.0;
    if again.elapsed() < Duration::from_millis(900) {
        assert_eq!(s, 429);
    }
    api.reset();
    assert_eq!(api.flood_refusals(), 0);
    for chat in 11..=20 {
        assert_eq!(call(&api, "sendMessage", send(chat)).await.0, 200);
    }
    assert_eq!(api.flood_refusals(), 0);
    api.assert_no_violations();
}

#[tokio::test]
async fn a_paced_client_never_meets_the_flood_limit_and_a_bursting_one_does() {
    let api = FakeBotApi::start().await;
    api.flood_limit(20);
    let burst = |from: i64| {
        let calls = (from..from + 20).map(|chat| {
            let api = api.clone();
            async move {
                call(&api, "sendMessage", json!({"chat_id": chat, "text": "x"}))
                    .await
                    .0
            }
        });
        futures::future::join_all(calls)
    };
    // 20 concurrent sends fit the second; 20 more at once are refused.
    let started = Instant::now();
    let statuses = burst(1).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let statuses = burst(100).await;
    if started.elapsed() < Duration::from_millis(900) {
        assert!(statuses.iter().all(|&s| s == 429), "{statuses:?}");
        assert_eq!(api.flood_refusals(), 20);
    }
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(api.flood_refusals(), refused);

    api.reset();
    api.flood_limit(20);
    // One send every 60 ms is under 17 a second: never refused.
    for chat in 1..=25 {
        let s = call(&api, "sendMessage", json!({"chat_id": chat, "text": "x"})).await;
        assert_eq!(s.0, 200, "{s:?}");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(api.flood_refusals(), 0);
    api.assert_no_violations();
}
