//! The engine's delivery guarantees, in-process with the test kit: the real
//! consumer and dispatcher over the embedded queue, against the
//! spec-checked fake Bot API. Each test prints what it measured.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use worker::testkit::{updates, Ending, TestKit, BOT_USERNAME};
use worker::types::Message;
use worker::{Bot, Ctx, Description, HandlerError, Reply};

/// What the test bots share: how often their handlers ran, and a gate a
/// hanging handler waits at until the test opens it.
#[derive(Clone)]
struct Probe {
    runs: Arc<AtomicU32>,
    gate: Arc<Semaphore>,
}

impl Probe {
    fn runs(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }
}

fn probe_bot() -> (Bot<Probe>, Probe) {
    let probe = Probe {
        runs: Arc::default(),
        gate: Arc::new(Semaphore::new(0)),
    };
    let bot = Bot::new(probe.clone())
        .command("ping", "Is the bot alive?", ping)
        .command("flaky", "Fails twice, then answers", flaky)
        .command("retry", "Always fails, worth retrying", always_retry)
        .command("giveup", "Fails for good", give_up)
        .command("boom", "Panics", boom)
        .command("hang", "Waits for the test", hang);
    (bot, probe)
}

async fn ping(_: Ctx<Probe>, _: Message) -> Result<Reply, HandlerError> {
    Ok(Reply::text("pong"))
}

async fn flaky(ctx: Ctx<Probe>, _: Message) -> Result<Reply, HandlerError> {
    let run = ctx.state().runs.fetch_add(1, Ordering::SeqCst) + 1;
    if run <= 2 {
        return Err(HandlerError::retry(format!("database timeout #{run}")));
    }
    Ok(Reply::text(format!("answered on delivery {run}")))
}

async fn always_retry(ctx: Ctx<Probe>, _: Message) -> Result<Reply, HandlerError> {
    ctx.state().runs.fetch_add(1, Ordering::SeqCst);
    Err(HandlerError::retry("database timeout"))
}

async fn give_up(ctx: Ctx<Probe>, _: Message) -> Result<Reply, HandlerError> {
    ctx.state().runs.fetch_add(1, Ordering::SeqCst);
    Err(HandlerError::give_up("this order does not exist"))
}

async fn boom(ctx: Ctx<Probe>, _: Message) -> Result<Reply, HandlerError> {
    ctx.state().runs.fetch_add(1, Ordering::SeqCst);
    panic!("index out of bounds in the handler");
}

async fn hang(ctx: Ctx<Probe>, _: Message) -> Result<Reply, HandlerError> {
    let gate = ctx.state().gate.clone();
    let _pass = gate.acquire().await.map_err(HandlerError::retry)?;
    Ok(Reply::text("released"))
}

fn dead_letter(ending: &Ending) -> &worker::testkit::DeadLetter {
    match ending {
        Ending::DeadLettered(d) => d,
        Ending::Handled => panic!("expected a dead letter, the update was handled"),
    }
}

fn command(user: i64, text: &str) -> Value {
    updates::private_command(updates::next_update_id(), user, "Ann", Some("en"), text)
}

#[tokio::test]
async fn a_retried_update_is_redelivered_and_answered_once() {
    let (bot, _) = probe_bot();
    let kit = TestKit::start(bot).await;
    let t = Instant::now();
    let (ending, calls) = kit.exchange_ending(command(1, "/flaky")).await;
    let sent: Vec<&str> = calls
        .iter()
        .filter_map(|c| c.param("text").as_str())
        .collect();
    println!(
        "/flaky: {ending:?} after {:?}; replies {sent:?}",
        t.elapsed()
    );
    assert_eq!(ending, Ending::Handled);
    assert_eq!(sent, ["answered on delivery 3"]);
    assert!(kit.dead_letters().is_empty());
    kit.stop().await;
}

