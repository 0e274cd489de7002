//! `worker outbox send`: one message to one chat through the outbox - the
//! same door as `POST /api/outbox` and `ctx.send_later`, for an operator.
//! Durable once the command returns; a worker sends it through the shared
//! budget (after `--not-before`, if given).

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use shared::outbound::parse_outbox;
use shared::queue::{Outbound, RedisStore};
use shared::Config;

use super::broadcast::parse_copy;

#[derive(Args, Debug, Clone, PartialEq)]
#[command(group(clap::ArgGroup::new("message").required(true).args(["text", "copy"])))]
pub struct OutboxArgs {
    /// The chat to send to.
    #[arg(long, allow_hyphen_values = true)]
    pub chat: i64,
    /// The text of a plain message (sendMessage, no formatting).
    #[arg(long)]
    pub text: Option<String>,
    /// Copy an existing message (copyMessage).
    #[arg(long, value_name = "CHAT_ID:MESSAGE_ID", value_parser = parse_copy, allow_hyphen_values = true)]
    pub copy: Option<(i64, i64)>,
    /// Not before this time (unix seconds).
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub not_before: Option<i64>,
    /// A repeat with the same key stores nothing and prints the first id.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// The request body the HTTP API would take for these arguments.
pub fn body(args: &OutboxArgs) -> serde_json::Value {
    let (method, mut params) = match (&args.text, args.copy) {
        (Some(text), _) => ("sendMessage", json!({ "text": text })),
        (None, Some((chat, message))) => (
            "copyMessage",
            json!({ "from_chat_id": chat, "message_id": message }),
        ),
        (None, None) => ("sendMessage", json!({})),
    };
    params["chat_id"] = json!(args.chat);
    let mut body = json!({ "method": method, "params": params });
    if let Some(t) = args.not_before {
        body["not_before"] = json!(t);
    }
    body
}

pub async fn send(config: Config, args: OutboxArgs) -> ExitCode {
    let (msg, not_before) = match parse_outbox(body(&args).to_string().as_bytes()) {
        Ok(parsed) => parsed,
        Err(e) => {
            shared::telemetry::print_line(&format!("worker outbox: {e}"));
            return ExitCode::from(2);
        }
    };
    let url = config.redis_url_or_default();
    let redis = shared::config::redact_url(url);
    let store = match RedisStore::for_config(&config).await {
        Ok(s) => s,
        Err(e) => {
            shared::telemetry::print_line(&format!("worker outbox: REDIS_URL is not usable: {e}"));
            return ExitCode::from(2);
        }
    };
    let due = not_before.map_or_else(shared::envelope::now_ms, |s| s.saturating_mul(1000));
    match store
        .outbox_put(&msg, due, args.idempotency_key.as_deref())
        .await
    {
        Ok((id, stored)) => {
            let note = if stored {
                "stored"
            } else {
                "already stored (same idempotency key)"
            };
            shared::telemetry::print_line(&format!("{id} {note} in {redis}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            shared::telemetry::print_line(&format!("worker outbox: Redis error ({redis}): {e}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arguments_make_the_http_apis_body() {
        let args = OutboxArgs {
            chat: -100,
            text: None,
            copy: Some((-200, 5)),
            not_before: Some(7),
            idempotency_key: None,
        };
        let (msg, nb) = parse_outbox(body(&args).to_string().as_bytes()).unwrap();
        assert_eq!(msg.method, "copyMessage");
        assert_eq!(msg.params["chat_id"], -100);
        assert_eq!(msg.params["from_chat_id"], -200);
        assert_eq!(nb, Some(7));
    }
}
