//! The bot's commands. Handlers decide what to say; the consumer decides
//! when an update counts as done. A handler returns `Ok` when the update
//! reached its end (answered, deliberately ignored, or refused by Telegram
//! with a final 400/403) and `Err` only for failures worth a redelivery.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;

use serde_json::{json, Value};
use tracing::{debug, info, warn};
use url::Url;

use shared::envelope::{now_ms, Entry};
use shared::store::{Store, StoreError, UserTouch};

use crate::metrics::Metrics;
use crate::sender::{SendError, Sender};

use crate::texts::{self, Lang};
use crate::update::{parse_command, Message, Update};

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// How an update ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Replied,
    /// Counted, nothing to answer (plain text, edits, other bots' commands).
    Counted,
    /// Telegram refused the reply for good (blocked, chat not found).
    Refused,
    /// The reply may have gone out but no verdict came back, so the user
    /// may or may not have it. Not resent (see `SendError::Unknown`).
    Unknown,
}

#[derive(Debug)]
pub struct Handled {
    pub outcome: Outcome,
    pub user: Option<UserTouch>,
}

/// What the consumer runs for each entry. A trait so the consumer's
/// delivery guarantees can be tested with handlers that fail or panic.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, entry: &'a Entry) -> BoxFuture<'a, Result<Handled, HandlerError>>;
}

pub struct Bot {
    /// The bot's username (from getMe), for `/cmd@bot` addressing.
    pub username: String,
    pub webapp_url: Option<Url>,
    pub sender: Sender,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Start,
    App,
    Stats,
    Help,
}

impl Handler for Bot {
    fn handle<'a>(&'a self, entry: &'a Entry) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(self.handle_update(entry))
    }
}

