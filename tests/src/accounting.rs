//! Accounting for burst tests ("nothing lost"): every `update_id` of a
//! burst must end replied, deduplicated or dead-lettered with a reason.
//!
//! A [`Burst`] gives each update its own private chat (chat id = user id),
//! so every reply maps back to exactly one `update_id`. [`Account`] sorts
//! the burst by the fake Bot API's call record and the dead-letter stream;
//! [`wait_accounted`] waits, bounded, until nothing is unaccounted and
//! otherwise fails naming the missing update ids and the services' logs.
//!
//! [`FaultProxy`] sits between a worker and the fake Bot API and answers
//! 500 to sendMessage for chosen chats (a poison update), forwarding
//! everything else untouched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use shared::keys::{self, Keys};

use crate::fake_bot_api::Call;
use crate::harness::{kv, loud, value_i64, value_str, webhook_post};
use crate::stack::{queue_state, Stack};
use crate::updates::{next_update_id, private_command};
use crate::WEBHOOK_SECRET;

// ---------------------------------------------------------------------------
// Bursts
// ---------------------------------------------------------------------------

/// Updates whose replies can be told apart: one private chat per update.
#[derive(Debug, Clone)]
pub struct Burst {
    pub updates: Vec<Value>,
    /// update_id -> chat id (= user id) its reply goes to.
    pub chat_of: BTreeMap<i64, i64>,
    /// chat id -> update_id.
    pub update_of: HashMap<i64, i64>,
}

impl Burst {
    /// `n` private commands (`/help` and `/start` alternating, English and
    /// Russian), each from its own user `first_user + i`.
    pub fn private(n: usize, first_user: i64) -> Self {
        let mut b = Self {
            updates: Vec::with_capacity(n),
            chat_of: BTreeMap::new(),
            update_of: HashMap::new(),
        };
        for i in 0..n {
            let user = first_user + i as i64;
            let cmd = if i % 2 == 0 { "/help" } else { "/start" };
            let lang = if i % 5 == 0 { Some("ru") } else { Some("en") };
            b.push(private_command(
                next_update_id(),
                user,
                &format!("Burst{i}"),
                lang,
                cmd,
            ));
        }
        b
    }

    /// Adds one update (a private message: its chat id must be unique in
    /// the burst).
    pub fn push(&mut self, update: Value) {
        let uid = update["update_id"].as_i64().expect("update_id");
        let chat = update["message"]["chat"]["id"]
            .as_i64()
            .expect("message.chat.id");
        assert!(
            self.update_of.insert(chat, uid).is_none(),
            "chat {chat} used twice in one burst"
        );
        self.chat_of.insert(uid, chat);
        self.updates.push(update);
    }

    pub fn len(&self) -> usize {
        self.updates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    pub fn ids(&self) -> Vec<i64> {
        self.chat_of.keys().copied().collect()
    }
}

// ---------------------------------------------------------------------------
// Dead letters and counters
// ---------------------------------------------------------------------------

/// One entry of the dead letters (`tgbot:dead`).
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: String,
    pub entry: String,
    pub update_id: Option<i64>,
    pub error: String,
    pub deliveries: Option<i64>,
    pub failed_at: Option<i64>,
}

/// Every dead letter, read straight from Redis; `None` when Redis does not
/// answer.
pub async fn dead_letters(redis_url: &str) -> Option<Vec<DeadLetter>> {
    let client = redis::Client::open(redis_url).ok()?;
    let mut c = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(Keys::default().dead())
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .ok()?;
    let mut out = Vec::new();
    let redis::Value::Array(items) = v else {
        return Some(out);
    };
    for item in items {
        let redis::Value::Array(pair) = item else {
            continue;
        };
        if pair.len() != 2 {
            continue;
        }
        let id = value_str(&pair[0]).unwrap_or_default();
        let mut f: HashMap<String, redis::Value> = HashMap::new();
        match &pair[1] {
            redis::Value::Array(kv) => {
                for p in kv.chunks(2) {
                    if let [k, v] = p {
                        if let Some(k) = value_str(k) {
                            f.insert(k, v.clone());
                        }
                    }
                }
            }
            redis::Value::Map(kv) => {
                for (k, v) in kv {
                    if let Some(k) = value_str(k) {
                        f.insert(k, v.clone());
                    }
                }
            }
            _ => {}
        }
        out.push(DeadLetter {
            id,
            entry: f.get("id").and_then(value_str).unwrap_or_default(),
            update_id: f.get("update_id").and_then(value_i64),
            error: f.get("error").and_then(value_str).unwrap_or_default(),
            deliveries: f.get("deliveries").and_then(value_i64),
            failed_at: f.get("failed_at").and_then(value_i64),
        });
    }
    Some(out)
}

