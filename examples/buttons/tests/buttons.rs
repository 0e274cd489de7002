//! The buttons bot in-process with the engine's test kit.

use serde_json::{json, Value};
use worker::testkit::TestKit;

fn keyboard() -> Value {
    json!({"inline_keyboard": [[{"text": "+1", "callback_data": buttons::PLUS_ONE}]]})
}

#[tokio::test]
async fn pressing_plus_one_answers_the_query_and_edits_the_count() {
    let kit = TestKit::start(buttons::bot()).await;
    let shown = kit.ask(7, "/start").await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    let message = &shown[0];
    assert_eq!(message.param("text"), "Count: 0");
    assert_eq!(message.param("reply_markup"), &keyboard());
    let message_id = message.response["result"]["message_id"].clone();

    let mut counts = Vec::new();
    for _ in 0..3 {
        let calls = kit.press(7, message, buttons::PLUS_ONE).await;
        let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
        assert_eq!(methods, ["answerCallbackQuery", "editMessageText"]);
        let edit = &calls[1];
        assert_eq!(edit.param("chat_id"), 7);
        assert_eq!(edit.param("message_id"), &message_id);
        assert_eq!(edit.param("reply_markup"), &keyboard(), "the button stays");
        counts.push(edit.param("text").as_str().unwrap_or("").to_owned());
    }
    println!("three presses -> {counts:?}");
    assert_eq!(counts, ["Count: 1", "Count: 2", "Count: 3"]);
    assert_eq!(kit.ask_text(7, "/start").await, "Count: 3");
    kit.stop().await;
}

#[tokio::test]
async fn each_chat_counts_alone_and_stale_buttons_only_stop_the_spinner() {
    let kit = TestKit::start(buttons::bot()).await;
    let a = kit.ask(8, "/start").await.remove(0);
    let b = kit.ask(9, "/start").await.remove(0);
    kit.press(8, &a, buttons::PLUS_ONE).await;
    kit.press(8, &a, buttons::PLUS_ONE).await;
    let other = kit.press(9, &b, buttons::PLUS_ONE).await;
    let stale = kit.press(9, &b, "old_button").await;
    println!(
        "chat 9 after one press: {}; a stale button -> {:?}",
        other[1].param("text"),
        stale.iter().map(|c| &c.method).collect::<Vec<_>>()
    );
    assert_eq!(other[1].param("text"), "Count: 1");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].method, "answerCallbackQuery");
    assert_eq!(kit.ask_text(8, "/start").await, "Count: 2");
    kit.stop().await;
}
