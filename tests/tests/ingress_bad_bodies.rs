//! Bodies that are not UTF-8 JSON (SPEC.md "Ingress HTTP surface": body
//! not JSON -> 400, nothing stored), even when the bad bytes sit in a field
//! the ingress itself never reads.

use e2e::harness::webhook_post;
use e2e::stack::Stack;
use e2e::updates::{next_update_id, private_command};
use e2e::WEBHOOK_SECRET;

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_is_refused_and_not_stored() {
    let Some(s) = Stack::builder().workers(0).start().await else {
        return;
    };
    let url = s.webhook_url();
    let len0 = s.stream_len().await;
    let id = next_update_id();
    // A real update shape with invalid UTF-8 in places the probe skips:
    // an unknown field, the message text, the sender's name.
    let bodies: Vec<Vec<u8>> = vec![
        format!(r#"{{"update_id":{id},"unknown":"#)
            .into_bytes()
            .into_iter()
            .chain(*b"\"\xff\xfe\"}")
            .collect(),
        private_command(id, 4242, "Ada", None, "/start")
            .to_string()
            .replace("/start", "/start \u{1}")
            .into_bytes()
            .into_iter()
            .map(|b| if b == 1 { 0xC3 } else { b })
            .collect(),
        private_command(id, 4242, "Ada", None, "/start")
            .to_string()
            .replace("Ada", "A\u{1}a")
            .into_bytes()
            .into_iter()
            .map(|b| if b == 1 { 0x80 } else { b })
            .collect(),
    ];
    for body in bodies {
        assert!(std::str::from_utf8(&body).is_err(), "the body is bad UTF-8");
        let r = webhook_post(&url, Some(WEBHOOK_SECRET), body.clone())
            .await
            .unwrap();
        println!(
            "{} -> {} {}",
            String::from_utf8_lossy(&body),
            r.status,
            r.body
        );
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(s.stream_len().await, len0, "a 400 stores nothing");
    // The same update, valid: stored.
    s.post_ok(&private_command(id, 4242, "Ada", None, "/start"))
        .await;
    assert_eq!(s.stream_len().await, len0 + 1);
    s.assert_clean();
}
