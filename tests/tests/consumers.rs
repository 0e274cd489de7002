//! Consumer names of dead workers do not pile up in the group: once a name
//! owns no pending entries and has been silent for ten claim periods, a live
//! worker removes it (SPEC "Worker behaviour").

use std::time::Duration;

use e2e::accounting::consumers;
use e2e::harness::eventually;
use e2e::stack::Stack;
use e2e::updates::{next_update_id, private_command};

/// The group's consumer names.
async fn consumer_names(s: &Stack) -> Vec<String> {
    consumers(&s.redis.url())
        .await
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// The named consumer's pending count.
async fn pending_of(s: &Stack, name: &str) -> Option<i64> {
    consumers(&s.redis.url())
        .await
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| c.pending)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_workers_name_is_removed_after_its_entries_are_reclaimed() {
    // 200 ms claim period: ten periods are 2 s. One update at a time, so
    // the worker dies with read-ahead entries pending under its name
    // (Redis keeps a consumer that owns entries; an idle one is what goes).
    let Some(mut s) = Stack::builder()
        .workers(1)
        .worker_env("WORKER_CLAIM_IDLE_MS", "200")
        .worker_env("WORKER_CONCURRENCY", "1")
        .start()
        .await
    else {
        return;
    };
    s.api.set_delay(Duration::from_millis(300));
    let chats: Vec<i64> = (0..6).map(|i| 760_000 + i).collect();
    for &chat in &chats {
        s.post_ok(&private_command(
            next_update_id(),
            chat,
            "Gone",
            Some("en"),
            "/help",
        ))
        .await;
    }
    assert!(
        s.api.wait_for_sent(1, Duration::from_secs(30)).await,
        "{}",
        s.logs_tail()
    );
    let names = consumer_names(&s).await;
    assert_eq!(names.len(), 1, "{names:?}");
    let dead = names[0].clone();
    assert!(s.workers[0].kill().await.is_some());
    let held = pending_of(&s, &dead).await.unwrap_or(0);
    assert!(
        held > 0,
        "the killed worker held no entries; nothing to reclaim"
    );

    s.spawn_worker(&[]);
    let all_answered = s
        .api
        .wait_for(Duration::from_secs(60), |calls| {
            chats.iter().all(|&chat| {
                calls
                    .iter()
                    .any(|c| c.ok() && c.method == "sendMessage" && c.chat_id() == Some(chat))
            })
        })
        .await;
    assert!(
        all_answered,
        "the new worker reclaims and answers everything\n{}",
        s.logs_tail()
    );
    let gone = eventually(Duration::from_secs(30), || async {
        !consumer_names(&s).await.contains(&dead)
    })
    .await;
    let now = consumer_names(&s).await;
    assert!(
        gone,
        "dead consumer {dead} (held {held}) still in the group: {now:?}\n{}",
        s.logs_tail()
    );
    // The live worker claimed the dead one's entries, so its name is in
    // the group and stays there.
    assert_eq!(now.len(), 1, "only the live worker remains: {now:?}");
    assert_ne!(now[0], dead);
    // The log line is written after DELCONSUMER answered: wait for it.
    let logged = eventually(Duration::from_secs(10), || async {
        s.workers[1]
            .logs()
            .contains("removed a consumer that is gone")
    })
    .await;
    assert!(logged, "{}", s.workers[1].logs());
}

/// Redis 7.0 neither adds a consumer for a blocking read that returns
/// nothing nor refreshes its idle time: without the worker joining the
/// group at start and renewing its alive mark, an idle replica would be
/// missing from `worker queue stats` and its peers would remove its name.
#[tokio::test(flavor = "multi_thread")]
async fn idle_workers_keep_their_names_and_a_dead_one_loses_its() {
    let Some(mut s) = Stack::builder()
        .workers(2)
        .worker_env("WORKER_CLAIM_IDLE_MS", "200")
        .start()
        .await
    else {
        return;
    };
    let both = eventually(Duration::from_secs(30), || async {
        consumer_names(&s).await.len() == 2
    })
    .await;
    assert!(
        both,
        "both replicas are in the group before any work: {:?}",
        consumer_names(&s).await
    );
    // Fifteen claim periods with no work at all: each worker's cleanup has
    // run several times past the ten-period limit.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names = consumer_names(&s).await;
    assert_eq!(names.len(), 2, "idle replicas keep their names: {names:?}");
    for w in &s.workers {
        assert!(
            !w.logs().contains("removed a consumer that is gone"),
            "{}",
            w.logs()
        );
    }

    assert!(s.workers[0].kill().await.is_some());
    let left = eventually(Duration::from_secs(30), || async {
        consumer_names(&s).await.len() == 1
    })
    .await;
    assert!(
        left,
        "the killed replica's name goes: {:?}\n{}",
        consumer_names(&s).await,
        s.logs_tail()
    );
    let logged = eventually(Duration::from_secs(10), || async {
        s.workers[1]
            .logs()
            .contains("removed a consumer that is gone")
    })
    .await;
    assert!(logged, "{}", s.workers[1].logs());
}
