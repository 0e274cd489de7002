//! The summary line of `scripts/test` (`tests: N passed, M failed, K
//! skipped`, computed by `scripts/test-summary`): a test that cannot run
//! here prints `SKIPPED: ...` and returns, libtest calls it passed, and the
//! summary must call it skipped.
//!
//! The skipping tests are real: this binary runs one of its own tests again
//! as a child, in a fixture role chosen by `TEST_SUMMARY_FIXTURE` (e.g. with
//! no `redis-server` on its `PATH`, so the harness's own skip path runs),
//! with stdout and stderr on one file as `cargo test 2>&1` has them, and
//! the summary script reads that. Needs neither Redis nor a browser.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use e2e::harness::{loud, target_dir};
use e2e::RedisServer;

const FIXTURE: &str = "TEST_SUMMARY_FIXTURE";

fn summary_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-summary")
}

/// `scripts/test-summary` on `log`: its one line.
fn summarize(log: &str) -> String {
    let mut child = Command::new(summary_script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run scripts/test-summary");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(log.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "scripts/test-summary: {}", out.status);
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// What a test does in the child run, instead of its own body.
async fn fixture(role: &str) {
    match role {
        "pass" => {}
        // The harness's skip path: a boxed message with a leading newline.
        "no-redis" => {
            let server = RedisServer::start().await;
            assert!(server.is_none(), "the fixture found a redis-server");
        }
        // A bare line, as `redis_tls.rs` prints it: with one test thread
        // it lands on the line libtest began with `test NAME ... `.
        "bare" => loud("SKIPPED: the fixture did NOT run"),
        other => panic!("unknown {FIXTURE} {other:?}"),
    }
}

/// Runs the test `name` of this binary as a child in `role`, with no
/// `redis-server` reachable, and returns its stdout and stderr
/// interleaved as they were written.
fn run_fixture(name: &str, role: &str, extra_env: &[(&str, &str)], args: &[&str]) -> String {
    let dir = target_dir().join("e2e-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("test-summary-{}-{name}.log", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name])
        .args(args)
        .env(FIXTURE, role)
        .env("PATH", "/nonexistent")
        .env_remove("E2E_REQUIRE_REDIS")
        .env_remove("RUST_TEST_THREADS")
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .expect("run this test binary again");
    let log = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        log.contains("test result:"),
        "the child run ({status}) printed no result:\n{}",
        quoted(&log)
    );
    log
}

/// `log` indented for an assertion message: a child's `test result:` or
/// `SKIPPED:` line at the start of a line would count in the summary of
/// the run that reports this test's failure.
fn quoted(log: &str) -> String {
    log.lines().map(|l| format!("  | {l}\n")).collect()
}

/// The fixture role this process plays, if it is a child run.
fn role() -> Option<String> {
    std::env::var(FIXTURE).ok()
}

#[tokio::test]
async fn a_test_that_prints_skipped_counts_as_skipped_not_passed() {
    if let Some(role) = role() {
        return fixture(&role).await;
    }
    let me = "a_test_that_prints_skipped_counts_as_skipped_not_passed";
    let passed = run_fixture(me, "pass", &[], &[]);
    assert_eq!(
        summarize(&passed),
        "tests: 1 passed, 0 failed, 0 skipped",
        "{}",
        quoted(&passed)
    );
    // Parallel (the default), one thread, and `cargo test -q`'s terse
    // format: libtest puts its own text before the message differently.
    for role in ["no-redis", "bare"] {
        for args in [&[][..], &["--test-threads=1"], &["-q"]] {
            let log = run_fixture(me, role, &[], args);
            assert!(
                log.contains("SKIPPED: "),
                "{role} {args:?}:\n{}",
                quoted(&log)
            );
            assert_eq!(
                summarize(&log),
                "tests: 0 passed, 0 failed, 1 skipped",
                "{role} {args:?}:\n{}",
                quoted(&log)
            );
        }
    }
}

#[tokio::test]
async fn a_skip_turned_into_a_failure_counts_as_failed_only() {
    if let Some(role) = role() {
        return fixture(&role).await;
    }
    // `.ci/run` sets E2E_REQUIRE_REDIS: the missing redis-server panics
    // with the same "SKIPPED: ..." text, in libtest's failure report (or
    // at once with --nocapture). One failure, no skip.
    let me = "a_skip_turned_into_a_failure_counts_as_failed_only";
    for args in [&[][..], &["--nocapture"], &["--test-threads=1"], &["-q"]] {
        let log = run_fixture(me, "no-redis", &[("E2E_REQUIRE_REDIS", "1")], args);
        assert!(log.contains("SKIPPED: "), "{args:?}:\n{}", quoted(&log));
        assert_eq!(
            summarize(&log),
            "tests: 0 passed, 1 failed, 0 skipped",
            "{args:?}:\n{}",
            quoted(&log)
        );
    }
}

/// The summary adds up every test binary's `test result:` line (unit
/// tests, integration tests, doc tests), with `#[ignore]`d tests skipped.
#[test]
fn results_of_several_test_binaries_add_up() {
    let log = "\
     Running unittests src/lib.rs (target/debug/deps/shared-0f)

running 3 tests
test a ... ok
test b ... ok
test c ... ignored, needs a Docker engine

test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running tests/commands.rs (target/debug/deps/commands-1e)

running 4 tests

!!!!!!!!
SKIPPED: redis-server not found on PATH - this end-to-end test did NOT run.
!!!!!!!!

test start ... SKIPPED: redis-server not found on PATH - this end-to-end test did NOT run.
ok
test help ... ok
test stats ... ok
test app ... FAILED

failures:

---- app stdout ----
assertion failed: reply

failures:
    app

test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.20s

   Doc-tests worker

running 1 test
test worker/src/lib.rs - Bot (line 10) ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.30s
";
    assert_eq!(summarize(log), "tests: 4 passed, 1 failed, 3 skipped");
    assert_eq!(summarize(""), "tests: 0 passed, 0 failed, 0 skipped");
}