impl Bot {
    async fn handle_update(&self, entry: &Entry) -> Result<Handled, HandlerError> {
        let update = match Update::parse(&entry.update) {
            Ok(u) => u,
            Err(e) => {
                // Warn: a user may be left unanswered. The error names a
                // position and at most a value from the update, never a
                // secret of ours.
                warn!(error = %e, bytes = entry.update.len(), "update not understood; counted only, not answered");
                return Ok(Handled {
                    outcome: Outcome::Counted,
                    user: None,
                });
            }
        };
        let mut user = update.sender().filter(|u| !u.is_bot).map(|u| UserTouch {
            id: u.id,
            first_name: u.first_name.clone(),
            username: u.username.clone().unwrap_or_default(),
            language_code: u.language_code.clone().unwrap_or_default(),
            is_message: update.message.is_some(),
            start_payload: String::new(),
        });
        let Some(msg) = &update.message else {
            return Ok(Handled {
                outcome: Outcome::Counted,
                user,
            });
        };
        let Some(cmd) = msg.text.as_deref().and_then(parse_command) else {
            return Ok(Handled {
                outcome: Outcome::Counted,
                user,
            });
        };
        if let Some(to) = cmd.addressee {
            if !to.eq_ignore_ascii_case(&self.username) {
                debug!(command = %cmd.name, addressee = to, "command for another bot; ignored");
                return Ok(Handled {
                    outcome: Outcome::Counted,
                    user,
                });
            }
        }
        let known = match cmd.name.as_str() {
            "start" => Some(Known::Start),
            "app" => Some(Known::App),
            "stats" => Some(Known::Stats),
            "help" => Some(Known::Help),
            _ => None,
        };
        // In groups, bare unknown commands belong to other bots or to
        // nobody; answering them would spam the group.
        let private = msg.chat.is_private();
        let command = match known {
            Some(k) => k,
            None if private || cmd.addressee.is_some() => Known::Help,
            None => {
                return Ok(Handled {
                    outcome: Outcome::Counted,
                    user,
                })
            }
        };
        let lang = Lang::from_code(msg.from.as_ref().and_then(|u| u.language_code.as_deref()));
        let started = Instant::now();
        let reply = match command {
            Known::Start => {
                if let Some(u) = user.as_mut() {
                    u.start_payload = cmd.args.chars().take(64).collect();
                }
                // `/start app` comes from the group button that sends people
                // to the private chat: open the app right away.
                if cmd.args == "app" {
                    self.app_reply(msg, lang)
                } else {
                    self.start_reply(msg, lang).await?
                }
            }
            Known::App => self.app_reply(msg, lang),
            Known::Stats => self.stats_reply(msg, lang).await?,
            Known::Help => self.text_reply(msg, texts::help(lang)),
        };
        let elapsed_ms = || started.elapsed().as_millis() as u64;
        // Info, not debug: a command is what a user sees, so it is what an
        // operator looks for in the logs (updates that are only counted
        // stay at debug). "answered" only when the reply went out.
        let outcome = match self.sender.send("sendMessage", reply, &self.metrics).await {
            Ok(_) => {
                info!(command = %cmd.name, chat_id = msg.chat.id, elapsed_ms = elapsed_ms(), "command answered");
                Outcome::Replied
            }
            Err(SendError::Final(e)) => {
                info!(command = %cmd.name, chat_id = msg.chat.id, reason = %e, "reply refused by Telegram; update ends here");
                Outcome::Refused
            }
            Err(SendError::Unknown(e)) => {
                warn!(command = %cmd.name, chat_id = msg.chat.id, elapsed_ms = elapsed_ms(), reason = %e, "command reply outcome unknown (the user may have it); update ends here, not resent");
                Outcome::Unknown
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Handled { outcome, user })
    }

    /// The common reply frame: in groups every reply quotes its command,
    /// and replies stay in the forum topic they were asked in.
    fn text_reply(&self, msg: &Message, text: String) -> Value {
        let mut p = json!({ "chat_id": msg.chat.id, "text": text });
        if !msg.chat.is_private() {
            p["reply_parameters"] = json!({
                "message_id": msg.message_id,
                "allow_sending_without_reply": true,
            });
        }
        if msg.is_topic_message {
            if let Some(t) = msg.message_thread_id {
                p["message_thread_id"] = json!(t);
            }
        }
        p
    }

    async fn start_reply(&self, msg: &Message, lang: Lang) -> Result<Value, HandlerError> {
        let Some(from) = &msg.from else {
            return Ok(self.text_reply(msg, texts::help(lang)));
        };
        let known = self.store.user(from.id).await?;
        let text = match known {
            Some(u) => texts::welcome_back(lang, &from.first_name, u.first_seen),
            None => texts::greeting(lang, &from.first_name),
        };
        Ok(self.text_reply(msg, text))
    }

    fn app_reply(&self, msg: &Message, lang: Lang) -> Value {
        let Some(url) = &self.webapp_url else {
            return self.text_reply(msg, texts::app_not_configured(lang).to_string());
        };
        if msg.chat.is_private() {
            let mut p = self.text_reply(msg, texts::app_prompt(lang).to_string());
            p["reply_markup"] = json!({
                "inline_keyboard": [[{ "text": texts::app_button(lang), "web_app": { "url": url.as_str() } }]]
            });
            p
        } else {
            // Telegram rejects web_app buttons outside private chats
            // (BUTTON_TYPE_INVALID): send people to the private chat instead.
            let mut p = self.text_reply(msg, texts::app_in_group(lang).to_string());
            p["reply_markup"] = json!({
                "inline_keyboard": [[{
                    "text": texts::app_private_button(lang),
                    "url": format!("https://t.me/{}?start=app", self.username),
                }]]
            });
            p
        }
    }

    async fn stats_reply(&self, msg: &Message, lang: Lang) -> Result<Value, HandlerError> {
        let bot = self.store.bot_stats(now_ms()).await?;
        let me = match &msg.from {
            Some(u) => self.store.user(u.id).await?,
            None => None,
        };
        Ok(self.text_reply(msg, texts::stats(lang, &bot, me.as_ref())))
    }
}
