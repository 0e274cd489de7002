//! What deploy/README.md says in prose and code blocks, read from the guide
//! itself (not restated here): the Redis start command of "Redis:
//! persistence and memory" and the metric table of "Worker metrics".

use std::time::Duration;

use e2e::container::Container;
use e2e::harness::{eventually, free_port};

use super::{env, repo_file, T};

/// The image the guide's Redis command runs in: Railway's Redis template
/// runs the official image, whose entrypoint the command names; the compose
/// file uses the same, and `scripts/image-bases` provides a stand-in.
const REDIS_IMAGE: &str = "redis:7";
/// The Redis service's `REDIS_PASSWORD`, as Railway would generate it.
pub const REDIS_PASSWORD: &str = "GuideRedisPw-5c81e0";

/// The section of the guide under the heading `## {title}`.
fn section(title: &str) -> String {
    let guide = repo_file("deploy/README.md");
    let start = guide
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("deploy/README.md has no section {title:?}"));
    let rest = &guide[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_owned()
}

/// The guide's custom start command for the Redis service: the shell
/// command inside `/bin/sh -c "..."`.
fn redis_start_command() -> String {
    let text = section("Redis: persistence and memory");
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("/bin/sh -c \"") && l.contains("redis-server"))
        .expect("the guide's Redis start command");
    line.strip_prefix("/bin/sh -c \"")
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not of the form /bin/sh -c \"...\": {line}"))
        .to_owned()
}

/// The metric names of the guide's table, e.g. `queue_depth` and
/// `worker_updates_handled_total` (labels left off).
pub fn worker_metric_names() -> Vec<String> {
    let names: Vec<String> = section("Worker metrics")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(|n| n.split('{').next().unwrap().to_owned())
        .collect();
    assert!(names.len() >= 5, "the guide's metric table: {names:?}");
    names
}

/// The metrics of the guide's table that a worker's `/metrics` text lacks.
/// A labelled family with no sample yet shows only its `# TYPE` line,
/// which names a counter without `_total`.
pub fn missing_worker_metrics(text: &str) -> Vec<String> {
    worker_metric_names()
        .into_iter()
        .filter(|name| {
            let family = name.strip_suffix("_total").unwrap_or(name);
            !text.lines().any(|l| {
                l.starts_with(&format!("{name} "))
                    || l.starts_with(&format!("{name}{{"))
                    || l.starts_with(&format!("# TYPE {family} "))
            })
        })
        .collect()
}

/// The sum of a metric's samples (every label set) in a `/metrics` text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The Redis service started with the guide's command, as Railway's Redis
/// template would run it, and its `REDIS_URL` as Railway builds it.
pub struct GuideRedis {
    /// Held for its drop, which removes the container and Redis with it.
    _container: Container,
    /// `redis://default:PASSWORD@127.0.0.1:PORT`, the form of
    /// `${{Redis.REDIS_URL}}`.
    pub url: String,
}

impl GuideRedis {
    /// Runs the guide's command with the variables Railway's Redis service
    /// has. One addition: `--port` and `--bind 127.0.0.1`, because the host
    /// network stands in for Railway's private one and 6379 may be taken.
    pub async fn start() -> Self {
        let port = free_port();
        let command = format!("{} --port {port} --bind 127.0.0.1", redis_start_command());
        let vars = env(&[
            ("REDIS_PASSWORD", REDIS_PASSWORD),
            ("RAILWAY_VOLUME_MOUNT_PATH", "/data"),
        ]);
        let container =
            Container::run(REDIS_IMAGE, "redis", "/bin/sh", &["-c", &command], &vars).await;
        let url = format!("redis://default:{REDIS_PASSWORD}@127.0.0.1:{port}");
        let up = eventually(T, || async { config_get(&url, "appendonly").await.is_ok() }).await;
        assert!(
            up,
            "the guide's Redis command never answered an authenticated PING:\n{}",
            container.logs().await
        );
        Self {
            _container: container,
            url,
        }
    }

    /// What the guide's flags promise: the password is required, the data
    /// directory is the volume, AOF is on, and a memory limit without
    /// eviction.
    pub async fn assert_configured_as_the_guide_says(&self) {
        let anonymous = self.url.replace(&format!("default:{REDIS_PASSWORD}@"), "");
        let refused = config_get(&anonymous, "appendonly").await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_lowercase().contains("auth")),
            "Redis answers without the password: {refused:?}"
        );
        for (key, want) in [
            ("dir", "/data"),
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
            ("maxmemory-policy", "noeviction"),
        ] {
            let got = config_get(&self.url, key).await.unwrap();
            assert_eq!(got, want, "CONFIG GET {key}");
        }
        let limit: u64 = config_get(&self.url, "maxmemory")
            .await
            .unwrap()
            .parse()
            .unwrap();
        assert!(limit > 0, "the guide's Redis has a memory limit");
    }
}

/// `CONFIG GET key` on `url`, bounded; the error as text.
async fn config_get(url: &str, key: &str) -> Result<String, String> {
    let query = async {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        pair.get(1).cloned().ok_or_else(|| format!("no {key}"))
    };
    tokio::time::timeout(Duration::from_secs(2), query)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}
