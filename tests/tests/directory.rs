//! What a handler records is visible before its reply goes out, and the
//! shipped bot tells "in the directory" from "greeted before" - end to end
//! through the real binaries.

use std::time::Duration;

use e2e::stack::Stack;
use e2e::updates::{group_text, next_update_id, private_command, supergroup_id};

const T: Duration = Duration::from_secs(20);

/// The number after `label` in a /stats text ("Users total: 5").
fn stat(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Before: the user record was written after the reply, so `/stats` sent
/// right after five greetings could count three. Now the greeting goes out
/// only once the user is recorded. Repeated to give a race room to show.
#[tokio::test(flavor = "multi_thread")]
async fn stats_right_after_greetings_counts_every_greeted_user() {
    let Some(s) = Stack::builder().workers(2).start().await else {
        return;
    };
    let mut counted = Vec::new();
    for round in 0..3u64 {
        let base = 770_000 + round * 100;
        for i in 0..5 {
            let uid = (base + i) as i64;
            s.post_ok(&private_command(
                next_update_id(),
                uid,
                "Greeted",
                Some("en"),
                "/start",
            ))
            .await;
        }
        for i in 0..5 {
            s.wait_nth_reply((base + i) as i64, 1, T).await;
        }
        let asker = (base + 50) as i64;
        s.post_ok(&private_command(
            next_update_id(),
            asker,
            "Asker",
            Some("en"),
            "/stats",
        ))
        .await;
        let text = s.wait_nth_reply(asker, 1, T).await.shown_text().to_owned();
        let total = stat(&text, "Users total:").unwrap_or(0);
        // Every user greeted so far (5 per round) and the earlier askers.
        let want = 5 * (round + 1) + round;
        counted.push((total, want));
        assert!(
            total >= want,
            "round {round}: /stats counted {total} users, {want} were greeted or asked before: {text:?}"
        );
    }
    println!(
        "DIRECTORY: /stats right after the greetings counted (got, greeted before): {counted:?}"
    );
    s.assert_clean();
}

/// A user the directory knows from a group has never started the bot: their
/// first private /start is a greeting, the second a welcome back.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_first_seen_in_a_group_is_greeted_not_welcomed_back() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let uid = 771_001;
    let group = supergroup_id(771);
    s.post_ok(&group_text(
        next_update_id(),
        group,
        uid,
        "Grouper",
        Some("en"),
        "hello all",
    ))
    .await;
    s.wait_drained(T).await;

    s.post_ok(&private_command(
        next_update_id(),
        uid,
        "Grouper",
        Some("en"),
        "/start",
    ))
    .await;
    let first = s.wait_nth_reply(uid, 1, T).await.shown_text().to_owned();
    s.post_ok(&private_command(
        next_update_id(),
        uid,
        "Grouper",
        Some("en"),
        "/start",
    ))
    .await;
    let second = s.wait_nth_reply(uid, 2, T).await.shown_text().to_owned();
    println!("DIRECTORY: first private /start: {first:?}; second: {second:?}");
    assert!(first.starts_with("Hello, Grouper"), "{first:?}");
    assert!(second.starts_with("Welcome back, Grouper"), "{second:?}");
    s.assert_clean();
}

/// SPEC: `/stats` comes with a "Refresh" button; pressing it answers the
/// callback query and edits that message with fresh numbers.
#[tokio::test(flavor = "multi_thread")]
async fn stats_refresh_answers_the_button_and_edits_the_numbers() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let uid = 772_001;
    s.post_ok(&private_command(
        next_update_id(),
        uid,
        "Counter",
        Some("en"),
        "/stats",
    ))
    .await;
    let stats = s.wait_nth_reply(uid, 1, T).await;
    let button = &stats.param("reply_markup")["inline_keyboard"][0][0];
    assert_eq!(button["text"], "Refresh", "{stats:?}");
    let data = button["callback_data"].as_str().expect("callback data");
    let before = stat(stats.shown_text(), "Updates handled:").expect("a number");

    // More traffic, then the press.
    for i in 0..3 {
        s.post_ok(&private_command(
            next_update_id(),
            uid + 1 + i,
            "Other",
            Some("en"),
            "/help",
        ))
        .await;
        s.wait_nth_reply(uid + 1 + i, 1, T).await;
    }
    let press = e2e::updates::callback_query(
        next_update_id(),
        uid,
        "Counter",
        Some("en"),
        &stats.response["result"],
        data,
    );
    s.post_ok(&press).await;
    s.wait_calls("the answer and the edit", T, |calls| {
        calls
            .iter()
            .any(|c| c.method == "editMessageText" && c.ok())
    })
    .await;
    let calls = s.api.calls();
    let answer = calls
        .iter()
        .position(|c| c.method == "answerCallbackQuery" && c.ok())
        .expect("answerCallbackQuery");
    let edit_at = calls
        .iter()
        .position(|c| c.method == "editMessageText" && c.ok())
        .expect("editMessageText");
    assert!(answer < edit_at, "the spinner stops first");
    let edit = &calls[edit_at];
    assert_eq!(
        edit.param("message_id"),
        &stats.response["result"]["message_id"]
    );
    let text = edit.param("text").as_str().unwrap_or("").to_owned();
    let after = stat(&text, "Updates handled:").expect("a number");
    println!("DIRECTORY: Refresh: updates handled {before} -> {after}");
    assert!(
        after >= before + 3,
        "fresh numbers: {before} -> {after}: {text:?}"
    );
    assert_eq!(
        edit.param("reply_markup")["inline_keyboard"][0][0]["text"],
        "Refresh"
    );
    s.assert_clean();
}
