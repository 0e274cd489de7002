use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

use super::view::{self, Rate};
use super::*;

#[derive(Parser, Debug)]
struct Cmd {
    #[command(subcommand)]
    action: BroadcastAction,
}

fn parse(args: &[&str]) -> Result<BroadcastAction, clap::Error> {
    Cmd::try_parse_from(std::iter::once("broadcast").chain(args.iter().copied())).map(|c| c.action)
}

fn send(args: &[&str]) -> SendArgs {
    match parse(args) {
        Ok(BroadcastAction::Send(a)) => a,
        other => panic!("{args:?}: {other:?}"),
    }
}

#[test]
fn send_takes_a_text_or_a_message_to_copy_and_an_audience() {
    let a = send(&["send", "--text", "Hello"]);
    assert_eq!(a.text.as_deref(), Some("Hello"));
    assert_eq!((a.copy, a.to.as_str(), a.json), (None, "all", false));
    // Channel and group ids are negative: taken as the value, not a flag.
    let a = send(&["send", "--copy", "-1001234567890:42", "--to", "ids.txt"]);
    assert_eq!(
        (a.copy, a.to.as_str()),
        (Some((-1001234567890, 42)), "ids.txt")
    );
    assert_eq!(send(&["send", "--copy=7:1", "--json"]).copy, Some((7, 1)));

    for bad in [
        &["send"][..],
        &["send", "--text", "a", "--copy", "1:2"],
        &["send", "--copy", "42"],
        &["send", "--copy", "x:1"],
        &["send", "--copy", "1:0"],
        &["send", "--copy", "0:5"],
        &["send", "--text"],
    ] {
        let e = parse(bad).expect_err(&format!("{bad:?} is refused"));
        assert_eq!(e.exit_code(), 2, "{bad:?}: a usage error");
    }
    let e = parse(&["send", "--copy", "42"]).unwrap_err().to_string();
    assert!(e.contains("<chat_id>:<message_id>"), "{e}");
}

#[test]
fn the_other_commands_take_an_id() {
    assert_eq!(
        parse(&["status", "b1", "--json", "--follow"]).unwrap(),
        BroadcastAction::Status {
            id: "b1".into(),
            json: true,
            follow: true
        }
    );
    assert_eq!(
        parse(&["cancel", "b2"]).unwrap(),
        BroadcastAction::Cancel {
            id: "b2".into(),
            json: false
        }
    );
    assert_eq!(
        parse(&["list", "--json"]).unwrap(),
        BroadcastAction::List { json: true }
    );
    for bad in [&["pause"][..], &["resume"], &["status"], &["stop", "b1"]] {
        assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn a_recipients_file_is_ids_one_a_line_and_a_bad_line_is_named() {
    let text = "\u{feff}# customers\n123\n\n  -1001234567890  \r\n456 # alice\n#789\n";
    assert_eq!(
        parse_chat_list("ids.txt", text).unwrap(),
        [123, -1001234567890, 456]
    );
    let err = |text: &str| parse_chat_list("ids.txt", text).unwrap_err();
    let e = err("1\n2\n@channel\n4\n");
    assert_eq!(
        e.to_string(),
        "ids.txt:3: \"@channel\" is not a chat id (one integer per line)"
    );
    assert_eq!(e.exit_code(), ExitCode::from(2));
    assert!(err("1\n0\n").to_string().starts_with("ids.txt:2: "));
    assert!(err("12 34\n").to_string().starts_with("ids.txt:1: "));
    assert!(err("99999999999999999999\n")
        .to_string()
        .starts_with("ids.txt:1: "));
    assert!(err("# nothing\n\n").to_string().contains("no chat ids"));
}

#[test]
fn to_reads_the_file_it_names() {
    assert_eq!(audience("all").unwrap(), Audience::All);
    let path = std::env::temp_dir().join(format!("broadcast-to-{}.txt", std::process::id()));
    std::fs::write(&path, "5\n6\n").unwrap();
    let name = path.to_string_lossy().into_owned();
    assert_eq!(audience(&name).unwrap(), Audience::Chats(vec![5, 6]));
    std::fs::write(&path, "5\nsix\n").unwrap();
    let e = audience(&name).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{name}:2: \"six\" is not a chat id (one integer per line)")
    );
    std::fs::remove_file(&path).unwrap();
    let e = audience(&name).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("--to {name}: cannot read it")),
        "{e}"
    );
}

