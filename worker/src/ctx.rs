//! What a handler gets besides its update: the bot's state, the update in
//! both shapes (typed and raw), who sent it, the user directory and the
//! Bot API client.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use teloxide_core::types::Update;

use shared::envelope::now_ms;
use shared::outbound::{Audience, OutMessage};
use shared::queue::{Store, Write};
use shared::stats::{BotStats, UserRecord};
use shared::telegram::BotApi;

use crate::commands::{self, CommandInfo};
use crate::reply::HandlerError;

/// What the engine knows once it runs: shared by every update's context.
pub(crate) struct Engine {
    pub username: String,
    pub api: BotApi,
    /// Handlers read the directory and their own hashes, and hand
    /// messages to the outbox; they never touch the queue itself.
    pub store: Arc<dyn Store>,
    pub commands: Vec<CommandInfo>,
}

/// The person behind an update, read from the raw JSON so it is there even
/// when the typed model could not parse the update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub id: i64,
    pub is_bot: bool,
    pub first_name: String,
    pub username: Option<String>,
    pub language_code: Option<String>,
}

impl UserRef {
    /// The `from` (or `user`) of the update's payload; channel posts have none.
    pub(crate) fn of(raw: &Value) -> Option<Self> {
        let payload = raw
            .as_object()?
            .iter()
            .find(|(k, _)| k.as_str() != "update_id")?
            .1;
        let u = payload.get("from").or_else(|| payload.get("user"))?;
        let s = |k: &str| u.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            id: u.get("id")?.as_i64()?,
            is_bot: u.get("is_bot").and_then(Value::as_bool).unwrap_or(false),
            first_name: s("first_name").unwrap_or_default(),
            username: s("username"),
            language_code: s("language_code"),
        })
    }
}

/// A handler's view of one update. Cheap to clone.
pub struct Ctx<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    state: Arc<S>,
    engine: Arc<Engine>,
    raw: Value,
    typed: Option<Update>,
    kind: String,
    args: String,
    from: Option<UserRef>,
    private: bool,
    chat_id: Option<i64>,
    writes: Mutex<Vec<Write>>,
    /// Outbox messages handed over so far (numbers their idempotency keys).
    sent_later: std::sync::atomic::AtomicU32,
}

impl<S> Clone for Ctx<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct Parts {
    pub raw: Value,
    pub typed: Option<Update>,
    pub kind: String,
    pub args: String,
    pub from: Option<UserRef>,
    pub private: bool,
    pub chat_id: Option<i64>,
}

impl<S> Ctx<S> {
    pub(crate) fn new(state: Arc<S>, engine: Arc<Engine>, p: Parts) -> Self {
        Self {
            inner: Arc::new(Inner {
                state,
                engine,
                raw: p.raw,
                typed: p.typed,
                kind: p.kind,
                args: p.args,
                from: p.from,
                private: p.private,
                chat_id: p.chat_id,
                writes: Mutex::new(Vec::new()),
                sent_later: std::sync::atomic::AtomicU32::new(0),
            }),
        }
    }

    /// The state given to `Bot::new`.
    pub fn state(&self) -> &S {
        &self.inner.state
    }

    /// The update as teloxide-core models it; `None` when the model could
    /// not parse it (Telegram adds fields and kinds faster than any crate).
    pub fn update(&self) -> Option<&Update> {
        self.inner.typed.as_ref()
    }

    /// The update exactly as Telegram sent it.
    pub fn raw(&self) -> &Value {
        &self.inner.raw
    }