/// `tgbot:counters` as a map (empty when Redis does not answer).
pub async fn counters(redis_url: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let Ok(client) = redis::Client::open(redis_url) else {
        return out;
    };
    let Ok(Ok(mut c)) = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return out;
    };
    let m: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(Keys::default().counters())
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    out.extend(m);
    out
}

/// One consumer of the workers' group.
#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    pub name: String,
    pub pending: i64,
    pub idle_ms: i64,
}

/// `XINFO CONSUMERS` of the workers' group. A failed query is retried and
/// then fails the test, never read as "no consumers": on a loaded machine
/// a query can time out, and an empty answer would pass for "the dead
/// name is gone".
pub async fn consumers(redis_url: &str) -> Vec<ConsumerInfo> {
    consumers_of(redis_url, &Keys::default()).await
}

/// [`consumers`] of the bot whose keys are `keys`.
pub async fn consumers_of(redis_url: &str, keys: &Keys) -> Vec<ConsumerInfo> {
    let client = redis::Client::open(redis_url).expect("redis url");
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_connection_timeout(Some(Duration::from_secs(10)));
    let mut last_err = String::new();
    for _ in 0..10 {
        let reply = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut c) => {
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(keys.stream())
                    .arg(keys::GROUP)
                    .query_async::<redis::Value>(&mut c)
                    .await
            }
            Err(e) => Err(e),
        };
        match reply {
            Ok(redis::Value::Array(items)) => {
                return items
                    .iter()
                    .map(|i| {
                        let m = kv(i);
                        ConsumerInfo {
                            name: m.get("name").and_then(value_str).unwrap_or_default(),
                            pending: m.get("pending").and_then(value_i64).unwrap_or(0),
                            idle_ms: m.get("idle").and_then(value_i64).unwrap_or(0),
                        }
                    })
                    .collect();
            }
            Ok(other) => panic!("XINFO CONSUMERS answered {other:?}"),
            Err(e) => last_err = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("XINFO CONSUMERS kept failing: {last_err}");
}

/// The consumer a worker process registered: its name embeds the pid
/// (`<host>-<pid>-<random>`).
pub fn consumer_of_pid(list: &[ConsumerInfo], pid: u32) -> Option<ConsumerInfo> {
    let needle = format!("-{pid}-");
    list.iter().find(|c| c.name.contains(&needle)).cloned()
}

// ---------------------------------------------------------------------------
// The account
// ---------------------------------------------------------------------------

/// Where every update of a burst ended.
#[derive(Debug, Clone, Default)]
pub struct Account {
    pub sent: usize,
    /// Updates with at least one successful reply.
    pub answered: usize,
    /// Replies beyond one per update.
    pub duplicates: usize,
    /// Updates not answered, in the dead letters with a reason.
    pub dead: usize,
    /// Neither answered nor dead-lettered with a reason.
    pub lost: usize,
    /// The lost update ids.
    pub unaccounted: Vec<i64>,
    /// (update_id, replies) for every update answered more than once.
    pub repeated: Vec<(i64, usize)>,
    /// Dead letters of the burst's updates.
    pub dead_letters: Vec<DeadLetter>,
    /// Successful sendMessage calls to chats outside the burst.
    pub stray_replies: usize,
}

impl Account {
    /// Sorts `burst` by the successful sendMessage calls in `calls` and the
    /// dead letters `dead`.
    pub fn compute(burst: &Burst, calls: &[Call], dead: &[DeadLetter]) -> Self {
        let mut replies: HashMap<i64, usize> = HashMap::new();
        let mut stray = 0;
        for c in calls.iter().filter(|c| c.ok() && c.method == "sendMessage") {
            match c.chat_id().and_then(|chat| burst.update_of.get(&chat)) {
                Some(uid) => *replies.entry(*uid).or_insert(0) += 1,
                None => stray += 1,
            }
        }
        let dead_ids: HashSet<i64> = dead
            .iter()
            .filter(|d| !d.error.trim().is_empty())
            .filter_map(|d| d.update_id)
            .collect();
        let mut a = Self {
            sent: burst.len(),
            stray_replies: stray,
            dead_letters: dead
                .iter()
                .filter(|d| d.update_id.is_some_and(|u| burst.chat_of.contains_key(&u)))
                .cloned()
                .collect(),
            ..Self::default()
        };
        for uid in burst.chat_of.keys() {
            match replies.get(uid).copied().unwrap_or(0) {
                0 if dead_ids.contains(uid) => a.dead += 1,
                0 => {
                    a.lost += 1;
                    a.unaccounted.push(*uid);
                }
                n => {
                    a.answered += 1;
                    if n > 1 {
                        a.duplicates += n - 1;
                        a.repeated.push((*uid, n));
                    }
                }
            }
        }
        a
    }

