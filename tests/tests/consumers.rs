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
    let logged = s.workers[1]
        .wait_for_log("removed a consumer that is gone", Duration::from_secs(10))
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
    let logged = s.workers[1]
        .wait_for_log("removed a consumer that is gone", Duration::from_secs(10))
        .await;
    assert!(logged, "{}", s.workers[1].logs());
}

/// A redeploy SIGTERMs workers: each one that stops with nothing pending
/// takes its own name out of the group at once (the ten-period cleanup is
/// for names whose worker could not).
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_worker_leaves_the_group_at_once() {
    // The default claim period (30 s): the peer's cleanup cannot be what
    // removes the name within this test.
    let Some(mut s) = Stack::builder().workers(2).start().await else {
        return;
    };
    let chat = 765_000;
    s.post_ok(&private_command(
        next_update_id(),
        chat,
        "Bye",
        Some("en"),
        "/help",
    ))
    .await;
    s.wait_nth_reply(chat, 1, Duration::from_secs(30)).await;
    s.wait_drained(Duration::from_secs(30)).await;
    let pid = s.workers[0].pid();
    let name = e2e::accounting::consumer_of_pid(&consumers(&s.redis.url()).await, pid)
        .expect("the worker is in the group")
        .name;

    s.workers[0].terminate();
    let st = s.workers[0].wait_exit(Duration::from_secs(30)).await;
    assert!(st.success(), "exit 0 after SIGTERM: {st}");
    assert!(
        s.workers[0].logs().contains("left the consumer group"),
        "{}",
        s.workers[0].logs()
    );
    let names = consumer_names(&s).await;
    assert!(!names.contains(&name), "{name} left: {names:?}");
    assert_eq!(names.len(), 1, "the other worker stays: {names:?}");
    let mut c = s.redis_conn().await;
    let alive: bool = redis::cmd("EXISTS")
        .arg(shared::keys::Keys::default().alive(&name))
        .query_async(&mut c)
        .await
        .expect("EXISTS");
    assert!(!alive, "its alive mark went with it");
}

/// The leaving step never drops entries: a name that still owns one stays
/// (DELCONSUMER would make that entry unreclaimable).
#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_owns_entries_does_not_leave() {
    let Some(redis) = e2e::RedisServer::start().await else {
        return;
    };
    let mut conn = shared::redis_conn::Target::single(&redis.url())
        .manager()
        .expect("manager");
    use shared::queue::redis_ops;
    redis_ops::join_group(&mut conn, &shared::keys::Keys::default(), "holder")
        .await
        .expect("join");
    let mut c = redis.conn().await;
    let _: String = redis::cmd("XADD")
        .arg(shared::keys::Keys::default().stream())
        .arg("*")
        .arg("u")
        .arg("{}")
        .query_async(&mut c)
        .await
        .expect("XADD");
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(shared::keys::GROUP)
        .arg("holder")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(shared::keys::Keys::default().stream())
        .arg(">")
        .query_async(&mut c)
        .await
        .expect("XREADGROUP");
    assert!(!matches!(read, redis::Value::Nil), "one entry read");

    assert!(
        !redis_ops::leave_group(&mut conn, &shared::keys::Keys::default(), "holder")
            .await
            .expect("leave")
    );
    let list = consumers(&redis.url()).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].pending, 1, "the entry is still owned: {list:?}");

    // Acknowledged: nothing owned any more, so it leaves.
    let id: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
        .arg(shared::keys::Keys::default().stream())
        .arg(shared::keys::GROUP)
        .arg("-")
        .arg("+")
        .arg(1)
        .query_async(&mut c)
        .await
        .expect("XPENDING");
    let _: i64 = redis::cmd("XACK")
        .arg(shared::keys::Keys::default().stream())
        .arg(shared::keys::GROUP)
        .arg(&id[0].0)
        .query_async(&mut c)
        .await
        .expect("XACK");
    assert!(
        redis_ops::leave_group(&mut conn, &shared::keys::Keys::default(), "holder")
            .await
            .expect("leave")
    );
    assert!(consumers(&redis.url()).await.is_empty());
}
