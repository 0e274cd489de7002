//! Telling Telegram where to send updates, once per configuration change.
//!
//! Many replicas start at once and Telegram accepts about one setWebhook per
//! second per bot, so replicas agree through Redis: whoever holds the lock
//! applies the configuration and stores its fingerprint; the others see the
//! fingerprint (and getWebhookInfo confirming the URL) and skip. Nothing here
//! ever deletes the webhook: a replica stopping must not unhook the others.

use std::time::Duration;

use tokio::time::Instant;

use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};
use url::Url;

use shared::queue::Store;
use shared::signals::Backoff;
use shared::telegram::{BotApi, BotApiError, User};

/// The update kinds asked for until a worker has published its bot's own
/// list ([`allowed_updates`]). Explicit, because Telegram's default leaves
/// out member and reaction updates.
pub const ALLOWED_UPDATES: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "callback_query",
    "inline_query",
    "chosen_inline_result",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "message_reaction",
];

/// Parallel webhook connections Telegram may open. The ingress answers in
/// about a millisecond, so Telegram's maximum costs nothing and lets bursts
/// through; per-chat order is kept by Telegram itself (one update per chat
/// in flight).
pub const MAX_CONNECTIONS: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("Telegram rejected the bot token (401 Unauthorized): check TELEGRAM_BOT_TOKEN")]
    Unauthorized,
    #[error("Telegram refused the webhook: {0}")]
    Refused(String),
    #[error("{what} did not succeed in time; is the Bot API (TELEGRAM_API_URL) reachable? Last error: {error}")]
    GaveUp { what: String, error: String },
}

/// Runs a Bot API call until it succeeds: 429 waits `retry_after`, network
/// trouble and 5xx back off; 401 is fatal. A 400 is returned to the caller.
pub async fn retrying<T, F, Fut>(what: &str, call: F) -> Result<T, SetupError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BotApiError>>,
{
    retrying_until(what, None, call).await
}

/// [`retrying`] that gives up at `deadline`: the service may wait out an
/// outage while it serves, but an operator command must end.
pub async fn retrying_until<T, F, Fut>(
    what: &str,
    deadline: Option<Instant>,
    mut call: F,
) -> Result<T, SetupError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BotApiError>>,
{
    let gave_up = |error: String| SetupError::GaveUp {
        what: what.to_owned(),
        error,
    };
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let attempt = match deadline {
            Some(d) => match tokio::time::timeout_at(d, call()).await {
                Ok(r) => r,
                Err(_) => return Err(gave_up("no answer in time".into())),
            },
            None => call().await,
        };
        let e = match attempt {
            Ok(v) => return Ok(v),
            Err(e) if e.is_unauthorized() => return Err(SetupError::Unauthorized),
            Err(e) => e,
        };
        let wait = if let Some(wait) = e.retry_after() {
            warn!(error = %e, wait_s = wait.as_secs(), "{what}: rate limited; waiting as Telegram asked");
            wait
        } else if e.is_transient() {
            let wait = backoff.next_delay();
            warn!(error = %e, wait_ms = wait.as_millis() as u64, "{what} failed; retrying");
            wait
        } else {
            return Err(SetupError::Refused(e.to_string()));
        };
        if deadline.is_some_and(|d| Instant::now() + wait >= d) {
            return Err(gave_up(e.to_string()));
        }
        tokio::time::sleep(wait).await;
    }
}

/// What identifies a deployment's webhook. The allowed updates are not in
/// it: they follow the workers' published list and are brought in line by
/// the watch, without counting as "another deployment's webhook".
pub fn fingerprint(url: &Url, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(url.as_str());
    h.update(b"\0");
    h.update(secret);
    h.update(b"\0");
    h.update(MAX_CONNECTIONS.to_string());
    hex::encode(h.finalize())
}

/// The update kinds to ask Telegram for: what the workers' bot handles, as
/// they published it, or [`ALLOWED_UPDATES`] before any worker did (or
/// when Redis cannot say).
pub async fn allowed_updates(store: &dyn Store) -> Vec<String> {
    store
        .get(&store.keys().allowed_updates())
        .await
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_str::<Vec<String>>(&v).ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| ALLOWED_UPDATES.iter().map(|s| s.to_string()).collect())
}

