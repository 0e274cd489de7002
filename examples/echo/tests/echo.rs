//! The echo bot in-process with the engine's test kit: the real engine on
//! its embedded queue against the spec-checked fake Bot API.

use serde_json::json;
use worker::testkit::{updates, TestKit};

#[tokio::test]
async fn start_greets_by_name_and_lists_the_commands() {
    let kit = TestKit::start(echo::bot()).await;
    let greeting = kit.ask_text(1, "/start").await;
    println!("/start -> {greeting:?}");
    assert!(greeting.starts_with("Hello, Test!"), "{greeting}");
    assert!(
        greeting.ends_with("/start - Say hello\n/ping - Is the bot alive?"),
        "{greeting}"
    );
    kit.stop().await;
}

#[tokio::test]
async fn ping_answers_pong_and_text_comes_back() {
    let kit = TestKit::start(echo::bot()).await;
    assert_eq!(kit.ask_text(2, "/ping").await, "pong");
    let text = "Hello <b>there</b> & «ünïcode» 👋";
    let echoed = kit.ask_text(2, text).await;
    println!("{text:?} -> {echoed:?}");
    assert_eq!(echoed, text, "sent back as typed, not parsed as HTML");
    kit.stop().await;
}

#[tokio::test]
async fn a_photo_is_not_answered_and_unknown_commands_get_help() {
    let kit = TestKit::start(echo::bot()).await;
    let mut photo = updates::private_text(updates::next_update_id(), 3, "Ann", None, "x");
    let message = photo["message"].as_object_mut().expect("a message");
    message.remove("text");
    message.insert(
        "photo".into(),
        json!([{"file_id": "AgACAgIAAxkBAAIB", "file_unique_id": "AQADx", "width": 90, "height": 90, "file_size": 1200}]),
    );
    let calls = kit.exchange(photo).await;
    let help = kit.ask_text(3, "/weather").await;
    println!("photo -> {} calls; /weather -> {help:?}", calls.len());
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(help, "/start - Say hello\n/ping - Is the bot alive?");
    kit.stop().await;
}

#[tokio::test]
async fn the_menu_lists_the_registered_commands() {
    let kit = TestKit::start(echo::bot()).await;
    let menu = kit.api().commands();
    println!("menu: {menu:?}");
    assert_eq!(
        menu,
        Some(json!([
            {"command": "start", "description": "Say hello"},
            {"command": "ping", "description": "Is the bot alive?"}
        ]))
    );
    kit.stop().await;
}
