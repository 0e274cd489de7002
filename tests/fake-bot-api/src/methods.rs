//! What each Bot API method does in the fake: getMe, the webhook methods,
//! setMyCommands and sendMessage with the real server's rules and the
//! scripted faults; any other valid call answers `true`. getUpdates lives
//! in [`crate::polling`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::record::{chat_i64, chat_key, EarlyRetry, RateLimitWindow, WebhookState};
use crate::rules::{check_html, check_markdown_v2, check_reply_markup};
use crate::server::{chance, err, lock, server_error, too_many, unix_now, Answer, Inner};
use crate::{BOT_FIRST_NAME, BOT_USERNAME};

impl Inner {
    pub(crate) fn violation(&self, v: String) {
        lock(&self.violations).push(v);
    }

    /// A 400 the real API would give for a request that passed the type
    /// checks but breaks a rule; it is the client's bug, so it is recorded.
    fn bad_request(
        &self,
        method: &str,
        desc: impl Into<String>,
        params: &Map<String, Value>,
    ) -> Answer {
        let desc = desc.into();
        self.violation(format!(
            "{method}: Bad Request: {desc}; params: {}",
            Value::Object(params.clone())
        ));
        err(400, format!("Bad Request: {desc}"))
    }

    fn bot_user(&self) -> Value {
        json!({
            "id": self.bot_id,
            "is_bot": true,
            "first_name": BOT_FIRST_NAME,
            "username": BOT_USERNAME,
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
            "can_connect_to_business": false,
            "has_main_web_app": false
        })
    }

    pub(crate) async fn dispatch(self: &Arc<Self>, method: &str, p: &Map<String, Value>) -> Answer {
        match method {
            "getMe" => self.get_me(),
            "setWebhook" => self.set_webhook(p),
            "deleteWebhook" => self.delete_webhook(p),
            "getWebhookInfo" => self.get_webhook_info(),
            "setMyCommands" => self.set_my_commands(p),
            "getMyCommands" => Answer::Ok(lock(&self.commands).clone().unwrap_or(json!([]))),
            "deleteMyCommands" => {
                *lock(&self.commands) = None;
                Answer::Ok(json!(true))
            }
            "sendMessage" => self.send_message(p),
            "getUpdates" => self.get_updates(p).await,
            "logOut" | "close" => Answer::Ok(json!(true)),
            _ => Answer::Ok(json!(true)),
        }
    }

    fn get_me(&self) -> Answer {
        let mut f = lock(&self.faults);
        if f.get_me_unauthorized {
            return err(401, "Unauthorized");
        }
        if let Some(code) = f.get_me_failures.pop_front() {
            return match code {
                429 => too_many(1),
                c => server_error(c),
            };
        }
        drop(f);
        Answer::Ok(self.bot_user())
    }

