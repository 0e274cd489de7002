//! From a stream entry to a bot's handler and back: parse the update (raw
//! always, typed when the model can), route it, run the handler, resolve
//! its reply into Bot API calls and send them.
//!
//! The consumer only sees the [`Handler`] trait, so its delivery guarantees
//! are tested with handlers that fail, hang or panic.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use teloxide_core::types::{Update, UpdateKind};
use tracing::{debug, warn};

use shared::envelope::Entry;
use shared::queue::{UserTouch, Write};

use crate::bot::{HandlerFn, Handlers};
use crate::commands::{self, Route};
use crate::ctx::{Ctx, Engine, Parts, UserRef};
use crate::reply::{Call, HandlerError, Reply, Target};

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

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Replied => "replied",
            Outcome::Counted => "counted",
            Outcome::Refused => "refused",
            Outcome::Unknown => "unknown",
        }
    }
}

/// What a handler's run produced, for the consumer to complete: the
/// writes and directory entry applied with the "handled" mark, then the
/// reply sent.
#[derive(Debug, Default)]
pub struct Handled {
    /// The directory entry for the sender, written with the "handled" mark.
    pub user: Option<UserTouch>,
    /// The handler's exactly-once writes.
    pub writes: Vec<Write>,
    /// The reply's Bot API calls, in order; empty: nothing to say.
    pub calls: Vec<Call>,
    /// The command answered, for the log line.
    pub command: Option<String>,
    pub chat_id: Option<i64>,
}

/// What the consumer runs for each entry.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, entry: &'a Entry) -> BoxFuture<'a, Result<Handled, HandlerError>>;
}

/// A bot's handlers bound to a running engine.
pub(crate) struct Router<S> {
    pub state: Arc<S>,
    pub handlers: Handlers<S>,
    pub engine: Arc<Engine>,
}

impl<S: Send + Sync + 'static> Handler for Router<S> {
    fn handle<'a>(&'a self, entry: &'a Entry) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(self.handle_update(entry))
    }
}

/// The handler picked for an update, with what it needs.
enum Picked<S> {
    Message(
        HandlerFn<S, teloxide_core::types::Message>,
        Box<teloxide_core::types::Message>,
    ),
    Callback(
        HandlerFn<S, teloxide_core::types::CallbackQuery>,
        Box<teloxide_core::types::CallbackQuery>,
    ),
    Plain(HandlerFn<S, ()>),
    BuiltinHelp,
}

