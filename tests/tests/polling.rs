//! Polling mode (no webhook URL): the ingress deletes any webhook and polls
//! getUpdates; exactly one poller across replicas, never a 409; a dead
//! poller is taken over (SPEC.md "Polling mode").

use std::collections::HashMap;
use std::time::Duration;

use e2e::harness::{free_port, Service};
use e2e::stack::{ingress_env, merge_env, wait_ready, Stack};
use e2e::updates::private_command;
use e2e::WEBHOOK_URL;

fn polling_env(s: &Stack, port: u16) -> Vec<(String, String)> {
    merge_env(
        ingress_env(&s.api, &s.redis, port),
        &[
            ("TELEGRAM_WEBHOOK_URL", ""),
            ("TELEGRAM_WEBHOOK_SECRET", ""),
        ],
    )
}

async fn spawn_poller(s: &Stack) -> Service {
    let port = free_port();
    let mut svc = Service::spawn_owned("ingress", &[], &polling_env(s, port));
    wait_ready(&mut svc, port).await;
    svc
}

fn per_chat(s: &Stack) -> HashMap<i64, usize> {
    let mut m = HashMap::new();
    for p in s.api.sent_messages() {
        if let Some(c) = p["chat_id"].as_i64() {
            *m.entry(c).or_insert(0) += 1;
        }
    }
    m
}

fn logs_of(ps: &[Service]) -> String {
    ps.iter().map(Service::logs_tail).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_poller_across_replicas_and_takeover() {
    let Some(s) = Stack::builder().without_ingress().start().await else {
        return;
    };
    // A webhook left over from an earlier deployment.
    s.api.preset_webhook(WEBHOOK_URL, Some("old"));
    let mut pollers = vec![spawn_poller(&s).await, spawn_poller(&s).await];

    let deleted = s
        .api
        .wait_for(Duration::from_secs(20), |calls| {
            calls.iter().any(|c| c.method == "deleteWebhook" && c.ok())
        })
        .await;
    assert!(
        deleted,
        "polling mode deletes the webhook\n{}",
        logs_of(&pollers)
    );
    assert_eq!(s.api.webhook().url, "");
    assert_eq!(s.api.count("setWebhook"), 0, "no webhook in polling mode");

    let mut update_id = 900_000_000;
    let mut users = Vec::new();
    for i in 0..20 {
        let uid = 710_000 + i;
        users.push(uid);
        update_id += 1;
        s.api.push_update(private_command(
            update_id,
            uid,
            "Poll",
            Some("en"),
            "/start",
        ));
    }
    let ok = s.api.wait_for_sent(20, Duration::from_secs(40)).await;
    assert!(
        ok,
        "{} of 20 polled updates answered\n{}{}",
        s.api.sent_count(),
        logs_of(&pollers),
        s.logs_tail()
    );
    assert_eq!(s.api.conflicts(), 0, "two replicas polled at once (409)");
    assert_eq!(
        s.api.pending_updates(),
        0,
        "updates confirmed through offset"
    );

    // The replicas keep running side by side without conflicts for a while:
    // several long-poll rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.api.conflicts(), 0);

    // Kill one; the other must carry on.
    pollers[0].kill().await;
    for i in 20..30 {
        let uid = 710_000 + i;
        users.push(uid);
        update_id += 1;
        s.api.push_update(private_command(
            update_id,
            uid,
            "Poll",
            Some("en"),
            "/start",
        ));
    }
    let ok = s.api.wait_for_sent(30, Duration::from_secs(90)).await;
    assert!(
        ok,
        "after a replica died, {} of 30 answered: the other must take over polling\n{}{}",
        s.api.sent_count(),
        logs_of(&pollers),
        s.logs_tail()
    );
    // Whichever held the lease, one of the two kills hits the poller: the
    // first if replica 0 held it, else replica 1 holds it until killed now.
    pollers.push(spawn_poller(&s).await);
    pollers[1].kill().await;
    for i in 30..40 {
        let uid = 710_000 + i;
        users.push(uid);
        update_id += 1;
        s.api.push_update(private_command(
            update_id,
            uid,
            "Poll",
            Some("en"),
            "/start",
        ));
    }
    let ok = s.api.wait_for_sent(40, Duration::from_secs(90)).await;
    assert!(
        ok,
        "after the second kill, {} of 40 answered: the new replica must take over polling\n{}{}",
        s.api.sent_count(),
        logs_of(&pollers),
        s.logs_tail()
    );
    s.wait_drained(Duration::from_secs(30)).await;
    let counts = per_chat(&s);
    for u in &users {
        assert_eq!(counts.get(u), Some(&1), "user {u}");
    }
    assert_eq!(s.api.conflicts(), 0, "no 409 Conflict at any time");
    s.api.assert_no_violations();
    for p in &pollers {
        e2e::assert_token_absent(&p.logs());
    }
    e2e::assert_token_absent(&s.all_logs());
}
