//! Publishing what the bot is made of: the command menu (`setMyCommands`,
//! per language) from the registry, once per change rather than once per
//! replica, and the update kinds it takes (for `allowed_updates`).
//!
//! The worker publishes it, not the ingress: the ingress is generic and
//! never rebuilt when commands change, and the worker runs in webhook and
//! polling mode alike. Replicas agree through Redis as they do for the
//! webhook: whoever takes the lock publishes and stores the fingerprint of
//! what it published; the others see the fingerprint and skip.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use shared::queue::Store;
use shared::signals::Backoff;
use shared::telegram::BotApi;

use crate::commands::{menu, CommandInfo};

/// Publishes the update kinds the bot takes, for the ingress to ask
/// Telegram for (it brings the webhook in line at its next check; a poller
/// reads it on its next poll). A few tries: until then the ingress asks
/// for its broad default list, which loses nothing the bot handles today.
pub async fn publish_allowed_updates(store: &dyn Store, kinds: &[String]) {
    let value = serde_json::to_string(kinds).unwrap_or_default();
    let key = store.keys().allowed_updates();
    if publish_value(store, &key, &value).await {
        info!(allowed_updates = %kinds.join(","), "update kinds published for the ingress");
    }
}

/// Publishes the kinds that take the fast lane (the defaults, the bot's
/// own urgent kinds, `WORKER_DEADLINES`'s), for the ingress to route by.
/// Until it reads them, it routes by the defaults.
pub async fn publish_urgent_kinds(store: &dyn Store, kinds: &[String]) {
    let key = store.keys().urgent_kinds();
    if publish_value(store, &key, &kinds.join(",")).await {
        info!(urgent = %kinds.join(","), "urgent update kinds published for the ingress");
    }
}

/// Sets `key` to `value` unless it holds it already; a few tries. True
/// when this call changed it.
async fn publish_value(store: &dyn Store, key: &str, value: &str) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    for _ in 0..6 {
        match store.get(key).await {
            Ok(Some(v)) if v == value => return false,
            Ok(_) => {
                if store.set(key, value).await.is_ok() {
                    return true;
                }
            }
            Err(e) => debug!(error = %e, "cannot publish {key} yet"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
    false
}

pub fn fingerprint(calls: &[Value]) -> String {
    let mut h = Sha256::new();
    for c in calls {
        h.update(c.to_string());
        h.update(b"\0");
    }
    hex::encode(h.finalize())
}

/// Publishes the menu unless the stored fingerprint says it is current.
/// Gives up quietly after a few tries: a stale menu is cosmetic, and the
/// next replica start tries again.
pub async fn publish(api: &BotApi, store: &dyn Store, registry: &[CommandInfo], holder: &str) {
    if registry.is_empty() {
        return;
    }
    let calls = menu(registry);
    let fp = fingerprint(&calls);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    for _ in 0..6 {
        match store.get(&store.keys().menu_fingerprint()).await {
            Ok(Some(stored)) if stored == fp => {
                debug!("command menu unchanged");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "cannot read the menu fingerprint yet");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        match store
            .try_lock(&store.keys().menu_lock(), holder, 30_000)
            .await
        {
            Ok(true) => {}
            _ => {
                // Another replica is publishing: look again shortly.
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        let mut ok = true;
        for call in &calls {
            if let Err(e) = api.call::<_, bool>("setMyCommands", call).await {
                warn!(error = %e, "setMyCommands failed; the menu stays as it was");
                ok = false;
                break;
            }
        }
        if ok {
            let _ = store.set(&store.keys().menu_fingerprint(), &fp).await;
            info!(
                commands = registry.len(),
                languages = calls.len() - 1,
                "command menu published"
            );
        }
        let _ = store.release(&store.keys().menu_lock(), holder).await;
        if ok {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