    /// `SCENARIO <name>: sent=.. answered=.. duplicates=.. dead=.. lost=..`
    pub fn line(&self, name: &str) -> String {
        format!(
            "SCENARIO {name}: sent={} answered={} duplicates={} dead={} lost={}",
            self.sent, self.answered, self.duplicates, self.dead, self.lost
        )
    }

    /// Prints [`Self::line`] to the real stderr.
    pub fn print(&self, name: &str) {
        loud(&self.line(name));
    }
}

/// The account of `burst` right now.
pub async fn account(stack: &Stack, burst: &Burst) -> Account {
    let dead = dead_letters(&stack.redis.url()).await.unwrap_or_default();
    Account::compute(burst, &stack.api.calls_to("sendMessage"), &dead)
}

/// Everything a failure message about an incomplete account needs.
pub async fn diagnose(stack: &Stack, burst: &Burst, a: &Account) -> String {
    let url = stack.redis.url();
    let missing: Vec<String> = a
        .unaccounted
        .iter()
        .take(40)
        .map(|u| format!("{u} (chat {})", burst.chat_of[u]))
        .collect();
    let mut pending_entries = Vec::new();
    if let Ok(client) = redis::Client::open(url.as_str()) {
        if let Ok(Ok(mut c)) = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        {
            let v: redis::Value = redis::cmd("XPENDING")
                .arg(stack.keys.stream())
                .arg(keys::GROUP)
                .arg("-")
                .arg("+")
                .arg(20)
                .query_async(&mut c)
                .await
                .unwrap_or(redis::Value::Nil);
            pending_entries.push(format!("{v:?}"));
        }
    }
    format!(
        "{} of {} update(s) unaccounted (neither answered nor dead-lettered with a reason), first: [{}]\n\
         account: {}; stray replies: {}; repeated: {:?}\n\
         queue: {:?}\npending (first 20): {}\ncounters: {:?}\ndead letters: {:?}\n\
         sendMessage calls: {} ({} answered 200)\n{}",
        a.lost,
        a.sent,
        missing.join(", "),
        a.line("now"),
        a.stray_replies,
        a.repeated.iter().take(20).collect::<Vec<_>>(),
        queue_state(&url).await,
        pending_entries.join(""),
        counters(&url).await,
        a.dead_letters.iter().take(10).collect::<Vec<_>>(),
        stack.api.count("sendMessage"),
        stack.api.sent_count(),
        stack.logs_tail()
    )
}

