//! A fake Telegram Bot API server that behaves like the real one where the
//! system can tell the difference.
//!
//! - URL scheme `/bot<token>/<method>`, method names case-insensitive; a
//!   wrong token is answered 401, an unknown method 404, as Telegram does.
//! - Parameters from JSON bodies, `application/x-www-form-urlencoded`
//!   bodies and query strings (form values are strings; object and array
//!   parameters arrive JSON-encoded, as with real Telegram).
//! - Every call is checked against the machine-readable Bot API spec in
//!   `shared/telegram/bot-api-spec.json`: an unknown or missing parameter or
//!   a value of the wrong type is answered 400 *and* recorded as a spec
//!   violation, so [`FakeBotApi::assert_no_violations`] fails a test whose
//!   binaries sent anything the real API would reject (or silently ignore).
//!   Object parameters (`reply_markup`, `reply_parameters`, ...) are checked
//!   recursively against the spec's types. A few behavioural rules of the
//!   real server are enforced too: HTML/MarkdownV2 entity parsing, message
//!   length, `web_app` buttons refused in groups (`BUTTON_TYPE_INVALID`),
//!   command names for setMyCommands, webhook URL rules and setWebhook's
//!   one-per-second limit.
//! - Scriptable faults (429 with `retry_after`, 403 blocked, 400 chat not
//!   found, 500/502, delays, getMe failures) through [`Faults`].
//! - Every call is recorded ([`Call`]) with its parsed parameters, arrival
//!   time and the HTTP status it got.
//!
//! Locking is kept to short critical sections on `std` mutexes so the fake
//! is never the bottleneck at thousands of calls per second.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

/// The username getMe reports.
pub const BOT_USERNAME: &str = "test_queue_bot";
/// The first name getMe reports.
pub const BOT_FIRST_NAME: &str = "Test Queue Bot";

// ---------------------------------------------------------------------------
// The spec
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct Field {
    pub name: String,
    pub types: Vec<String>,
    pub required: bool,
}

#[derive(Debug, Deserialize)]
struct RawMethod {
    name: String,
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Debug, Deserialize)]
struct RawType {
    #[serde(default)]
    fields: Option<Vec<Field>>,
    #[serde(default)]
    subtypes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RawSpec {
    methods: HashMap<String, RawMethod>,
    types: HashMap<String, RawType>,
}

/// One Bot API method as the spec describes it.
#[derive(Debug)]
pub struct MethodSpec {
    pub name: String,
    pub fields: Vec<Field>,
}

/// The Bot API spec, indexed for validation.
#[derive(Debug)]
pub struct Spec {
    /// Lower-cased method name -> method.
    methods: HashMap<String, MethodSpec>,
    types: HashMap<String, RawType>,
}

pub const SPEC_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/telegram/bot-api-spec.json"
);

/// The spec, loaded once per test process.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::fs::read_to_string(SPEC_PATH)
            .unwrap_or_else(|e| panic!("cannot read the Bot API spec at {SPEC_PATH}: {e}"));
        let raw: RawSpec = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("cannot parse the Bot API spec at {SPEC_PATH}: {e}"));
        Spec {
            methods: raw
                .methods
                .into_values()
                .map(|m| {
                    (
                        m.name.to_ascii_lowercase(),
                        MethodSpec {
                            name: m.name,
                            fields: m.fields,
                        },
                    )
                })
                .collect(),
            types: raw.types,
        }
    })
}

const MAX_DEPTH: usize = 12;

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "Integer",
        Value::Number(_) => "Float",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

fn is_container_type(ty: &str) -> bool {
    !matches!(
        ty,
        "Integer" | "Float" | "String" | "Boolean" | "True" | "InputFile"
    )
}

impl Spec {
    /// Case-insensitive method lookup, like Telegram's.
    pub fn method(&self, name: &str) -> Option<&MethodSpec> {
        self.methods.get(&name.to_ascii_lowercase())
    }

    /// Checks `v` against alternative types (`Integer or String`).
    pub fn check_any(&self, v: &Value, types: &[String], path: &str) -> Result<(), String> {
        self.check_any_at(v, types, path, 0)
    }