#[tokio::test]
async fn retries_end_in_the_dead_letters_after_max_deliveries() {
    let (bot, probe) = probe_bot();
    let kit = TestKit::builder()
        .env("WORKER_MAX_DELIVERIES", "3")
        .start(bot)
        .await;
    let t = Instant::now();
    let (ending, calls) = kit.exchange_ending(command(1, "/retry")).await;
    let d = dead_letter(&ending);
    println!(
        "/retry with WORKER_MAX_DELIVERIES=3: dead-lettered after {:?}; handler runs {}, deliveries {}, reason {:?}, calls {}",
        t.elapsed(),
        probe.runs(),
        d.deliveries,
        d.error,
        calls.len()
    );
    assert_eq!((probe.runs(), d.deliveries), (3, 3));
    assert_eq!(d.error, "database timeout");
    assert!(calls.is_empty(), "nothing sent: {calls:?}");
    assert_eq!(kit.ask_text(1, "/ping").await, "pong", "the chat goes on");
    kit.stop().await;
}

#[tokio::test]
async fn give_up_is_dead_lettered_at_once_with_its_reason() {
    let (bot, probe) = probe_bot();
    let kit = TestKit::builder()
        .env("WORKER_MAX_DELIVERIES", "5")
        .start(bot)
        .await;
    let t = Instant::now();
    let (ending, calls) = kit.exchange_ending(command(2, "/giveup")).await;
    let d = dead_letter(&ending);
    println!(
        "/giveup: dead-lettered after {:?}; handler runs {}, deliveries {}, reason {:?}",
        t.elapsed(),
        probe.runs(),
        d.deliveries,
        d.error
    );
    assert_eq!(probe.runs(), 1, "not retried");
    assert_eq!(d.deliveries, 1);
    assert_eq!(d.error, "gave up: this order does not exist");
    assert!(calls.is_empty());
    kit.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_is_caught_and_counted_like_a_retry() {
    let (bot, probe) = probe_bot();
    let kit = TestKit::builder()
        .env("WORKER_MAX_DELIVERIES", "2")
        .start(bot)
        .await;
    let t = Instant::now();
    let ending = kit.exchange_ending(command(3, "/boom")).await.0;
    let d = dead_letter(&ending);
    println!(
        "/boom with WORKER_MAX_DELIVERIES=2: dead-lettered after {:?}; handler runs {}, deliveries {}, reason {:?}",
        t.elapsed(),
        probe.runs(),
        d.deliveries,
        d.error
    );
    assert_eq!((probe.runs(), d.deliveries), (2, 2));
    assert_eq!(
        d.error,
        "handler panicked: index out of bounds in the handler"
    );
    assert_eq!(
        kit.ask_text(3, "/ping").await,
        "pong",
        "the engine survives"
    );
    kit.stop().await;
}

#[tokio::test]
async fn a_hanging_handler_holds_its_chat_only() {
    let (bot, probe) = probe_bot();
    let kit = TestKit::builder()
        .env("WORKER_CONCURRENCY", "2")
        .start(bot)
        .await;
    let hung = kit.send(command(10, "/hang")).await;
    let behind = kit.send(command(10, "/ping")).await;
    let t = Instant::now();
    for user in 11..=30 {
        assert_eq!(kit.ask_text(user, "/ping").await, "pong", "user {user}");
    }
    let others = t.elapsed();
    let held = kit.api().sent_to(10);
    println!(
        "one handler hanging (2 slots): 20 other chats answered in {others:?}; its own chat got {} replies meanwhile",
        held.len()
    );
    assert!(held.is_empty(), "the chat's next update waits: {held:?}");
    probe.gate.add_permits(1);
    assert_eq!(kit.wait_end(hung).await, Ending::Handled);
    assert_eq!(kit.wait_end(behind).await, Ending::Handled);
    let texts: Vec<Value> = kit
        .api()
        .sent_to(10)
        .iter()
        .map(|p| p["text"].clone())
        .collect();
    assert_eq!(texts, [json!("released"), json!("pong")], "in order");
    kit.stop().await;
}

#[tokio::test]
async fn commands_route_by_addressee_and_unknown_ones_get_the_registry_help() {
    let (bot, _) = probe_bot();
    let kit = TestKit::start(bot).await;
    let group = updates::supergroup_id(77);
    let in_group =
        |text: &str| updates::group_command(updates::next_update_id(), group, 5, "Ann", None, text);
    let other_bot = kit.exchange(in_group("/ping@other_bot")).await;
    let bare_unknown = kit.exchange(in_group("/nope")).await;
    let ours = kit
        .exchange(in_group(&format!("/ping@{BOT_USERNAME}")))
        .await;
    let help = kit.ask_text(5, "/nope").await;
    println!(
        "group: /ping@other_bot -> {} calls, /nope -> {} calls, /ping@{BOT_USERNAME} -> {:?}; private /nope ->\n{help}",
        other_bot.len(),
        bare_unknown.len(),
        ours.iter().map(|c| c.param("text")).collect::<Vec<_>>()
    );
    assert!(other_bot.is_empty(), "{other_bot:?}");
    assert!(bare_unknown.is_empty(), "{bare_unknown:?}");
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].param("text"), "pong");
    assert!(
        ours[0].param("reply_parameters")["message_id"].is_i64(),
        "quotes in groups"
    );
    assert!(
        help.starts_with("/ping - Is the bot alive?\n/flaky - "),
        "{help}"
    );
    assert_eq!(help.lines().count(), 6, "{help}");
    kit.stop().await;
}

