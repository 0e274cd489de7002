//! `worker broadcast ...`: an operator sends one message to many users and
//! watches, pauses, resumes or cancels it. The job lives in Redis (the
//! store's [`Outbound`] side); the workers send it under the shared
//! budget, so this command only creates and steers - it needs Redis, not
//! the bot token.
//!
//! Exit codes as `queue ...`: 2 for what the operator can fix before
//! anything happens (arguments, a recipients file line, `REDIS_URL`), 1 for
//! an unknown id or Redis failing, 0 otherwise.

mod view;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use shared::outbound::{parse_broadcast, Audience, BroadcastStatus, Control, OutMessage};
use shared::queue::{Outbound, RedisStore, StoreError};
use shared::Config;

/// Telegram refuses a message longer than this (UTF-16 code units of the
/// text as shown; `--text` is sent without a parse mode, so as given).
const MAX_TEXT: usize = 4096;

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum BroadcastAction {
    /// Create a broadcast: one message to every user, or to the chats in a file.
    Send(SendArgs),
    /// Every broadcast, newest first.
    List {
        /// JSON with the raw numbers, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A broadcast's progress: a live progress bar on a terminal, plain lines otherwise.
    Status {
        id: String,
        /// JSON with the raw numbers, for scripts.
        #[arg(long)]
        json: bool,
        /// Not on a terminal: print a line every few seconds until the broadcast ends.
        #[arg(long)]
        follow: bool,
    },
    /// Stop sending until `resume`; recipients not reached yet keep their place.
    Pause {
        id: String,
        /// JSON with the raw numbers, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Continue a paused broadcast.
    Resume {
        id: String,
        /// JSON with the raw numbers, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stop for good: recipients not reached yet get nothing.
    Cancel {
        id: String,
        /// JSON with the raw numbers, for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone, PartialEq)]
#[command(group(clap::ArgGroup::new("message").required(true).args(["text", "copy"])))]
pub struct SendArgs {
    /// The text of a plain message (sendMessage, no formatting).
    #[arg(long)]
    pub text: Option<String>,
    /// Copy an existing message (copyMessage), e.g. one posted in a channel.
    #[arg(
        long,
        value_name = "CHAT_ID:MESSAGE_ID",
        value_parser = parse_copy,
        allow_hyphen_values = true
    )]
    pub copy: Option<(i64, i64)>,
    /// `all` (every user in the directory who has not blocked the bot) or
    /// a file of chat ids, one per line (blank lines and # comments ignored;
    /// a file named `all`: `./all`).
    #[arg(long, value_name = "all|FILE", default_value = "all")]
    pub to: String,
    /// JSON with the raw numbers, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Why a broadcast command stopped; the line printed after `worker broadcast: `.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastCliError {
    /// Something the operator fixes in the command line or a file.
    #[error("{0}")]
    Usage(String),
    #[error("REDIS_URL is not usable: {0}")]
    RedisUrl(redis::RedisError),
    #[error("no broadcast {id:?} in {redis} (see `worker broadcast list`)")]
    UnknownId { id: String, redis: String },
    #[error("Redis error ({redis}): {source}")]
    Store { redis: String, source: StoreError },
}

impl BroadcastCliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) | Self::RedisUrl(_) => ExitCode::from(2),
            Self::UnknownId { .. } | Self::Store { .. } => ExitCode::FAILURE,
        }
    }
}

fn usage(s: impl Into<String>) -> BroadcastCliError {
    BroadcastCliError::Usage(s.into())
}

/// `--copy`'s `<chat_id>:<message_id>` (the chat id may be negative:
/// channels and groups are).
pub fn parse_copy(s: &str) -> Result<(i64, i64), String> {
    let (chat, message) = s
        .rsplit_once(':')
        .ok_or("expected <chat_id>:<message_id>, e.g. -1001234567890:42")?;
    let chat = chat
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|c| *c != 0)
        .ok_or_else(|| format!("{chat:?} is not a chat id (an integer)"))?;
    let message = message
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|m| *m > 0)
        .ok_or_else(|| format!("{message:?} is not a message id (a positive integer)"))?;
    Ok((chat, message))
}

/// The chat ids of a recipients file: one per line, blank lines and
/// `#` comments (whole-line or after the id) ignored. `name` is how the
/// operator named the file, for `name:line` in errors.
pub fn parse_chat_list(name: &str, text: &str) -> Result<Vec<i64>, BroadcastCliError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let id = line.split('#').next().unwrap_or_default().trim();
        if id.is_empty() {
            continue;
        }
        match id.parse::<i64>() {
            Ok(c) if c != 0 => ids.push(c),
            _ => {
                return Err(usage(format!(
                    "{name}:{}: {id:?} is not a chat id (one integer per line)",
                    n + 1
                )))
            }
        }
    }
    if ids.is_empty() {
        return Err(usage(format!(
            "{name}: no chat ids in it (one per line; blank lines and # comments are ignored)"
        )));
    }
    Ok(ids)
}

