//! The webhook stays ours after start-up. Anything else holding the token
//! can unhook production - above all a developer running the bot in
//! polling mode with the production token (polling deletes the webhook,
//! SPEC "Polling mode"), which would leave production deaf until its next
//! deploy. The ingress checks the webhook every
//! `TELEGRAM_WEBHOOK_CHECK_SECS` and puts it back (one replica, under the
//! registration lock); a poller that finds a webhook back pauses instead
//! of deleting it again, so the two never take turns.

use std::time::Duration;

use e2e::harness::{eventually, free_port, Service};
use e2e::stack::{merge_env, try_wait_ready, Stack};
use e2e::updates::{next_update_id, private_command};
use e2e::{TOKEN, WEBHOOK_URL};

const T: Duration = Duration::from_secs(30);
const PUT_BACK: &str = "the webhook was changed or deleted outside this deployment";

/// What another process holding the token does: a raw Bot API call.
async fn delete_webhook_elsewhere(s: &Stack) {
    let r = reqwest::Client::new()
        .post(format!("{}/bot{TOKEN}/deleteWebhook", s.api.url()))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("deleteWebhook");
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(s.api.webhook().url, "");
}

/// Registration runs beside the server: a ready ingress may not have set
/// the webhook yet.
async fn registered(s: &Stack) {
    let set = eventually(T, || async { s.api.webhook().url == WEBHOOK_URL }).await;
    assert!(set, "the ingress registers its webhook\n{}", s.logs_tail());
}

