//! The embedded queue keeps the store contract.

use super::*;
use crate::envelope::{probe, Enqueued, Probe};
use crate::queue::{Completion, ConsumerGroup, DeadLetterRequest, Delivery, Head, Intake, Lane};

fn update(id: i64, chat: i64) -> (Probe, Vec<u8>) {
    let raw =
        format!(r#"{{"update_id":{id},"message":{{"message_id":1,"chat":{{"id":{chat}}}}}}}"#)
            .into_bytes();
    (probe(&raw).unwrap(), raw)
}

#[tokio::test]
async fn dedupe_in_and_out_ack_and_order() {
    let m = MemoryStore::default();
    let (p1, r1) = update(1, 5);
    let (p2, r2) = update(2, 5);
    assert!(matches!(
        m.enqueue(&p1, Lane::Ordinary, &r1).await.unwrap(),
        Enqueued::Stored(_)
    ));
    assert_eq!(
        m.enqueue(&p1, Lane::Ordinary, &r1).await.unwrap(),
        Enqueued::Duplicate
    );
    m.enqueue(&p2, Lane::Ordinary, &r2).await.unwrap();
    let read = m.read_new("a", Lane::Ordinary, 0, 10, 10).await.unwrap();
    assert_eq!(read.entries.len(), 2);
    let (e1, e2) = (&read.entries[0], &read.entries[1]);
    let asked = [("c5".to_string(), 1)];
    assert_eq!(
        m.heads(&asked).await.unwrap(),
        vec![Head {
            entry: Some(e1.id.clone()),
            asked_done: false
        }]
    );
    assert_eq!(m.depth(Lane::Ordinary).await.unwrap().pending, 2);
    let (fresh, head) = m.finish(e1, Completion::default()).await.unwrap();
    assert!(fresh);
    assert_eq!(head, Some(e2.id.clone()));
    assert!(m.is_done("", 1).await.unwrap());
    assert_eq!(
        m.heads(&asked).await.unwrap(),
        vec![Head {
            entry: Some(e2.id.clone()),
            asked_done: true
        }]
    );
    // A redelivered copy of a handled update is a duplicate.
    let (fresh, _) = m.finish(e1, Completion::default()).await.unwrap();
    assert!(!fresh);
    assert_eq!(m.depth(Lane::Ordinary).await.unwrap().length, 1);
}

#[tokio::test]
async fn a_joined_consumer_is_listed_and_alive_until_its_mark_expires() {
    let m = MemoryStore::default();
    m.join_group("w1").await.unwrap();
    m.join_group("w1").await.unwrap();
    let list = m.consumers().await.unwrap();
    assert_eq!(list.len(), 1, "joining twice adds one name");
    assert!(!list[0].alive, "no alive mark yet");
    m.mark_alive("w1", Duration::from_millis(50)).await.unwrap();
    assert!(m.consumers().await.unwrap()[0].alive);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(!m.consumers().await.unwrap()[0].alive, "the mark expired");
    assert!(m.delete_consumer("w1").await.unwrap());
    assert!(m.consumers().await.unwrap().is_empty());
}

#[tokio::test]
async fn idle_entries_are_claimed_and_dead_letters_leave_the_order() {
    let m = MemoryStore::default();
    let (p1, r1) = update(10, 6);
    m.enqueue(&p1, Lane::Ordinary, &r1).await.unwrap();
    let e = m
        .read_new("dead-worker", Lane::Ordinary, 0, 1, 10)
        .await
        .unwrap()
        .entries
        .remove(0);
    let c = m
        .autoclaim("b", Lane::Ordinary, 0, 60_000, "0-0", 10)
        .await
        .unwrap();
    assert!(c.entries.is_empty(), "not idle long enough");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = m
        .autoclaim("b", Lane::Ordinary, 0, 10, "0-0", 10)
        .await
        .unwrap();
    assert_eq!(c.entries.len(), 1);
    assert_eq!(
        m.delivery_counts(std::slice::from_ref(&e.id))
            .await
            .unwrap()[0]
            .1,
        2
    );
    assert_eq!(m.count_failure(&e.id).await.unwrap(), 1);
    m.dead_letter(DeadLetterRequest {
        id: &e.id,
        update_id: Some(10),
        key: &e.key,
        update: &e.update,
        error: "boom",
        deliveries: 2,
        reply: "",
    })
    .await
    .unwrap();
    let heads = m.heads(&[("c6".to_string(), 10)]).await.unwrap();
    assert_eq!(heads[0].entry, None);
    assert!(!heads[0].asked_done, "dead-lettered is not handled");
    assert_eq!(m.dead_letters()[0].error, "boom");
    assert_eq!(m.depth(Lane::Ordinary).await.unwrap().length, 0);
}

#[tokio::test]
async fn blocking_read_wakes_on_arrival() {
    let m = std::sync::Arc::new(MemoryStore::default());
    let m2 = m.clone();
    let reader =
        tokio::spawn(async move { m2.read_new("a", Lane::Ordinary, 0, 1, 5_000).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (p, r) = update(20, 7);
    m.enqueue(&p, Lane::Ordinary, &r).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.entries.len(), 1);
}