    pub fn update_id(&self) -> i64 {
        self.inner
            .raw
            .get("update_id")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    /// The update's kind: `message`, `callback_query`, ...
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// For a command, what follows it (`/start ref_42` -> `ref_42`).
    pub fn args(&self) -> &str {
        &self.inner.args
    }

    pub fn from(&self) -> Option<&UserRef> {
        self.inner.from.as_ref()
    }

    /// The sender's client language (`ru`, `en-GB`), if any.
    pub fn language_code(&self) -> Option<&str> {
        self.inner.from.as_ref()?.language_code.as_deref()
    }

    /// The chat the update belongs to, if any.
    pub fn chat_id(&self) -> Option<i64> {
        self.inner.chat_id
    }

    pub fn is_private(&self) -> bool {
        self.inner.private
    }

    /// The bot's own username (from getMe), without `@`.
    pub fn bot_username(&self) -> &str {
        &self.inner.engine.username
    }

    /// Direct Bot API access for calls that are not the reply (getChat...).
    /// The reply itself goes through [`crate::Reply`]: budget, 429, retries.
    pub fn api(&self) -> &BotApi {
        &self.inner.engine.api
    }

    /// The registered commands, in registration order.
    pub fn commands(&self) -> &[CommandInfo] {
        &self.inner.engine.commands
    }

    /// `/name - description` lines in the sender's language.
    pub fn help_lines(&self) -> String {
        commands::help_lines(&self.inner.engine.commands, self.language_code())
    }

    /// A user as the directory knows them (before this update).
    pub async fn user(&self, user_id: i64) -> Result<Option<UserRecord>, HandlerError> {
        Ok(self.inner.engine.store.user(user_id).await?)
    }

    /// The directory's and the queue's numbers.
    pub async fn stats(&self) -> Result<BotStats, HandlerError> {
        Ok(self.inner.engine.store.bot_stats(now_ms()).await?)
    }

    /// Adds `by` to a counter in the bot's hash `hash`, exactly once: the
    /// write is applied with the update's completion (before its reply is
    /// sent), and never again if the update is delivered again.
    pub fn incr(&self, hash: &str, field: impl ToString, by: i64) {
        self.write(Write::Incr {
            hash: hash.to_owned(),
            field: field.to_string(),
            by,
        });
    }

    /// Sets a field of the bot's hash `hash`, with the update's completion.
    pub fn set(&self, hash: &str, field: impl ToString, value: impl ToString) {
        self.write(Write::Set {
            hash: hash.to_owned(),
            field: field.to_string(),
            value: value.to_string(),
        });
    }

    /// Sets a field unless it exists (a first visit...), with the update's
    /// completion.
    pub fn set_once(&self, hash: &str, field: impl ToString, value: impl ToString) {
        self.write(Write::SetOnce {
            hash: hash.to_owned(),
            field: field.to_string(),
            value: value.to_string(),
        });
    }

    /// A field of the bot's hash as completed updates left it (this
    /// update's own writes are not applied yet).
    pub async fn get(
        &self,
        hash: &str,
        field: impl ToString,
    ) -> Result<Option<String>, HandlerError> {
        Ok(self
            .inner
            .engine
            .store
            .kv_get(hash, &field.to_string())
            .await?)
    }

    /// Hands a message to the outbox (the same door as `POST /api/outbox`):
    /// durable at once, sent by a worker through the shared budget after
    /// the replies, no earlier than `not_before` (unix seconds) if given.
    /// Once per update: its idempotency key is this update's id and the
    /// message's place among this handler's outbox messages, so a
    /// redelivered update stores nothing new. Returns the message's id.
    pub async fn send_later(
        &self,
        msg: OutMessage,
        not_before: Option<i64>,
    ) -> Result<String, HandlerError> {
        let n = self
            .inner
            .sent_later
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let key = format!("update-{}-{n}", self.update_id());
        let due = not_before.map_or_else(now_ms, |s| s.saturating_mul(1000));
        let (id, _) = self
            .inner
            .engine
            .store
            .outbox_put(&msg, due, Some(&key))
            .await?;
        Ok(id)
    }

    /// Starts a broadcast of `msg` to `to` (needs Redis). Not tied to the
    /// update: a handler that runs again would start another - start
    /// broadcasts from an operator's command, or check
    /// [`Self::get`]/[`Self::set_once`] first.
    pub async fn broadcast(&self, msg: OutMessage, to: Audience) -> Result<String, HandlerError> {
        Ok(self.inner.engine.store.broadcast_create(&msg, &to).await?)
    }

    fn write(&self, w: Write) {
        if let Ok(mut v) = self.inner.writes.lock() {
            v.push(w);
        }
    }

    /// The writes asked for so far, for the completion.
    pub(crate) fn take_writes(&self) -> Vec<Write> {
        self.inner
            .writes
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sender_comes_from_from_or_user() {
        let msg = json!({"update_id": 1, "message": {"from": {"id": 5, "first_name": "A", "language_code": "ru"}}});
        let f = UserRef::of(&msg).unwrap();
        assert_eq!((f.id, f.language_code.as_deref()), (5, Some("ru")));
        let poll = json!({"update_id": 2, "poll_answer": {"user": {"id": 6, "is_bot": false, "first_name": "B"}}});
        assert_eq!(UserRef::of(&poll).unwrap().id, 6);
        assert!(
            UserRef::of(&json!({"update_id": 3, "channel_post": {"chat": {"id": -1}}})).is_none()
        );
    }
}