#[test]
fn the_message_is_a_send_message_or_a_copy() {
    let m = send_message(&send(&["send", "--text", "Big news"])).unwrap();
    assert_eq!(m.method, "sendMessage");
    assert_eq!(m.params, serde_json::json!({"text": "Big news"}));
    let m = send_message(&send(&["send", "--copy", "-100:42"])).unwrap();
    assert_eq!(m.method, "copyMessage");
    assert_eq!(
        m.params,
        serde_json::json!({"from_chat_id": -100, "message_id": 42})
    );
    let e = send_message(&send(&["send", "--text", ""])).unwrap_err();
    assert_eq!(e.to_string(), "--text: must be a non-empty string");
    let long = "я".repeat(4097);
    let e = send_message(&send(&["send", "--text", &long])).unwrap_err();
    assert!(e.to_string().contains("4096"), "{e}");
    assert!(send_message(&send(&["send", "--text", &"я".repeat(4096)])).is_ok());
}

fn status(state: &str, total: u64, sent: u64, failed: u64, blocked: u64) -> BroadcastStatus {
    let left = if matches!(state, "done" | "cancelled") {
        0
    } else {
        total - sent - failed - blocked
    };
    BroadcastStatus {
        id: "b18f3c".into(),
        state: state.into(),
        total,
        sent,
        failed,
        blocked,
        left,
        method: "sendMessage".into(),
        created_at_ms: 1_718_000_000_000,
        finished_at_ms: 0,
    }
}

#[test]
fn rate_is_recent_and_eta_is_what_is_left_at_that_rate() {
    let t0 = Instant::now();
    let mut r = Rate::default();
    r.observe(t0, 0);
    assert_eq!(r.per_sec(), None, "one look measures nothing");
    r.observe(t0 + Duration::from_millis(500), 5);
    assert_eq!(r.per_sec(), None, "not a second yet");
    r.observe(t0 + Duration::from_secs(2), 100);
    assert_eq!(r.per_sec(), Some(50.0));
    // A burst long ago leaves the window: 30 s later, 10/s lately.
    r.observe(t0 + Duration::from_secs(30), 1000);
    r.observe(t0 + Duration::from_secs(40), 1100);
    assert_eq!(r.per_sec(), Some(10.0));

    let s = status("running", 1000, 400, 2, 10);
    assert_eq!(view::eta_ms(&s, Some(10.0)), Some(58_800));
    assert_eq!(view::eta_ms(&s, Some(0.0)), None);
    assert_eq!(
        view::eta_ms(&status("paused", 1000, 400, 2, 10), Some(10.0)),
        None
    );
    // 412 handled in 100 s since created.
    assert_eq!(
        view::average_rate(&s, s.created_at_ms + 100_000),
        Some(4.12)
    );
    assert_eq!(view::average_rate(&s, s.created_at_ms + 500), None);
}

#[test]
fn the_live_view_is_a_bar_and_the_counts() {
    let s = status("running", 1000, 400, 2, 10);
    let [top, bottom] = view::bar(&s, Some(35.24));
    assert_eq!(
        top,
        "running   [##########---------------]  41%  35.2/s  ETA 16 s"
    );
    assert_eq!(bottom, "sent 400  failed 2  blocked 10  left 588 of 1000");
    assert!(top.len() <= 80 && bottom.len() <= 80);
    let [top, _] = view::bar(&s, Some(0.0));
    assert!(top.ends_with("0.0/s  stalled (workers running?)"), "{top}");
    assert!(top.len() <= 80, "{top}");
    let [top, _] = view::bar(&status("paused", 1000, 400, 2, 10), None);
    assert!(top.ends_with("-/s  paused"), "{top}");
    let mut done = status("done", 10, 9, 1, 0);
    done.finished_at_ms = done.created_at_ms + 320_000;
    let [top, bottom] = view::bar(&done, Some(1.0));
    assert!(top.contains("[#########################] 100%"), "{top}");
    assert!(top.ends_with("done in 5 min 20 s"), "{top}");
    assert_eq!(bottom, "sent 9  failed 1  blocked 0  left 0 of 10");
    let mut cancelled = status("cancelled", 10, 2, 0, 0);
    cancelled.finished_at_ms = cancelled.created_at_ms + 2_600;
    let [top, _] = view::bar(&cancelled, None);
    assert!(top.ends_with("cancelled after 2.6 s"), "{top}");
    let [top, _] = view::bar(&status("done", 0, 0, 0, 0), None);
    assert!(top.contains("100%"), "{top}");
}

