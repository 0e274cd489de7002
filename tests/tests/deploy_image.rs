//! deploy/README.md followed step by step against the built image, with
//! Railway's part played by `docker run`: each service's config file
//! (builder, start command, healthcheck, replicas, draining) is read here,
//! not restated, so the guide, the config files and the image cannot drift
//! apart unnoticed.
//!
//! The image tests need a Docker engine, so they are `#[ignore]`d in the
//! ordinary run (counted as skipped); `scripts/image-check` builds the image
//! from deploy/Dockerfile and runs this with `--ignored`.

// A test file is its crate's root, so its modules are found by path.
#[path = "deploy_image/compose.rs"]
mod compose;
#[path = "deploy_image/guide.rs"]
mod guide;
#[path = "deploy_image/railway.rs"]
mod railway;

use std::path::PathBuf;
use std::time::Duration;

use e2e::container::{docker, image_under_test, Container};
use e2e::harness::{assert_token_absent, eventually, free_port, http_get, webhook_post};
use e2e::updates::{next_update_id, private_command};
use e2e::{inline_buttons, FakeBotApi, TOKEN};
use guide::{metric_sum, missing_worker_metrics, GuideRedis, REDIS_PASSWORD};
use railway::{railway_config, split_start};
use serde_json::Value;

/// What Railway would set as the ingress's public domain.
const DOMAIN: &str = "tgbot-ingress.up.railway.app";
const T: Duration = Duration::from_secs(30);

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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

    // 1. Redis, started with the guide's command (password, data on the
    // volume, AOF, memory limit without eviction), in the Redis image.
    let redis = GuideRedis::start().await;
    redis.assert_configured_as_the_guide_says().await;
    // Stands in for api.telegram.org; the only variable the guide does not
    // list, because Railway's services reach the real one.
    let api = FakeBotApi::start().await;

    // 3. Variables per service, exactly the guide's table (LOG_FORMAT is
    // left to the image's default), plus what Railway injects.
    let port = free_port();
    let webapp = format!("https://{DOMAIN}/app/");
    let ingress_env = env(&[
        ("TELEGRAM_BOT_TOKEN", TOKEN),
        ("REDIS_URL", &redis.url),
        ("RAILWAY_PUBLIC_DOMAIN", DOMAIN),
        ("PORT", &port.to_string()),
        ("TELEGRAM_API_URL", &api.url()),
    ]);
    let worker_env = env(&[
        ("TELEGRAM_BOT_TOKEN", TOKEN),
        ("REDIS_URL", &redis.url),
        ("TELEGRAM_WEBAPP_URL", &webapp),
        ("TELEGRAM_API_URL", &api.url()),
        // "Worker metrics": METRICS_PORT, and HOST=:: for the private
        // network's IPv6.
        ("HOST", "::"),
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
    // On Railway every replica has its own address and the same
    // METRICS_PORT; on the shared host network each needs its own port.
    let metrics_ports: Vec<u16> = (0..worker_cfg.replicas).map(|_| free_port()).collect();
    for (i, metrics_port) in metrics_ports.iter().enumerate() {
        let mut vars = worker_env.clone();
        vars.push(("METRICS_PORT".into(), metrics_port.to_string()));
        let name = format!("worker{i}");
        workers.push(Container::run(&image, &name, &program, &args, &vars).await);
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

    // "Worker metrics": every replica serves /healthz and /metrics over
    // IPv6 with every metric of the guide's table; summed over the
    // replicas, the two updates were handled once each.
    let deadline = tokio::time::Instant::now() + T;
    let scraped = loop {
        let mut text = String::new();
        for p in &metrics_ports {
            let health = http_get(&format!("http://[::1]:{p}/healthz")).await;
            assert!(matches!(&health, Ok(r) if r.status == 200), "{health:?}");
            let m = http_get(&format!("http://[::1]:{p}/metrics"))
                .await
                .expect("a worker's /metrics");
            assert_eq!(m.status, 200, "{}", m.body);
            let missing = missing_worker_metrics(&m.body);
            assert!(missing.is_empty(), "{missing:?} not in\n{}", m.body);
            text.push_str(&m.body);
        }
        let handled = metric_sum(&text, "worker_updates_handled_total");
        if handled == 2.0 || tokio::time::Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        metric_sum(&scraped, "worker_updates_handled_total"),
        2.0,
        "handled updates over the replicas:\n{scraped}"
    );
    let m = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(
        matches!(&m, Ok(r) if r.status == 200),
        "ingress /metrics: {m:?}"
    );

    // The guide's operator commands, run inside the services as `railway
    // ssh` would: through `sh`, with the service's own variables.
    let info = ingress.shell("ingress webhook info").await;
    assert!(info.ok(), "{info}");
    assert!(info.stdout.contains(&hook), "{info}");
    assert!(info.stdout.to_lowercase().contains("pending"), "{info}");

    let w0 = &workers[0];
    let stats = w0.shell("worker queue stats").await;
    assert!(stats.ok(), "{stats}");
    assert!(!stats.stdout.contains(REDIS_PASSWORD), "{stats}");
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
    assert!(
        !all.contains(REDIS_PASSWORD),
        "the Redis password (in REDIS_URL) is in the logs"
    );
    api.assert_no_violations();
}