#[tokio::test]
async fn updates_the_typed_model_cannot_parse_reach_on_unparsed() {
    async fn raw_kind(ctx: Ctx<()>) -> Result<Reply, HandlerError> {
        assert!(ctx.update().is_none());
        Ok(Reply::text(format!(
            "raw {} from {:?}",
            ctx.kind(),
            ctx.from().map(|u| u.id)
        )))
    }
    let kit = TestKit::start(Bot::new(()).on_unparsed(raw_kind)).await;
    let user = updates::user(6, "Ann", Some("en"));
    let chat = json!({"id": 6, "first_name": "Ann", "type": "private"});
    // A field the model types differently, and a kind it does not know.
    let odd_message = json!({"update_id": updates::next_update_id(), "message": {
        "message_id": "not-a-number", "from": user, "chat": chat, "date": 1, "text": "hi"}});
    let new_kind = json!({"update_id": updates::next_update_id(), "future_kind": {
        "from": user, "chat": chat, "message_id": 3, "date": 1}});
    let (e1, c1) = kit.exchange_ending(odd_message).await;
    let (e2, c2) = kit.exchange_ending(new_kind).await;
    println!(
        "unparsable message -> {e1:?} {:?}; unknown kind -> {e2:?} {:?}",
        c1.iter().map(|c| c.param("text")).collect::<Vec<_>>(),
        c2.iter().map(|c| c.param("text")).collect::<Vec<_>>()
    );
    assert_eq!((e1, e2), (Ending::Handled, Ending::Handled));
    assert_eq!(c1.len(), 1);
    assert_eq!(c1[0].param("text"), "raw message from Some(6)");
    assert_eq!(c2.len(), 1);
    assert_eq!(c2[0].param("text"), "raw future_kind from Some(6)");
    assert!(kit.dead_letters().is_empty());
    kit.stop().await;
}

#[tokio::test]
async fn the_menu_is_published_per_language_from_the_registry() {
    async fn nothing(_: Ctx<()>, _: Message) -> Result<Reply, HandlerError> {
        Ok(Reply::none())
    }
    let bot = Bot::new(())
        .command(
            "start",
            Description::new("Start")
                .lang("ru", "Начать")
                .lang("de", "Starten"),
            nothing,
        )
        .command("ping", "Is the bot alive?", nothing);
    let kit = TestKit::start(bot).await;
    let menus: Vec<Value> = kit
        .api()
        .calls_to("setMyCommands")
        .into_iter()
        .inspect(|c| assert!(c.ok(), "{c:?}"))
        .map(|c| c.params)
        .collect();
    for m in &menus {
        println!("setMyCommands {m}");
    }
    let entry = |cmd: &str, d: &str| json!({"command": cmd, "description": d});
    let ping = entry("ping", "Is the bot alive?");
    assert_eq!(
        menus,
        [
            json!({"commands": [entry("start", "Start"), ping]}),
            json!({"commands": [entry("start", "Starten"), ping], "language_code": "de"}),
            json!({"commands": [entry("start", "Начать"), ping], "language_code": "ru"}),
        ]
    );
    kit.stop().await;
}
