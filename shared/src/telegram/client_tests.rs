//! The Bot API client's tests: what its errors carry (never the token),
//! outcomes of answers that never come, and the URL cache.

use super::*;

#[tokio::test]
async fn network_errors_never_carry_the_token() {
    let token = BotToken::parse("999:SECRETsecretSECRET").unwrap();
    // Port 9 on localhost: nothing listens, the connect fails at once.
    let api = BotApi::new(&Url::parse("http://127.0.0.1:9").unwrap(), &token);
    let err = api.get_me().await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, BotApiError::Network { .. }), "{text}");
    assert!(!text.contains("SECRETsecretSECRET"), "{text}");
    // What an operator needs to act: where it tried to go, and why not.
    assert!(text.contains("127.0.0.1:9"), "names the host: {text}");
    assert!(
        text.to_lowercase().contains("connection refused"),
        "names the cause: {text}"
    );
    assert!(err.is_transient());
    assert!(
        !err.outcome_unknown(),
        "a refused connect never reached Telegram"
    );
}

#[test]
fn method_urls_are_parsed_once_and_the_cache_is_bounded() {
    let token = BotToken::parse("999:SECRETsecretSECRET").unwrap();
    let api = BotApi::new(&Url::parse("http://127.0.0.1:9/").unwrap(), &token);
    let url = api.url("sendMessage").unwrap();
    assert_eq!(url.path(), "/bot999:SECRETsecretSECRET/sendMessage");
    assert_eq!(api.url("sendMessage"), Some(url));
    assert_eq!(api.urls.lock().unwrap().len(), 1);
    // Clones share it: the sender's copies fill one cache.
    let copy = api.clone();
    for i in 0..2 * URL_CACHE_MAX {
        assert!(copy.url(&format!("method{i}")).is_some());
    }
    assert_eq!(api.urls.lock().unwrap().len(), URL_CACHE_MAX);
    // Past the bound a method still gets its URL, just not kept.
    assert!(api.url("sendPhoto").unwrap().path().ends_with("/sendPhoto"));
}

/// A server that reads each request and then, per `answer`, stays
/// silent (`None`) or writes those bytes and closes the connection.
async fn server(answer: Option<&'static [u8]>) -> Url {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                match answer {
                    Some(bytes) => {
                        let _ = sock.write_all(bytes).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    Url::parse(&format!("http://{addr}")).unwrap()
}

#[tokio::test]
async fn a_request_whose_answer_never_comes_has_an_unknown_outcome() {
    let token = BotToken::parse("999:SECRETsecretSECRET").unwrap();
    let silent = BotApi::new(&server(None).await, &token);
    let err = silent
        .call_with_timeout::<_, serde_json::Value>(
            "sendMessage",
            &serde_json::json!({}),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(err.outcome_unknown(), "timed out after sending: {err}");
    assert!(!format!("{err:?}").contains("SECRETsecretSECRET"));

    // Headers came, then the connection broke mid-body.
    let cut = BotApi::new(
        &server(Some(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"ok\":tr",
        ))
        .await,
        &token,
    );
    let err = cut.get_me().await.unwrap_err();
    assert!(err.outcome_unknown(), "reset mid-answer: {err}");
    assert!(err.is_transient(), "an idempotent call may still retry it");
}

#[test]
fn classification() {
    let e = |code| BotApiError::Api {
        method: "sendMessage".into(),
        code,
        description: String::new(),
        retry_after: Some(3),
        migrate_to_chat_id: None,
    };
    assert_eq!(e(429).retry_after(), Some(Duration::from_secs(3)));
    assert!(e(403).is_final_for_request() && !e(403).is_transient());
    assert!(e(502).is_transient() && !e(502).outcome_unknown());
    assert!(
        e(504).outcome_unknown(),
        "a gateway gave up; the back end may act"
    );
    assert!(!e(400).outcome_unknown() && !e(429).outcome_unknown());
    assert!(e(401).is_unauthorized());
}