    fn set_webhook(&self, p: &Map<String, Value>) -> Answer {
        let url = p
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let rate_limited = lock(&self.faults).set_webhook_rate_limit;
        if !url.is_empty() {
            let parsed = url::Url::parse(&url);
            match &parsed {
                Err(_) => {
                    return self.bad_request("setWebhook", "bad webhook: Failed to parse URL", p)
                }
                Ok(u) if u.scheme() != "https" => {
                    return self.bad_request(
                        "setWebhook",
                        "bad webhook: An HTTPS URL must be provided for webhook",
                        p,
                    )
                }
                Ok(u) if !matches!(u.port_or_known_default(), Some(443 | 80 | 88 | 8443)) => {
                    return self.bad_request(
                        "setWebhook",
                        "bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
                        p,
                    )
                }
                Ok(_) => {}
            }
        }
        if let Some(s) = p.get("secret_token").and_then(Value::as_str) {
            let ok = !s.is_empty()
                && s.len() <= 256
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return self.bad_request(
                    "setWebhook",
                    "bad webhook: secret token contains unallowed characters",
                    p,
                );
            }
        }
        if let Some(mc) = p.get("max_connections").and_then(Value::as_i64) {
            if !(1..=100).contains(&mc) {
                return self.bad_request("setWebhook", "bad webhook: invalid max_connections", p);
            }
        }
        let mut w = lock(&self.webhook);
        let now = Instant::now();
        if rate_limited
            && w.last_set
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return too_many(1);
        }
        w.last_set = Some(now);
        if url.is_empty() {
            *w = WebhookState {
                set_count: w.set_count,
                last_set: w.last_set,
                ..WebhookState::default()
            };
            return Answer::OkDesc(json!(true), "Webhook was deleted");
        }
        let same = w.url == url;
        w.url = url;
        w.secret_token = p
            .get("secret_token")
            .and_then(Value::as_str)
            .map(str::to_owned);
        w.allowed_updates = p.get("allowed_updates").cloned();
        w.max_connections = p.get("max_connections").and_then(Value::as_i64);
        w.ip_address = p
            .get("ip_address")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let drop_pending = p.get("drop_pending_updates").and_then(Value::as_bool);
        w.drop_pending_updates = drop_pending;
        w.set_count += 1;
        drop(w);
        if drop_pending == Some(true) {
            lock(&self.updates).items.clear();
        }
        Answer::OkDesc(
            json!(true),
            if same {
                "Webhook is already set"
            } else {
                "Webhook was set"
            },
        )
    }

    fn delete_webhook(&self, p: &Map<String, Value>) -> Answer {
        let mut w = lock(&self.webhook);
        let was = !w.url.is_empty();
        *w = WebhookState {
            set_count: w.set_count,
            last_set: w.last_set,
            ..WebhookState::default()
        };
        drop(w);
        if p.get("drop_pending_updates").and_then(Value::as_bool) == Some(true) {
            lock(&self.updates).items.clear();
        }
        Answer::OkDesc(
            json!(true),
            if was {
                "Webhook was deleted"
            } else {
                "Webhook is already deleted"
            },
        )
    }

    fn get_webhook_info(&self) -> Answer {
        let w = lock(&self.webhook).clone();
        let f = lock(&self.faults).clone();
        let pending = f
            .pending_update_count
            .unwrap_or_else(|| lock(&self.updates).items.len() as u64);
        let mut info = json!({
            "url": w.url,
            "has_custom_certificate": false,
            "pending_update_count": pending,
        });
        if !w.url.is_empty() {
            info["max_connections"] = json!(w.max_connections.unwrap_or(40));
            info["ip_address"] = json!(w.ip_address.as_deref().unwrap_or("149.154.167.220"));
            if let Some(a) = &w.allowed_updates {
                info["allowed_updates"] = a.clone();
            }
        }
        if let Some((date, msg)) = f.webhook_last_error {
            info["last_error_date"] = json!(date);
            info["last_error_message"] = json!(msg);
        }
        Answer::Ok(info)
    }

    fn set_my_commands(&self, p: &Map<String, Value>) -> Answer {
        let commands = p.get("commands").cloned().unwrap_or(json!([]));
        let list = commands.as_array().cloned().unwrap_or_default();
        if list.len() > 100 {
            return self.bad_request("setMyCommands", "BOT_COMMANDS_TOO_MUCH", p);
        }
        for c in &list {
            let name = c.get("command").and_then(Value::as_str).unwrap_or("");
            let ok = (1..=32).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return self.bad_request("setMyCommands", "BOT_COMMAND_INVALID", p);
            }
            let desc = c.get("description").and_then(Value::as_str).unwrap_or("");
            if !(1..=256).contains(&desc.chars().count()) {
                return self.bad_request("setMyCommands", "BOT_COMMAND_DESCRIPTION_INVALID", p);
            }
        }
        *lock(&self.commands) = Some(commands);
        Answer::Ok(json!(true))
    }

    fn send_message(&self, p: &Map<String, Value>) -> Answer {
        let chat = p.get("chat_id").cloned().unwrap_or(Value::Null);
        let chat_num = chat_i64(&chat);
        let text = p.get("text").and_then(Value::as_str).unwrap_or("");

        // Rules the real API enforces beyond the types: the client's bugs.
        let plain = match p.get("parse_mode").and_then(Value::as_str) {
            None => Ok(text.to_owned()),
            Some("HTML") => check_html(text),
            Some("MarkdownV2") => check_markdown_v2(text),
            Some("Markdown") => Ok(text.to_owned()),
            Some(other) => Err(format!("unsupported parse_mode {other:?}")),
        };
        let plain = match plain {
            Ok(t) => t,
            Err(e) => return self.bad_request("sendMessage", e, p),
        };
        if plain.trim().is_empty() {
            return self.bad_request("sendMessage", "message text is empty", p);
        }
        if plain.encode_utf16().count() > 4096 {
            return self.bad_request("sendMessage", "message is too long", p);
        }
        if let Some(e) = check_reply_markup(p.get("reply_markup"), chat_num) {
            return self.bad_request("sendMessage", e, p);
        }

        // Scripted faults.
        let seq = self.send_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let f = lock(&self.faults).clone();
        if f.server_error_every
            .is_some_and(|k| seq.checked_rem(k) == Some(0))
            || chance(f.server_error_probability)
        {
            return server_error(f.server_error_status);
        }
        if let Some(id) = chat_num {
            let quoted = p
                .get("reply_parameters")
                .and_then(|r| r.get("message_id"))
                .and_then(Value::as_i64);
            if quoted.is_some_and(|m| f.server_error_replies.contains(&(id, m))) {
                return server_error(500);
            }
            if f.blocked_chats.contains(&id) {
                return err(403, "Forbidden: bot was blocked by the user");
            }
            if f.missing_chats.contains(&id) {
                return err(400, "Bad Request: chat not found");
            }
        }
        let key = chat_key(&chat);
        let now = Instant::now();
        if let Some(until) = lock(&self.blocked_until).get(&key).copied() {
            if now < until {
                lock(&self.early).push(EarlyRetry {
                    chat: key,
                    at: now,
                    allowed_at: until,
                });
                let left = until.duration_since(now).as_secs_f64().ceil().max(1.0) as u64;
                return too_many(left);
            }
        }
        if f.rate_limit_every
            .is_some_and(|k| seq.checked_rem(k) == Some(0))
            || chance(f.rate_limit_probability)
        {
            let allowed_at = now + Duration::from_secs(f.retry_after_secs);
            lock(&self.blocked_until).insert(key.clone(), allowed_at);
            lock(&self.windows).push(RateLimitWindow {
                chat: key,
                issued_at: now,
                retry_after: f.retry_after_secs,
                allowed_at,
            });
            return too_many(f.retry_after_secs);
        }

        let message_id = self.message_id.fetch_add(1, Ordering::SeqCst) + 1;
        let mut msg = json!({
            "message_id": message_id,
            "from": self.bot_user(),
            "chat": chat_object(&chat),
            "date": unix_now(),
            "text": plain,
        });
        if let Some(t) = p.get("message_thread_id") {
            msg["message_thread_id"] = t.clone();
        }
        if let Some(rm) = p.get("reply_markup") {
            if rm.get("inline_keyboard").is_some() {
                msg["reply_markup"] = rm.clone();
            }
        }
        Answer::Ok(msg)
    }
}

fn chat_object(chat: &Value) -> Value {
    match chat_i64(chat) {
        Some(id) if id > 0 => json!({ "id": id, "first_name": "Test User", "type": "private" }),
        Some(id) if id <= -1_000_000_000_000 => {
            json!({ "id": id, "title": "Test Supergroup", "type": "supergroup" })
        }
        Some(id) => json!({ "id": id, "title": "Test Group", "type": "group" }),
        None => {
            let name = chat.as_str().unwrap_or("").trim_start_matches('@');
            json!({ "id": -1_001_000_000_001i64, "title": name, "username": name, "type": "channel" })
        }
    }
}
