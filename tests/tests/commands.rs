//! The bot's commands end to end: webhook POST -> ingress -> Redis stream
//! -> worker -> Bot API (SPEC.md "Commands"). Exact texts are the worker's
//! business; these tests check names, numbers, languages, buttons and who
//! gets a reply at all. Every call is checked against the Bot API spec.

use std::time::Duration;

use e2e::stack::Stack;
use e2e::updates::{
    group_command, message_id, next_update_id, private_command, private_text, real_updates,
    supergroup_id, update_id,
};
use e2e::{has_cyrillic, inline_buttons, numbers_in, BOT_USERNAME, WEBAPP_URL};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn start_greets_by_name_welcomes_back_and_speaks_russian() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let en = 310_001;
    s.post_ok(&private_command(
        next_update_id(),
        en,
        "Zebulon",
        Some("en"),
        "/start",
    ))
    .await;
    let first = s.wait_nth_reply(en, 1, T).await;
    assert!(
        first.shown_text().contains("Zebulon"),
        "the greeting names the user: {:?}",
        first.shown_text()
    );
    assert!(
        !has_cyrillic(first.shown_text()),
        "English for language_code en: {:?}",
        first.shown_text()
    );

    s.post_ok(&private_command(
        next_update_id(),
        en,
        "Zebulon",
        Some("en"),
        "/start",
    ))
    .await;
    let second = s.wait_nth_reply(en, 2, T).await;
    assert_ne!(
        first.shown_text(),
        second.shown_text(),
        "a returning user is welcomed back, not greeted as new"
    );

    let ru = 310_002;
    s.post_ok(&private_command(
        next_update_id(),
        ru,
        "Dmitry",
        Some("ru"),
        "/start",
    ))
    .await;
    let r = s.wait_nth_reply(ru, 1, T).await;
    assert!(
        has_cyrillic(r.shown_text()),
        "Russian for language_code ru: {:?}",
        r.shown_text()
    );
    assert!(r.shown_text().contains("Dmitry"), "{:?}", r.shown_text());

    // No language_code at all: English.
    let none = 310_003;
    s.post_ok(&private_command(
        next_update_id(),
        none,
        "Nobody",
        None,
        "/start",
    ))
    .await;
    let r = s.wait_nth_reply(none, 1, T).await;
    assert!(!has_cyrillic(r.shown_text()), "{:?}", r.shown_text());
    s.assert_clean();
}