    fn check_any_at(
        &self,
        v: &Value,
        types: &[String],
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        let mut first_err = None;
        for ty in types {
            match self.check_one(v, ty, path, depth) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if types.len() > 1 {
            return Err(format!(
                "{path}: expected {}, got {}",
                types.join(" or "),
                kind(v)
            ));
        }
        Err(first_err.unwrap_or_else(|| format!("{path}: no type given")))
    }

    fn check_one(&self, v: &Value, ty: &str, path: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        let expect = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(format!("{path}: expected {ty}, got {}", kind(v)))
            }
        };
        match ty {
            "Integer" => expect(v.is_i64() || v.is_u64()),
            "Float" => expect(v.is_number()),
            "String" => expect(v.is_string()),
            "Boolean" => expect(v.is_boolean()),
            "True" => expect(v == &Value::Bool(true)),
            // A file_id, an URL or attach://<name>; uploads are multipart,
            // which this fake does not take.
            "InputFile" => expect(v.is_string()),
            _ => {
                if let Some(inner) = ty.strip_prefix("Array of ") {
                    let Value::Array(items) = v else {
                        return Err(format!("{path}: expected {ty}, got {}", kind(v)));
                    };
                    for (i, item) in items.iter().enumerate() {
                        self.check_one(item, inner, &format!("{path}[{i}]"), depth + 1)?;
                    }
                    return Ok(());
                }
                let Some(t) = self.types.get(ty) else {
                    // A type the spec does not describe: nothing to check.
                    return Ok(());
                };
                if let Some(subs) = t.subtypes.as_ref().filter(|s| !s.is_empty()) {
                    let mut errs = Vec::new();
                    for sub in subs {
                        match self.check_one(v, sub, path, depth + 1) {
                            Ok(()) => return Ok(()),
                            Err(e) => errs.push(e),
                        }
                    }
                    // The most telling error: the one from the variant whose
                    // `type` discriminator matched, if any.
                    let pick = errs
                        .iter()
                        .find(|e| !e.contains(".type:") && !e.contains("unknown field"))
                        .or(errs.first())
                        .cloned()
                        .unwrap_or_default();
                    return Err(format!("{path}: not a valid {ty} ({pick})"));
                }
                let Value::Object(obj) = v else {
                    return Err(format!("{path}: expected {ty} object, got {}", kind(v)));
                };
                match &t.fields {
                    Some(fields) => self.check_fields(obj, fields, path, depth + 1),
                    None => Ok(()),
                }
            }
        }
    }

    fn check_fields(
        &self,
        obj: &Map<String, Value>,
        fields: &[Field],
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}.")
        };
        for (k, v) in obj {
            if v.is_null() {
                continue;
            }
            let Some(f) = fields.iter().find(|f| &f.name == k) else {
                return Err(format!("{prefix}{k}: unknown field"));
            };
            self.check_any_at(v, &f.types, &format!("{prefix}{k}"), depth)?;
            // Subtypes discriminated by `type` say so as "must be X" in the
            // description; the field list alone cannot tell them apart, so
            // BotCommandScopeChat's fields would accept {"type":"default"}.
            // Good enough: the discriminator is at least a string.
        }
        for f in fields.iter().filter(|f| f.required) {
            if obj.get(&f.name).is_none_or(Value::is_null) {
                return Err(format!("{prefix}{}: required field is missing", f.name));
            }
        }
        Ok(())
    }
}

/// Converts a form or query value (always a string) to the typed value its
/// parameter declares, as the real Bot API does.
fn coerce_string(s: &str, types: &[String]) -> Value {
    for ty in types {
        match ty.as_str() {
            "Integer" => {
                if let Ok(i) = s.trim().parse::<i64>() {
                    return json!(i);
                }
            }
            "Float" => {
                if let Ok(f) = s.trim().parse::<f64>() {
                    return json!(f);
                }
            }
            "Boolean" | "True" => match s.trim() {
                "true" | "True" | "1" => return Value::Bool(true),
                "false" | "False" | "0" => return Value::Bool(false),
                _ => {}
            },
            "String" | "InputFile" => return Value::String(s.to_owned()),
            _ => {
                if let Ok(v @ (Value::Object(_) | Value::Array(_))) =
                    serde_json::from_str::<Value>(s)
                {
                    return v;
                }
            }
        }
    }
    Value::String(s.to_owned())
}

