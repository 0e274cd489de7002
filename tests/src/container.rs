//! The deploy image as a test part: containers started with the `docker`
//! CLI, on the host network so that everything they talk to (the fake Bot
//! API, `redis-server`) stays on loopback, removed on drop.
//!
//! Variables reach the container by name only (`-e NAME` with the value in
//! the CLI's own environment), so the token never appears on a command line.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::harness::{log_dir, strip_ansi, test_name};

/// The image under test: `E2E_IMAGE` (set by `scripts/image-check`).
pub fn image_under_test() -> String {
    std::env::var("E2E_IMAGE").unwrap_or_else(|_| {
        panic!("E2E_IMAGE is not set: run scripts/image-check, which builds the image and sets it")
    })
}

/// What a finished `docker` command printed.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `docker ARGS` with `env` in the CLI's environment, bounded by
/// `timeout`.
pub async fn docker(args: &[&str], env: &[(String, String)], timeout: Duration) -> Output {
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("docker {}: {e} (is the docker CLI installed?)", args[0]));
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`docker {}` did not finish within {timeout:?}",
                args.join(" ")
            )
        })
        .unwrap_or_else(|e| panic!("docker {}: {e}", args[0]));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: strip_ansi(&String::from_utf8_lossy(&out.stdout)),
        stderr: strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    }
}

/// A detached container of the image under test.
pub struct Container {
    name: String,
}

impl Container {
    /// `docker run -d --network host` with `entrypoint` in place of the
    /// image's, the way a platform's start command replaces it.
    pub async fn run(
        image: &str,
        role: &str,
        entrypoint: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Self {
        let name = format!("e2e-{}-{role}-{}", test_name(), std::process::id()).replace(
            |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "-",
        );
        let _ = docker(&["rm", "-f", &name], &[], Duration::from_secs(30)).await;
        let mut a: Vec<String> = ["run", "-d", "--network", "host", "--name", &name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (k, _) in env {
            a.push("-e".into());
            a.push(k.clone());
        }
        a.extend(["--entrypoint".into(), entrypoint.into(), image.into()]);
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = docker(&refs, env, Duration::from_secs(60)).await;
        assert!(out.ok(), "docker run {role}: {out}");
        Self { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything the container printed so far (stdout and stderr).
    pub async fn logs(&self) -> String {
        let out = docker(&["logs", &self.name], &[], Duration::from_secs(30)).await;
        let all = format!("{}{}", out.stdout, out.stderr);
        let _ = std::fs::write(log_dir().join(format!("{}.log", self.name)), &all);
        all
    }

    /// Waits until the logs contain `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.logs().await.contains(needle) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `sh -c COMMAND` inside the running container, as `railway ssh` runs
    /// an operator's command: the service's variables are already there.
    pub async fn shell(&self, command: &str) -> Output {
        docker(
            &["exec", &self.name, "sh", "-c", command],
            &[],
            Duration::from_secs(60),
        )
        .await
    }

    /// `docker stop -t GRACE` (SIGTERM, SIGKILL after the grace period) and
    /// the exit code the process chose.
    pub async fn stop(&self, grace: Duration) -> i64 {
        let secs = grace.as_secs().to_string();
        let out = docker(
            &["stop", "-t", &secs, &self.name],
            &[],
            grace + Duration::from_secs(30),
        )
        .await;
        assert!(out.ok(), "docker stop {}: {out}", self.name);
        let code = self.inspect("{{.State.ExitCode}}").await;
        code.trim()
            .parse()
            .unwrap_or_else(|e| panic!("exit code of {}: {e}: {code:?}", self.name))
    }

    /// Whether the container's process is still running.
    pub async fn running(&self) -> bool {
        self.inspect("{{.State.Running}}").await.trim() == "true"
    }

    async fn inspect(&self, format: &str) -> String {
        let out = docker(
            &["inspect", "-f", format, &self.name],
            &[],
            Duration::from_secs(30),
        )
        .await;
        assert!(out.ok(), "docker inspect {}: {out}", self.name);
        out.stdout
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Synchronous on purpose: drop may run outside a runtime or during
        // a panic, and a left-over container would hold its port.
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
