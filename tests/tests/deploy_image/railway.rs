//! The Railway side of the guide: each service's `deploy/*.railway.toml`,
//! read the way Railway reads it.

use std::path::PathBuf;
use std::time::Duration;

/// One service's `deploy/*.railway.toml`, the fields the guide relies on.
pub struct RailwayService {
    pub start_command: String,
    pub healthcheck_path: Option<String>,
    pub healthcheck_timeout: Duration,
    pub replicas: usize,
    pub draining: Duration,
}

pub fn railway_config(file: &str) -> RailwayService {
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

/// The start command is exec form (no shell): one program, no arguments.
pub fn split_start(cmd: &str) -> (String, Vec<String>) {
    let mut parts = cmd.split_whitespace().map(str::to_owned);
    let program = parts.next().expect("a start command");
    (program, parts.collect())
}