// ---------------------------------------------------------------------------
// Records and faults
// ---------------------------------------------------------------------------

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct Call {
    /// The spec's spelling (`sendMessage`) when the method exists, else the
    /// path segment as sent.
    pub method: String,
    /// Parameters after parsing (form values converted to their types).
    pub params: Value,
    /// When the request arrived.
    pub at: Instant,
    /// HTTP status answered.
    pub status: u16,
    /// The JSON body answered (`Value::Null` for non-JSON answers).
    pub response: Value,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.status == 200
    }
    /// `params[key]`, or `Null`.
    pub fn param(&self, key: &str) -> &Value {
        self.params.get(key).unwrap_or(&Value::Null)
    }
    /// For a successful sendMessage: the text as the user sees it (after
    /// HTML/MarkdownV2 parsing), from the returned Message.
    pub fn shown_text(&self) -> &str {
        self.response["result"]["text"].as_str().unwrap_or("")
    }
    /// The chat id of a sendMessage-like call as a number (also from a
    /// numeric string).
    pub fn chat_id(&self) -> Option<i64> {
        chat_i64(self.param("chat_id"))
    }
}

fn chat_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn chat_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A 429 the fake answered: `chat` may not be sent to before `allowed_at`.
#[derive(Debug, Clone)]
pub struct RateLimitWindow {
    pub chat: String,
    pub issued_at: Instant,
    pub retry_after: u64,
    pub allowed_at: Instant,
}

/// A sendMessage that arrived for a chat before its 429 window ended.
#[derive(Debug, Clone)]
pub struct EarlyRetry {
    pub chat: String,
    pub at: Instant,
    pub allowed_at: Instant,
}

impl EarlyRetry {
    /// How much too early the call came.
    pub fn early_by(&self) -> Duration {
        self.allowed_at.saturating_duration_since(self.at)
    }
}

/// Scriptable misbehaviour. Change through [`FakeBotApi::faults`].
#[derive(Debug, Clone)]
pub struct Faults {
    /// Every k-th sendMessage (counting all sendMessage calls that passed
    /// validation) is answered 429.
    pub rate_limit_every: Option<u64>,
    /// Probability in [0,1] that a sendMessage is answered 429.
    pub rate_limit_probability: f64,
    /// `retry_after` for scripted 429s, seconds.
    pub retry_after_secs: u64,
    /// sendMessage to these chats: 403 "Forbidden: bot was blocked by the user".
    pub blocked_chats: HashSet<i64>,
    /// sendMessage to these chats: 400 "Bad Request: chat not found".
    pub missing_chats: HashSet<i64>,
    /// Every k-th sendMessage is answered with `server_error_status`.
    pub server_error_every: Option<u64>,
    /// Probability in [0,1] that a sendMessage gets `server_error_status`.
    pub server_error_probability: f64,
    /// 500 (JSON error body) or 502 (an nginx HTML page, as Telegram's
    /// front end answers when the back end is down).
    pub server_error_status: u16,
    /// sendMessage to these chats is taken and never answered: the worker
    /// handling it hangs there until it is killed (a handler that wedges or
    /// kills its process on one update).
    pub stalled_chats: HashSet<i64>,
    /// sendMessage calls taken by `stalled_chats` so far.
    pub stalled_calls: usize,
    /// Telegram slow to answer: every sendMessage is carried out at once
    /// (recorded; the user has the message) and its answer is held this
    /// long. A client that gives up first cannot know it was sent.
    pub send_answer_delay: Duration,
    /// sendMessage to these chats is carried out (the user has it), then
    /// the connection is cut halfway through the answer.
    pub cut_send_answers: HashSet<i64>,
    /// Added to every call except getUpdates (which long-polls anyway).
    pub delay: Duration,
    /// Each sendMessage additionally waits a random time, uniform in
    /// `0..=send_jitter` (a handler whose duration varies per call).
    pub send_jitter: Duration,
    /// sendMessage to `(chat_id, reply_parameters.message_id)`: answered
    /// 500, every time - a failure specific to one update of a chat.
    pub server_error_replies: HashSet<(i64, i64)>,
    /// getMe answers 401: the token is rejected.
    pub get_me_unauthorized: bool,
    /// getMe answers these statuses first (429 with retry_after 1, 500,
    /// 502), one per call, then succeeds.
    pub get_me_failures: VecDeque<u16>,
    /// Telegram allows one setWebhook per second per bot; a faster one is
    /// answered 429 retry_after 1. On by default, as in real life.
    pub set_webhook_rate_limit: bool,
    /// Reported by getWebhookInfo: (unix time, message).
    pub webhook_last_error: Option<(i64, String)>,
    /// Reported by getWebhookInfo instead of the getUpdates queue length.
    pub pending_update_count: Option<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limit_every: None,
            rate_limit_probability: 0.0,
            retry_after_secs: 1,
            blocked_chats: HashSet::new(),
            missing_chats: HashSet::new(),
            server_error_every: None,
            server_error_probability: 0.0,
            server_error_status: 500,
            stalled_chats: HashSet::new(),
            stalled_calls: 0,
            send_answer_delay: Duration::ZERO,
            cut_send_answers: HashSet::new(),
            delay: Duration::ZERO,
            send_jitter: Duration::ZERO,
            server_error_replies: HashSet::new(),
            get_me_unauthorized: false,
            get_me_failures: VecDeque::new(),
            set_webhook_rate_limit: true,
            webhook_last_error: None,
            pending_update_count: None,
        }
    }
}

