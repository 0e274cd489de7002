//! `worker queue replay-dead` for a dead *update* (not a dead reply): the
//! update goes back on the stream as a new entry in the one entry layout
//! (`envelope::NewEntry`), at the end of its chat's order, and is handled.
//! Run under a non-default `REDIS_KEY_PREFIX`, so the operator command's
//! keys follow the variable too.

use std::time::Duration;

use e2e::stack::Stack;
use e2e::updates::{next_update_id, private_command};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_dead_update_is_handled_in_its_chat_order() {
    let Some(s) = Stack::builder().key_prefix("r:").start().await else {
        return;
    };
    let uid = 371_001;
    let update_id = next_update_id();
    let update = private_command(update_id, uid, "Rita", Some("en"), "/help");
    // A dead letter as the dead-letter script leaves it (an update whose
    // handling failed every time; no reply was kept).
    let mut c = s.redis_conn().await;
    let _: String = redis::cmd("XADD")
        .arg(s.keys.dead())
        .arg("*")
        .arg("id")
        .arg("1-0")
        .arg("update_id")
        .arg(update_id)
        .arg("key")
        .arg(format!("c{uid}"))
        .arg("update")
        .arg(update.to_string())
        .arg("error")
        .arg("handler failed")
        .arg("deliveries")
        .arg(5)
        .arg("failed_at")
        .arg(1)
        .arg("reply")
        .arg("")
        .query_async(&mut c)
        .await
        .expect("XADD dead letter");

    let (st, out, err) = s.worker_command(&["queue", "replay-dead"]).await;
    assert!(st.success(), "queue replay-dead: {st}\n{out}\n{err}");
    println!("replay-dead: {}", out.trim());
    assert!(out.contains("Replayed 1 "), "{out}");

    let r = s.wait_nth_reply(uid, 1, T).await;
    println!("reply to the replayed update: {:?}", r.shown_text());
    s.wait_drained(T).await;
    assert_eq!(s.api.sent_count(), 1, "answered once");
    assert_eq!(s.counter("updates_handled").await, 1);
    let order_len: u64 = redis::cmd("LLEN")
        .arg(s.keys.order(&format!("c{uid}")))
        .query_async(&mut c)
        .await
        .expect("LLEN");
    assert_eq!(order_len, 0, "the chat's order list ends empty");
    let dead: u64 = redis::cmd("XLEN")
        .arg(s.keys.dead())
        .query_async(&mut c)
        .await
        .expect("XLEN");
    assert_eq!(dead, 0, "replay-dead empties the dead letters");
    s.assert_clean();
}
