//! Router tests over real TCP: the page, every 401 path, Redis down or
//! hanging (503), and, when a `redis-server` binary is installed, the full
//! 200 answer against a real Redis.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

#[allow(dead_code)]
mod v {
    include!("testdata/vectors.rs");
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn serve(redis_url: &str, max_age: Duration) -> SocketAddr {
    let state = MiniAppState {
        store: std::sync::Arc::new(
            shared::queue::RedisStore::open(redis_url, shared::keys::Keys::default()).unwrap(),
        ),
        token: BotToken::parse(v::TOKEN).unwrap(),
        max_age,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    addr
}

/// A Redis URL on which nothing listens.
const DEAD_REDIS: &str = "redis://127.0.0.1:1";

fn tma(raw: &str) -> String {
    format!("tma {raw}")
}

#[tokio::test]
async fn page_is_served_on_both_paths() {
    let addr = serve(DEAD_REDIS, Duration::ZERO).await;
    for path in ["/app", "/app/"] {
        let r = request(addr, "GET", path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.header("content-security-policy").is_some());
        assert_eq!(r.body, PAGE);
        let etag = r.header("etag").unwrap().to_owned();
        let again = request(addr, "GET", path, &[("If-None-Match", &etag)]).await;
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
        let weak = format!("W/{etag}");
        let other = request(addr, "GET", path, &[("If-None-Match", "\"x\", ")]).await;
        assert_eq!(other.status, 200);
        let weak = request(addr, "GET", path, &[("If-None-Match", &weak)]).await;
        assert_eq!(weak.status, 304);
    }
    let head = request(addr, "HEAD", "/app/", &[]).await;
    assert_eq!(head.status, 200);
    let post = request(addr, "POST", "/app/", &[]).await;
    assert_eq!(post.status, 405);
}

#[test]
fn page_is_small_self_contained_and_has_the_test_hooks() {
    assert!(PAGE.len() < 8 * 1024, "page is {} bytes", PAGE.len());
    for id in [
        "id=\"app\"",
        "id=\"name\"",
        "id=\"first-seen\"",
        "id=\"messages\"",
        "id=\"users-total\"",
        "id=\"users-new\"",
        "id=\"users-active\"",
        "id=\"updates-handled\"",
        "id=\"queue-depth\"",
        "id=\"status\"",
        "id=\"error\"",
        "id=\"error-title\"",
        "id=\"error-detail\"",
        "id=\"retry\"",
        "Retry-After",
        "<body data-state=\"loading\">",
        "tgWebAppData",
        "tgWebAppThemeParams",
        "--tg-theme-bg-color",
        "prefers-color-scheme",
        "\"tma \"",
    ] {
        assert!(PAGE.contains(id), "page lacks {id}");
    }
    // Nothing external is needed to render: no stylesheet links, no other
    // origin than Telegram's optional SDK.
    assert!(!PAGE.contains("<link"));
    let externals: Vec<&str> = PAGE
        .match_indices("https://")
        .map(|(i, _)| &PAGE[i..(i + 60).min(PAGE.len())])
        .collect();
    assert!(
        externals
            .iter()
            .all(|e| e.starts_with("https://telegram.org/js/telegram-web-app.js")),
        "{externals:?}"
    );
    // Rendering only through textContent: launch data never becomes HTML.
    assert!(!PAGE.contains("innerHTML"));
}

#[tokio::test]
async fn api_me_rejects_bad_credentials_with_401() {
    // Redis is down: every one of these must be answered before it matters.
    let addr = serve(DEAD_REDIS, Duration::from_secs(86_400)).await;
    let tampered = v::VALID_BASIC.replace("%3A42%2C", "%3A43%2C");
    let expired = tma(v::VALID_BASIC); // signed in 2023
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "missing Authorization"),
        (vec![("Authorization", "Bearer abc")], "scheme"),
        (vec![("Authorization", "tma")], "no initData"),
        (vec![("Authorization", "tma   ")], "no initData"),
        (vec![("Authorization", "tma garbage")], "no `hash`"),
        (vec![("Authorization", &expired)], "expired"),
    ];
    let tampered_header = tma(&tampered);
    let mut cases = cases;
    cases.push((vec![("Authorization", &tampered_header)], "does not match"));
    for method in ["GET", "POST"] {
        for (headers, expect) in &cases {
            let r = request(addr, method, "/api/me", headers).await;
            assert_eq!(r.status, 401, "{method} {headers:?}");
            assert_eq!(r.header("www-authenticate"), Some("tma"));
            assert_eq!(r.header("cache-control"), Some("no-store"));
            assert!(r
                .header("content-type")
                .unwrap()
                .starts_with("application/json"));
            let j = r.json();
            assert_eq!(j["ok"], false);
            let msg = j["error"].as_str().unwrap();
            assert!(msg.contains(expect), "{msg:?} lacks {expect:?}");
            assert!(!msg.contains("AAF-test_token"), "{msg}");
        }
    }
    let put = request(addr, "PUT", "/api/me", &[]).await;
    assert_eq!(put.status, 405);
}