/// What setWebhook stored.
#[derive(Debug, Clone, Default)]
pub struct WebhookState {
    /// Empty when no webhook is set.
    pub url: String,
    pub secret_token: Option<String>,
    pub allowed_updates: Option<Value>,
    pub max_connections: Option<i64>,
    pub drop_pending_updates: Option<bool>,
    pub ip_address: Option<String>,
    /// Successful setWebhook calls with a non-empty url.
    pub set_count: u64,
    last_set: Option<Instant>,
}

#[derive(Default)]
struct UpdateQueue {
    items: VecDeque<Value>,
    next_id: i64,
}

#[derive(Default)]
struct PollState {
    active: Option<u64>,
    next: u64,
}

struct Inner {
    token: String,
    bot_id: i64,
    spec: &'static Spec,
    calls: Mutex<Vec<Call>>,
    violations: Mutex<Vec<String>>,
    faults: Mutex<Faults>,
    webhook: Mutex<WebhookState>,
    commands: Mutex<Option<Value>>,
    message_id: AtomicI64,
    send_seq: AtomicU64,
    blocked_until: Mutex<HashMap<String, Instant>>,
    windows: Mutex<Vec<RateLimitWindow>>,
    early: Mutex<Vec<EarlyRetry>>,
    updates: Mutex<UpdateQueue>,
    poll: Mutex<PollState>,
    poll_notify: Notify,
    conflicts: AtomicU64,
}

/// Locks, shrugging off poisoning: a panicking test thread must not turn
/// every later assertion into a confusing PoisonError.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Handle to a running fake. Cheap to clone; the server stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct FakeBotApi {
    inner: Arc<Inner>,
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

    /// Forgets recorded calls, violations, 429 windows and early retries
    /// (not the webhook, the commands or the update queue).
    pub fn reset(&self) {
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

    // -- faults ---------------------------------------------------------------

    /// Changes the faults: `api.faults(|f| f.blocked_chats.insert(42));`
    pub fn faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut lock(&self.inner.faults))
    }

    /// Every `k`-th sendMessage gets 429 with `retry_after` seconds.
    pub fn rate_limit_every(&self, k: u64, retry_after: u64) {
        self.faults(|f| {
            f.rate_limit_every = Some(k.max(1));
            f.retry_after_secs = retry_after;
        });
    }

    pub fn block_chat(&self, chat_id: i64) {
        self.faults(|f| f.blocked_chats.insert(chat_id));
    }

    pub fn chat_not_found(&self, chat_id: i64) {
        self.faults(|f| f.missing_chats.insert(chat_id));
    }

    /// Every `k`-th sendMessage gets `status` (500 or 502).
    pub fn server_errors_every(&self, k: u64, status: u16) {
        self.faults(|f| {
            f.server_error_every = Some(k.max(1));
            f.server_error_status = status;
        });
    }

    /// sendMessage to `chat_id` hangs, never answered.
    pub fn stall_chat(&self, chat_id: i64) {
        self.faults(|f| f.stalled_chats.insert(chat_id));
    }

    /// Every sendMessage is carried out at once and answered after `d`.
    pub fn slow_send_answers(&self, d: Duration) {
        self.faults(|f| f.send_answer_delay = d);
    }

    /// sendMessage to `chat_id` is carried out, then its answer is cut.
    pub fn cut_send_answers(&self, chat_id: i64) {
        self.faults(|f| f.cut_send_answers.insert(chat_id));
    }

    /// sendMessage calls that hung so far.
    pub fn stalled_calls(&self) -> usize {
        self.faults(|f| f.stalled_calls)
    }

    pub fn set_delay(&self, d: Duration) {
        self.faults(|f| f.delay = d);
    }

    /// Every sendMessage waits a random time, uniform in `0..=max`.
    pub fn set_send_jitter(&self, max: Duration) {
        self.faults(|f| f.send_jitter = max);
    }

    /// sendMessage to `chat_id` quoting `message_id` gets 500, always.
    pub fn fail_reply_to(&self, chat_id: i64, message_id: i64) {
        self.faults(|f| f.server_error_replies.insert((chat_id, message_id)));
    }

    pub fn clear_faults(&self) {
        self.faults(|f| *f = Faults::default());
    }

    /// Every 429 window the fake opened.
    pub fn rate_limit_windows(&self) -> Vec<RateLimitWindow> {
        lock(&self.inner.windows).clone()
    }

    /// sendMessage calls that came for a chat before its 429 window ended.
    pub fn early_retries(&self) -> Vec<EarlyRetry> {
        lock(&self.inner.early).clone()
    }
}

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

