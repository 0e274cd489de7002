//! The handle tests hold: starts the server, reads the record, presets
//! state. Faults are scripted through the methods in [`crate::faults`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::faults::Faults;
use crate::limits::Limits;
use crate::record::{Call, WebhookState};
use crate::server::{handle, lock, AbortOnDrop, Inner, PollState, UpdateQueue};
use crate::spec::spec;

/// Handle to a running fake. Cheap to clone; the server stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct FakeBotApi {
    pub(crate) inner: Arc<Inner>,
    url: String,
    _server: Arc<AbortOnDrop>,
}

impl FakeBotApi {
    /// Starts a fake for [`crate::TOKEN`] on 127.0.0.1 with a free port.
    pub async fn start() -> Self {
        Self::start_with_token(crate::TOKEN).await
    }

    pub async fn start_with_token(token: &str) -> Self {
        let bot_id = token
            .split(':')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(123_456_789);
        let inner = Arc::new(Inner {
            token: token.to_owned(),
            bot_id,
            spec: spec(),
            calls: Mutex::new(Vec::with_capacity(4096)),
            violations: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
            webhook: Mutex::new(WebhookState::default()),
            commands: Mutex::new(None),
            message_id: AtomicI64::new(1000),
            send_seq: AtomicU64::new(0),
            blocked_until: Mutex::new(HashMap::new()),
            windows: Mutex::new(Vec::new()),
            early: Mutex::new(Vec::new()),
            limits: Mutex::new(Limits::default()),
            updates: Mutex::new(UpdateQueue {
                items: VecDeque::new(),
                next_id: 700_000_000,
            }),
            poll: Mutex::new(PollState::default()),
            poll_notify: Notify::new(),
            conflicts: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Bot API");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            inner,
            url: format!("http://{addr}"),
            _server: Arc::new(AbortOnDrop(server)),
        }
    }

    /// Base URL for `TELEGRAM_API_URL`, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn token(&self) -> &str {
        &self.inner.token
    }

    pub fn bot_id(&self) -> i64 {
        self.inner.bot_id
    }

    // -- records ------------------------------------------------------------

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.inner.calls).clone()
    }

    /// Calls to `method` (case-insensitive), whatever they were answered.
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        lock(&self.inner.calls)
            .iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method))
            .cloned()
            .collect()
    }

    pub fn count(&self, method: &str) -> usize {
        lock(&self.inner.calls)
            .iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method))
            .count()
    }

    /// Parameters of every sendMessage answered 200, in arrival order.
    pub fn sent_messages(&self) -> Vec<Value> {
        lock(&self.inner.calls)
            .iter()
            .filter(|c| c.ok() && c.method == "sendMessage")
            .map(|c| c.params.clone())
            .collect()
    }

    /// Successful sendMessage parameters for one chat.
    pub fn sent_to(&self, chat_id: i64) -> Vec<Value> {
        lock(&self.inner.calls)
            .iter()
            .filter(|c| c.ok() && c.method == "sendMessage" && c.chat_id() == Some(chat_id))
            .map(|c| c.params.clone())
            .collect()
    }

    pub fn sent_count(&self) -> usize {
        lock(&self.inner.calls)
            .iter()
            .filter(|c| c.ok() && c.method == "sendMessage")
            .count()
    }

    /// Polls the call record until `pred` holds; false on timeout.
    pub async fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&[Call]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&lock(&self.inner.calls)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `n` sendMessage calls were answered 200.
    pub async fn wait_for_sent(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |calls| {
            calls
                .iter()
                .filter(|c| c.ok() && c.method == "sendMessage")
                .count()
                >= n
        })
        .await
    }

    /// Waits until `method` was called at least `n` times.
    pub async fn wait_for_calls(&self, method: &str, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |calls| {
            calls
                .iter()
                .filter(|c| c.method.eq_ignore_ascii_case(method))
                .count()
                >= n
        })
        .await
    }

    /// Forgets recorded calls, violations, 429 windows and early retries,
    /// and lifts the chat and bot-wide limits and the flood limit with
    /// their records (not the webhook, the commands or the update queue).
    pub fn reset(&self) {
        self.inner.reset_limits();
        lock(&self.inner.calls).clear();
        lock(&self.inner.violations).clear();
        lock(&self.inner.windows).clear();
        lock(&self.inner.early).clear();
        lock(&self.inner.blocked_until).clear();
        self.inner.send_seq.store(0, Ordering::SeqCst);
        self.inner.conflicts.store(0, Ordering::SeqCst);
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.inner.violations).clone()
    }

    /// Fails the test if any call broke the Bot API spec.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "{} Bot API call(s) violated the spec (the real API would have refused or ignored them):\n  {}",
            v.len(),
            v.join("\n  ")
        );
    }

    // -- state ----------------------------------------------------------------

    pub fn webhook(&self) -> WebhookState {
        lock(&self.inner.webhook).clone()
    }

    /// Pretend a webhook was set before the test (by an earlier deploy).
    pub fn preset_webhook(&self, url: &str, secret_token: Option<&str>) {
        let mut w = lock(&self.inner.webhook);
        w.url = url.to_owned();
        w.secret_token = secret_token.map(str::to_owned);
    }

    /// The `commands` of the last successful setMyCommands.
    pub fn commands(&self) -> Option<Value> {
        lock(&self.inner.commands).clone()
    }

    /// getUpdates requests answered 409 "terminated by other getUpdates
    /// request" (a newer one arrived while they waited).
    pub fn conflicts(&self) -> u64 {
        self.inner.conflicts.load(Ordering::SeqCst)
    }

    /// Queues an update for getUpdates; assigns `update_id` if it has none.
    /// Returns the update_id.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let id = {
            let mut q = lock(&self.inner.updates);
            let id = match update.get("update_id").and_then(Value::as_i64) {
                Some(id) => id,
                None => {
                    let id = q.next_id;
                    update["update_id"] = json!(id);
                    id
                }
            };
            q.next_id = q.next_id.max(id + 1);
            q.items.push_back(update);
            id
        };
        self.inner.poll_notify.notify_waiters();
        id
    }

    /// Updates queued and not yet confirmed through `offset`.
    pub fn pending_updates(&self) -> usize {
        lock(&self.inner.updates).items.len()
    }
}