fn same_kinds(a: Option<&Vec<String>>, b: &[String]) -> bool {
    let mut a: Vec<&str> = a
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut b: Vec<&str> = b.iter().map(String::as_str).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

pub async fn identify(api: &BotApi) -> Result<User, SetupError> {
    let me = retrying("getMe", || api.get_me()).await?;
    info!(
        "Telegram bot initialized: @{}",
        me.username.as_deref().unwrap_or(&me.first_name)
    );
    Ok(me)
}

/// `deadline`: see [`retrying_until`].
pub async fn set_webhook(
    api: &BotApi,
    url: &Url,
    secret: &str,
    drop_pending: bool,
    deadline: Option<Instant>,
    allowed: &[String],
) -> Result<(), SetupError> {
    let params = json!({
        "url": url.as_str(),
        "secret_token": secret,
        "allowed_updates": allowed,
        "max_connections": MAX_CONNECTIONS,
        "drop_pending_updates": drop_pending,
    });
    retrying_until("setWebhook", deadline, || {
        api.call::<_, bool>("setWebhook", &params)
    })
    .await?;
    Ok(())
}

/// Webhook mode start-up, logged step by step.
pub async fn configure_webhook(
    api: &BotApi,
    store: &dyn Store,
    url: &Url,
    secret: &str,
    drop_pending: bool,
    holder: &str,
) -> Result<(), SetupError> {
    info!("Setting up Telegram bot via webhook...");
    info!("Webhook URL: {url}");
    let fp = fingerprint(url, secret);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let stored = store.get(&store.keys().webhook_fingerprint()).await;
        let stored = match stored {
            Ok(s) => s,
            Err(e) => {
                // Without Redis the replicas cannot agree; registering anyway
                // would be harmless once, but a fleet restarting during an
                // outage would hammer setWebhook. Wait for Redis.
                let wait = backoff.next_delay();
                warn!(error = %e, "Redis unavailable during webhook setup; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let info = retrying("getWebhookInfo", || api.get_webhook_info()).await?;
        let allowed = allowed_updates(store).await;
        if stored.as_deref() == Some(fp.as_str())
            && info.url == url.as_str()
            && same_kinds(info.allowed_updates.as_ref(), &allowed)
        {
            info!("Webhook already set: {url} (configuration unchanged)");
            break;
        }
        let lock = store
            .try_lock(&store.keys().webhook_lock(), holder, 30_000)
            .await;
        match lock {
            Ok(true) => {
                let result = set_webhook(api, url, secret, drop_pending, None, &allowed).await;
                if result.is_ok() {
                    let _ = store.set(&store.keys().webhook_fingerprint(), &fp).await;
                }
                let _ = store.release(&store.keys().webhook_lock(), holder).await;
                result?;
                info!("Webhook set: {url}");
                break;
            }
            Ok(false) => {
                // Another replica is registering right now; check its result.
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            Err(e) => {
                let wait = backoff.next_delay();
                warn!(error = %e, "Redis unavailable during webhook setup; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
    let info = retrying("getWebhookInfo", || api.get_webhook_info()).await?;
    info!(
        "Webhook info: {}, pending updates: {}",
        if info.url.is_empty() {
            "(none)"
        } else {
            &info.url
        },
        info.pending_update_count
    );
    if let Some(msg) = &info.last_error_message {
        warn!(
            last_error_date = info.last_error_date,
            "Webhook last error reported by Telegram: {msg}"
        );
    }
    info!("Telegram bot configured via webhook");
    Ok(())
}

/// Start-up registers the webhook once; afterwards anything else holding
/// the token can change it behind our back - a developer running the bot
/// in polling mode with the production token (polling deletes the
/// webhook), a second deployment, a stray `deleteWebhook`. Updates would
/// then pile up at Telegram until the next deploy. So every `every` (with
/// jitter, so replicas spread out) the webhook is checked and, when it is
/// not ours any more, put back by one replica (the registration lock) -
/// unless this deployment's own newer configuration replaced it.
/// Also logs each new delivery error Telegram reports. Returns only on
/// cancel or a rejected token.
pub async fn watch_webhook(
    api: &BotApi,
    store: &dyn Store,
    url: &Url,
    secret: &str,
    every: Duration,
    holder: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), SetupError> {
    let fp = fingerprint(url, secret);
    let mut last_error_date: Option<i64> = None;
    let mut first = true;
    loop {
        let jitter = every.mul_f64(rand::random_range(0.0..0.2));
        tokio::select! {
            _ = tokio::time::sleep(every + jitter) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        let info = match api.get_webhook_info().await {
            Ok(i) => i,
            Err(e) if e.is_unauthorized() => return Err(SetupError::Unauthorized),
            Err(e) => {
                debug!(error = %e, "webhook check: getWebhookInfo failed; next time");
                continue;
            }
        };
        // Start-up logged the error Telegram had then; only newer ones here.
        if let (Some(date), Some(msg)) = (info.last_error_date, &info.last_error_message) {
            if !first && last_error_date != Some(date) {
                warn!(
                    last_error_date = date,
                    "Webhook last error reported by Telegram: {msg}"
                );
            }
            last_error_date = Some(date);
        }
        first = false;
        let allowed = allowed_updates(store).await;
        let ours = info.url == url.as_str();
        if ours && same_kinds(info.allowed_updates.as_ref(), &allowed) {
            continue;
        }
        // A newer configuration of this deployment (a redeploy with another
        // URL, whose old replicas are still draining) registered its own
        // webhook and fingerprint: that one wins, no tug of war. Only a
        // change made outside this deployment's Redis is undone.
        match store.get(&store.keys().webhook_fingerprint()).await {
            Ok(Some(stored)) if stored != fp => {
                debug!("webhook check: a newer configuration registered the webhook; leaving it");
                continue;
            }
            Ok(_) => {}
            Err(_) => continue,
        }
        match store
            .try_lock(&store.keys().webhook_lock(), holder, 30_000)
            .await
        {
            Ok(true) => {}
            // Another replica is on it, or Redis is away: next time.
            _ => continue,
        }
        // Under the lock, look again: another replica may just have fixed it.
        let result = async {
            let now = retrying("getWebhookInfo", || api.get_webhook_info()).await?;
            if now.url == url.as_str() && same_kinds(now.allowed_updates.as_ref(), &allowed) {
                return Ok(());
            }
            if now.url == url.as_str() {
                info!(
                    allowed_updates = %allowed.join(","),
                    "the workers' bot handles other update kinds now; updating the webhook"
                );
            } else {
                warn!(
                    "the webhook was changed or deleted outside this deployment (Telegram had: {}); setting it again",
                    if now.url.is_empty() { "none" } else { &now.url }
                );
            }
            set_webhook(api, url, secret, false, None, &allowed).await?;
            let _ = store.set(&store.keys().webhook_fingerprint(), &fp).await;
            info!("Webhook set: {url}");
            Ok(())
        }
        .await;
        let _ = store.release(&store.keys().webhook_lock(), holder).await;
        match result {
            Err(SetupError::Unauthorized) => return Err(SetupError::Unauthorized),
            Err(e) => warn!(error = %e, "webhook check: could not set the webhook again"),
            Ok(()) => {}
        }
    }
}
