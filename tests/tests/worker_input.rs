//! Stream entries the worker must cope with although the ingress would not
//! store them today: entries written before it checked bodies, or by
//! another writer. Written straight to the stream through the store, so
//! these tests hold whatever the ingress accepts.

use std::time::Duration;

use e2e::stack::Stack;
use e2e::updates::{next_update_id, private_command};
use shared::envelope::probe;
use shared::queue::{Intake, RedisStore};

const T: Duration = Duration::from_secs(30);

/// Stores `raw` as the entry of `shape` (the same update, valid JSON): the
/// ingress itself now refuses invalid UTF-8 with 400.
async fn store_raw(s: &Stack, shape: &[u8], raw: &[u8]) {
    let store = RedisStore::open(&s.redis.url(), shared::keys::Keys::default()).expect("redis url");
    let p = probe(shape).expect("an update the ingress's probe accepts");
    tokio::time::timeout(T, store.enqueue(&p, shared::queue::Lane::Ordinary, raw))
        .await
        .expect("enqueue in time")
        .expect("enqueue");
}

/// One invalid UTF-8 byte in `first_name` made the whole update
/// unparsable: the user was left unanswered and nothing was logged above
/// debug. Now the byte becomes U+FFFD and the user is greeted.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_byte_in_first_name_still_gets_an_answer() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let chat = 570_001;
    let update = private_command(next_update_id(), chat, "MARKER", Some("en"), "/start");
    let shape = update.to_string().into_bytes();
    let raw = update
        .to_string()
        .replace("MARKER", "Ann\u{1}")
        .into_bytes();
    // The \u{1} placeholder byte becomes 0xff: invalid UTF-8.
    let raw: Vec<u8> = raw
        .into_iter()
        .map(|b| if b == 1 { 0xff } else { b })
        .collect();
    assert!(std::str::from_utf8(&raw).is_err());
    store_raw(&s, &shape, &raw).await;
    let reply = s.wait_reply(chat, T, |_| true).await;
    println!(
        "bad byte in first_name: answered with {:?}",
        reply.shown_text()
    );
    assert!(
        reply.shown_text().contains("Ann\u{fffd}"),
        "{:?}",
        reply.shown_text()
    );
    s.wait_drained(T).await;
    s.assert_clean();
}

/// An update the typed model cannot parse is delivered as raw (to the
/// bot's `on_unparsed` handler; the shipped bot has none, so it is
/// counted, not answered) - and says so at warn, with the parse error, so
/// an operator sees it.
#[tokio::test(flavor = "multi_thread")]
async fn an_unparsable_update_is_logged_at_warn() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let update_id = next_update_id();
    let raw = format!(
        r#"{{"update_id":{update_id},"message":{{"message_id":1,"date":0,"chat":{{"id":"not a number"}},"text":"/help"}}}}"#
    );
    store_raw(&s, raw.as_bytes(), raw.as_bytes()).await;
    s.wait_drained(T).await;
    let logs = s.all_logs();
    let line = logs
        .lines()
        .find(|l| l.contains("typed model cannot parse") && l.contains(&update_id.to_string()))
        .unwrap_or_else(|| panic!("no line about the unparsable update\n{}", s.logs_tail()));
    println!("unparsable update logged as: {line}");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("error="), "the parse error is given: {line}");
    s.assert_clean();
}
