//! The outbox from a handler, in-process with the test kit: a message
//! handed over by `ctx.send_later` is sent once, also when the update that
//! handed it over is delivered again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use worker::testkit::TestKit;
use worker::types::Message;
use worker::{Bot, Ctx, HandlerError, OutMessage, Reply};

async fn remind(ctx: Ctx<Arc<AtomicU32>>, _: Message) -> Result<Reply, HandlerError> {
    let chat = ctx.chat_id().unwrap_or_default();
    let msg = OutMessage {
        method: "sendMessage".into(),
        params: json!({"chat_id": chat, "text": "your reminder"}),
    };
    ctx.send_later(msg, None).await?;
    // The first delivery fails after handing the message over: the retry
    // hands it over again, and the outbox keeps one.
    if ctx.state().fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(HandlerError::retry("database timeout"));
    }
    Ok(Reply::text("reminder set"))
}

#[tokio::test]
async fn a_message_handed_over_twice_by_a_redelivered_update_is_sent_once() {
    let runs = Arc::new(AtomicU32::new(0));
    let bot = Bot::new(runs.clone()).command("remind", "Remind me", remind);
    let kit = TestKit::start(bot).await;
    let calls = kit.ask(77, "/remind").await;
    assert!(calls.iter().any(|c| c.shown_text() == "reminder set"));
    assert_eq!(runs.load(Ordering::SeqCst), 2, "delivered twice");
    let sent = |kit: &TestKit| {
        kit.api()
            .calls_to("sendMessage")
            .into_iter()
            .filter(|c| c.shown_text() == "your reminder")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sent(&kit) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sent(&kit), 1);
    kit.stop().await;
}