/// A first name is user input: whatever parse mode the greeting uses, the
/// real API must accept it and show the name as typed.
#[tokio::test(flavor = "multi_thread")]
async fn greeting_survives_hostile_first_names() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let names = [
        "Anne-Marie <3 & \"Co\"",
        "<b>bold</b>",
        "*_[x](y)_*",
        "Zoë 👩‍💻",
        "Ёжик",
    ];
    for (i, name) in names.iter().enumerate() {
        let uid = 320_000 + i as i64;
        s.post_ok(&private_command(
            next_update_id(),
            uid,
            name,
            Some("en"),
            "/start",
        ))
        .await;
    }
    for (i, name) in names.iter().enumerate() {
        let uid = 320_000 + i as i64;
        // A reply the API refused never shows up as a successful call.
        let r = s.wait_reply(uid, T, |_| true).await;
        assert!(
            r.shown_text().contains(name),
            "the user sees their name {name:?} in {:?}",
            r.shown_text()
        );
    }
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn app_opens_the_web_app_in_private_and_links_to_the_bot_in_groups() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let uid = 330_001;
    s.post_ok(&private_command(
        next_update_id(),
        uid,
        "Ada",
        Some("en"),
        "/app",
    ))
    .await;
    let r = s.wait_nth_reply(uid, 1, T).await;
    let buttons = inline_buttons(&r.params);
    let web_app: Vec<&Value> = buttons
        .iter()
        .filter(|b| b.get("web_app").is_some())
        .collect();
    assert_eq!(
        web_app.len(),
        1,
        "one web_app button in private: {}",
        r.params
    );
    assert_eq!(web_app[0]["web_app"]["url"], WEBAPP_URL);
    assert_eq!(
        r.params["reply_markup"]["inline_keyboard"][0][0]["web_app"]["url"],
        WEBAPP_URL
    );

    let chat = supergroup_id(330_002);
    let cmd = group_command(next_update_id(), chat, uid, "Ada", Some("en"), "/app");
    s.post_ok(&cmd).await;
    let r = s.wait_nth_reply(chat, 1, T).await;
    let buttons = inline_buttons(&r.params);
    assert!(
        buttons.iter().all(|b| b.get("web_app").is_none()),
        "no web_app button in a group (BUTTON_TYPE_INVALID): {}",
        r.params
    );
    let want = format!("https://t.me/{BOT_USERNAME}?start=app");
    assert!(
        buttons.iter().any(|b| b["url"] == want.as_str()),
        "a url button to {want}: {}",
        r.params
    );
    assert_eq!(
        r.params["reply_parameters"]["message_id"],
        message_id(&cmd),
        "in groups the reply quotes the command: {}",
        r.params
    );
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn app_without_a_configured_url_says_so() {
    let Some(s) = Stack::builder()
        .worker_env("TELEGRAM_WEBAPP_URL", "")
        .start()
        .await
    else {
        return;
    };
    let uid = 335_001;
    s.post_ok(&private_command(
        next_update_id(),
        uid,
        "Ada",
        Some("en"),
        "/app",
    ))
    .await;
    let r = s.wait_nth_reply(uid, 1, T).await;
    assert!(
        inline_buttons(&r.params)
            .iter()
            .all(|b| b.get("web_app").is_none()),
        "no web_app button without a URL: {}",
        r.params
    );
    assert!(!r.shown_text().is_empty());
    // Users see no operator words; the operator's hint is in the log.
    assert!(
        !r.shown_text().contains("TELEGRAM_WEBAPP_URL"),
        "{:?}",
        r.shown_text()
    );
    assert!(
        s.all_logs().contains("set TELEGRAM_WEBAPP_URL"),
        "the hint is logged\n{}",
        s.logs_tail()
    );
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_reports_users_and_messages() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let (a, b, c) = (340_001, 340_002, 340_003);
    for (uid, name) in [(a, "Alice"), (b, "Bruno"), (c, "Chen")] {
        s.post_ok(&private_command(
            next_update_id(),
            uid,
            name,
            Some("en"),
            "/start",
        ))
        .await;
        s.wait_nth_reply(uid, 1, T).await;
    }
    for i in 0..8 {
        s.post_ok(&private_text(
            next_update_id(),
            a,
            "Alice",
            Some("en"),
            &format!("note {i}"),
        ))
        .await;
    }
    for i in 0..2 {
        s.post_ok(&private_text(
            next_update_id(),
            b,
            "Bruno",
            Some("en"),
            &format!("hi {i}"),
        ))
        .await;
    }
    s.wait_drained(T).await;
    // 3 /start + 10 texts handled before /stats.
    assert_eq!(s.counter("updates_handled").await, 13);

    s.post_ok(&private_command(
        next_update_id(),
        a,
        "Alice",
        Some("en"),
        "/stats",
    ))
    .await;
    let r = s.wait_nth_reply(a, 2, T).await;
    let text = r.shown_text();
    println!("/stats reply: {text}");
    let nums = numbers_in(text);
    assert!(nums.contains(&3), "users total 3 in {text:?}");
    assert!(
        nums.contains(&13) || nums.contains(&14),
        "updates handled (13, or 14 counting /stats) in {text:?}"
    );
    assert!(
        nums.iter().any(|n| (8..=10).contains(n)),
        "Alice's own messages (8 texts, plus /start and /stats if counted) in {text:?}"
    );
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn help_and_unknown_commands_list_the_commands() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let uid = 350_001;
    let lists_all = |t: &str| {
        ["/start", "/app", "/stats", "/help"]
            .iter()
            .all(|c| t.contains(c))
    };

    s.post_ok(&private_command(
        next_update_id(),
        uid,
        "Hal",
        Some("en"),
        "/help",
    ))
    .await;
    let r = s.wait_nth_reply(uid, 1, T).await;
    assert!(
        lists_all(r.shown_text()),
        "/help lists the commands: {:?}",
        r.shown_text()
    );

    s.post_ok(&private_command(
        next_update_id(),
        uid,
        "Hal",
        Some("en"),
        "/unknowncmd",
    ))
    .await;
    let r = s.wait_nth_reply(uid, 2, T).await;
    assert!(
        lists_all(r.shown_text()),
        "an unknown command in private gets the list: {:?}",
        r.shown_text()
    );
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_answer_only_commands_for_this_bot() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let chat = supergroup_id(360_001);
    let uid = 360_002;
    let ignored = [
        group_command(
            next_update_id(),
            chat,
            uid,
            "Gus",
            Some("en"),
            "/start@other_bot",
        ),
        group_command(
            next_update_id(),
            chat,
            uid,
            "Gus",
            Some("en"),
            "/help@other_bot",
        ),
        group_command(
            next_update_id(),
            chat,
            uid,
            "Gus",
            Some("en"),
            "/unknowncmd",
        ),
    ];
    for u in &ignored {
        s.post_ok(u).await;
    }
    let help = group_command(
        next_update_id(),
        chat,
        uid,
        "Gus",
        Some("en"),
        &format!("/help@{BOT_USERNAME}"),
    );
    let stats = group_command(next_update_id(), chat, uid, "Gus", Some("en"), "/stats");
    s.post_ok(&help).await;
    s.post_ok(&stats).await;
    s.wait_nth_reply(chat, 2, T).await;
    s.wait_drained(T).await;

    let replies = s.replies_to(chat);
    let quoted: Vec<i64> = replies
        .iter()
        .map(|c| {
            c.params["reply_parameters"]["message_id"]
                .as_i64()
                .unwrap_or_else(|| panic!("group replies quote the command: {}", c.params))
        })
        .collect();
    let mut want = vec![message_id(&help), message_id(&stats)];
    let mut got = quoted.clone();
    want.sort();
    got.sort();
    assert_eq!(
        got,
        want,
        "only /help@{BOT_USERNAME} and /stats are answered in the group (commands for other bots and unknown unaddressed commands are not); replies: {:?}",
        replies.iter().map(|c| c.shown_text().to_owned()).collect::<Vec<_>>()
    );
    assert!(
        ["/start", "/app", "/stats", "/help"]
            .iter()
            .all(|c| replies.iter().any(|r| r.shown_text().contains(c))),
        "the /help reply lists the commands"
    );
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_text_and_other_updates_are_counted_not_answered() {
    let Some(s) = Stack::start().await else {
        return;
    };
    let uid = 370_001;
    let before = s.counter("updates_handled").await;
    for i in 0..2 {
        s.post_ok(&private_text(
            next_update_id(),
            uid,
            "Tex",
            Some("en"),
            &format!("hello {i}"),
        ))
        .await;
    }
    s.wait_drained(T).await;
    assert_eq!(s.counter("updates_handled").await, before + 2);
    assert!(s.replies_to(uid).is_empty(), "plain text gets no reply");

    // The real update shapes: edits, reactions, callback queries, channel
    // posts, dice, an unaddressed group command, a private /start.
    let real = real_updates();
    for (file, u) in &real {
        let r = s.post(u).await;
        assert_eq!(r.status, 200, "{file}");
    }
    s.wait_drained(T).await;
    assert_eq!(
        s.counter("updates_handled").await,
        before + 2 + real.len() as i64,
        "every update is handled (counted), whatever its kind"
    );
    // Only the private /start (telemetree fixture, user "Chris") is answered.
    let chris = 714_862_471;
    let r = s.wait_nth_reply(chris, 1, T).await;
    assert!(r.shown_text().contains("Chris"), "{:?}", r.shown_text());
    let sent = s.api.sent_messages();
    assert_eq!(sent.len(), 1, "only the /start is answered: {sent:?}");
    s.assert_clean();
}

/// Two entries of one update in the stream at once, one after the other in
/// their chat (the ingress's memory of the id was lost in between, and no
/// worker ran yet): the second becomes its chat's head only once the first
/// has ended, and the dedupe check made at that moment skips it. Without
/// per-chat order only a copy that starts after the first ended is skipped
/// (two copies running at the same moment may both be answered, and are
/// counted once), so that case runs one update at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_queued_behind_its_original_is_skipped() {
    for (ordering, concurrency) in [("chat", "16"), ("none", "1")] {
        let Some(mut s) = Stack::builder()
            .workers(0)
            .worker_env("WORKER_ORDERING", ordering)
            .worker_env("WORKER_CONCURRENCY", concurrency)
            .start()
            .await
        else {
            return;
        };
        let uid = 380_101;
        let u = private_command(next_update_id(), uid, "Twice", Some("en"), "/help");
        assert_eq!(s.post(&u).await.status, 200);
        s.forget_seen(update_id(&u)).await;
        assert_eq!(s.post(&u).await.status, 200);
        assert_eq!(s.stream_len().await, 2, "both copies are queued");

        s.spawn_worker(&[]);
        s.wait_workers_joined(1).await;
        s.wait_nth_reply(uid, 1, T).await;
        s.wait_drained(T).await;
        assert_eq!(
            s.replies_to(uid).len(),
            1,
            "ordering={ordering}: answered once"
        );
        assert_eq!(s.counter("updates_handled").await, 1, "ordering={ordering}");
        assert_eq!(
            s.counter("updates_deduplicated").await,
            1,
            "ordering={ordering}"
        );
        s.assert_clean();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_update_is_answered_once() {
    let Some(s) = Stack::start().await else {
        return;
    };
    // Telegram resends when our 200 got lost.
    let uid = 380_001;
    let u = private_command(next_update_id(), uid, "Dup", Some("en"), "/start");
    assert_eq!(s.post(&u).await.status, 200);
    assert_eq!(s.post(&u).await.status, 200, "a resend is acknowledged");
    s.wait_nth_reply(uid, 1, T).await;
    s.wait_drained(T).await;

    // Even when the resend gets past the ingress (its memory of the id is
    // gone), the worker remembers it handled the update.
    s.forget_seen(update_id(&u)).await;
    assert_eq!(s.post(&u).await.status, 200);
    // A marker update after it, in the same chat, tells us the worker got
    // past the duplicate.
    s.post_ok(&private_command(
        next_update_id(),
        uid,
        "Dup",
        Some("en"),
        "/help",
    ))
    .await;
    s.wait_nth_reply(uid, 2, T).await;
    s.wait_drained(T).await;
    let replies = s.replies_to(uid);
    assert_eq!(
        replies.len(),
        2,
        "one reply to /start (posted three times) and one to /help: {:?}",
        replies
            .iter()
            .map(|c| c.shown_text().to_owned())
            .collect::<Vec<_>>()
    );

    // update_ids are not monotonic: a lower id after a higher one is new.
    let hi = next_update_id() + 10_000;
    let other = 380_002;
    s.post_ok(&private_command(hi, other, "Hi", Some("en"), "/help"))
        .await;
    s.wait_nth_reply(other, 1, T).await;
    s.post_ok(&private_command(
        hi - 5_000,
        other,
        "Hi",
        Some("en"),
        "/help",
    ))
    .await;
    s.wait_nth_reply(other, 2, T).await;
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_stored_before_any_worker_runs_are_handled() {
    let Some(mut s) = Stack::builder().workers(0).start().await else {
        return;
    };
    let uids: Vec<i64> = (0..5).map(|i| 390_000 + i).collect();
    for uid in &uids {
        s.post_ok(&private_command(
            next_update_id(),
            *uid,
            "Early",
            Some("en"),
            "/start",
        ))
        .await;
    }
    assert!(s.api.sent_messages().is_empty());
    s.spawn_worker(&[]);
    for uid in &uids {
        s.wait_nth_reply(*uid, 1, T).await;
    }
    s.wait_drained(T).await;
    assert_eq!(s.api.sent_messages().len(), uids.len());
    s.assert_clean();
}
