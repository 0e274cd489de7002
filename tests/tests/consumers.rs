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

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_workers_name_is_removed_after_its_entries_are_reclaimed() {
    // 200 ms claim period: ten periods are 2 s.
    let Some(mut s) = Stack::builder()
        .workers(1)
        .worker_env("WORKER_CLAIM_IDLE_MS", "200")
        .start()
        .await
    else {
        return;
    };
    s.api.set_delay(Duration::from_millis(300));
    for i in 0..6 {
        s.post_ok(&private_command(
            next_update_id(),
            760_000 + i,
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

    s.spawn_worker(&[]);
    assert!(
        s.api.wait_for_sent(6, Duration::from_secs(60)).await,
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
        "dead consumer {dead} still in the group: {now:?}\n{}",
        s.logs_tail()
    );
    assert_eq!(now.len(), 1, "only the live worker remains: {now:?}");
    assert!(
        s.workers[1]
            .logs()
            .contains("removed a consumer that is gone"),
        "{}",
        s.workers[1].logs()
    );
}
