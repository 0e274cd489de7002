//! deploy/README.md's "Docker (local)": the compose file, started with
//! `up --build` against the image's Dockerfile.

use std::path::PathBuf;
use std::time::Duration;

use e2e::container::docker;
use e2e::harness::{assert_token_absent, free_port, http_get};
use e2e::updates::{next_update_id, private_command};
use e2e::{FakeBotApi, TOKEN};

use super::{env, T};

/// `docker compose` (v2) when the plugin is there, else `docker-compose`
/// (v1, Debian's package; `--compatibility` makes it honour
/// `deploy.replicas` as v2 does).
async fn compose_cli() -> Vec<String> {
    if docker(&["compose", "version"], &[], T).await.ok() {
        return vec!["docker".into(), "compose".into()];
    }
    vec!["docker-compose".into(), "--compatibility".into()]
}

/// Takes a compose project down (containers, network, volumes) on drop.
struct ComposeProject {
    cli: Vec<String>,
    args: Vec<String>,
    /// Every compose command interpolates the file, so each needs these.
    env: Vec<(String, String)>,
}

impl ComposeProject {
    fn command(&self, more: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.cli[0]);
        c.args(&self.cli[1..]).args(&self.args).args(more);
        c.env_remove("TELEGRAM_WEBHOOK_URL");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        match self.command(&["down", "-v", "--timeout", "20"]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "compose down failed: {}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("compose down: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Docker engine and compose: run scripts/image-check"]
async fn compose_file_runs_the_local_stack() {
    // "TELEGRAM_BOT_TOKEN=123:abc docker compose -f deploy/docker-compose.yml
    // up --build", with one override: the host network (so that the stack
    // reaches the fake Bot API and nothing leaves loopback) and free ports
    // in place of 6379/8080, which this machine may already use. The host
    // network publishes every port, and compose refuses a port mapping
    // beside it, so the copy under test loses its one `ports:` line.
    let api = FakeBotApi::start().await;
    let redis_port = free_port();
    let http_port = free_port();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = e2e::harness::target_dir().join("e2e-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let original = std::fs::read_to_string(root.join("deploy/docker-compose.yml")).unwrap();
    let ports: Vec<&str> = original
        .lines()
        .filter(|l| l.trim_start().starts_with("ports:"))
        .collect();
    assert_eq!(
        ports,
        vec![r#"    ports: ["8080:8080"]"#],
        "the compose file's port mapping"
    );
    let compose_file = dir.join(format!("compose-{}.yml", std::process::id()));
    std::fs::write(
        &compose_file,
        original
            .lines()
            .filter(|l| !l.trim_start().starts_with("ports:"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let context = root.canonicalize().unwrap().display().to_string();
    let override_file = dir.join(format!("compose-override-{}.yml", std::process::id()));
    std::fs::write(
        &override_file,
        format!(
            r#"services:
  redis:
    network_mode: host
    command: ["redis-server", "--appendonly", "yes", "--appendfsync", "everysec", "--bind", "127.0.0.1", "--port", "{redis_port}"]
  ingress:
    network_mode: host
    build: {{ context: "{context}" }}
    environment:
      REDIS_URL: redis://127.0.0.1:{redis_port}
      PORT: "{http_port}"
  worker:
    network_mode: host
    build: {{ context: "{context}" }}
    environment:
      REDIS_URL: redis://127.0.0.1:{redis_port}
"#
        ),
    )
    .unwrap();
    let project = ComposeProject {
        cli: compose_cli().await,
        args: vec![
            "-p".into(),
            format!("e2e-compose-{}", std::process::id()),
            "-f".into(),
            compose_file.display().to_string(),
            "-f".into(),
            override_file.display().to_string(),
        ],
        env: env(&[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("TELEGRAM_API_URL", &api.url()),
        ]),
    };
    let mut up = tokio::process::Command::from(project.command(&["up", "-d", "--build"]));
    up.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(900), up.output())
        .await
        .expect("compose up finished within 15 min")
        .expect("compose up ran");
    assert!(
        out.status.success(),
        "compose up: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = || {
        let o = project
            .command(&["logs", "--no-color"])
            .output()
            .expect("compose logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // No TELEGRAM_WEBHOOK_URL: the single leased poller.
    assert!(
        api.wait_for_calls("getUpdates", 1, Duration::from_secs(60))
            .await,
        "the ingress never polled:\n{}",
        logs()
    );
    let chat = 4_200_002;
    api.push_update(private_command(
        next_update_id(),
        chat,
        "Grace",
        Some("en"),
        "/start",
    ));
    assert!(
        api.wait_for(Duration::from_secs(60), |calls| calls
            .iter()
            .any(|c| c.method == "sendMessage" && c.chat_id() == Some(chat)))
            .await,
        "no reply to /start:\n{}",
        logs()
    );

    // Two workers, Redis with AOF, the ingress's health endpoint.
    let ps = project.command(&["ps", "-q", "worker"]).output().unwrap();
    let workers = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(workers, 2, "worker replicas:\n{}", logs());
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let aof: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(aof, vec!["appendonly".to_owned(), "yes".to_owned()]);
    let health = http_get(&format!("http://127.0.0.1:{http_port}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(health.status, 200);

    let all = logs();
    assert_token_absent(&all);
    api.assert_no_violations();
    drop(project);
    let _ = std::fs::remove_file(&override_file);
    let _ = std::fs::remove_file(&compose_file);
}
