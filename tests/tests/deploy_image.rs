//! deploy/README.md followed step by step against the built image, with
//! Railway's part played by `docker run`: each service's config file
//! (builder, start command, healthcheck, replicas, draining) is read here,
//! not restated, so the guide, the config files and the image cannot drift
//! apart unnoticed.
//!
//! The image tests need a Docker engine, so they are `#[ignore]`d in the
//! ordinary run (counted as skipped); `scripts/image-check` builds the image
//! from deploy/Dockerfile and runs this with `--ignored`.

use std::path::PathBuf;
use std::time::Duration;

use e2e::container::{docker, image_under_test, Container};
use e2e::harness::{
    assert_token_absent, eventually, free_port, http_get, webhook_post, RedisOptions,
};
use e2e::updates::{next_update_id, private_command};
use e2e::{inline_buttons, FakeBotApi, RedisServer, TOKEN};
use serde_json::Value;

/// What Railway would set as the ingress's public domain.
const DOMAIN: &str = "tgbot-ingress.up.railway.app";
const T: Duration = Duration::from_secs(30);

/// One service's `deploy/*.railway.toml`, the fields the guide relies on.
struct RailwayService {
    start_command: String,
    healthcheck_path: Option<String>,
    healthcheck_timeout: Duration,
    replicas: usize,
    draining: Duration,
}

