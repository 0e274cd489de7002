//! The outbound HTTP API end to end (SPEC "Outbound messages"): real
//! `ingress` and `worker` binaries, real Redis, the fake Bot API. A message
//! posted to `/api/outbox` is stored by the ingress and sent by a worker
//! (through the kept-reply takeover, so within about half a second of
//! being due); the key, idempotency, validation and scheduling are checked
//! from the outside.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::harness::{assert_secret_absent, http};
use e2e::stack::Stack;
use serde_json::{json, Value};

const KEY: &str = "outbox-e2e-key-7d1f0c";

struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

/// A request to the ingress's API with `key` as the bearer (none: no
/// Authorization header).
async fn call(
    s: &Stack,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    idempotency_key: Option<&str>,
    body: Option<String>,
) -> Answer {
    let mut req = http().request(method, format!("{}{path}", s.base_url()));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(k) = idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        req = req.header("Content-Type", "application/json").body(b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}\n{}", s.logs_tail()));
    let status = resp.status().as_u16();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    let text = resp.text().await.unwrap_or_default();
    Answer {
        status,
        replayed,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn outbox(s: &Stack, key: Option<&str>, idem: Option<&str>, body: &Value) -> Answer {
    let post = reqwest::Method::POST;
    call(s, post, "/api/outbox", key, idem, Some(body.to_string())).await
}

fn message(chat_id: i64, text: &str) -> Value {
    json!({"method": "sendMessage", "params": {"chat_id": chat_id, "text": text}})
}

async fn kept_replies(s: &Stack) -> i64 {
    let mut c = s.redis_conn().await;
    redis::cmd("HLEN")
        .arg(s.keys.replies())
        .query_async(&mut c)
        .await
        .expect("HLEN replies")
}

fn sends_to(s: &Stack, chat_id: i64) -> usize {
    s.replies_to(chat_id).len()
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_idempotency_key_is_sent_once() {
    let Some(s) = Stack::builder()
        .ingress_env("OUTBOX_API_KEY", KEY)
        .start()
        .await
    else {
        return;
    };
    let chat = 910_001;
    let body = message(chat, "Your order #17 has shipped");
    let posted = Instant::now();
    let first = outbox(&s, Some(KEY), Some("order-17-shipped"), &body).await;
    let again = outbox(&s, Some(KEY), Some("order-17-shipped"), &body).await;
    assert_eq!(
        (first.status, again.status),
        (202, 202),
        "{} {}",
        first.body,
        again.body
    );
    let id = first.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        again.body["id"], first.body["id"],
        "the repeat answers the first id"
    );
    assert!(again.replayed && !first.replayed);

    let call = s.wait_reply(chat, Duration::from_secs(10), |_| true).await;
    let latency = call.at - posted;
    assert_eq!(call.param("text"), "Your order #17 has shipped");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = sends_to(&s, chat);
    eprintln!(
        "OUTBOX idempotency: two POSTs, one id {id}, sent {latency:?} after the first POST, \
         {n} sendMessage after waiting 1.5 s more"
    );
    assert_eq!(n, 1, "exactly one message for one idempotency key");
    assert_eq!(kept_replies(&s).await, 0, "nothing left in the store");
    s.assert_clean();
    assert_secret_absent(&s.all_logs(), KEY);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_401_and_no_key_configured_is_404() {
    let Some(s) = Stack::builder()
        .ingress_env("OUTBOX_API_KEY", KEY)
        .start()
        .await
    else {
        return;
    };
    let chat = 910_002;
    let before = kept_replies(&s).await;
    let wrong = format!("{KEY}x");
    let mut statuses = Vec::new();
    for key in [Some(wrong.as_str()), Some(""), None] {
        statuses.push(outbox(&s, key, None, &message(chat, "nope")).await.status);
    }
    let get = call(
        &s,
        reqwest::Method::GET,
        "/api/broadcasts/b1",
        Some(&wrong),
        None,
        None,
    )
    .await;
    statuses.push(get.status);
    assert_eq!(statuses, [401, 401, 401, 401]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = kept_replies(&s).await;
    eprintln!(
        "OUTBOX auth: wrong/empty/missing key -> {statuses:?}; HLEN replies {before} -> {after}; \
         {} sends to the chat after 1 s",
        sends_to(&s, chat)
    );
    assert_eq!((before, after), (0, 0), "nothing stored");
    assert_eq!(sends_to(&s, chat), 0, "nothing sent");

    // An ingress without OUTBOX_API_KEY has no such API at all.
    let Some(plain) = Stack::builder().workers(0).start().await else {
        return;
    };
    let mut off = Vec::new();
    for (method, path) in [
        (reqwest::Method::POST, "/api/outbox"),
        (reqwest::Method::POST, "/api/broadcasts"),
        (reqwest::Method::GET, "/api/broadcasts/b1"),
    ] {
        let body = Some(message(chat, "x").to_string());
        off.push(
            call(&plain, method, path, Some(KEY), None, body)
                .await
                .status,
        );
    }
    eprintln!("OUTBOX no key configured: {off:?}");
    assert_eq!(off, [404, 404, 404]);
    assert_eq!(kept_replies(&plain).await, 0);
    assert_secret_absent(&s.all_logs(), KEY);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_are_400_naming_the_field() {
    let Some(s) = Stack::builder()
        .ingress_env("OUTBOX_API_KEY", KEY)
        .workers(0)
        .start()
        .await
    else {
        return;
    };
    let cases = [
        ("{\"method\":", "body"),
        (
            r#"{"method":"sendInvoice","params":{"chat_id":1}}"#,
            "method",
        ),
        (
            r#"{"method":"sendMessage","params":{"chat_id":1}}"#,
            "params.text",
        ),
        (
            r#"{"method":"sendMessage","params":{"chat_id":1.5,"text":"x"}}"#,
            "params.chat_id",
        ),
        (
            r#"{"method":"sendPhoto","params":{"chat_id":1}}"#,
            "params.photo",
        ),
        (
            r#"{"method":"copyMessage","params":{"chat_id":1,"from_chat_id":2}}"#,
            "params.message_id",
        ),
        (
            r#"{"method":"sendMessage","params":{"chat_id":1,"text":"x"},"not_before":-5}"#,
            "not_before",
        ),
    ];
    for (body, field) in cases {
        let post = reqwest::Method::POST;
        let a = call(
            &s,
            post,
            "/api/outbox",
            Some(KEY),
            None,
            Some(body.to_owned()),
        )
        .await;
        eprintln!("OUTBOX 400: {body} -> {} {}", a.status, a.body);
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert_eq!(a.body["field"], field, "{body}: {}", a.body);
        assert_eq!(a.body["ok"], false);
    }
    let a = outbox(&s, Some(KEY), Some("has space"), &message(1, "x")).await;
    assert_eq!(
        (a.status, &a.body["field"]),
        (400, &json!("Idempotency-Key"))
    );
    assert_eq!(kept_replies(&s).await, 0, "nothing stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_message_waits_for_not_before_across_a_worker_restart() {
    let Some(mut s) = Stack::builder()
        .ingress_env("OUTBOX_API_KEY", KEY)
        .start()
        .await
    else {
        return;
    };
    let chat = 910_004;
    let (posted, posted_wall) = (Instant::now(), SystemTime::now());
    let not_before = unix_ms(posted_wall) / 1000 + 4;
    let mut body = message(chat, "Reminder: your trial ends today");
    body["not_before"] = json!(not_before);
    let a = outbox(&s, Some(KEY), None, &body).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let due_in = Duration::from_millis((not_before * 1000 - unix_ms(posted_wall)) as u64);

    // The worker that was there when it was accepted goes away; another
    // one comes, all while the message waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.workers[0].terminate();
    let st = s.workers[0].wait_exit(Duration::from_secs(30)).await;
    assert!(st.success(), "worker exit on SIGTERM: {st}");
    s.spawn_worker(&[]);
    s.wait_workers_joined(1).await;
    let rejoined = posted.elapsed();
    assert_eq!(sends_to(&s, chat), 0, "nothing before not_before");
    assert!(
        rejoined < due_in,
        "the restart took {rejoined:?}, longer than the wait ({due_in:?}): nothing shown"
    );
    assert_eq!(kept_replies(&s).await, 1, "the message waits in Redis");

    let call = s.wait_reply(chat, Duration::from_secs(15), |_| true).await;
    let sent_at = unix_ms(posted_wall + (call.at - posted));
    let late_ms = sent_at - not_before * 1000;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = sends_to(&s, chat);
    eprintln!(
        "OUTBOX scheduled: not_before {due_in:?} after the POST; worker replaced by {rejoined:?}; \
         sent {:?} after the POST ({late_ms} ms after not_before); {n} sendMessage",
        call.at - posted
    );
    assert!(late_ms >= 0, "sent {}ms before not_before", -late_ms);
    assert_eq!(n, 1, "sent once");
    assert_eq!(kept_replies(&s).await, 0);
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_is_created_and_its_status_read() {
    let Some(s) = Stack::builder()
        .ingress_env("OUTBOX_API_KEY", KEY)
        .workers(0)
        .start()
        .await
    else {
        return;
    };
    let body =
        json!({"method": "sendMessage", "params": {"text": "We moved!"}, "to": [910_005, 910_006]});
    let post = reqwest::Method::POST;
    let a = call(
        &s,
        post,
        "/api/broadcasts",
        Some(KEY),
        None,
        Some(body.to_string()),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.body);
    let id = a.body["id"].as_str().expect("an id").to_owned();
    let get = reqwest::Method::GET;
    let st = call(
        &s,
        get.clone(),
        &format!("/api/broadcasts/{id}"),
        Some(KEY),
        None,
        None,
    )
    .await;
    eprintln!("OUTBOX broadcast: 202 {id}; status {}", st.body);
    assert_eq!(st.status, 200, "{}", st.body);
    let b = &st.body;
    assert_eq!(
        (b["id"].as_str(), b["total"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    assert!(
        ["queued", "running", "paused", "done", "cancelled"]
            .contains(&b["state"].as_str().unwrap()),
        "{b}"
    );
    let parts: u64 = ["sent", "failed", "blocked", "left"]
        .iter()
        .map(|f| b[f].as_u64().unwrap_or_else(|| panic!("{f} in {b}")))
        .sum();
    assert_eq!(
        parts, 2,
        "every recipient is sent, failed, blocked or left: {b}"
    );
    let unknown = call(&s, get.clone(), "/api/broadcasts/b0", Some(KEY), None, None).await;
    let no_key = call(&s, get, &format!("/api/broadcasts/{id}"), None, None, None).await;
    assert_eq!((unknown.status, no_key.status), (404, 401));
    let bad = json!({"method": "sendMessage", "params": {"text": "x"}, "to": "everyone"});
    let post = reqwest::Method::POST;
    let a = call(
        &s,
        post,
        "/api/broadcasts",
        Some(KEY),
        None,
        Some(bad.to_string()),
    )
    .await;
    assert_eq!((a.status, &a.body["field"]), (400, &json!("to")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_cli_is_the_third_door() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let chat = 910_077;
    let args = [
        "outbox",
        "send",
        "--chat",
        "910077",
        "--text",
        "maintenance at 22:00",
        "--idempotency-key",
        "maint-1",
    ];
    let (st, out, err) = s.worker_command(&args).await;
    assert!(st.success(), "{out}{err}");
    let (st2, out2, err2) = s.worker_command(&args).await;
    assert!(st2.success(), "{out2}{err2}");
    assert!(
        out2.contains("already stored") || err2.contains("already stored"),
        "{out2}{err2}"
    );
    let call = s.wait_reply(chat, Duration::from_secs(10), |_| true).await;
    assert_eq!(call.param("text"), "maintenance at 22:00");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sends_to(&s, chat), 1);
    let (bad, _, err) = s
        .worker_command(&["outbox", "send", "--chat", "1", "--text", ""])
        .await;
    assert_eq!(bad.code(), Some(2), "{err}");
    assert!(err.contains("params.text"), "{err}");
    eprintln!("OUTBOX cli: `worker outbox send` twice with one key -> 1 message; empty text -> exit 2 naming params.text");
    s.assert_clean();
}