#[test]
fn plain_output_names_everything() {
    let s = status("running", 1000, 400, 2, 10);
    let now = s.created_at_ms + 100_000;
    let out = view::status("redis://:***@10.0.0.5:6379", &s, Some(4.12), now);
    for want in [
        "Broadcast: b18f3c\n",
        "Redis:     redis://:***@10.0.0.5:6379\n",
        "State:     running\n",
        "Created:   2024-06-10T06:13:20Z (1 min 40 s ago)\n",
        "Progress:  412 of 1000 handled (41%)\n",
        "Left:      588\n",
        "Rate:      4.1/s (average since created)\n",
        "ETA:       2 min 22 s\n",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    let line = view::line(&s, Some(4.12), now);
    assert_eq!(
        line,
        "2024-06-10T06:15:00Z  b18f3c  running  41%  sent 400  failed 2  blocked 10  left 588 of 1000  4.1/s  ETA 2 min 22 s"
    );
    assert!(!line.contains('\x1b'), "no escapes into a pipe");

    let list = view::list("redis://127.0.0.1:6379", std::slice::from_ref(&s), false);
    assert!(
        list.starts_with("Redis: redis://127.0.0.1:6379\nID "),
        "{list}"
    );
    assert!(list.contains("b18f3c               running    sendMessage        1000      400       2       10      588  2024-06-10T06:13:20Z"), "{list}");
    assert_eq!(view::list("r", &[], false), "No broadcasts in r.\n");
    let v: Value = serde_json::from_str(&view::list("r", std::slice::from_ref(&s), true)).unwrap();
    assert_eq!(
        (v["redis"].as_str(), v["broadcasts"][0]["left"].as_u64()),
        (Some("r"), Some(588))
    );
}

#[test]
fn json_has_the_status_fields_and_the_redis() {
    let s = status("running", 1000, 400, 2, 10);
    let v: Value = serde_json::to_value(view::StatusJson::new("r", &s, Some(10.0))).unwrap();
    for f in [
        "id",
        "state",
        "total",
        "sent",
        "failed",
        "blocked",
        "left",
        "method",
        "created_at_ms",
    ] {
        assert_eq!(v[f], serde_json::to_value(&s).unwrap()[f], "{f}");
    }
    assert_eq!(
        (v["redis"].as_str(), v["rate_per_sec"].as_f64()),
        (Some("r"), Some(10.0))
    );
    assert_eq!(v["eta_ms"], 58_800);
    let v: Value = serde_json::from_str(&view::created("r", &s, None, true)).unwrap();
    assert_eq!(
        (v["id"].as_str(), v["eta_ms"].is_null()),
        (Some("b18f3c"), true)
    );
}

#[test]
fn control_says_what_happened_and_why_not() {
    let paused = view::controlled("r", &status("paused", 10, 3, 0, 0), Control::Pause, false);
    assert!(
        paused.starts_with("Broadcast b18f3c paused; `worker broadcast resume b18f3c`"),
        "{paused}"
    );
    assert!(
        paused.ends_with("paused: sent 3  failed 0  blocked 0  left 7 of 10\n"),
        "{paused}"
    );
    let cancelled = view::controlled(
        "r",
        &status("cancelled", 10, 3, 0, 0),
        Control::Cancel,
        false,
    );
    assert!(
        cancelled.contains("the 7 recipients not reached get nothing"),
        "{cancelled}"
    );
    assert!(cancelled.contains("left 0 of 10"), "{cancelled}");
    let not = view::controlled(
        "r",
        &status("cancelled", 10, 3, 0, 0),
        Control::Resume,
        false,
    );
    assert!(
        not.starts_with("Broadcast b18f3c is cancelled: nothing to resume (only a paused"),
        "{not}"
    );
    let v: Value = serde_json::from_str(&view::controlled(
        "r",
        &status("running", 10, 3, 0, 0),
        Control::Resume,
        true,
    ))
    .unwrap();
    assert_eq!(v["state"], "running");

    let made = view::created(
        "redis://h:6379",
        &status("running", 8, 0, 0, 0),
        Some(10),
        false,
    );
    assert!(made.starts_with("Broadcast b18f3c created in redis://h:6379: sendMessage to 8 recipients (2 of the file's 10 left out: duplicates or blocked the bot).\n"), "{made}");
    assert!(made.contains("worker broadcast status b18f3c"), "{made}");
    let none = view::created("r", &status("done", 0, 0, 0, 0), None, false);
    assert!(none.contains("Nobody to send it to"), "{none}");
}

#[test]
fn exit_codes_tell_usage_from_failure() {
    let unknown = BroadcastCliError::UnknownId {
        id: "bnope".into(),
        redis: "redis://127.0.0.1:6379".into(),
    };
    assert_eq!(unknown.exit_code(), ExitCode::FAILURE);
    assert_eq!(
        unknown.to_string(),
        "no broadcast \"bnope\" in redis://127.0.0.1:6379 (see `worker broadcast list`)"
    );
    let store = BroadcastCliError::Store {
        redis: "r".into(),
        source: StoreError::Timeout,
    };
    assert_eq!(store.exit_code(), ExitCode::FAILURE);
    assert_eq!(usage("x").exit_code(), ExitCode::from(2));
}