/// Waits until every update of `burst` is answered or dead-lettered with a
/// reason and then `settle` longer (a late duplicate shows up in the
/// account); fails with the unaccounted ids and the logs on timeout.
pub async fn wait_accounted(stack: &Stack, burst: &Burst, timeout: Duration) -> Account {
    let deadline = Instant::now() + timeout;
    loop {
        let a = account(stack, burst).await;
        if a.lost == 0 {
            return a;
        }
        if Instant::now() >= deadline {
            panic!(
                "not every update was accounted for within {timeout:?}:\n{}",
                diagnose(stack, burst, &a).await
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------
// Posting
// ---------------------------------------------------------------------------

/// How the posting of one update went.
#[derive(Debug, Clone, Default)]
pub struct PostReport {
    /// Requests made, including retries.
    pub attempts: usize,
    /// Answers other than 200 (503 during an outage).
    pub refused: usize,
    /// Transport errors (connection refused, reset).
    pub errors: usize,
}

/// POSTs `update` until the ingress answers 200, as Telegram does: a 503
/// (or a transport error) is retried after `Retry-After` (at most 5 s).
/// `Err` if it was not accepted before `deadline`, or got a 4xx.
pub async fn post_until_accepted(
    url: &str,
    update: &Value,
    deadline: Instant,
) -> Result<PostReport, String> {
    let body = update.to_string();
    let mut r = PostReport::default();
    loop {
        r.attempts += 1;
        let wait = match webhook_post(url, Some(WEBHOOK_SECRET), body.clone()).await {
            Ok(reply) if reply.status == 200 => return Ok(r),
            Ok(reply) if (400..500).contains(&reply.status) => {
                return Err(format!(
                    "update {} answered {} ({}): never retried by Telegram",
                    update["update_id"], reply.status, reply.body
                ))
            }
            Ok(reply) => {
                r.refused += 1;
                reply
                    .header("retry-after")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_millis(500))
                    .min(Duration::from_secs(5))
            }
            Err(_) => {
                r.errors += 1;
                Duration::from_millis(500)
            }
        };
        if Instant::now() + wait >= deadline {
            return Err(format!(
                "update {} not accepted within the deadline after {} attempts ({} refused, {} transport errors)",
                update["update_id"], r.attempts, r.refused, r.errors
            ));
        }
        tokio::time::sleep(wait).await;
    }
}

/// Posts every update (`concurrency` at a time), each until accepted;
/// returns the reports in the order of `updates`.
/// `accepted` counts the updates accepted so far (for tests that act in
/// the middle of the burst).
pub async fn post_all_until_accepted(
    url: String,
    updates: Vec<Value>,
    concurrency: usize,
    timeout: Duration,
    accepted: Arc<AtomicUsize>,
) -> Result<Vec<PostReport>, String> {
    use futures::StreamExt;
    let deadline = Instant::now() + timeout;
    let results: Vec<Result<PostReport, String>> = futures::stream::iter(updates)
        .map(move |u| {
            let url = url.clone();
            let accepted = accepted.clone();
            async move {
                let r = post_until_accepted(&url, &u, deadline).await;
                if r.is_ok() {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                r
            }
        })
        .buffered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Posts every update once (`concurrency` at a time); `Err` naming the
/// first non-200 answer or transport error.
pub async fn post_all_once(
    url: String,
    updates: Vec<Value>,
    concurrency: usize,
) -> Result<(), String> {
    use futures::StreamExt;
    let results: Vec<Result<(), String>> = futures::stream::iter(updates)
        .map(move |u| {
            let url = url.clone();
            async move {
                match webhook_post(&url, Some(WEBHOOK_SECRET), u.to_string()).await {
                    Ok(r) if r.status == 200 => Ok(()),
                    Ok(r) => Err(format!(
                        "update {} answered {} ({})",
                        u["update_id"], r.status, r.body
                    )),
                    Err(e) => Err(format!("update {}: {e}", u["update_id"])),
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let bad: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} post(s) failed, first: {}",
            bad.len(),
            bad.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ))
    }
}

// ---------------------------------------------------------------------------
// A fault-injecting proxy in front of the fake Bot API
// ---------------------------------------------------------------------------

struct ProxyInner {
    upstream: String,
    client: reqwest::Client,
    failing: Mutex<HashSet<i64>>,
    /// Instants of the sendMessage calls answered 500, per chat.
    failed: Mutex<HashMap<i64, Vec<Instant>>>,
}

/// Forwards every Bot API call to the fake, except sendMessage to the
/// chats in its failing set: those get a 500 (JSON error body), every time.
/// The fake never sees them, so its record holds only real replies.
#[derive(Clone)]
pub struct FaultProxy {
    inner: Arc<ProxyInner>,
    url: String,
    _server: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (the fake's URL) on a free port.
    pub async fn start(upstream: &str) -> Self {
        let inner = Arc::new(ProxyInner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("proxy client"),
            failing: Mutex::new(HashSet::new()),
            failed: Mutex::new(HashMap::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new()
            .fallback(proxy_handle)
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            inner,
            url: format!("http://{addr}"),
            _server: Arc::new(AbortOnDrop(server)),
        }
    }

    /// Base URL for the worker's `TELEGRAM_API_URL`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// sendMessage to `chat` fails with 500 from now on.
    pub fn fail_chat(&self, chat: i64) {
        lock(&self.inner.failing).insert(chat);
    }

    /// Every chat works again.
    pub fn clear(&self) {
        lock(&self.inner.failing).clear();
    }

    /// sendMessage calls to `chat` answered 500 so far.
    pub fn failures(&self, chat: i64) -> usize {
        lock(&self.inner.failed).get(&chat).map_or(0, Vec::len)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn chat_of_request(uri: &Uri, body: &Bytes) -> Option<i64> {
    let from_json = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("chat_id").cloned())
        .and_then(|c| {
            c.as_i64()
                .or_else(|| c.as_str().and_then(|s| s.trim().parse().ok()))
        });
    from_json.or_else(|| {
        let query = uri.query().unwrap_or("");
        form_urlencoded::parse(body)
            .chain(form_urlencoded::parse(query.as_bytes()))
            .find(|(k, _)| k == "chat_id")
            .and_then(|(_, v)| v.trim().parse().ok())
    })
}

async fn proxy_handle(
    State(p): State<Arc<ProxyInner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_send = uri
        .path()
        .rsplit('/')
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("sendMessage"));
    if is_send {
        if let Some(chat) = chat_of_request(&uri, &body) {
            if lock(&p.failing).contains(&chat) {
                lock(&p.failed)
                    .entry(chat)
                    .or_default()
                    .push(Instant::now());
                let body = serde_json::json!({
                    "ok": false,
                    "error_code": 500,
                    "description": "Internal Server Error: poison chat"
                });
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response();
            }
        }
    }
    let target = format!(
        "{}{}",
        p.upstream,
        uri.path_and_query().map(|x| x.as_str()).unwrap_or("/")
    );
    let mut req = p.client.request(method, target).body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    match req.send().await {
        Ok(resp) => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let ct = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let bytes = resp.bytes().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response(),
    }
}
