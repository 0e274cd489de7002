//! Sending a handled update's reply, after its completion.
//!
//! Order of events for an update that answers: the handler runs; its
//! writes, the directory entry, the "handled" mark and the reply (as a
//! [`Kept`] body) are stored in one step; then the reply is sent; then it
//! is forgotten and the chat's next update may run. So what the handler
//! recorded is visible before the user sees the answer (a user greeted is
//! a user counted), a crash before the completion repeats nothing (no
//! reply went out yet, no write was applied), and a crash after it loses
//! nothing: the kept reply's lease runs out and another worker sends it.
//! A reply can go out twice only if a worker dies between Telegram taking
//! it and the reply being forgotten.

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::dispatch::{Handled, Outcome};
use crate::metrics::Metrics;
use crate::reply::Call;
use crate::sender::{self, Priority, SendError, Sender};
use shared::queue::{Admit, Budget};

/// A reply kept in the store until sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    pub update_id: i64,
    /// The entry's order key: the chat waits for this reply.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    pub calls: Vec<Call>,
    /// Calls already sent (a retry goes on from there).
    #[serde(default)]
    pub sent: usize,
    /// The answer to an update with a deadline: it may use the budget's
    /// headroom.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urgent: bool,
    /// Failed sends so far (5xx, network), kept across a wait put aside.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u64,
    /// An outbox message (no update behind it; `shared::outbound`): sent
    /// at the lowest priority.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outbound: bool,
    /// Telegram answered 403 (blocked, deactivated, kicked): the caller
    /// marks the user. Never stored.
    #[serde(skip)]
    pub blocked: bool,
}

impl Kept {
    pub fn priority(&self) -> Priority {
        if self.urgent {
            Priority::Urgent
        } else if self.outbound {
            Priority::Outbound
        } else {
            Priority::Reply
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Kept {
    pub fn of(update_id: i64, key: &str, urgent: bool, h: &Handled) -> Option<Self> {
        (!h.calls.is_empty()).then(|| Kept {
            update_id,
            key: key.to_owned(),
            command: h.command.clone(),
            chat_id: h.chat_id,
            calls: h.calls.clone(),
            sent: 0,
            urgent,
            failures: 0,
            outbound: false,
            blocked: false,
        })
    }

    /// Stands in for a body that cannot be read, for its dead letter.
    pub fn unreadable() -> Self {
        Kept {
            update_id: 0,
            key: String::new(),
            command: None,
            chat_id: None,
            calls: Vec::new(),
            sent: 0,
            urgent: false,
            failures: 0,
            outbound: false,
            blocked: false,
        }
    }

    /// The budget the next call draws from; `None` for an answer to a
    /// query (it draws nothing) or when nothing is left to send.
    pub fn next_budget(&self, sender: &Sender) -> Option<Budget> {
        let call = self.calls.get(self.sent)?;
        if sender::is_answer(&call.method) {
            return None;
        }
        let chat_id = call
            .params
            .get("chat_id")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        Some(sender.budget(chat_id, self.priority()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// How one pass over a kept reply ended.
pub enum Pass {
    /// Nothing more to send: replied, refused for good, or outcome unknown.
    Ended(Outcome),
    /// Still failing after the sender's own retries: try again later.
    Failed(SendError),
    /// Telegram asked to wait this long (a 429, a pause): put it aside.
    Wait(std::time::Duration),
}

/// Sends the calls not sent yet, in order. `admitted`: the budget's
/// answer for the next call, already asked.
pub async fn send(
    sender: &Sender,
    metrics: &Metrics,
    kept: &mut Kept,
    mut admitted: Option<Admit>,
) -> Pass {
    while kept.sent < kept.calls.len() {
        let call = &kept.calls[kept.sent];
        let priority = kept.priority();
        match sender
            .send_admitted(
                &call.method,
                call.params.clone(),
                metrics,
                priority,
                admitted.take(),
            )
            .await
        {
            Ok(_) => kept.sent += 1,
            Err(SendError::Final(e)) => {
                kept.blocked = e.code() == Some(403);
                info!(chat_id = kept.chat_id, method = %call.method, reason = %e,
                    "reply refused by Telegram; update ends here");
                return Pass::Ended(Outcome::Refused);
            }
            Err(SendError::Unknown(e)) => {
                warn!(command = kept.command.as_deref().unwrap_or(""), chat_id = kept.chat_id, reason = %e,
                    "reply outcome unknown (the user may have it); update ends here, not resent");
                return Pass::Ended(Outcome::Unknown);
            }
            Err(SendError::Wait { wait, .. }) => return Pass::Wait(wait),
            Err(e) => return Pass::Failed(e),
        }
    }
    // Info, not debug: a command is what a user sees, so it is what an
    // operator looks for in the logs.
    if let Some(name) = &kept.command {
        info!(command = %name, chat_id = kept.chat_id, "command answered");
    }
    Pass::Ended(Outcome::Replied)
}