impl<S: Send + Sync + 'static> Router<S> {
    async fn handle_update(&self, entry: &Entry) -> Result<Handled, HandlerError> {
        // Lossy: one bad byte in a name must not cost the user an answer.
        let text = String::from_utf8_lossy(&entry.update);
        let raw: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "update is not JSON; counted only");
                return Ok(counted(None));
            }
        };
        // From the text, not from `raw`: teloxide-core's update model reads
        // a `serde_json::Value` as an unknown kind.
        let typed = match serde_json::from_str::<Update>(&text) {
            Ok(u) if matches!(u.kind, UpdateKind::Error(_)) => {
                // teloxide-core turns a payload it cannot read (a new kind,
                // or a field it models differently) into this variant.
                warn!(error = "the payload does not match the typed model", kind = %first_key(&text),
                    "the typed model cannot parse this update; delivered as raw");
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                warn!(error = %e, "the typed model cannot parse this update; delivered as raw");
                None
            }
        };
        let kind = raw
            .as_object()
            .and_then(|o| o.keys().find(|k| k.as_str() != "update_id").cloned())
            .unwrap_or_default();
        let from = UserRef::of(&raw);
        let target = Target::of(&raw);
        let mut user = from.as_ref().filter(|u| !u.is_bot).map(|u| UserTouch {
            id: u.id,
            first_name: u.first_name.clone(),
            username: u.username.clone().unwrap_or_default(),
            language_code: u.language_code.clone().unwrap_or_default(),
            is_message: kind == "message",
            start_payload: String::new(),
        });

        let mut args = String::new();
        let mut command = None;
        let picked = match (&typed, kind.as_str()) {
            (Some(u), "message") => {
                let UpdateKind::Message(msg) = &u.kind else {
                    return Ok(counted(user));
                };
                let parsed = msg.text().and_then(commands::parse);
                match parsed {
                    Some(cmd) => {
                        let registry = &self.engine.commands;
                        let route = commands::route(
                            registry,
                            &cmd,
                            &self.engine.username,
                            target.is_private(),
                        );
                        args = cmd.args.to_owned();
                        command = Some(cmd.name.clone());
                        match route {
                            Route::Ignore => {
                                debug!(command = %cmd.name, "command not for this bot; counted");
                                return Ok(counted(user));
                            }
                            Route::Command(i) => Picked::Message(
                                self.handlers.commands[i].1.clone(),
                                Box::new(msg.clone()),
                            ),
                            Route::Help => match self.help_handler() {
                                Some(h) => Picked::Message(h, Box::new(msg.clone())),
                                None => Picked::BuiltinHelp,
                            },
                        }
                    }
                    None => match &self.handlers.on_message {
                        Some(h) => Picked::Message(h.clone(), Box::new(msg.clone())),
                        None => return Ok(counted(user)),
                    },
                }
            }
            (Some(u), "callback_query") => match (&u.kind, &self.handlers.on_callback_query) {
                (UpdateKind::CallbackQuery(q), Some(h)) => {
                    Picked::Callback(h.clone(), Box::new(q.clone()))
                }
                _ => return Ok(counted(user)),
            },
            (None, _) => match &self.handlers.on_unparsed {
                Some(h) => Picked::Plain(h.clone()),
                None => return Ok(counted(user)),
            },
            (Some(_), k) => match self.handlers.on_kind.iter().find(|(name, _)| name == k) {
                Some((_, h)) => Picked::Plain(h.clone()),
                None => return Ok(counted(user)),
            },
        };
        if command.as_deref() == Some("start") {
            if let Some(u) = user.as_mut() {
                // Deep-link payloads (`t.me/bot?start=ref_42`) are how bots
                // learn where a user came from: kept with the user.
                u.start_payload = args.chars().take(64).collect();
            }
        }

        let ctx = Ctx::new(
            self.state.clone(),
            self.engine.clone(),
            Parts {
                raw,
                typed,
                kind,
                args,
                from,
                private: target.is_private(),
                chat_id: target.chat_id(),
            },
        );
        let reply = match picked {
            Picked::Message(h, m) => h(ctx.clone(), *m).await?,
            Picked::Callback(h, q) => h(ctx.clone(), *q).await?,
            Picked::Plain(h) => h(ctx.clone(), ()).await?,
            Picked::BuiltinHelp => Reply::text(ctx.help_lines()),
        };
        Ok(Handled {
            user,
            writes: ctx.take_writes(),
            calls: target.resolve(reply, true)?,
            command,
            chat_id: target.chat_id(),
        })
    }

    fn help_handler(&self) -> Option<HandlerFn<S, teloxide_core::types::Message>> {
        self.handlers
            .commands
            .iter()
            .find(|(c, _)| c.name == "help")
            .map(|(_, h)| h.clone())
    }
}

/// The update's kind for a log line, without parsing the JSON again.
fn first_key(text: &str) -> String {
    serde_json::from_str::<serde_json::Map<String, Value>>(text)
        .ok()
        .and_then(|m| m.keys().find(|k| k.as_str() != "update_id").cloned())
        .unwrap_or_default()
}

fn counted(user: Option<UserTouch>) -> Handled {
    Handled {
        user,
        ..Handled::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real payloads from `shared/telegram/updates/` parse into the typed
    /// model with the kind they carry.
    #[test]
    fn real_updates_parse_typed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/telegram/updates");
        let rd = std::fs::read_dir(dir).expect("shared/telegram/updates beside the checkout");
        let mut n = 0;
        for f in rd.flatten() {
            if f.path().extension().is_some_and(|e| e == "json") {
                let body = std::fs::read(f.path()).unwrap();
                let u: Update =
                    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{:?}: {e}", f.path()));
                assert!(
                    !matches!(u.kind, UpdateKind::Error(_)),
                    "{:?}: {:?}",
                    f.path(),
                    u.kind
                );
                n += 1;
            }
        }
        assert!(n >= 5, "only {n} sample updates");
    }
}