enum Answer {
    Ok(Value),
    OkDesc(Value, &'static str),
    Err {
        code: u16,
        description: String,
        parameters: Option<Value>,
    },
    /// A non-JSON answer (an nginx error page).
    Html(u16, &'static str),
}

fn err(code: u16, description: impl Into<String>) -> Answer {
    Answer::Err {
        code,
        description: description.into(),
        parameters: None,
    }
}

fn too_many(retry_after: u64) -> Answer {
    Answer::Err {
        code: 429,
        description: format!("Too Many Requests: retry after {retry_after}"),
        parameters: Some(json!({ "retry_after": retry_after })),
    }
}

const BAD_GATEWAY_PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n";

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Ok(_) | Answer::OkDesc(..) => 200,
            Answer::Err { code, .. } => *code,
            Answer::Html(code, _) => *code,
        }
    }

    fn body(&self) -> Value {
        match self {
            Answer::Ok(r) => json!({ "ok": true, "result": r }),
            Answer::OkDesc(r, d) => json!({ "ok": true, "result": r, "description": d }),
            Answer::Err {
                code,
                description,
                parameters,
            } => {
                let mut b = json!({ "ok": false, "error_code": code, "description": description });
                if let Some(p) = parameters {
                    b["parameters"] = p.clone();
                }
                b
            }
            Answer::Html(..) => Value::Null,
        }
    }
}

fn server_error(status: u16) -> Answer {
    if status == 502 {
        Answer::Html(502, BAD_GATEWAY_PAGE)
    } else {
        err(status, "Internal Server Error")
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Chance in [0,1].
fn chance(p: f64) -> bool {
    p > 0.0 && rand::random::<f64>() < p
}

struct Parsed {
    params: Map<String, Value>,
    /// Keys whose values came as strings from a form or query.
    from_form: HashSet<String>,
}

fn parse_params(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<Parsed, String> {
    let mut p = Parsed {
        params: Map::new(),
        from_form: HashSet::new(),
    };
    if let Some(q) = uri.query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            p.from_form.insert(k.to_string());
            p.params
                .insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(p);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("application/json") || (ct.is_empty() && body.first() == Some(&b'{')) {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| format!("can't parse JSON request body: {e}"))?;
        let Value::Object(obj) = v else {
            return Err("JSON request body must be an object".into());
        };
        for (k, v) in obj {
            p.from_form.remove(&k);
            p.params.insert(k, v);
        }
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        for (k, v) in form_urlencoded::parse(body) {
            p.from_form.insert(k.to_string());
            p.params
                .insert(k.into_owned(), Value::String(v.into_owned()));
        }
    } else if ct.starts_with("multipart/form-data") {
        return Err("multipart/form-data is not supported by the fake Bot API".into());
    } else {
        return Err(format!("unsupported Content-Type {ct:?}"));
    }
    Ok(p)
}

/// Normalises and validates the parameters of a call against the spec.
fn validate(spec: &Spec, m: &MethodSpec, parsed: Parsed) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (k, v) in parsed.params {
        if v.is_null() {
            // Telegram treats an explicit null like an absent parameter.
            continue;
        }
        let Some(f) = m.fields.iter().find(|f| f.name == k) else {
            return Err(format!("unknown parameter \"{k}\" for method {}", m.name));
        };
        let v = match v {
            Value::String(s) if parsed.from_form.contains(&k) => coerce_string(&s, &f.types),
            // Object and array parameters may come JSON-encoded in a string
            // even in a JSON body; Telegram decodes them.
            Value::String(s)
                if !f.types.iter().any(|t| t == "String")
                    && f.types.iter().any(|t| is_container_type(t)) =>
            {
                match serde_json::from_str::<Value>(&s) {
                    Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
                    _ => Value::String(s),
                }
            }
            v => v,
        };
        spec.check_any(&v, &f.types, &k)
            .map_err(|e| format!("parameter {e}"))?;
        out.insert(k, v);
    }
    for f in m.fields.iter().filter(|f| f.required) {
        if !out.contains_key(&f.name) {
            return Err(format!(
                "parameter \"{}\" is required for method {}",
                f.name, m.name
            ));
        }
    }
    Ok(out)
}

async fn handle(
    State(st): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let path = uri.path().to_owned();
    let (method_name, answer, params) = route(&st, &path, &uri, &headers, &body).await;
    let status = answer.status();
    let body_json = answer.body();
    // Decided before the record: the call is carried out (recorded) even
    // if its answer then comes late or never.
    let (hold, cut) = {
        let f = lock(&st.faults);
        let send = method_name == "sendMessage";
        let chat = params.get("chat_id").and_then(chat_i64);
        (
            if send {
                f.send_answer_delay
            } else {
                Duration::ZERO
            },
            send && chat.is_some_and(|c| f.cut_send_answers.contains(&c)),
        )
    };
    lock(&st.calls).push(Call {
        method: method_name,
        params: Value::Object(params),
        at,
        status,
        response: body_json.clone(),
    });
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if cut {
        // Headers and half the body, then the stream fails: hyper aborts
        // the connection, as a reset mid-answer would.
        let text = body_json.to_string();
        let half = Bytes::from(text.as_bytes()[..text.len() / 2].to_vec());
        let parts: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::other("connection cut"))];
        return (
            code,
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::CONTENT_LENGTH, text.len().to_string()),
            ],
            axum::body::Body::from_stream(futures::stream::iter(parts)),
        )
            .into_response();
    }
    match answer {
        Answer::Html(_, page) => {
            (code, [(header::CONTENT_TYPE, "text/html")], page).into_response()
        }
        _ => (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            body_json.to_string(),
        )
            .into_response(),
    }
}

