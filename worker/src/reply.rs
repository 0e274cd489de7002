//! What a handler answers, and how a handler fails.
//!
//! A handler does not call the Bot API for its answer: it returns a
//! [`Reply`] and the engine sends it. That is what lets the engine apply
//! the send budget, 429 waits, retries, group quoting and forum topics in
//! one place, and decide *when* the answer goes out relative to the
//! update's completion.

use std::fmt;

use serde::Serialize;
use serde_json::{json, Value};

/// The answer to an update: zero or more Bot API calls, sent in order.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Reply {
    pub(crate) actions: Vec<Action>,
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// A message to the chat the update came from.
    Text {
        text: String,
        markup: Option<Value>,
        parse_mode: Option<String>,
    },
    /// `answerCallbackQuery` for the update's callback query.
    AnswerCallback { text: Option<String>, alert: bool },
    /// `editMessageText` of the message the update's button belongs to.
    EditText { text: String, markup: Option<Value> },
    /// Any Bot API method with its parameters, sent as given.
    Call { method: String, params: Value },
}

impl Reply {
    /// Nothing to say: the update is counted and ends.
    pub fn none() -> Self {
        Self::default()
    }

    /// A message to the update's chat. In groups it quotes the message it
    /// answers; in forum topics it stays in the topic.
    pub fn text(text: impl Into<String>) -> Self {
        Self::one(Action::Text {
            text: text.into(),
            markup: None,
            parse_mode: None,
        })
    }

    /// Answers the update's callback query (the button stops spinning).
    pub fn answer_callback() -> Self {
        Self::one(Action::AnswerCallback {
            text: None,
            alert: false,
        })
    }

    /// Answers the update's callback query with a toast (`alert`: a dialog).
    pub fn answer_callback_text(text: impl Into<String>, alert: bool) -> Self {
        Self::one(Action::AnswerCallback {
            text: Some(text.into()),
            alert,
        })
    }

    /// Replaces the text of the message whose button was pressed.
    pub fn edit_text(text: impl Into<String>) -> Self {
        Self::one(Action::EditText {
            text: text.into(),
            markup: None,
        })
    }

    /// Any Bot API method, sent exactly as given (the engine still applies
    /// the budget, 429 waits and retries).
    pub fn call(method: impl Into<String>, params: impl Serialize) -> Self {
        Self::one(Action::Call {
            method: method.into(),
            params: serde_json::to_value(params).unwrap_or(Value::Null),
        })
    }

    /// Sets `reply_markup` (an inline keyboard, say) on the last message or
    /// edit of this reply.
    pub fn markup(mut self, markup: impl Serialize) -> Self {
        let value = serde_json::to_value(markup).ok();
        match self.actions.last_mut() {
            Some(Action::Text { markup, .. }) | Some(Action::EditText { markup, .. }) => {
                *markup = value
            }
            _ => {}
        }
        self
    }

    /// Sets `parse_mode` (`HTML`, `MarkdownV2`) on the last message.
    pub fn parse_mode(mut self, mode: impl Into<String>) -> Self {
        if let Some(Action::Text { parse_mode, .. }) = self.actions.last_mut() {
            *parse_mode = Some(mode.into());
        }
        self
    }

    /// This reply, then `next`.
    pub fn then(mut self, next: Reply) -> Self {
        self.actions.extend(next.actions);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    fn one(action: Action) -> Self {
        Self {
            actions: vec![action],
        }
    }
}

/// One Bot API call the engine will make for a reply.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Call {
    pub method: String,
    pub params: Value,
}

/// Where an update's reply goes, read from the raw update (so it works for
/// updates the typed model cannot parse too).
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    chat_id: Option<i64>,
    private: bool,
    message_id: Option<i64>,
    thread_id: Option<i64>,
    callback_id: Option<String>,
    inline_message_id: Option<String>,
}

impl Target {
    pub(crate) fn of(raw: &Value) -> Self {
        let mut t = Target::default();
        let message = [
            "message",
            "edited_message",
            "channel_post",
            "business_message",
        ]
        .iter()
        .find_map(|k| raw.get(*k));
        if let Some(m) = message {
            t.read_message(m, true);
        } else if let Some(cq) = raw.get("callback_query") {
            t.callback_id = cq.get("id").and_then(Value::as_str).map(str::to_owned);
            t.inline_message_id = cq
                .get("inline_message_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(m) = cq.get("message") {
                // A button's message is ours: answers go beside it, never
                // quoting it.
                t.read_message(m, false);
            }
        } else {
            // Member updates, join requests, reactions...: a chat, no message.
            t.chat_id = raw
                .as_object()
                .into_iter()
                .flat_map(|o| o.values())
                .find_map(|v| v.get("chat")?.get("id")?.as_i64());
        }
        t
    }

    fn read_message(&mut self, m: &Value, quote: bool) {
        let chat = m.get("chat");
        self.chat_id = chat.and_then(|c| c.get("id")).and_then(Value::as_i64);
        self.private = chat.and_then(|c| c.get("type")).and_then(Value::as_str) == Some("private");
        self.message_id = m.get("message_id").and_then(Value::as_i64);
        if !quote {
            return;
        }
        if m.get("is_topic_message").and_then(Value::as_bool) == Some(true) {
            self.thread_id = m.get("message_thread_id").and_then(Value::as_i64);
        }
    }

    pub(crate) fn chat_id(&self) -> Option<i64> {
        self.chat_id
    }

    pub(crate) fn is_private(&self) -> bool {
        self.private
    }

