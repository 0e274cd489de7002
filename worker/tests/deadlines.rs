//! Deadlines and waits, in-process with the test kit: a button's answer
//! does not wait for busy handler slots, a press past its deadline is not
//! answered, and a chat in flood wait holds no slot. The end-to-end suite
//! (`tests/tests/deadlines.rs`) covers the same with processes and Redis.

use std::sync::Arc;

use tokio::sync::Semaphore;
use worker::testkit::{updates, Ending, TestKit};
use worker::types::{CallbackQuery, Message};
use worker::{Bot, Ctx, HandlerError, Reply};

use shared::queue::Delivery;

/// A gate the `/hang` handler waits at until the test opens it.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

fn bot() -> (Bot<Gate>, Gate) {
    let gate = Gate(Arc::new(Semaphore::new(0)));
    let bot = Bot::new(gate.clone())
        .command("ping", "Is the bot alive?", ping)
        .command("hang", "Waits for the test", hang)
        .on_callback_query(pressed);
    (bot, gate)
}

async fn ping(_: Ctx<Gate>, _: Message) -> Result<Reply, HandlerError> {
    Ok(Reply::text("pong"))
}

async fn hang(ctx: Ctx<Gate>, _: Message) -> Result<Reply, HandlerError> {
    let _ = ctx.state().0.acquire().await;
    Ok(Reply::text("released"))
}

async fn pressed(_: Ctx<Gate>, _: CallbackQuery) -> Result<Reply, HandlerError> {
    Ok(Reply::answer_callback_text("done", false))
}

fn press(user_id: i64) -> serde_json::Value {
    let message = serde_json::json!({
        "message_id": 3,
        "date": 1_700_000_000,
        "chat": {"id": user_id, "type": "private", "first_name": "U"},
        "text": "menu",
    });
    updates::callback_query(
        updates::next_update_id(),
        user_id,
        "U",
        None,
        &message,
        "go",
    )
}

#[tokio::test]
async fn a_press_is_answered_while_every_ordinary_slot_is_busy() {
    let (bot, gate) = bot();
    let kit = TestKit::builder()
        .env("WORKER_CONCURRENCY", "1")
        .start(bot)
        .await;
    let hung = kit
        .send(updates::private_command(
            updates::next_update_id(),
            5,
            "U",
            None,
            "/hang",
        ))
        .await;
    let id = kit.send(press(6)).await;
    assert_eq!(kit.wait_end(id).await, Ending::Handled);
    assert_eq!(kit.api().count("answerCallbackQuery"), 1);
    gate.0.add_permits(1);
    assert_eq!(kit.wait_end(hung).await, Ending::Handled);
    kit.stop().await;
}

#[tokio::test]
async fn a_press_past_its_deadline_ends_unanswered() {
    let (bot, _gate) = bot();
    let kit = TestKit::builder()
        .env("WORKER_DEADLINES", "callback_query=0")
        .start(bot)
        .await;
    let (ending, calls) = kit.exchange_ending(press(6)).await;
    assert_eq!(ending, Ending::Handled);
    assert!(calls.is_empty(), "answered late: {calls:?}");
    kit.stop().await;
}

#[tokio::test]
async fn a_chat_in_flood_wait_is_put_aside_and_the_others_go_on() {
    let (bot, _gate) = bot();
    let kit = TestKit::builder()
        .env("WORKER_CONCURRENCY", "1")
        .start(bot)
        .await;
    kit.api().rate_limit_chat(7, 3600);
    let id = kit
        .send(updates::private_command(
            updates::next_update_id(),
            7,
            "U",
            None,
            "/ping",
        ))
        .await;
    assert_eq!(kit.wait_end(id).await, Ending::Handled);
    // With its only slot free again, the worker answers everyone else.
    for user in 10..20 {
        assert_eq!(kit.ask_text(user, "/ping").await, "pong");
    }
    let (delayed, due) = kit.store().delayed_replies().await.unwrap();
    assert_eq!(delayed, 1);
    assert!(due.is_some());
    assert_eq!(kit.api().rate_limited_calls_to(7), 1);
    kit.stop().await;
}