/// A user's /help goes through production's webhook and is answered.
async fn answered_through_the_webhook(s: &Stack, chat: i64, name: &str) {
    s.post_ok(&private_command(
        next_update_id(),
        chat,
        name,
        Some("en"),
        "/help",
    ))
    .await;
    s.wait_nth_reply(chat, 1, T).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_deleted_behind_our_back_is_put_back_by_one_replica() {
    let Some(s) = Stack::builder()
        .ingress_env("TELEGRAM_WEBHOOK_CHECK_SECS", "1")
        .start()
        .await
    else {
        return;
    };
    // A second replica of the same ingress.
    let port = free_port();
    let mut second = Service::spawn_owned(
        "ingress",
        &[],
        &merge_env(s.ingress_env(), &[("PORT", &port.to_string())]),
    );
    try_wait_ready(&mut second, port)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let configured = eventually(T, || async {
        [s.ingress().logs(), second.logs()]
            .iter()
            .all(|l| l.contains("Telegram bot configured via webhook"))
    })
    .await;
    assert!(configured, "{}\n{}", s.logs_tail(), second.logs());
    // Registered once for both replicas - plus once more when the worker's
    // bot published the update kinds it takes (the check brings the
    // webhook in line); wait for that before counting.
    let kinds = eventually(T, || async {
        s.api.webhook().allowed_updates.is_some_and(|a| {
            a.as_array()
                .is_some_and(|a| !a.iter().any(|k| k == "inline_query"))
        })
    })
    .await;
    assert!(
        kinds,
        "the webhook follows the bot's kinds\n{}",
        s.logs_tail()
    );
    let base = e2e::webhook_registrations(&s.api);
    assert_eq!(base, 1, "registered once for both replicas");

    delete_webhook_elsewhere(&s).await;
    let back = eventually(T, || async { s.api.webhook().url == WEBHOOK_URL }).await;
    assert!(back, "the webhook is put back\n{}", s.logs_tail());
    // Several checks later: still ours, set again exactly once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.api.webhook().url, WEBHOOK_URL);
    assert_eq!(
        e2e::webhook_registrations(&s.api),
        base + 1,
        "put back once, by one replica"
    );
    let warned =
        s.ingress().logs().matches(PUT_BACK).count() + second.logs().matches(PUT_BACK).count();
    assert_eq!(warned, 1, "{}\n{}", s.logs_tail(), second.logs());
    assert_eq!(
        s.api.webhook().secret_token.as_deref(),
        Some(e2e::WEBHOOK_SECRET),
        "with our secret"
    );

    // Updates flow through it again.
    answered_through_the_webhook(&s, 870_001, "Back").await;
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_laptop_polling_with_the_production_token_does_not_unhook_production() {
    let Some(mut s) = Stack::builder()
        .ingress_env("TELEGRAM_WEBHOOK_CHECK_SECS", "1")
        .start()
        .await
    else {
        return;
    };
    registered(&s).await;

    // The laptop: the all-in-one with the same token, no public URL, no
    // Redis - polling mode, which deletes the webhook at start.
    let port = free_port();
    let laptop_env: Vec<(String, String)> = [
        ("TELEGRAM_BOT_TOKEN", TOKEN.to_owned()),
        ("TELEGRAM_API_URL", s.api.url()),
        ("TELEGRAM_SEND_RATE", "0".to_owned()),
        ("PORT", port.to_string()),
        ("HOST", "127.0.0.1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut laptop = Service::spawn_owned("bot", &[], &laptop_env);
    let deleted = eventually(T, || async { s.api.count("deleteWebhook") >= 1 }).await;
    assert!(deleted, "{}", laptop.logs());

    // Production puts it back; the laptop's next getUpdates gets 409
    // "webhook is active" and its poller pauses instead of deleting again.
    let paused = laptop
        .wait_for_log("Polling pauses rather than deleting it again", T)
        .await;
    assert!(paused, "laptop:\n{}\n{}", laptop.logs(), s.logs_tail());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        s.api.webhook().url,
        WEBHOOK_URL,
        "production keeps its webhook"
    );
    assert_eq!(
        s.api.count("deleteWebhook"),
        1,
        "the laptop deleted it once, not again"
    );
    assert_eq!(
        e2e::webhook_registrations(&s.api),
        2,
        "production set it again once"
    );
    assert!(
        laptop.has_exited().is_none(),
        "the laptop's bot keeps running"
    );

    // Production answers its users meanwhile.
    answered_through_the_webhook(&s, 871_001, "Prod").await;

    // Production goes away and its webhook with it: the laptop resumes.
    s.ingress.as_mut().expect("ingress").kill().await;
    delete_webhook_elsewhere(&s).await;
    let resumed = laptop
        .wait_for_log("the other webhook is gone; polling resumes", T)
        .await;
    assert!(resumed, "{}", laptop.logs());
    let local = 871_002;
    s.api.push_update(private_command(
        next_update_id(),
        local,
        "Laptop",
        Some("en"),
        "/help",
    ));
    s.wait_nth_reply(local, 1, T).await;
    e2e::assert_token_absent(&laptop.logs());
    s.api.assert_no_violations();
}

/// A redeploy that moves the webhook to a new URL, while the old replicas
/// still drain: the old ones see their fingerprint replaced in Redis and
/// leave the new webhook alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_newer_configuration_wins_over_old_replicas() {
    let Some(s) = Stack::builder()
        .workers(0)
        .ingress_env("TELEGRAM_WEBHOOK_CHECK_SECS", "1")
        .start()
        .await
    else {
        return;
    };
    registered(&s).await;
    let moved = "https://moved.example.test/telegram/webhook/";
    let port = free_port();
    let mut new = Service::spawn_owned(
        "ingress",
        &[],
        &merge_env(
            s.ingress_env(),
            &[("PORT", &port.to_string()), ("TELEGRAM_WEBHOOK_URL", moved)],
        ),
    );
    try_wait_ready(&mut new, port)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let set = eventually(T, || async { s.api.webhook().url == moved }).await;
    assert!(set, "{}", new.logs());
    // Several of the old replica's checks later: the new URL stands.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(s.api.webhook().url, moved, "{}", s.logs_tail());
    assert_eq!(e2e::webhook_registrations(&s.api), 2);
    assert!(!s.ingress().logs().contains(PUT_BACK), "{}", s.logs_tail());
}