async fn route(
    st: &Arc<Inner>,
    path: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> (String, Answer, Map<String, Value>) {
    let Some(rest) = path.strip_prefix("/bot") else {
        return (path.to_owned(), err(404, "Not Found"), Map::new());
    };
    let (token, method) = rest.split_once('/').unwrap_or((rest, ""));
    if token != st.token {
        return (method.to_owned(), err(401, "Unauthorized"), Map::new());
    }
    let Some(m) = st.spec.method(method) else {
        st.violation(format!("call to unknown method {method:?}"));
        return (
            method.to_owned(),
            err(404, "Not Found: method not found"),
            Map::new(),
        );
    };
    let parsed = match parse_params(uri, headers, body) {
        Ok(p) => p,
        Err(e) => {
            st.violation(format!("{}: {e}", m.name));
            return (
                m.name.clone(),
                err(400, format!("Bad Request: {e}")),
                Map::new(),
            );
        }
    };
    let raw = parsed.params.clone();
    let params = match validate(st.spec, m, parsed) {
        Ok(p) => p,
        Err(e) => {
            st.violation(format!(
                "{}: {e}; params: {}",
                m.name,
                Value::Object(raw.clone())
            ));
            return (m.name.clone(), err(400, format!("Bad Request: {e}")), raw);
        }
    };
    let (delay, jitter, stall) = {
        let mut f = lock(&st.faults);
        let chat = params.get("chat_id").and_then(chat_i64);
        let stall = m.name == "sendMessage" && chat.is_some_and(|c| f.stalled_chats.contains(&c));
        if stall {
            f.stalled_calls += 1;
        }
        (f.delay, f.send_jitter, stall)
    };
    if stall {
        // Longer than any test; the caller is killed long before.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if !delay.is_zero() && m.name != "getUpdates" {
        tokio::time::sleep(delay).await;
    }
    if !jitter.is_zero() && m.name == "sendMessage" {
        let us = rand::random_range(0..=jitter.as_micros() as u64);
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
    let answer = st.dispatch(&m.name, &params).await;
    (m.name.clone(), answer, params)
}

impl Inner {
    fn violation(&self, v: String) {
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

    async fn dispatch(self: &Arc<Self>, method: &str, p: &Map<String, Value>) -> Answer {
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

    async fn get_updates(self: &Arc<Self>, p: &Map<String, Value>) -> Answer {
        if !lock(&self.webhook).url.is_empty() {
            return err(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
            );
        }
        let offset = p.get("offset").and_then(Value::as_i64).unwrap_or(0);
        let limit = p
            .get("limit")
            .and_then(Value::as_i64)
            .unwrap_or(100)
            .clamp(1, 100) as usize;
        let timeout = p
            .get("timeout")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .clamp(0, 50) as u64;

        // A newer getUpdates terminates the one in progress, as Telegram does.
        let me = {
            let mut poll = lock(&self.poll);
            poll.next += 1;
            let me = poll.next;
            poll.active = Some(me);
            me
        };
        self.poll_notify.notify_waiters();
        struct Release<'a>(&'a Inner, u64);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let mut poll = lock(&self.0.poll);
                if poll.active == Some(self.1) {
                    poll.active = None;
                }
            }
        }
        let _release = Release(self, me);

        {
            let mut q = lock(&self.updates);
            if offset > 0 {
                q.items
                    .retain(|u| u.get("update_id").and_then(Value::as_i64).unwrap_or(0) >= offset);
            } else if offset < 0 {
                let keep = offset.unsigned_abs() as usize;
                while q.items.len() > keep {
                    q.items.pop_front();
                }
            }
        }

        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            let notified = self.poll_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.poll).active != Some(me) {
                // Counted here, not when the newer request arrived: a poll
                // whose client is gone was dropped and answers nothing.
                self.conflicts.fetch_add(1, Ordering::SeqCst);
                return err(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                );
            }
            let batch: Vec<Value> = lock(&self.updates)
                .items
                .iter()
                .take(limit)
                .cloned()
                .collect();
            if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                return Answer::Ok(Value::Array(batch));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
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

/// Inline keyboard rules of the real API.
fn check_reply_markup(rm: Option<&Value>, chat: Option<i64>) -> Option<String> {
    let rows = rm?.get("inline_keyboard")?.as_array()?;
    for row in rows {
        for b in row.as_array().into_iter().flatten() {
            let actions = [
                "url",
                "callback_data",
                "web_app",
                "login_url",
                "switch_inline_query",
                "switch_inline_query_current_chat",
                "switch_inline_query_chosen_chat",
                "copy_text",
                "callback_game",
                "pay",
            ];
            let n = actions.iter().filter(|a| b.get(**a).is_some()).count();
            if n == 0 {
                return Some(
                    "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
                        .into(),
                );
            }
            if n > 1 {
                return Some("can't parse inline keyboard button: more than one action".into());
            }
            if b.get("text")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Some("can't parse inline keyboard button: Text must be non-empty".into());
            }
            if let Some(w) = b.get("web_app") {
                if chat.is_some_and(|c| c < 0) {
                    return Some("BUTTON_TYPE_INVALID".into());
                }
                let u = w.get("url").and_then(Value::as_str).unwrap_or("");
                if !u.starts_with("https://") {
                    return Some(format!(
                        "inline keyboard button Web App URL '{u}' is invalid: Only HTTPS links are allowed"
                    ));
                }
            }
            if let Some(u) = b.get("url").and_then(Value::as_str) {
                let ok = ["https://", "http://", "tg://"]
                    .iter()
                    .any(|s| u.starts_with(s) && u.len() > s.len());
                if !ok {
                    return Some(format!("inline keyboard button URL '{u}' is invalid"));
                }
            }
            if let Some(d) = b.get("callback_data").and_then(Value::as_str) {
                if !(1..=64).contains(&d.len()) {
                    return Some("BUTTON_DATA_INVALID".into());
                }
            }
        }
    }
    None
}

/// Parses Telegram's HTML subset; returns the plain text or the error the
/// real API gives ("can't parse entities: ...").
pub fn check_html(text: &str) -> Result<String, String> {
    const TAGS: &[&str] = &[
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
        "tg-time",
    ];
    let mut out = String::new();
    let mut stack: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let c = bytes[i];
        if c == b'<' {
            let Some(end) = text[i..].find('>') else {
                return Err(format!(
                    "can't parse entities: Unclosed start tag at byte offset {i}"
                ));
            };
            let inner = &text[i + 1..i + end];
            if let Some(name) = inner.strip_prefix('/') {
                let name = name.trim().to_ascii_lowercase();
                match stack.pop() {
                    Some(open) if open == name || name.is_empty() => {}
                    Some(open) => {
                        return Err(format!(
                            "can't parse entities: Unmatched end tag at byte offset {i}, expected \"</{open}>\", found \"</{name}>\""
                        ))
                    }
                    None => {
                        return Err(format!(
                            "can't parse entities: Unexpected end tag at byte offset {i}"
                        ))
                    }
                }
            } else {
                let name = inner
                    .split(|c: char| c.is_ascii_whitespace())
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if !TAGS.contains(&name.as_str()) {
                    return Err(format!(
                        "can't parse entities: Unsupported start tag \"{name}\" at byte offset {i}"
                    ));
                }
                stack.push(name);
            }
            i += end + 1;
        } else if c == b'&' {
            let rest = &text[i..];
            let ent = ["&lt;", "&gt;", "&amp;", "&quot;"]
                .iter()
                .find(|e| rest.starts_with(**e));
            match ent {
                Some(e) => {
                    out.push(match *e {
                        "&lt;" => '<',
                        "&gt;" => '>',
                        "&amp;" => '&',
                        _ => '"',
                    });
                    i += e.len();
                }
                None => {
                    // Numeric entities are decoded, anything else is literal.
                    out.push('&');
                    i += 1;
                }
            }
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!(
            "can't parse entities: Can't find end tag corresponding to start tag \"{open}\""
        ));
    }
    Ok(out)
}

