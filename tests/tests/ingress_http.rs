//! The ingress as Telegram and operators see it: webhook registration at
//! startup and the HTTP surface (SPEC.md "Ingress HTTP surface" and
//! "Webhook registration").

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::harness::{
    http_get, http_request, raw_post_chunked_status, raw_post_status, webhook_post, Service,
};
use e2e::stack::{ingress_env, merge_env, wait_ready, Stack};
use e2e::updates::{self, next_update_id, private_command};
use e2e::{WEBHOOK_SECRET, WEBHOOK_URL};
use serde_json::{json, Value};
use shared::keys;

const T: Duration = Duration::from_secs(20);

async fn ingress_only() -> Option<Stack> {
    Stack::builder().workers(0).start().await
}

async fn wait_registered(s: &Stack) {
    s.wait_calls("setWebhook", T, |calls| {
        calls.iter().any(|c| c.method == "setWebhook" && c.ok())
    })
    .await;
}

/// The ingress registers the webhook; the menu comes from the worker's
/// command registry (the ingress is generic and knows no commands).
#[tokio::test(flavor = "multi_thread")]
async fn startup_registers_webhook_and_commands() {
    let Some(s) = Stack::builder().workers(1).start().await else {
        return;
    };
    wait_registered(&s).await;
    s.wait_calls("setMyCommands from the worker's registry", T, |calls| {
        calls
            .iter()
            .filter(|c| c.method == "setMyCommands" && c.ok())
            .count()
            >= 2
    })
    .await;
    wait_registered(&s).await;
    let ing = s.ingress();
    ing.expect_log("Telegram bot initialized: @test_queue_bot", T)
        .await;
    ing.expect_log(&format!("Webhook set: {WEBHOOK_URL}"), T)
        .await;

    let calls = s.api.calls();
    let pos = |m: &str| calls.iter().position(|c| c.method == m && c.ok());
    let get_me = pos("getMe").expect("getMe called");
    let set = pos("setWebhook").expect("setWebhook called");
    assert!(get_me < set, "getMe comes first (it validates the token)");
    assert!(pos("getWebhookInfo").is_some(), "getWebhookInfo called");

    let sets = s.api.calls_to("setWebhook");
    assert_eq!(sets.len(), 1, "one setWebhook: {sets:?}");
    let p = &sets[0].params;
    assert_eq!(p["url"], WEBHOOK_URL);
    assert_eq!(p["secret_token"], WEBHOOK_SECRET);
    assert!(
        p.get("drop_pending_updates").is_none() || p["drop_pending_updates"] == false,
        "pending updates are kept by default: {p}"
    );
    let w = s.api.webhook();
    assert_eq!(w.url, WEBHOOK_URL);
    assert_eq!(w.secret_token.as_deref(), Some(WEBHOOK_SECRET));

    let cmds: BTreeSet<String> = s
        .api
        .commands()
        .expect("setMyCommands stored commands")
        .as_array()
        .expect("commands array")
        .iter()
        .map(|c| c["command"].as_str().unwrap_or_default().to_owned())
        .collect();
    let want: BTreeSet<String> = ["start", "app", "stats", "help"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(cmds, want);
    let menus = s.api.calls_to("setMyCommands");
    assert_eq!(
        menus.len(),
        2,
        "the default menu and the Russian one, once: {menus:?}"
    );
    assert_eq!(menus[1].params["language_code"], "ru");

    // Nothing deletes the webhook (a replica must never unhook the others).
    assert_eq!(s.api.count("deleteWebhook"), 0);
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_pending_updates_when_asked() {
    let Some(s) = Stack::builder()
        .workers(0)
        .ingress_env("TELEGRAM_DROP_PENDING_UPDATES", "true")
        .start()
        .await
    else {
        return;
    };
    s.wait_calls("setWebhook", T, |calls| {
        calls.iter().any(|c| c.method == "setWebhook" && c.ok())
    })
    .await;
    let p = s.api.calls_to("setWebhook")[0].params.clone();
    assert_eq!(p["drop_pending_updates"], true, "{p}");
    s.assert_clean();
}

fn field_map(entry: &redis::Value) -> (String, HashMap<String, String>) {
    // [id, [k, v, k, v...]]
    let redis::Value::Array(parts) = entry else {
        panic!("stream entry shape: {entry:?}")
    };
    let id = e2e::harness::value_str(&parts[0]).unwrap();
    let fields = e2e::harness::kv(&parts[1])
        .into_iter()
        .map(|(k, v)| (k, e2e::harness::value_str(&v).unwrap_or_default()))
        .collect();
    (id, fields)
}

async fn last_entry(s: &Stack) -> HashMap<String, String> {
    let mut c = s.redis_conn().await;
    let v: redis::Value = redis::cmd("XREVRANGE")
        .arg(keys::Keys::default().stream())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut c)
        .await
        .expect("XREVRANGE");
    let redis::Value::Array(entries) = v else {
        panic!("{v:?}")
    };
    field_map(&entries[0]).1
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_accepts_valid_updates_and_refuses_the_rest() {
    let Some(s) = ingress_only().await else {
        return;
    };
    let url = s.webhook_url();
    let len0 = s.stream_len().await;

    let valid = private_command(next_update_id(), 4242, "Ada", Some("en"), "/start");
    // Wrong and missing secret: 401, nothing stored.
    for secret in [Some("wrong"), None, Some("")] {
        let r = webhook_post(&url, secret, valid.to_string()).await.unwrap();
        assert_eq!(r.status, 401, "secret {secret:?}: {}", r.body);
    }
    assert_eq!(s.stream_len().await, len0, "a 401 stores nothing");

    // Not an update: 400, nothing stored.
    let bad: [&[u8]; 7] = [
        b"not json",
        b"[1,2,3]",
        b"{}",
        br#"{"update_id":"5"}"#,
        br#"{"update_id":5.5}"#,
        b"",
        br#"{"update_id":5"#,
    ];
    for body in bad {
        let r = webhook_post(&url, Some(WEBHOOK_SECRET), body.to_vec())
            .await
            .unwrap();
        assert_eq!(
            r.status,
            400,
            "{:?} -> {} {}",
            String::from_utf8_lossy(body),
            r.status,
            r.body
        );
    }
    assert_eq!(s.stream_len().await, len0, "a 400 stores nothing");

    // Over 1 MiB: 413 (read while writing: the server may answer before
    // it has the whole body).
    let big = json!({"update_id": next_update_id(), "message": {"text": "x".repeat(2 << 20)}});
    let status = raw_post_status(
        &url,
        &[
            ("Content-Type", "application/json"),
            (e2e::harness::SECRET_HEADER, WEBHOOK_SECRET),
        ],
        big.to_string().into_bytes(),
    )
    .await
    .unwrap_or_else(|e| panic!("a 2 MiB body must get an HTTP answer: {e}"));
    assert_eq!(status, 413);
    let status = raw_post_chunked_status(
        &url,
        &[
            ("Content-Type", "application/json"),
            (e2e::harness::SECRET_HEADER, WEBHOOK_SECRET),
        ],
        big.to_string().into_bytes(),
    )
    .await
    .unwrap_or_else(|e| panic!("a 2 MiB chunked body must get an HTTP answer: {e}"));
    assert_eq!(status, 413, "chunked, without Content-Length");
    assert_eq!(s.stream_len().await, len0);

    // Other methods on the webhook path: 405.
    for m in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let r = http_request(m.clone(), &url).await.unwrap();
        assert_eq!(r.status, 405, "{m} {url}");
    }

    // Valid: 200 and exactly one entry with the envelope fields.
    let before_ms = now_ms();
    let r = webhook_post(&url, Some(WEBHOOK_SECRET), valid.to_string())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.stream_len().await, len0 + 1, "stored before the 200");
    let e = last_entry(&s).await;
    assert_eq!(e["update_id"], updates::update_id(&valid).to_string());
    assert_eq!(e["key"], "c4242");
    let stored: Value = serde_json::from_str(&e["update"]).expect("update field is JSON");
    assert_eq!(stored, valid, "the update is stored as sent");
    let received: i64 = e["received_at"].parse().expect("received_at is ms");
    assert!(
        received >= before_ms - 5_000 && received <= now_ms() + 5_000,
        "received_at {received} is ms since the epoch"
    );

    // Without the trailing slash too.
    let other = private_command(next_update_id(), 4243, "Bob", None, "/help");
    let r = webhook_post(
        url.trim_end_matches('/'),
        Some(WEBHOOK_SECRET),
        other.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.stream_len().await, len0 + 2);

    // Every real update shape is accepted (the ingress does not judge types).
    let real = updates::real_updates();
    for (file, u) in &real {
        let r = s.post(u).await;
        assert_eq!(r.status, 200, "{file}: {}", r.body);
    }
    assert_eq!(s.stream_len().await, len0 + 2 + real.len() as u64);

    // Health.
    let h = http_get(&format!("{}/healthz", s.base_url()))
        .await
        .unwrap();
    assert_eq!(h.status, 200);
    let h = http_get(&format!("{}/readyz", s.base_url())).await.unwrap();
    assert_eq!(h.status, 200);
    s.assert_clean();
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn second_replica_does_not_register_again() {
    let Some(s) = ingress_only().await else {
        return;
    };
    wait_registered(&s).await;
    assert_eq!(e2e::webhook_registrations(&s.api), 1);
    let calls_before = s.api.calls().len();

    let port = e2e::harness::free_port();
    let env = ingress_env(&s.api, &s.redis, port);
    let mut second = Service::spawn_owned("ingress", &[], &env);
    wait_ready(&mut second, port).await;
    // The replica is serving; give its registration step time to finish:
    // it logs the outcome, or at least calls getMe / getWebhookInfo.
    let _ = second.wait_for_log("Telegram bot configured", T).await;
    let started_calls: Vec<String> = s.api.calls()[calls_before..]
        .iter()
        .map(|c| c.method.clone())
        .collect();
    assert_eq!(
        e2e::webhook_registrations(&s.api),
        1,
        "the second replica called setWebhook again (calls since it started: {started_calls:?})\n{}",
        second.logs_tail()
    );
    // It serves the same webhook (same secret).
    let u = private_command(next_update_id(), 77, "Eve", None, "/start");
    let r = webhook_post(
        &format!("http://127.0.0.1:{port}/telegram/webhook/"),
        Some(WEBHOOK_SECRET),
        u.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    e2e::assert_token_absent(&second.logs());
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_config_registers_again() {
    let Some(mut s) = ingress_only().await else {
        return;
    };
    wait_registered(&s).await;
    let first = s.ingress.take().expect("ingress");
    drop(first);
    // A new deployment with a new secret: Telegram must learn it.
    let port = e2e::harness::free_port();
    let env = merge_env(
        ingress_env(&s.api, &s.redis, port),
        &[("TELEGRAM_WEBHOOK_SECRET", "rotated_secret-2")],
    );
    let mut svc = Service::spawn_owned("ingress", &[], &env);
    wait_ready(&mut svc, port).await;
    let ok = s
        .api
        .wait_for(T, |calls| {
            calls
                .iter()
                .filter(|c| c.method == "setWebhook" && c.ok())
                .count()
                >= 2
        })
        .await;
    assert!(
        ok,
        "a changed secret must be registered\n{}",
        svc.logs_tail()
    );
    assert_eq!(
        s.api.webhook().secret_token.as_deref(),
        Some("rotated_secret-2")
    );
    e2e::assert_token_absent(&svc.logs());
    s.api.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_last_error_is_logged() {
    let Some(redis) = e2e::RedisServer::start().await else {
        return;
    };
    let api = e2e::FakeBotApi::start().await;
    api.faults(|f| {
        f.webhook_last_error = Some((
            1_700_000_000,
            "Wrong response from the webhook: 502 Bad Gateway".into(),
        ));
        f.pending_update_count = Some(17);
    });
    let port = e2e::harness::free_port();
    let mut svc = Service::spawn_owned("ingress", &[], &ingress_env(&api, &redis, port));
    wait_ready(&mut svc, port).await;
    svc.expect_log("Wrong response from the webhook: 502 Bad Gateway", T)
        .await;
    svc.expect_log("17", T).await;
    e2e::assert_token_absent(&svc.logs());
    api.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_getme_failures_are_retried_while_serving() {
    let Some(redis) = e2e::RedisServer::start().await else {
        return;
    };
    let api = e2e::FakeBotApi::start().await;
    api.faults(|f| f.get_me_failures.extend([502, 429, 500]));
    let port = e2e::harness::free_port();
    let mut svc = Service::spawn_owned("ingress", &[], &ingress_env(&api, &redis, port));
    // Health is served while registration retries.
    let h = e2e::harness::eventually(T, || async {
        http_get(&format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(h, "healthz while retrying\n{}", svc.logs_tail());
    let ok = api
        .wait_for(Duration::from_secs(40), |calls| {
            calls.iter().any(|c| c.method == "setWebhook" && c.ok())
        })
        .await;
    assert!(
        ok,
        "getMe failed 502, 429, 500 and then worked: the webhook must still get set\ncalls: {:?}\n{}",
        api.calls().iter().map(|c| (&c.method, c.status)).collect::<Vec<_>>(),
        svc.logs_tail()
    );
    // The 429 asked for one second: the next getMe came no earlier.
    let gm = api.calls_to("getMe");
    let i429 = gm
        .iter()
        .position(|c| c.status == 429)
        .expect("a 429 getMe");
    if let Some(next) = gm.get(i429 + 1) {
        assert!(
            next.at.duration_since(gm[i429].at) >= Duration::from_secs(1),
            "getMe retried {:?} after a 429 with retry_after 1",
            next.at.duration_since(gm[i429].at)
        );
    }
    assert!(svc.has_exited().is_none(), "still running");
    e2e::assert_token_absent(&svc.logs());
    api.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_token_is_fatal_with_a_clear_message() {
    let Some(redis) = e2e::RedisServer::start().await else {
        return;
    };
    let api = e2e::FakeBotApi::start().await;
    api.faults(|f| f.get_me_unauthorized = true);
    let port = e2e::harness::free_port();
    let mut svc = Service::spawn_owned("ingress", &[], &ingress_env(&api, &redis, port));
    let st = svc.wait_exit(T).await;
    assert!(!st.success(), "a rejected token must stop the ingress");
    let logs = svc.logs();
    assert!(
        logs.to_lowercase().contains("token")
            || logs.contains("401")
            || logs.contains("Unauthorized"),
        "the message should say the token was rejected:\n{logs}"
    );
    assert_eq!(api.count("setWebhook"), 0);
    e2e::assert_token_absent(&logs);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_answers_503_with_retry_after_and_recovers() {
    let Some(mut s) = ingress_only().await else {
        return;
    };
    let url = s.webhook_url();
    s.redis.stop().await;

    let u = private_command(next_update_id(), 99, "Kim", None, "/start");
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        webhook_post(&url, Some(WEBHOOK_SECRET), u.to_string()),
    )
    .await
    .expect("the ingress must answer promptly while Redis is down, not hang")
    .expect("an HTTP answer");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.header("retry-after").is_some(),
        "503 carries Retry-After: {:?}",
        r.headers
    );
    let ready = tokio::time::timeout(
        Duration::from_secs(15),
        http_get(&format!("{}/readyz", s.base_url())),
    )
    .await
    .expect("readyz must not hang")
    .unwrap();
    assert_eq!(ready.status, 503);
    let health = http_get(&format!("{}/healthz", s.base_url()))
        .await
        .unwrap();
    assert_eq!(health.status, 200, "alive while Redis is down");

    s.redis.restart().await;
    let ok = e2e::harness::eventually(T, || async {
        webhook_post(&url, Some(WEBHOOK_SECRET), u.to_string())
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(
        ok,
        "the ingress recovers when Redis is back\n{}",
        s.logs_tail()
    );
    assert_eq!(s.stream_len().await, 1, "stored after recovery");
    s.assert_clean();
}
