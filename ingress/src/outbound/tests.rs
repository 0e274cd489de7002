//! The API's answers through the real router: the embedded store where it
//! does the operation (outbox), a Redis nobody listens on for the 503.

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use shared::keys::Keys;
use shared::queue::{MemoryStore, RedisStore, Store};
use tower::ServiceExt;

use super::*;

const KEY: &str = "test-key-9f2c";
const GOOD: &str = r#"{"method":"sendMessage","params":{"chat_id":42,"text":"hi"}}"#;

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

struct Api {
    app: Router,
    store: Arc<dyn Store>,
}

impl Api {
    fn new(store: Arc<dyn Store>, key: Option<&str>) -> Self {
        let state = Arc::new(AppState {
            store: store.clone(),
            lanes: Arc::new(crate::lanes::Lanes::default()),
            secret: None,
            metrics: Arc::new(crate::metrics::Metrics::default()),
            outbox_key: key.map(str::to_owned),
        });
        Self {
            app: crate::http::router(state),
            store,
        }
    }

    fn memory(key: Option<&str>) -> Self {
        Self::new(Arc::new(MemoryStore::new(Keys::default())), key)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `POST /api/outbox` with the right key plus `headers`.
    async fn outbox(&self, headers: &[(&str, &str)], body: &str) -> Answer {
        let auth = format!("Bearer {KEY}");
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        self.call(Method::POST, "/api/outbox", &all, body.to_owned())
            .await
    }

    /// The stored messages due now (taken, as a worker would).
    async fn due_now(&self) -> Vec<Value> {
        self.store
            .orphan_replies(now_ms() + 60_000, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|o| serde_json::from_str(&o.body).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn without_a_key_every_route_is_not_found() {
    let api = Api::memory(None);
    let auth = [("authorization", "Bearer anything")];
    for (method, path) in [
        (Method::POST, "/api/outbox"),
        (Method::GET, "/api/outbox"),
        (Method::POST, "/api/broadcasts"),
        (Method::GET, "/api/broadcasts/b1"),
    ] {
        let a = api.call(method.clone(), path, &auth, GOOD).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    assert!(api.due_now().await.is_empty());
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401_and_stores_nothing() {
    let api = Api::memory(Some(KEY));
    let wrong = format!("Bearer {KEY}x");
    let basic = format!("Basic {KEY}");
    let cases: [&[(&str, &str)]; 5] = [
        &[],
        &[("authorization", &wrong)],
        &[("authorization", &basic)],
        &[("authorization", "Bearer")],
        &[("authorization", "Bearer test-key-9f2")],
    ];
    for headers in cases {
        let a = api.call(Method::POST, "/api/outbox", headers, GOOD).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(a.headers[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(a.body["ok"], false);
        let a = api
            .call(Method::GET, "/api/broadcasts/b1", headers, "")
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{headers:?}");
    }
    assert!(api.due_now().await.is_empty(), "nothing stored");
    // The scheme is case-insensitive.
    let lower = format!("bearer {KEY}");
    let a = api
        .call(
            Method::POST,
            "/api/outbox",
            &[("authorization", &lower)],
            GOOD,
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_good_message_is_stored_due_now_and_answered_202_with_its_id() {
    let api = Api::memory(Some(KEY));
    let a = api.outbox(&[], GOOD).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let id = a.body["id"].as_str().unwrap().to_owned();
    assert!(!id.is_empty());
    assert!(!a.headers.contains_key(IDEMPOTENT_REPLAYED));
    let due = api.due_now().await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0]["chat_id"], 42);
    assert_eq!(due[0]["calls"][0]["params"]["text"], "hi");
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_first_id_and_stores_nothing() {
    let api = Api::memory(Some(KEY));
    let first = api.outbox(&[("idempotency-key", "order-17")], GOOD).await;
    let again = api.outbox(&[("idempotency-key", "order-17")], GOOD).await;
    let other = api.outbox(&[("idempotency-key", "order-18")], GOOD).await;
    assert_eq!(
        (first.status, again.status, other.status),
        (
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED
        )
    );
    assert_eq!(first.body["id"], again.body["id"]);
    assert_ne!(first.body["id"], other.body["id"]);
    assert_eq!(again.headers[IDEMPOTENT_REPLAYED], "true");
    assert_eq!(api.due_now().await.len(), 2, "order-17 once, order-18 once");
}

#[tokio::test]
async fn a_bad_idempotency_key_is_400_naming_the_header() {
    let api = Api::memory(Some(KEY));
    let long = "k".repeat(MAX_IDEMPOTENCY_KEY + 1);
    let fits = "k".repeat(MAX_IDEMPOTENCY_KEY);
    for key in ["", "two words", long.as_str()] {
        let a = api.outbox(&[("idempotency-key", key)], GOOD).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(a.body["field"], "Idempotency-Key", "{key:?}");
    }
    let a = api
        .outbox(&[("idempotency-key", "a"), ("idempotency-key", "b")], GOOD)
        .await;
    assert_eq!(a.body["field"], "Idempotency-Key");
    assert!(api.due_now().await.is_empty(), "nothing stored");
    let a = api.outbox(&[("idempotency-key", &fits)], GOOD).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_field() {
    let api = Api::memory(Some(KEY));
    let cases = [
        ("{not json", "body"),
        ("[1]", "body"),
        (r#"{"params":{"chat_id":1,"text":"x"}}"#, "method"),
        (r#"{"method":"getMe","params":{}}"#, "method"),
        (
            r#"{"method":"sendMessage","params":{"chat_id":1}}"#,
            "params.text",
        ),
        (
            r#"{"method":"sendMessage","params":{"text":"x"}}"#,
            "params.chat_id",
        ),
        (
            r#"{"method":"sendMessage","params":{"chat_id":1,"text":"x"},"not_before":"soon"}"#,
            "not_before",
        ),
        (
            r#"{"method":"sendMessage","params":{"chat_id":1,"text":"x"},"not_before":9223372036854775807}"#,
            "not_before",
        ),
    ];
    for (body, field) in cases {
        let a = api.outbox(&[], body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.body["field"], field, "{body}: {}", a.body);
        assert_eq!(a.body["ok"], false);
        assert!(
            a.body["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: ")),
            "{}",
            a.body
        );
    }
    assert!(api.due_now().await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn a_body_over_one_mib_is_413() {
    let api = Api::memory(Some(KEY));
    let text = "x".repeat(crate::http::MAX_BODY);
    let body = format!(r#"{{"method":"sendMessage","params":{{"chat_id":1,"text":"{text}"}}}}"#);
    let a = api.outbox(&[], &body).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    let len = body.len().to_string();
    let a = api.outbox(&[("content-length", &len)], &body).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "declared length");
    assert!(api.due_now().await.is_empty());
}

#[tokio::test]
async fn not_before_sets_when_the_message_becomes_due() {
    let api = Api::memory(Some(KEY));
    let later = now_ms() / 1000 + 3600;
    let body = format!(
        r#"{{"method":"sendMessage","params":{{"chat_id":7,"text":"later"}},"not_before":{later}}}"#
    );
    assert_eq!(api.outbox(&[], &body).await.status, StatusCode::ACCEPTED);
    assert!(api.due_now().await.is_empty(), "not due for an hour");
    let past = r#"{"method":"sendMessage","params":{"chat_id":7,"text":"now"},"not_before":1}"#;
    assert_eq!(api.outbox(&[], past).await.status, StatusCode::ACCEPTED);
    let due = api.due_now().await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0]["calls"][0]["params"]["text"], "now");
}

#[tokio::test]
async fn broadcasts_on_the_embedded_queue_are_501_and_unknown_ids_404() {
    let api = Api::memory(Some(KEY));
    let auth = format!("Bearer {KEY}");
    let body = r#"{"method":"sendMessage","params":{"text":"hello all"},"to":"all"}"#;
    let a = api
        .call(
            Method::POST,
            "/api/broadcasts",
            &[("authorization", &auth)],
            body,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED);
    assert!(
        a.body["error"].as_str().unwrap().contains("Redis"),
        "{}",
        a.body
    );
    let bad = r#"{"method":"sendMessage","params":{"text":"x"}}"#;
    let a = api
        .call(
            Method::POST,
            "/api/broadcasts",
            &[("authorization", &auth)],
            bad,
        )
        .await;
    assert_eq!(
        (a.status, &a.body["field"]),
        (StatusCode::BAD_REQUEST, &json!("to"))
    );
    let a = api
        .call(
            Method::POST,
            "/api/broadcasts",
            &[("authorization", &auth), ("idempotency-key", "k1")],
            body,
        )
        .await;
    assert_eq!(a.body["field"], "Idempotency-Key");
    let a = api
        .call(
            Method::GET,
            "/api/broadcasts/b123",
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn redis_down_is_503_with_retry_after() {
    let store = RedisStore::open("redis://127.0.0.1:1", Keys::default()).unwrap();
    let api = Api::new(Arc::new(store), Some(KEY));
    let a = api.outbox(&[], GOOD).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.headers["retry-after"], "5");
    let auth = format!("Bearer {KEY}");
    let a = api
        .call(
            Method::GET,
            "/api/broadcasts/b1",
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn bearer_and_due_parse() {
    assert_eq!(bearer("Bearer abc"), Some("abc"));
    assert_eq!(bearer("  BEARER   abc "), Some("abc"));
    assert_eq!(bearer("Bearer "), None);
    assert_eq!(bearer("Token abc"), None);
    assert_eq!(due_ms(None, 5), Ok(5));
    assert_eq!(due_ms(Some(2), 5), Ok(2000));
    assert_eq!(
        due_ms(Some(i64::MAX / 1000), 5).unwrap_err().field,
        "not_before"
    );
}