/// MarkdownV2: the characters that are never formatting must be escaped.
/// (A subset of the real parser: enough to catch unescaped user input.)
pub fn check_markdown_v2(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.char_indices().peekable();
    let mut in_code = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            '`' => in_code = !in_code,
            '.' | '!' | '-' | '=' | '+' | '#' | '|' | '{' | '}' if !in_code => {
                return Err(format!(
                    "can't parse entities: Character '{c}' is reserved and must be escaped with the preceding '\\' (byte offset {i})"
                ));
            }
            '*' | '_' | '~' if !in_code => {}
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_checks_types() {
        let s = spec();
        let m = s.method("SENDMESSAGE").expect("case-insensitive");
        assert_eq!(m.name, "sendMessage");
        let chat = &m.fields.iter().find(|f| f.name == "chat_id").unwrap().types;
        assert!(s.check_any(&json!(5), chat, "chat_id").is_ok());
        assert!(s.check_any(&json!("@x"), chat, "chat_id").is_ok());
        assert!(s.check_any(&json!(true), chat, "chat_id").is_err());
        let rm = &m
            .fields
            .iter()
            .find(|f| f.name == "reply_markup")
            .unwrap()
            .types;
        let good = json!({"inline_keyboard": [[{"text": "a", "web_app": {"url": "https://x"}}]]});
        assert!(s.check_any(&good, rm, "reply_markup").is_ok());
        let bad = json!({"inline_keyboard": [[{"text": "a", "web_app": {"link": "https://x"}}]]});
        assert!(s.check_any(&bad, rm, "reply_markup").is_err());
        let bad = json!({"inline_keyboard": [{"text": "a", "url": "https://x"}]});
        assert!(s.check_any(&bad, rm, "reply_markup").is_err());
        let rp = &m
            .fields
            .iter()
            .find(|f| f.name == "reply_parameters")
            .unwrap()
            .types;
        assert!(s
            .check_any(&json!({"message_id": 3}), rp, "reply_parameters")
            .is_ok());
        assert!(s
            .check_any(&json!({"message_id": "3"}), rp, "reply_parameters")
            .is_err());
        assert!(s
            .check_any(&json!({"chat_id": 3}), rp, "reply_parameters")
            .is_err());
    }

    #[test]
    fn scopes_are_subtypes() {
        let s = spec();
        let m = s.method("setMyCommands").unwrap();
        let scope = &m.fields.iter().find(|f| f.name == "scope").unwrap().types;
        assert!(s
            .check_any(&json!({"type": "default"}), scope, "scope")
            .is_ok());
        assert!(s
            .check_any(&json!({"type": "chat", "chat_id": 1}), scope, "scope")
            .is_ok());
        assert!(s
            .check_any(&json!({"kind": "chat"}), scope, "scope")
            .is_err());
    }

    #[test]
    fn form_values_coerce() {
        let t = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(coerce_string("12", &t(&["Integer", "String"])), json!(12));
        assert_eq!(coerce_string("@c", &t(&["Integer", "String"])), json!("@c"));
        assert_eq!(coerce_string("true", &t(&["Boolean"])), json!(true));
        assert_eq!(
            coerce_string("[\"message\"]", &t(&["Array of String"])),
            json!(["message"])
        );
    }

    #[test]
    fn html_rules() {
        assert_eq!(check_html("<b>Hi</b> &amp; you").unwrap(), "Hi & you");
        assert!(check_html("Hi <Tom>").is_err());
        assert!(check_html("<b>Hi").is_err());
        assert!(check_html("<b>Hi</i>").is_err());
        assert!(check_markdown_v2("Hi Anne-Marie").is_err());
        assert!(check_markdown_v2("Hi Anne\\-Marie").is_ok());
    }
}