    /// Turns a reply into concrete calls; an answer with nowhere to go (a
    /// text to an inline query) is the handler's mistake, not a retry.
    pub(crate) fn resolve(&self, reply: Reply, quote: bool) -> Result<Vec<Call>, HandlerError> {
        reply
            .actions
            .into_iter()
            .map(|a| self.resolve_one(a, quote))
            .collect()
    }

    fn resolve_one(&self, action: Action, quote: bool) -> Result<Call, HandlerError> {
        let nowhere = |what: &str| HandlerError::give_up(format!("{what}: the update has none"));
        Ok(match action {
            Action::Text {
                text,
                markup,
                parse_mode,
            } => {
                let chat = self
                    .chat_id
                    .ok_or_else(|| nowhere("a text reply needs a chat"))?;
                let mut p = json!({ "chat_id": chat, "text": text });
                if quote && !self.private {
                    if let Some(id) = self.message_id {
                        p["reply_parameters"] =
                            json!({ "message_id": id, "allow_sending_without_reply": true });
                    }
                }
                if let Some(t) = self.thread_id {
                    p["message_thread_id"] = json!(t);
                }
                if let Some(m) = markup {
                    p["reply_markup"] = m;
                }
                if let Some(m) = parse_mode {
                    p["parse_mode"] = json!(m);
                }
                Call {
                    method: "sendMessage".into(),
                    params: p,
                }
            }
            Action::AnswerCallback { text, alert } => {
                let id = self
                    .callback_id
                    .clone()
                    .ok_or_else(|| nowhere("answering a callback needs a callback query"))?;
                let mut p = json!({ "callback_query_id": id });
                if let Some(t) = text {
                    p["text"] = json!(t);
                    if alert {
                        p["show_alert"] = json!(true);
                    }
                }
                Call {
                    method: "answerCallbackQuery".into(),
                    params: p,
                }
            }
            Action::EditText { text, markup } => {
                let mut p = match (&self.inline_message_id, self.chat_id, self.message_id) {
                    (Some(inline), _, _) => json!({ "inline_message_id": inline }),
                    (None, Some(chat), Some(msg)) => json!({ "chat_id": chat, "message_id": msg }),
                    _ => return Err(nowhere("an edit needs a message")),
                };
                p["text"] = json!(text);
                if let Some(m) = markup {
                    p["reply_markup"] = m;
                }
                Call {
                    method: "editMessageText".into(),
                    params: p,
                }
            }
            Action::Call { method, params } => Call { method, params },
        })
    }
}

/// How a handler failed: worth another delivery, or not.
///
/// Any error type converts into a retry with `?`, so a handler can use its
/// own errors; [`HandlerError::give_up`] sends the update to the dead
/// letters at once, with the reason. Deliberately not a
/// `std::error::Error` itself (that blanket conversion would clash with it).
pub struct HandlerError {
    retry: bool,
    message: String,
}

impl HandlerError {
    /// A failure that another delivery may not repeat (a database timeout):
    /// counts toward `WORKER_MAX_DELIVERIES`.
    pub fn retry(reason: impl fmt::Display) -> Self {
        Self {
            retry: true,
            message: reason.to_string(),
        }
    }

    /// A failure no delivery will fix (the update makes no sense to this
    /// bot): dead-lettered now, with the reason.
    pub fn give_up(reason: impl fmt::Display) -> Self {
        Self {
            retry: false,
            message: reason.to_string(),
        }
    }

    pub fn is_retry(&self) -> bool {
        self.retry
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        Self::retry(e)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.retry { "retry" } else { "give up" };
        write!(f, "HandlerError({kind}: {})", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_command() -> Value {
        json!({"update_id": 1, "message": {"message_id": 7, "chat": {"id": -100, "type": "supergroup"},
               "is_topic_message": true, "message_thread_id": 3, "text": "/x"}})
    }

    #[test]
    fn text_in_a_group_topic_quotes_and_stays_in_the_topic() {
        let calls = Target::of(&group_command())
            .resolve(
                Reply::text("hi").markup(json!({"inline_keyboard": []})),
                true,
            )
            .unwrap();
        assert_eq!(calls.len(), 1);
        let p = &calls[0].params;
        assert_eq!(p["chat_id"], -100);
        assert_eq!(p["reply_parameters"]["message_id"], 7);
        assert_eq!(p["message_thread_id"], 3);
        assert!(p["reply_markup"].is_object());
    }

    #[test]
    fn callback_answer_and_edit_resolve_from_the_button_message() {
        let raw = json!({"update_id": 2, "callback_query": {"id": "cq1", "from": {"id": 5, "first_name": "a", "is_bot": false},
                "message": {"message_id": 9, "chat": {"id": 5, "type": "private"}}, "data": "x"}});
        let calls = Target::of(&raw)
            .resolve(Reply::answer_callback().then(Reply::edit_text("new")), true)
            .unwrap();
        assert_eq!(calls[0].method, "answerCallbackQuery");
        assert_eq!(calls[0].params["callback_query_id"], "cq1");
        assert_eq!(
            calls[1].params,
            json!({"chat_id": 5, "message_id": 9, "text": "new"})
        );
    }

    #[test]
    fn a_text_with_no_chat_gives_up() {
        let raw =
            json!({"update_id": 3, "inline_query": {"id": "q", "from": {"id": 1}, "query": ""}});
        let err = Target::of(&raw)
            .resolve(Reply::text("x"), true)
            .unwrap_err();
        assert!(!err.is_retry());
    }

    #[test]
    fn own_errors_convert_into_retries() {
        fn fails() -> Result<(), HandlerError> {
            let _: i64 = "x".parse()?;
            Ok(())
        }
        assert!(fails().unwrap_err().is_retry());
    }
}
