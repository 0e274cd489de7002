//! Metrics, structured logs and the disabled mode, seen from outside: what
//! an operator scrapes and greps.

use std::time::Duration;

use e2e::harness::{eventually, free_port, Service};
use e2e::stack::{wait_ready, Stack};
use e2e::updates::{next_update_id, private_command, private_text};
use e2e::TOKEN;

const T: Duration = Duration::from_secs(30);

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// The value of an un-labelled (or exactly labelled) Prometheus sample.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name).then(|| v.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn ingress_and_worker_metrics_count_what_happened() {
    let metrics_port = free_port();
    let port_s = metrics_port.to_string();
    let Some(s) = Stack::builder()
        .workers(1)
        .worker_env("METRICS_PORT", &port_s)
        .start()
        .await
    else {
        return;
    };
    for i in 0..4 {
        s.post_ok(&private_command(
            next_update_id(),
            710_000 + i,
            "Met",
            Some("en"),
            "/help",
        ))
        .await;
    }
    s.post_ok(&private_text(
        next_update_id(),
        710_100,
        "Met",
        Some("en"),
        "just text",
    ))
    .await;
    // Rejected: wrong secret and a body that is not an update.
    let client = reqwest::Client::new();
    let r = client
        .post(s.webhook_url())
        .header("X-Telegram-Bot-Api-Secret-Token", "wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(s.api.wait_for_sent(4, T).await, "{}", s.logs_tail());
    s.wait_drained(T).await;

    let (st, text) = get(&format!("{}/metrics", s.base_url())).await;
    assert_eq!(st, 200);
    assert_eq!(
        sample(&text, "ingress_updates_enqueued_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ingress_updates_received_total"),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ingress_updates_rejected_total{reason=\"secret\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "queue_depth"), Some(0.0), "{text}");
    assert!(!text.contains(TOKEN), "token in ingress metrics");

    let base = format!("http://127.0.0.1:{metrics_port}");
    let (st, _) = get(&format!("{base}/healthz")).await;
    assert_eq!(st, 200);
    // Counters settle once the last entry is finished.
    let ok = eventually(T, || async {
        let (_, t) = get(&format!("{base}/metrics")).await;
        sample(&t, "worker_updates_handled_total{outcome=\"replied\"}") == Some(4.0)
            && sample(&t, "worker_updates_handled_total{outcome=\"counted\"}") == Some(1.0)
    })
    .await;
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert!(ok, "{text}");
    assert_eq!(
        sample(&text, "worker_handler_duration_seconds_count"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "worker_bot_api_sent_total"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(sample(&text, "queue_depth"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "queue_pending"), Some(0.0), "{text}");
    assert!(!text.contains(TOKEN), "token in worker metrics");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_update_id_on_every_update_line() {
    let Some(mut s) = Stack::builder()
        .workers(0)
        .worker_env("LOG_FORMAT", "json")
        .worker_env("RUST_LOG", "debug")
        .start()
        .await
    else {
        return;
    };
    s.spawn_worker(&[]);
    s.wait_workers_joined(1).await;
    let id = next_update_id();
    s.post_ok(&private_command(id, 720_001, "Json", Some("en"), "/help"))
        .await;
    assert!(s.api.wait_for_sent(1, T).await, "{}", s.logs_tail());
    s.wait_drained(T).await;
    // The harness reads the worker's output asynchronously: wait until the
    // line written before the entry was finished has been read too.
    let read = s.workers[0].wait_for_log("command answered", T).await;
    let logs = s.workers[0].logs();
    assert!(read, "no `command answered` line:\n{logs}");
    let mut about_update = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some() && v.get("message").is_some(),
            "{line}"
        );
        assert!(
            v.get("span").is_none(),
            "fields are top-level, not nested: {line}"
        );
        // Every line logged while the update was handled carries its entry
        // (the span's other field); each must carry the update_id beside it.
        if v.get("entry").is_some() {
            about_update += 1;
            assert_eq!(
                v["update_id"], id,
                "update line without its update_id: {line}"
            );
        }
    }
    // At least the info line every answered command writes.
    let answered = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "command answered")
        .unwrap_or_else(|| panic!("no `command answered` line:\n{logs}"));
    assert_eq!(answered["update_id"], id, "{answered}");
    assert!(about_update >= 2, "lines about the update:\n{logs}");
    assert!(!logs.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_bot_serves_health_and_calls_nothing() {
    let Some(s) = Stack::builder().without_ingress().workers(0).start().await else {
        return;
    };
    let port = free_port();
    let env = [
        ("DISABLE_TELEGRAM_BOT", "true".to_string()),
        ("TELEGRAM_API_URL", s.api.url()),
        ("REDIS_URL", s.redis.url()),
        ("PORT", port.to_string()),
        ("HOST", "127.0.0.1".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut ingress = Service::spawn("ingress", &[], &env);
    wait_ready(&mut ingress, port).await;
    let (st, _) = get(&format!("http://127.0.0.1:{port}/healthz")).await;
    assert_eq!(st, 200);
    assert!(
        ingress.wait_for_log("disabled", T).await,
        "a log line says the bot is disabled:\n{}",
        ingress.logs()
    );
    let worker = Service::spawn("worker", &[], &env);
    assert!(
        worker.wait_for_log("disabled", T).await,
        "{}",
        worker.logs()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        s.api.calls().is_empty(),
        "no Bot API call when disabled: {:?}",
        s.api.calls()
    );
    // The webhook path exists but no bot stands behind it.
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/telegram/webhook/"))
        .body(r#"{"update_id":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