#[tokio::test]
async fn api_me_without_user_is_401() {
    let addr = serve(DEAD_REDIS, Duration::ZERO).await;
    let h = tma(v::VALID_NO_USER);
    let r = request(addr, "GET", "/api/me", &[("Authorization", &h)]).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("no user"));
}

#[tokio::test]
async fn api_me_with_redis_down_is_503() {
    // max_age 0 disables the age check, so the 2023 vector stays valid.
    let addr = serve(DEAD_REDIS, Duration::ZERO).await;
    let h = tma(v::VALID_BASIC);
    let started = Instant::now();
    let r = request(addr, "GET", "/api/me", &[("Authorization", &h)]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(r.json()["ok"], false);
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn api_me_with_redis_hanging_is_503_within_the_timeout() {
    // Accepts connections and never answers.
    let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let addr = serve(&format!("redis://{hang_addr}"), Duration::ZERO).await;
    let h = tma(v::VALID_BASIC);
    let started = Instant::now();
    let r = request(addr, "POST", "/api/me", &[("Authorization", &h)]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(
        started.elapsed() < shared::redis_conn::COMMAND_TIMEOUT + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

struct RedisServer {
    child: Child,
    url: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway `redis-server`, or `None` when none is installed.
async fn redis_server() -> Option<RedisServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer {
        child,
        url: format!("redis://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start");
}

#[tokio::test]
async fn api_me_answers_stats_from_redis() {
    let Some(server) = redis_server().await else {
        eprintln!("redis-server not installed; skipping");
        return;
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut c = shared::redis_conn::Target::single(&server.url)
        .manager()
        .unwrap();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(shared::keys::Keys::default().user(42))
        .arg(&[
            ("first_name", "Old name"),
            ("username", "ann"),
            ("language_code", "en"),
            ("first_seen", "1700000000000"),
            ("last_seen", "1700000500000"),
            ("messages", "7"),
            ("start_payload", "app"),
        ])
        .ignore()
        .cmd("ZADD")
        .arg(shared::keys::Keys::default().users_first_seen())
        .arg(1000)
        .arg(1)
        .arg(now_ms)
        .arg(42)
        .ignore()
        .cmd("ZADD")
        .arg(shared::keys::Keys::default().users_last_seen())
        .arg(now_ms)
        .arg(42)
        .ignore()
        .cmd("HSET")
        .arg(shared::keys::Keys::default().counters())
        .arg("updates_handled")
        .arg(99)
        .ignore()
        .cmd("XADD")
        .arg(shared::keys::Keys::default().stream())
        .arg("*")
        .arg("u")
        .arg("1")
        .ignore()
        .cmd("XADD")
        .arg(shared::keys::Keys::default().stream())
        .arg("*")
        .arg("u")
        .arg("2")
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();

    let addr = serve(&server.url, Duration::ZERO).await;
    let h = tma(v::VALID_BASIC);
    for method in ["GET", "POST"] {
        let r = request(addr, method, "/api/me", &[("Authorization", &h)]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let j = r.json();
        assert_eq!(j["ok"], true);
        let u = &j["user"];
        assert_eq!(u["id"], 42);
        assert_eq!(u["first_name"], "Ann", "the signed profile wins");
        assert_eq!(u["username"], "ann");
        assert_eq!(u["language_code"], "en");
        assert_eq!(u["first_seen"], 1_700_000_000_000_i64);
        assert_eq!(u["last_seen"], 1_700_000_500_000_i64);
        assert_eq!(u["messages"], 7);
        assert_eq!(u["start_payload"], "app");
        assert_eq!(
            j["bot"],
            json!({"users_total": 2, "users_new_24h": 1, "users_active_24h": 1,
                   "updates_handled": 99, "queue_depth": 2, "users_blocked": 0})
        );
    }

    // A user the bot has never recorded.
    let h = tma(v::VALID_EDGE_PLUS);
    let r = request(addr, "GET", "/api/me", &[("Authorization", &h)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let u = &r.json()["user"];
    assert_eq!(u["id"], 7_000_000_001_i64);
    assert_eq!(u["first_name"], "A&B=C+D%E F");
    assert_eq!(u["last_name"], "Ünïcødé Алиса 🚀");
    assert_eq!(u["first_seen"], Value::Null);
    assert_eq!(u["last_seen"], Value::Null);
    assert_eq!(u["messages"], 0);
    assert_eq!(u["start_payload"], Value::Null);
}

fn web_user(first_name: &str, username: Option<&str>, lang: Option<&str>) -> WebAppUser {
    serde_json::from_value(json!({
        "id": 5, "first_name": first_name, "username": username, "language_code": lang
    }))
    .unwrap()
}

#[test]
fn me_body_for_a_new_user() {
    let bot = BotStats {
        users_total: 3,
        users_new_24h: 1,
        users_active_24h: 2,
        updates_handled: 10,
        queue_depth: 0,
        users_blocked: 0,
    };
    let body = me_body(&web_user("Bo", None, Some("ru")), None, &bot);
    assert_eq!(
        body,
        json!({
            "ok": true,
            "user": {"id": 5, "first_name": "Bo", "last_name": null, "username": null,
                     "language_code": "ru", "first_seen": null, "last_seen": null,
                     "messages": 0, "start_payload": null},
            "bot": {"users_total": 3, "users_new_24h": 1, "users_active_24h": 2,
                    "updates_handled": 10, "queue_depth": 0, "users_blocked": 0}
        })
    );
}

#[test]
fn me_body_merges_the_record() {
    let rec = UserRecord {
        id: 5,
        first_name: "Stored".into(),
        username: Some("old_handle".into()),
        language_code: Some("de".into()),
        first_seen: 1,
        last_seen: 2,
        start_payload: Some("ref".into()),
        messages: 4,
    };
    let b = me_body(
        &web_user("", Some("new"), None),
        Some(&rec),
        &BotStats::default(),
    );
    let u = &b["user"];
    assert_eq!(
        u["first_name"], "Stored",
        "falls back when Telegram sent none"
    );
    assert_eq!(u["username"], "new", "Telegram's current username wins");
    assert_eq!(u["language_code"], "de");
    assert_eq!((&u["first_seen"], &u["last_seen"]), (&json!(1), &json!(2)));
    assert_eq!(
        (&u["messages"], &u["start_payload"]),
        (&json!(4), &json!("ref"))
    );
}

#[test]
fn authorization_header_parsing() {
    let h = |v: &str| {
        let mut m = HeaderMap::new();
        m.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        m
    };
    assert_eq!(tma_credentials(&h("tma a=1&hash=2")), Ok("a=1&hash=2"));
    assert_eq!(tma_credentials(&h("TMA  a=1 ")), Ok("a=1"));
    assert!(tma_credentials(&h("tma")).is_err());
    assert!(tma_credentials(&h("tmax a=1")).is_err());
    assert!(tma_credentials(&h("Bearer a=1")).is_err());
    assert!(tma_credentials(&HeaderMap::new()).is_err());
}