fn railway_config(file: &str) -> RailwayService {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let v: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", path.display()));
    let build = v["build"].as_table().expect("[build]");
    assert_eq!(build["builder"].as_str(), Some("DOCKERFILE"), "{file}");
    let dockerfile = build["dockerfilePath"].as_str().expect("dockerfilePath");
    assert!(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(dockerfile)
            .is_file(),
        "{file}: dockerfilePath {dockerfile} does not exist"
    );
    let deploy = v["deploy"].as_table().expect("[deploy]");
    let secs = |k: &str, default: i64| {
        Duration::from_secs(
            deploy
                .get(k)
                .map(|x| {
                    x.as_integer()
                        .unwrap_or_else(|| panic!("{file}: {k} is a number"))
                })
                .unwrap_or(default) as u64,
        )
    };
    assert_eq!(
        deploy.get("restartPolicyType").and_then(|x| x.as_str()),
        Some("ALWAYS"),
        "{file}"
    );
    RailwayService {
        start_command: deploy["startCommand"]
            .as_str()
            .expect("startCommand")
            .to_owned(),
        healthcheck_path: deploy
            .get("healthcheckPath")
            .and_then(|x| x.as_str())
            .map(str::to_owned),
        // Railway's default healthcheck timeout is 300 s.
        healthcheck_timeout: secs("healthcheckTimeout", 300),
        replicas: deploy
            .get("numReplicas")
            .and_then(|x| x.as_integer())
            .unwrap_or(1) as usize,
        draining: secs("drainingSeconds", 0),
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The start command is exec form (no shell): one program, no arguments.
fn split_start(cmd: &str) -> (String, Vec<String>) {
    let mut parts = cmd.split_whitespace().map(str::to_owned);
    let program = parts.next().expect("a start command");
    (program, parts.collect())
}

fn repo_file(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The cheap half of the image check, run everywhere: the Dockerfile's
/// dependency-caching stage lists every workspace crate by hand, so a crate
/// added to the workspace and not to the Dockerfile breaks the image build
/// long before anyone runs `scripts/image-check`. Likewise every binary a
/// start command names must be one the image carries.
#[test]
fn dockerfile_and_service_configs_match_the_workspace() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace: toml::Table = repo_file("Cargo.toml").parse().unwrap();
    let members: Vec<String> = workspace["workspace"]["members"]
        .as_array()
        .expect("workspace members")
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    let dockerfile = repo_file("deploy/Dockerfile");
    let placeholder_loop = |file: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .find(|l| l.contains("for c in ") && l.contains(file))
            .unwrap_or_else(|| panic!("the Dockerfile's placeholder loop for {file}"));
        let list = &line[line.find("for c in ").unwrap() + 9..line.find("; do").unwrap()];
        list.split_whitespace().map(str::to_owned).collect()
    };
    let libs = placeholder_loop("lib.rs");
    let mains = placeholder_loop("main.rs");
    // Binaries under src/bin/ (the shipped bot's `worker` and `bot`) get a
    // placeholder file each, named in full.
    let bins = placeholder_loop("src/bin");
    for m in &members {
        let copy = format!("COPY {m}/Cargo.toml {m}/Cargo.toml");
        assert!(
            dockerfile.lines().any(|l| l.trim() == copy),
            "deploy/Dockerfile lacks `{copy}`"
        );
        let has_lib = root.join(m).join("src/lib.rs").is_file();
        let has_main = root.join(m).join("src/main.rs").is_file();
        assert_eq!(
            libs.contains(m),
            has_lib,
            "{m}: lib.rs placeholder in deploy/Dockerfile"
        );
        assert_eq!(
            mains.contains(m),
            has_main,
            "{m}: main.rs placeholder in deploy/Dockerfile"
        );
        if let Ok(dir) = std::fs::read_dir(root.join(m).join("src/bin")) {
            for f in dir.flatten() {
                let name = f.file_name().to_string_lossy().replace(".rs", "");
                let want = format!("{m}/src/bin/{name}");
                assert!(
                    bins.contains(&want),
                    "{want}.rs placeholder in deploy/Dockerfile ({bins:?})"
                );
            }
        }
    }
    let shipped: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY --from=build "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    for file in ["ingress.railway.toml", "worker.railway.toml"] {
        let cfg = railway_config(file);
        let (program, _) = split_start(&cfg.start_command);
        assert!(
            shipped.contains(&program.as_str()),
            "{file} starts {program}, which the image does not carry ({shipped:?})"
        );
    }
    for line in repo_file("deploy/docker-compose.yml")
        .lines()
        .filter(|l| l.trim_start().starts_with("command: [\"/usr/local/bin/"))
    {
        let program = line.split('"').nth(1).unwrap();
        assert!(
            shipped.contains(&program),
            "compose runs {program}, not in the image"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Docker engine and the image: run scripts/image-check"]
async fn railway_guide_with_the_image() {
    let image = image_under_test();

    // Image facts the guide and Dockerfile promise: not root, a shell for
    // `railway ssh`, the three binaries.
    let user = docker(
        &["image", "inspect", "-f", "{{.Config.User}}", &image],
        &[],
        T,
    )
    .await;
    assert!(user.ok(), "{user}");
    assert_eq!(user.stdout.trim(), "65532", "the image runs as nonroot");
    let size = docker(&["image", "inspect", "-f", "{{.Size}}", &image], &[], T).await;
    let bytes: u64 = size.stdout.trim().parse().expect("image size");
    eprintln!("image {image}: {:.1} MiB", bytes as f64 / 1048576.0);
    for bin in ["ingress", "worker", "bot"] {
        let out = docker(
            &["run", "--rm", "--network", "none", &image, bin, "--help"],
            &[],
            T,
        )
        .await;
        assert!(out.ok(), "`{bin} --help` in the image: {out}");
    }

    let ingress_cfg = railway_config("ingress.railway.toml");
    let worker_cfg = railway_config("worker.railway.toml");
    assert!(worker_cfg.replicas >= 2, "the guide scales workers out");

    // 1. Redis, with AOF as the guide asks.
    let Some(redis) = RedisServer::start_with(RedisOptions {
        aof: true,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    // Stands in for api.telegram.org; the only variable the guide does not
    // list, because Railway's services reach the real one.
    let api = FakeBotApi::start().await;

    // 3. Variables per service, exactly the guide's table (LOG_FORMAT is
    // left to the image's default), plus what Railway injects.
    let port = free_port();
    let webapp = format!("https://{DOMAIN}/app/");
    let ingress_env = env(&[
        ("TELEGRAM_BOT_TOKEN", TOKEN),
        ("REDIS_URL", &redis.url()),
        ("RAILWAY_PUBLIC_DOMAIN", DOMAIN),
        ("PORT", &port.to_string()),
        ("TELEGRAM_API_URL", &api.url()),
    ]);
    let worker_env = env(&[
        ("TELEGRAM_BOT_TOKEN", TOKEN),
        ("REDIS_URL", &redis.url()),
        ("TELEGRAM_WEBAPP_URL", &webapp),
        ("TELEGRAM_API_URL", &api.url()),
    ]);

    let (program, args) = split_start(&ingress_cfg.start_command);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ingress = Container::run(&image, "ingress", &program, &args, &ingress_env).await;

    // The platform's healthcheck: the configured path answers 200 within
    // the configured timeout.
    let health = ingress_cfg
        .healthcheck_path
        .clone()
        .expect("the ingress has a healthcheck");
    let health_url = format!("http://127.0.0.1:{port}{health}");
    let healthy = eventually(ingress_cfg.healthcheck_timeout, || async {
        matches!(http_get(&health_url).await, Ok(r) if r.status == 200)
    })
    .await;
    assert!(
        healthy,
        "{health} never answered 200:\n{}",
        ingress.logs().await
    );

    // 4. "Ingress logs show, line by line: ..."
    let hook = format!("https://{DOMAIN}/telegram/webhook/");
    assert!(
        ingress
            .wait_for_log("Telegram bot configured via webhook", T)
            .await,
        "registration never finished:\n{}",
        ingress.logs().await
    );
    // "They also say whether Redis keeps what the ingress acknowledged":
    // the guide's Redis runs with AOF and no memory limit.
    assert!(
        ingress
            .wait_for_log("Redis durability: AOF on, no eviction", T)
            .await,
        "no durability report for the guide's Redis:\n{}",
        ingress.logs().await
    );
    let logs = ingress.logs().await;
    for line in [
        "Telegram bot initialized: @".to_owned(),
        format!("Webhook URL: {hook}"),
        format!("Webhook set: {hook}"),
        format!("Webhook info: {hook}, pending updates: 0"),
    ] {
        assert!(logs.contains(&line), "ingress logs lack {line:?}:\n{logs}");
    }
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("the image logs JSON by default ({e}): {line}"));
    }
    let registered = api.webhook();
    assert_eq!(registered.url, hook);
    let secret = registered
        .secret_token
        .clone()
        .expect("a secret token is registered");

    let (program, args) = split_start(&worker_cfg.start_command);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut workers = Vec::new();
    for i in 0..worker_cfg.replicas {
        workers.push(
            Container::run(&image, &format!("worker{i}"), &program, &args, &worker_env).await,
        );
    }

    // "Send /start to the bot; a worker's log shows the update and the reply."
    let chat = 4_200_001;
    let start = private_command(next_update_id(), chat, "Ada", Some("en"), "/start");
    let start_id = start["update_id"].as_i64().unwrap();
    let webhook = format!("http://127.0.0.1:{port}/telegram/webhook/");
    let reply = webhook_post(&webhook, Some(&secret), start.to_string())
        .await
        .expect("post /start");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        api.wait_for(T, |calls| calls
            .iter()
            .any(|c| c.method == "sendMessage" && c.chat_id() == Some(chat)))
            .await,
        "no reply to /start:\n{}",
        ingress.logs().await
    );
    let id = start_id.to_string();
    let logged = eventually(T, || async {
        for w in &workers {
            let l = w.logs().await;
            if l.lines()
                .any(|line| line.contains("command answered") && line.contains(&id))
            {
                return true;
            }
        }
        false
    })
    .await;
    assert!(logged, "no worker logged the answer to update {start_id}");

    // /app opens the Mini App at the URL the guide's variable names.
    let app = private_command(next_update_id(), chat, "Ada", Some("en"), "/app");
    let reply = webhook_post(&webhook, Some(&secret), app.to_string())
        .await
        .expect("post /app");
    assert_eq!(reply.status, 200);
    assert!(
        api.wait_for(T, |calls| calls
            .iter()
            .filter(|c| c.method == "sendMessage" && c.chat_id() == Some(chat))
            .count()
            >= 2)
            .await,
        "no reply to /app"
    );
    let last = api.sent_to(chat).pop().expect("the /app reply");
    let urls: Vec<String> = inline_buttons(&last)
        .iter()
        .filter_map(|b| b["web_app"]["url"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(urls, vec![webapp.clone()], "{last}");

    // The guide's operator commands, run inside the services as `railway
    // ssh` would: through `sh`, with the service's own variables.
    let info = ingress.shell("ingress webhook info").await;
    assert!(info.ok(), "{info}");
    assert!(info.stdout.contains(&hook), "{info}");
    assert!(info.stdout.to_lowercase().contains("pending"), "{info}");

    let w0 = &workers[0];
    let stats = w0.shell("worker queue stats").await;
    assert!(stats.ok(), "{stats}");
    let json = w0.shell("worker queue stats --json").await;
    assert!(json.ok(), "{json}");
    let v: Value = serde_json::from_str(json.stdout.trim())
        .unwrap_or_else(|e| panic!("queue stats --json ({e}): {json}"));
    // 5. Every replica joined the consumer group under its own name.
    let names: std::collections::BTreeSet<&str> = v["consumers"]
        .as_array()
        .expect("consumers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names.len(), worker_cfg.replicas, "{v}");
    assert_eq!(v["dead_letters"], 0, "{v}");
    let dead = w0.shell("worker queue dead").await;
    assert!(dead.ok(), "{dead}");
    let replay = w0.shell("worker queue replay-dead").await;
    assert!(replay.ok(), "{replay}");

    // Redeploys: SIGTERM within the configured draining time -> exit 0,
    // and the webhook stays registered.
    for w in &workers {
        let code = w.stop(worker_cfg.draining).await;
        assert_eq!(code, 0, "worker exit code:\n{}", w.logs().await);
    }
    let code = ingress.stop(ingress_cfg.draining).await;
    assert_eq!(code, 0, "ingress exit code:\n{}", ingress.logs().await);
    assert!(!ingress.running().await);
    assert_eq!(
        api.count("deleteWebhook"),
        0,
        "a stopping replica unhooked the bot"
    );
    assert_eq!(api.webhook().url, hook);

    let mut all = ingress.logs().await;
    for w in &workers {
        all.push_str(&w.logs().await);
    }
    assert_token_absent(&all);
    api.assert_no_violations();
}

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
