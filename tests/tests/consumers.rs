//! Consumer names of dead workers do not pile up in the group: once a name
//! owns no pending entries and has been silent for ten claim periods, a live
//! worker removes it (SPEC "Worker behaviour").

use std::time::Duration;

use e2e::harness::eventually;
use e2e::stack::Stack;
use e2e::updates::{next_update_id, private_command};
use shared::keys;

/// The group's consumer names. A failed query is retried, never read as
/// "no consumers": on a loaded machine the test's own connection can time
/// out, and an empty answer would pass for "the dead name is gone".
async fn consumer_names(s: &Stack) -> Vec<String> {
    let mut last_err = None;
    let mut reply = None;
    for _ in 0..10 {
        let mut c = s.redis_conn().await;
        match redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(keys::STREAM)
            .arg(keys::GROUP)
            .query_async::<redis::Value>(&mut c)
            .await
        {
            Ok(v) => {
                reply = Some(v);
                break;
            }
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let v = reply.unwrap_or_else(|| panic!("XINFO CONSUMERS kept failing: {last_err:?}"));
    let redis::Value::Array(items) = v else {
        panic!("XINFO CONSUMERS answered {v:?}");
    };
    items
        .iter()
        .filter_map(|i| {
            e2e::harness::kv(i)
                .get("name")
                .and_then(e2e::harness::value_str)
        })
        .collect()
}

/// The named consumer's pending count, from `XINFO CONSUMERS`.
async fn pending_of(s: &Stack, name: &str) -> Option<u64> {
    let mut c = s.redis_conn().await;
    let v: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(keys::STREAM)
        .arg(keys::GROUP)
        .query_async(&mut c)
        .await
        .ok()?;
    let redis::Value::Array(items) = v else {
        return None;
    };
    items.iter().find_map(|i| {
        let m = e2e::harness::kv(i);
        let n = m.get("name").and_then(e2e::harness::value_str)?;
        if n != name {
            return None;
        }
        match m.get("pending")? {
            redis::Value::Int(p) => u64::try_from(*p).ok(),
            _ => None,
        }
    })
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