/// The message `send` asks for, checked by the same rules as
/// `POST /api/broadcasts` (`shared::outbound`), with the fields named as
/// the flags that set them.
pub fn send_message(args: &SendArgs) -> Result<OutMessage, BroadcastCliError> {
    let (body, flag) = match (&args.text, args.copy) {
        (Some(text), _) => {
            if text.encode_utf16().count() > MAX_TEXT {
                return Err(usage(format!(
                    "--text: longer than Telegram's {MAX_TEXT} characters"
                )));
            }
            (
                json!({"method": "sendMessage", "params": {"text": text}, "to": "all"}),
                "--text",
            )
        }
        (None, Some((chat, message))) => (
            json!({"method": "copyMessage",
                   "params": {"from_chat_id": chat, "message_id": message}, "to": "all"}),
            "--copy",
        ),
        (None, None) => return Err(usage("give --text or --copy")),
    };
    parse_broadcast(body.to_string().as_bytes())
        .map(|(msg, _)| msg)
        .map_err(|e| usage(format!("{flag}: {}", e.reason)))
}

/// `--to`: `all`, or the file's chat ids.
pub fn audience(to: &str) -> Result<Audience, BroadcastCliError> {
    if to == "all" {
        return Ok(Audience::All);
    }
    let path = PathBuf::from(to);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| usage(format!("--to {to}: cannot read it: {e}")))?;
    parse_chat_list(to, &text).map(Audience::Chats)
}

/// Runs one `broadcast` command against `REDIS_URL`.
pub async fn run(config: Config, action: BroadcastAction) -> ExitCode {
    match execute(&config, action).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            shared::telemetry::print_line(&format!("worker broadcast: {e}"));
            e.exit_code()
        }
    }
}

/// The store and how to name it to the operator (password redacted).
pub(crate) struct Target {
    pub store: RedisStore,
    pub redis: String,
}

impl Target {
    pub fn failed(&self) -> impl Fn(StoreError) -> BroadcastCliError + '_ {
        |source| BroadcastCliError::Store {
            redis: self.redis.clone(),
            source,
        }
    }

    fn unknown(&self, id: &str) -> BroadcastCliError {
        BroadcastCliError::UnknownId {
            id: id.to_owned(),
            redis: self.redis.clone(),
        }
    }

    pub async fn status(&self, id: &str) -> Result<BroadcastStatus, BroadcastCliError> {
        self.store
            .broadcast_status(id)
            .await
            .map_err(self.failed())?
            .ok_or_else(|| self.unknown(id))
    }
}

async fn execute(config: &Config, action: BroadcastAction) -> Result<(), BroadcastCliError> {
    // The command line and the file first: a typo is reported before Redis
    // is asked anything (and even with Redis down).
    let send = match &action {
        BroadcastAction::Send(args) => Some((send_message(args)?, audience(&args.to)?)),
        _ => None,
    };
    let url = config.redis_url_or_default();
    let target = Target {
        store: RedisStore::for_config(config)
            .await
            .map_err(BroadcastCliError::RedisUrl)?,
        redis: shared::config::redact_url(url),
    };
    match action {
        BroadcastAction::Send(args) => {
            let (msg, to) = send.expect("parsed above");
            let id = target
                .store
                .broadcast_create(&msg, &to)
                .await
                .map_err(target.failed())?;
            let s = target.status(&id).await?;
            let asked = match &to {
                Audience::All => None,
                Audience::Chats(c) => Some(c.len()),
            };
            print!("{}", view::created(&target.redis, &s, asked, args.json));
        }
        BroadcastAction::List { json } => {
            let list = target
                .store
                .broadcast_list()
                .await
                .map_err(target.failed())?;
            print!("{}", view::list(&target.redis, &list, json));
        }
        BroadcastAction::Status { id, json, follow } => {
            watch::watch(&target, &id, json, follow).await?;
        }
        BroadcastAction::Pause { id, json } => control(&target, &id, Control::Pause, json).await?,
        BroadcastAction::Resume { id, json } => {
            control(&target, &id, Control::Resume, json).await?
        }
        BroadcastAction::Cancel { id, json } => {
            control(&target, &id, Control::Cancel, json).await?
        }
    }
    Ok(())
}

async fn control(
    target: &Target,
    id: &str,
    control: Control,
    json: bool,
) -> Result<(), BroadcastCliError> {
    let s = target
        .store
        .broadcast_control(id, control)
        .await
        .map_err(target.failed())?
        .ok_or_else(|| target.unknown(id))?;
    print!("{}", view::controlled(&target.redis, &s, control, json));
    Ok(())
}

#[cfg(test)]
mod tests;
