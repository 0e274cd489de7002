//! Operator commands: `ingress webhook info|set|delete`.

use std::fmt::Write;

use shared::telegram::{BotApi, WebhookInfo};
use shared::Config;

use crate::registration::{self, SetupError};

/// How long `webhook set` retries a failing Bot API (a 429 from Telegram's
/// one-setWebhook-a-second limit, a blip) before it gives up with the error.
pub const SET_BUDGET: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("the bot is disabled (DISABLE_TELEGRAM_BOT) and TELEGRAM_BOT_TOKEN is not set")]
    NoToken,
    #[error("no webhook URL configured: set TELEGRAM_WEBHOOK_URL or RAILWAY_PUBLIC_DOMAIN")]
    NoUrl,
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("{0}")]
    Api(#[from] shared::telegram::BotApiError),
}

fn api(config: &Config) -> Result<BotApi, CliError> {
    let token = config.token.as_ref().ok_or(CliError::NoToken)?;
    Ok(BotApi::new(&config.api_url, token))
}

fn date(ts: i64) -> String {
    let secs_ago = shared::envelope::now_ms() / 1000 - ts;
    format!("unix {ts} ({secs_ago} s ago)")
}

pub fn render_info(info: &WebhookInfo) -> String {
    let mut s = String::new();
    let url = if info.url.is_empty() {
        "(none: polling or not set)"
    } else {
        &info.url
    };
    let _ = writeln!(s, "URL:                  {url}");
    let _ = writeln!(s, "Pending updates:      {}", info.pending_update_count);
    let _ = writeln!(
        s,
        "Max connections:      {}",
        info.max_connections
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-".into())
    );
    let allowed = info
        .allowed_updates
        .as_ref()
        .map(|a| a.join(", "))
        .unwrap_or_else(|| "(Telegram's default)".into());
    let _ = writeln!(s, "Allowed updates:      {allowed}");
    if let Some(ip) = &info.ip_address {
        let _ = writeln!(s, "IP address:           {ip}");
    }
    let _ = writeln!(s, "Custom certificate:   {}", info.has_custom_certificate);
    match (&info.last_error_message, info.last_error_date) {
        (Some(m), Some(d)) => {
            let _ = writeln!(s, "Last error:           {m} (at {})", date(d));
        }
        (Some(m), None) => {
            let _ = writeln!(s, "Last error:           {m}");
        }
        _ => {
            let _ = writeln!(s, "Last error:           none");
        }
    }
    if let Some(d) = info.last_synchronization_error_date {
        let _ = writeln!(s, "Last sync error:      at {}", date(d));
    }
    s
}

impl CliError {
    /// A configuration problem (exit code 2), not a runtime failure.
    pub fn is_configuration(&self) -> bool {
        matches!(self, CliError::NoUrl)
    }
}

pub async fn info(config: &Config, json: bool) -> Result<String, CliError> {
    let info = api(config)?.get_webhook_info().await?;
    Ok(if json {
        serde_json::to_string_pretty(&info).unwrap_or_default() + "\n"
    } else {
        render_info(&info)
    })
}

pub async fn set(config: &Config, drop_pending: bool) -> Result<String, CliError> {
    let url = config.webhook_url.as_ref().ok_or(CliError::NoUrl)?;
    let api = api(config)?;
    let deadline = Some(tokio::time::Instant::now() + SET_BUDGET);
    let allowed: Vec<String> = registration::ALLOWED_UPDATES
        .iter()
        .map(|s| s.to_string())
        .collect();
    registration::set_webhook(
        &api,
        url,
        &config.webhook_secret,
        drop_pending,
        deadline,
        &allowed,
    )
    .await?;
    Ok(format!("Webhook set: {url}\n"))
}

pub async fn delete(config: &Config, drop_pending: bool) -> Result<String, CliError> {
    api(config)?.delete_webhook(drop_pending).await?;
    Ok("Webhook deleted\n".to_string())
}
