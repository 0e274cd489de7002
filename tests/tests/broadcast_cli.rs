//! `worker broadcast ...` against a real Redis (SPEC.md "Outbound
//! messages", the CLI line). No worker runs, so a broadcast stays running
//! with nothing sent and every change of state is the CLI's own: the test
//! does not depend on how the workers send.

use std::path::PathBuf;
use std::time::Duration;

use e2e::harness::run_to_exit;
use e2e::stack::Stack;
use serde_json::Value;

async fn stack() -> Option<Stack> {
    Stack::builder().without_ingress().workers(0).start().await
}

/// A recipients file for this test, removed at the end.
struct IdsFile(PathBuf);

impl IdsFile {
    fn new(name: &str, text: &str) -> Self {
        let path = e2e::harness::log_dir().join(format!("{name}-{}.txt", std::process::id()));
        std::fs::write(&path, text).expect("write the recipients file");
        Self(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for IdsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `worker broadcast <args>`: exit code, stdout, stderr; never the
/// token in either.
async fn broadcast(s: &Stack, args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<&str> = std::iter::once("broadcast")
        .chain(args.iter().copied())
        .collect();
    let (st, out, err) = s.worker_command(&args).await;
    e2e::assert_token_absent(&out);
    e2e::assert_token_absent(&err);
    (st.code(), out, err)
}

/// `status ID --json`, which must succeed.
async fn status(s: &Stack, id: &str) -> Value {
    let (code, out, err) = broadcast(s, &["status", id, "--json"]).await;
    assert_eq!(code, Some(0), "status --json: {out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json is JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_creates_pauses_resumes_and_cancels_a_broadcast() {
    let Some(s) = stack().await else {
        return;
    };
    // 104 blocked the bot: left out, like 101's second line.
    let mut c = s.redis_conn().await;
    let _: i64 = redis::cmd("ZADD")
        .arg(s.keys.users_blocked())
        .arg(1)
        .arg(104)
        .query_async(&mut c)
        .await
        .unwrap();
    let ids = IdsFile::new(
        "broadcast-ids",
        "# launch list\n101\n\n-1001234567890  # the group\n103\n101\n104\n",
    );

    let (code, out, err) = broadcast(&s, &["send", "--text", "Big news", "--to", ids.path()]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let redis = s.redis.url();
    assert!(
        out.contains(&format!(
            "created in {redis}: sendMessage to 3 recipients (2 of the file's 5 left out"
        )),
        "{out}"
    );
    let id = out
        .split_whitespace()
        .nth(1)
        .expect("`Broadcast <id> created ...`")
        .to_owned();

    let v = status(&s, &id).await;
    assert_eq!(v["id"], id.as_str(), "{v}");
    assert_eq!(v["redis"], redis.as_str(), "{v}");
    assert_eq!(v["method"], "sendMessage", "{v}");
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(
        (v["total"].as_u64(), v["left"].as_u64()),
        (Some(3), Some(3)),
        "{v}"
    );
    assert_eq!(v["sent"], 0, "no worker: nothing sent: {v}");

    // Into a pipe: plain lines, once.
    let (code, out, err) = broadcast(&s, &["status", &id]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    for want in [
        "State:     running",
        "Left:      3",
        "Progress:  0 of 3 handled (0%)",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }

    let (code, out, err) = broadcast(&s, &["pause", &id]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains(&format!("Broadcast {id} paused")), "{out}");
    assert_eq!(status(&s, &id).await["state"], "paused");

    let (code, out, err) = broadcast(&s, &["resume", &id]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("running again"), "{out}");
    assert_eq!(status(&s, &id).await["state"], "running");

    // `--follow` into a pipe prints a line every few seconds and ends with
    // the broadcast: cancelled meanwhile by another command.
    let follow_args = ["status", &id, "--follow"];
    let follow = broadcast(&s, &follow_args);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(3000)).await;
        broadcast(&s, &["cancel", &id]).await
    };
    let ((code, followed, err), (ccode, cancelled, cerr)) = tokio::join!(follow, cancel);
    assert_eq!(ccode, Some(0), "{cancelled}\n{cerr}");
    assert!(
        cancelled.contains(&format!(
            "Broadcast {id} cancelled: the 3 recipients not reached get nothing"
        )),
        "{cancelled}"
    );
    assert_eq!(code, Some(0), "{followed}\n{err}");
    let lines: Vec<&str> = followed.lines().collect();
    // On a loaded machine the command may start late and see the cancel
    // at once; usually it saw the broadcast running first.
    if lines.len() > 1 {
        assert!(
            lines[0].contains(&format!("{id}  running  0%")),
            "{followed}"
        );
    }
    let last = lines.last().expect("at least one line");
    assert!(last.contains(&format!("{id}  cancelled")), "{followed}");
    assert!(last.contains("left 0 of 3"), "{followed}");

    let v = status(&s, &id).await;
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(v["left"], 0, "{v}");
    // Cancelled is for good.
    let (code, out, _) = broadcast(&s, &["resume", &id]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("is cancelled: nothing to resume"), "{out}");

    // A copy of a channel post, to the same file.
    let (code, out, err) = broadcast(
        &s,
        &[
            "send",
            "--copy",
            "-1009876543210:77",
            "--to",
            ids.path(),
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let copy: Value = serde_json::from_str(&out).expect("send --json is JSON");
    let copy_id = copy["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        (copy["method"].as_str(), copy["total"].as_u64()),
        (Some("copyMessage"), Some(3))
    );

    let (code, out, err) = broadcast(&s, &["list"]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains(&id) && out.contains(&copy_id), "{out}");
    let (code, out, _) = broadcast(&s, &["list", "--json"]).await;
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).expect("list --json is JSON");
    let listed: Vec<(&str, &str)> = v["broadcasts"]
        .as_array()
        .expect("broadcasts")
        .iter()
        .map(|b| (b["id"].as_str().unwrap(), b["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [(copy_id.as_str(), "running"), (id.as_str(), "cancelled")],
        "newest first"
    );

    // Nothing reached Telegram: sending is the workers' job.
    let sends = s
        .api
        .calls()
        .iter()
        .filter(|c| fake_bot_api::is_send_like(&c.method))
        .count();
    assert_eq!(sends, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_and_bad_input_end_with_a_clear_line() {
    let Some(s) = stack().await else {
        return;
    };
    for args in [
        &["--help"][..],
        &["send", "--help"],
        &["list", "--help"],
        &["status", "--help"],
        &["pause", "--help"],
        &["resume", "--help"],
        &["cancel", "--help"],
    ] {
        let (code, out, err) = broadcast(&s, args).await;
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(out.contains("Usage:"), "{args:?}: {out}");
    }
    let redis = s.redis.url();
    for cmd in ["status", "pause", "resume", "cancel"] {
        let (code, out, err) = broadcast(&s, &[cmd, "bnope"]).await;
        assert_eq!(code, Some(1), "{cmd}: {out}\n{err}");
        assert!(
            err.contains(&format!(
                "worker broadcast: no broadcast \"bnope\" in {redis}"
            )),
            "{cmd}: {err}"
        );
    }

    // A bad line of the file: usage (2), naming file:line; nothing created.
    let ids = IdsFile::new("broadcast-bad-ids", "101\n# ok so far\n@someone\n");
    let (code, _, err) = broadcast(&s, &["send", "--text", "x", "--to", ids.path()]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:3: \"@someone\" is not a chat id", ids.path())),
        "{err}"
    );
    let (code, _, err) =
        broadcast(&s, &["send", "--text", "x", "--to", "/nonexistent/ids.txt"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--to /nonexistent/ids.txt: cannot read it"),
        "{err}"
    );
    let (code, _, err) = broadcast(&s, &["send", "--to", "all"]).await;
    assert_eq!(code, Some(2), "neither --text nor --copy: {err}");
    let (code, out, _) = broadcast(&s, &["list"]).await;
    assert_eq!(
        (code, out.trim()),
        (Some(0), format!("No broadcasts in {redis}.").as_str())
    );

    // A REDIS_URL that is not one: configuration (2), naming the variable.
    let (st, out, err) = run_to_exit(
        "worker",
        &["broadcast", "list"],
        &[("REDIS_URL", "not a url")],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(st.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("REDIS_URL"), "{err}");
    // Redis unreachable: failure (1), no hang.
    let (st, out, err) = run_to_exit(
        "worker",
        &["broadcast", "status", "b1"],
        &[("REDIS_URL", "redis://127.0.0.1:1")],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("Redis error"), "{err}");
}
