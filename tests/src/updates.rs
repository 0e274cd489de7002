//! Realistic Telegram updates: the builders live in the fake Bot API's
//! crate (shared with the engine's test kit) and are re-exported here; the
//! real payloads from `shared/telegram/updates/` are read from disk.

use std::path::PathBuf;

use serde_json::{json, Value};

pub use fake_bot_api::updates::*;

pub const UPDATES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/telegram/updates");

/// Names of the real update files (`*.json`), sorted.
pub fn real_update_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(UPDATES_DIR)
        .unwrap_or_else(|e| panic!("read {UPDATES_DIR}: {e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// One real update file with a fresh `update_id` (the ids in the files
/// repeat across sources and would be deduplicated).
pub fn real_update(file: &str, update_id: i64) -> Value {
    let path = PathBuf::from(UPDATES_DIR).join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    v["update_id"] = json!(update_id);
    v
}

/// Every real update, each with a fresh update id.
pub fn real_updates() -> Vec<(String, Value)> {
    real_update_files()
        .into_iter()
        .map(|f| {
            let u = real_update(&f, next_update_id());
            (f, u)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_updates_load() {
        let all = real_updates();
        assert!(all.len() >= 8);
        for (f, u) in all {
            assert!(u["update_id"].as_i64().is_some(), "{f}");
        }
    }
}
