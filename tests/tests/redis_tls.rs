//! `REDIS_URL=rediss://...`: managed Redis offerings (Upstash, Redis Cloud,
//! and others) speak TLS only. Against a real `redis-server` with TLS on:
//! a certificate the process trusts (through `SSL_CERT_FILE`, as with any
//! private CA) carries the whole pipeline; one it does not trust is
//! refused (never ready, never a 200); `#insecure` - for providers with
//! self-signed certificates - connects without verification.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::harness::{free_port, http_get, loud, target_dir, webhook_post, HttpReply, Service};
use e2e::stack::{try_wait_ready, wait_ready};
use e2e::updates::{next_update_id, private_command};
use e2e::{FakeBotApi, TOKEN, WEBHOOK_SECRET, WEBHOOK_URL};

const T: Duration = Duration::from_secs(20);

struct TlsRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A certificate for 127.0.0.1 from a throwaway CA and a TLS-only redis-server
/// using it; `None` (after a loud note) when openssl or redis-server is
/// missing and E2E_REQUIRE_REDIS is not set.
async fn tls_redis() -> Option<TlsRedis> {
    if !have("openssl") || !have("redis-server") {
        let msg = "SKIPPED: the rediss:// test needs `openssl` and `redis-server` on PATH";
        if std::env::var("E2E_REQUIRE_REDIS").is_ok_and(|v| v == "1" || v == "true") {
            panic!("{msg} (E2E_REQUIRE_REDIS is set)");
        }
        loud(msg);
        return None;
    }
    let dir = target_dir()
        .join("e2e-tmp")
        .join(format!("redis-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A private CA and a server certificate it signed (webpki refuses a
    // CA certificate presented as the server's own).
    let openssl = |args: &[&str]| {
        let st = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(st.success(), "openssl {args:?} failed");
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=e2e test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-port")
        .arg(port.to_string())
        .arg("--tls-cert-file")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("key.pem"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"))
        .args(["--tls-auth-clients", "no"])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let r = TlsRedis { port, dir, child };
    // Ready once the TLS port accepts connections.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "TLS redis-server did not start:\n{}",
            std::fs::read_to_string(r.dir.join("redis.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(r)
}

fn env(api: &FakeBotApi, redis_url: &str, cert: Option<&Path>) -> Vec<(String, String)> {
    let mut e = vec![
        ("TELEGRAM_BOT_TOKEN".to_owned(), TOKEN.to_owned()),
        ("TELEGRAM_WEBHOOK_URL".to_owned(), WEBHOOK_URL.to_owned()),
        (
            "TELEGRAM_WEBHOOK_SECRET".to_owned(),
            WEBHOOK_SECRET.to_owned(),
        ),
        ("TELEGRAM_API_URL".to_owned(), api.url()),
        ("TELEGRAM_SEND_RATE".to_owned(), "0".to_owned()),
        ("REDIS_URL".to_owned(), redis_url.to_owned()),
        ("HOST".to_owned(), "127.0.0.1".to_owned()),
    ];
    if let Some(c) = cert {
        e.push(("SSL_CERT_FILE".to_owned(), c.display().to_string()));
    }
    e
}

/// A /start from `chat` delivered to the ingress on `port`.
async fn post_start(port: u16, chat: i64) -> HttpReply {
    let u = private_command(next_update_id(), chat, "Tls", Some("en"), "/start");
    webhook_post(
        &format!("http://127.0.0.1:{port}/telegram/webhook/"),
        Some(WEBHOOK_SECRET),
        u.to_string(),
    )
    .await
    .expect("post")
}

/// Ingress + worker on `redis_url`; one /start goes through and is answered.
async fn pipeline_works(api: &FakeBotApi, redis_url: &str, cert: Option<&Path>, chat: i64) {
    let port = free_port();
    let mut ienv = env(api, redis_url, cert);
    ienv.push(("PORT".to_owned(), port.to_string()));
    let mut ingress = Service::spawn_owned("ingress", &[], &ienv);
    wait_ready(&mut ingress, port).await;
    let worker = Service::spawn_owned("worker", &[], &env(api, redis_url, cert));
    let r = post_start(port, chat).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let answered = api
        .wait_for(T, |calls| {
            calls
                .iter()
                .any(|c| c.method == "sendMessage" && c.chat_id() == Some(chat))
        })
        .await;
    assert!(
        answered,
        "no reply over {redis_url}\n{}\n{}",
        ingress.logs_tail(),
        worker.logs_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_urls_verify_the_server_or_say_insecure() {
    let Some(redis) = tls_redis().await else {
        return;
    };
    let api = FakeBotApi::start().await;
    let cert = redis.dir.join("ca.pem");
    let verified = format!("rediss://127.0.0.1:{}", redis.port);

    // A CA the process trusts: the whole pipeline over TLS.
    pipeline_works(&api, &verified, Some(&cert), 930_001).await;

    // `#insecure`: encrypted, not verified (self-signed managed Redis).
    pipeline_works(&api, &format!("{verified}/#insecure"), None, 930_002).await;

    // Not trusted: never ready, and a webhook gets 503, not a 200.
    let port = free_port();
    let mut ienv = env(&api, &verified, None);
    ienv.push(("PORT".to_owned(), port.to_string()));
    let mut ingress = Service::spawn_owned("ingress", &[], &ienv);
    let ready =
        tokio::time::timeout(Duration::from_secs(5), try_wait_ready(&mut ingress, port)).await;
    assert!(
        !matches!(ready, Ok(Ok(()))),
        "ready on an untrusted certificate:\n{}",
        ingress.logs_tail()
    );
    let health = http_get(&format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status, 200, "alive, only not ready");
    let r = post_start(port, 930_003).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(!ingress.logs().contains(TOKEN));
    api.assert_no_violations();
}
