//! The Mini App as a person sees it: the real page from the real ingress in
//! a real headless Chromium (driven by `tests/browser/check_page.mjs`),
//! launched the way Telegram launches it (signed launch data and theme in
//! the URL fragment), showing statistics that real traffic through the
//! webhook and the worker produced. Bad launch data gets a message for
//! people and no retry; storage down (503) gets the Retry-After hint and a
//! retry that goes back to loading without showing empty statistics.
//!
//! Needs `node`, `/usr/bin/chromium` (or `$CHROMIUM`) and
//! `npm ci --prefix tests/browser`. Without them the test prints a loud
//! `SKIPPED: ...` and returns, unless `E2E_REQUIRE_BROWSER=1` (CI sets it).
//!
//! Screenshots and the browser's reports: `target/e2e-output/miniapp-*`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::harness::{http, loud, target_dir};
use e2e::stack::Stack;
use e2e::updates::{next_update_id, private_command, private_text, unix_now};
use e2e::TOKEN;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use shared::keys;

const T: Duration = Duration::from_secs(20);
/// One browser run: launch, load, settle, screenshot. Normally ~2 s.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

const USER_ID: i64 = 340_001;
const FIRST_NAME: &str = "Zoë";
const LAST_NAME: &str = "Quinn";
const USERNAME: &str = "zoe_q";

/// Telegram Web's light theme, with a card colour unlike the page's own
/// default, so a screenshot shows whether the theme was applied.
const LIGHT_THEME: &str = r##"{"bg_color":"#ffffff","text_color":"#000000","hint_color":"#707579","link_color":"#3390ec","button_color":"#3390ec","button_text_color":"#ffffff","secondary_bg_color":"#f4f4f5","header_bg_color":"#ffffff","accent_text_color":"#3390ec","section_bg_color":"#ffffff","section_header_text_color":"#3390ec","subtitle_text_color":"#707579","destructive_text_color":"#e53935"}"##;
/// Telegram Web's dark theme.
const DARK_THEME: &str = r##"{"bg_color":"#212121","text_color":"#ffffff","hint_color":"#aaaaaa","link_color":"#8774e1","button_color":"#8774e1","button_text_color":"#ffffff","secondary_bg_color":"#0f0f0f","header_bg_color":"#212121","accent_text_color":"#8774e1","section_bg_color":"#212121","section_header_text_color":"#aaaaaa","subtitle_text_color":"#aaaaaa","destructive_text_color":"#ff595a"}"##;

#[tokio::test(flavor = "multi_thread")]
async fn mini_app_in_headless_chromium_shows_real_stats_and_rejects_bad_launch_data() {
    let Some(browser) = Browser::find() else {
        return;
    };
    let Some(mut s) = Stack::start().await else {
        return;
    };

    // Real traffic: X starts the bot and writes twice; Y only starts it.
    let other = USER_ID + 1;
    for update in [
        private_command(next_update_id(), USER_ID, FIRST_NAME, Some("en"), "/start"),
        private_text(next_update_id(), USER_ID, FIRST_NAME, Some("en"), "hello"),
        private_text(
            next_update_id(),
            USER_ID,
            FIRST_NAME,
            Some("en"),
            "how are you?",
        ),
        private_command(next_update_id(), other, "Yusuf", Some("en"), "/start"),
    ] {
        s.post_ok(&update).await;
    }
    s.wait_nth_reply(USER_ID, 1, T).await;
    s.wait_nth_reply(other, 1, T).await;
    s.wait_drained(T).await;

    // What Redis says, and what the traffic says it must be.
    let mut c = s.redis_conn().await;
    let messages: u64 = redis::cmd("HGET")
        .arg(keys::Keys::default().user(USER_ID))
        .arg("messages")
        .query_async(&mut c)
        .await
        .expect("HGET messages");
    let first_seen_ms: i64 = redis::cmd("HGET")
        .arg(keys::Keys::default().user(USER_ID))
        .arg("first_seen")
        .query_async(&mut c)
        .await
        .expect("HGET first_seen");
    let users_total: u64 = redis::cmd("ZCARD")
        .arg(keys::Keys::default().users_first_seen())
        .query_async(&mut c)
        .await
        .expect("ZCARD");
    let handled = s.counter("updates_handled").await;
    assert_eq!(
        (messages, users_total, handled),
        (3, 2, 4),
        "3 messages from X, 2 users, 4 updates handled"
    );

    let user = json!({
        "id": USER_ID,
        "first_name": FIRST_NAME,
        "last_name": LAST_NAME,
        "username": USERNAME,
        "language_code": "en",
        "allows_write_to_pm": true,
    })
    .to_string();
    let fields = |user: &str, auth_date: i64| {
        vec![
            ("query_id", "AAHdF6IQAAAAAN0XohDhrOrc".to_owned()),
            ("user", user.to_owned()),
            ("auth_date", auth_date.to_string()),
            ("signature", "ZmFrZS1lZDI1NTE5LXNpZ25hdHVyZQ".to_owned()),
        ]
    };
    let now = unix_now();
    let valid_fields = fields(&user, now);
    let hash = sign(&valid_fields, TOKEN);
    let valid = encode(&valid_fields, &hash);
    // Same hash, another name: what someone editing the URL would try.
    let tampered_user = user.replace(FIRST_NAME, "Mallory");
    assert_ne!(tampered_user, user);
    let tampered = encode(&fields(&tampered_user, now), &hash);
    // Properly signed two days ago: beyond the default 24 h.
    let old_fields = fields(&user, now - 2 * 86_400);
    let expired = encode(&old_fields, &sign(&old_fields, TOKEN));
    // The same, for someone whose Telegram speaks Russian.
    let user_ru = user.replace("\"language_code\":\"en\"", "\"language_code\":\"ru\"");
    assert_ne!(user_ru, user);
    let old_ru = fields(&user_ru, now - 2 * 86_400);
    let expired_ru = encode(&old_ru, &sign(&old_ru, TOKEN));

    // --- valid launch data: Telegram's light and dark themes, and no
    // theme at all in a dark browser (the page's own dark palette) ---
    for (label, theme, scheme, bg, card) in [
        (
            "ready",
            LIGHT_THEME,
            "light",
            "rgb(255, 255, 255)",
            "rgb(244, 244, 245)",
        ),
        (
            "ready-dark",
            DARK_THEME,
            "dark",
            "rgb(33, 33, 33)",
            "rgb(15, 15, 15)",
        ),
        (
            "ready-system-dark",
            "",
            "dark",
            "rgb(23, 33, 43)",
            "rgb(35, 46, 60)",
        ),
    ] {
        let r = browser
            .check(&page_url(&s, &valid, theme), label, scheme, false)
            .await;
        let ctx = format!("{label}: {r:#}\n{}", s.logs_tail());
        assert_settled(&r, "ready", &ctx);
        assert_eq!(text(&r, "name"), "Zoë Quinn @zoe_q", "{ctx}");
        assert!(text(&r, "name").contains(FIRST_NAME), "{ctx}");
        assert_eq!(text(&r, "messages"), messages.to_string(), "{ctx}");
        assert_eq!(text(&r, "users-total"), users_total.to_string(), "{ctx}");
        assert_eq!(text(&r, "updates-handled"), handled.to_string(), "{ctx}");
        assert_eq!(text(&r, "users-new"), "2", "{ctx}");
        assert_eq!(text(&r, "users-active"), "2", "{ctx}");
        assert_eq!(text(&r, "queue-depth"), "0", "{ctx}");
        // The name and the numbers say it all: no "Ready" under the name.
        assert_eq!(text(&r, "status"), "", "{ctx}");
        assert_eq!(text(&r, "error"), "", "{ctx}");
        let (year, month, day) = utc_date(first_seen_ms);
        let shown = text(&r, "first-seen");
        assert!(
            shown.contains(&year.to_string())
                && shown.contains(MONTHS[month - 1])
                && shown.contains(&day.to_string()),
            "first seen {year}-{month}-{day} shown as {shown:?}\n{ctx}"
        );
        assert_eq!(
            r["visible"],
            json!({"name": true, "data": true, "fail": false, "retry": false}),
            "{ctx}"
        );
        assert_eq!(
            r["api"],
            json!([{"url": "/api/me", "status": 200}]),
            "{ctx}"
        );
        assert_eq!(
            r["style"]["body_background"], bg,
            "theme bg_color applied\n{ctx}"
        );
        assert_eq!(
            r["style"]["card_background"], card,
            "secondary_bg_color\n{ctx}"
        );
    }

    // --- tampered and expired launch data: what to do, in the user's
    // language, the server's reason only as the small print, no retry (the
    // same launch data cannot work a second time) ---
    const BAD_EN: [&str; 2] = [
        "Session expired or invalid",
        "Open the app again from the bot.",
    ];
    const BAD_RU: [&str; 2] = [
        "Сеанс истёк или недействителен",
        "Откройте приложение заново из чата с ботом.",
    ];
    for (label, raw, theme, scheme, reason, lang, [title, says]) in [
        (
            "error",
            &tampered,
            LIGHT_THEME,
            "light",
            "signature does not match",
            "en",
            BAD_EN,
        ),
        (
            "error-dark",
            &tampered,
            DARK_THEME,
            "dark",
            "signature does not match",
            "en",
            BAD_EN,
        ),
        (
            "expired",
            &expired,
            LIGHT_THEME,
            "light",
            "expired",
            "en",
            BAD_EN,
        ),
        (
            "expired-ru-dark",
            &expired_ru,
            DARK_THEME,
            "dark",
            "expired",
            "ru",
            BAD_RU,
        ),
    ] {
        let api = api_me(&s, raw).await;
        assert_eq!(api.0, 401, "{label}: /api/me answers {api:?}");
        let server_says = api.1["error"].as_str().unwrap_or_default().to_owned();
        assert!(server_says.contains(reason), "{label}: {server_says:?}");

        let r = browser
            .check(&page_url(&s, raw, theme), label, scheme, false)
            .await;
        let ctx = format!("{label}: {r:#}\n{}", s.logs_tail());
        assert_settled(&r, "error", &ctx);
        assert_eq!(r["lang"], lang, "{ctx}");
        assert_eq!(text(&r, "error-title"), title, "{ctx}");
        assert_eq!(text(&r, "error"), says, "{ctx}");
        // The expiry message counts seconds, which go on between the two.
        assert_eq!(
            digits_as_n(&text(&r, "error-detail")),
            digits_as_n(&server_says),
            "the server's reason, as the detail line\n{ctx}"
        );
        assert_eq!(text(&r, "status"), "", "{ctx}");
        assert!(!text(&r, "name").contains("Mallory"), "{ctx}");
        assert!(!text(&r, "name").contains(FIRST_NAME), "{ctx}");
        assert_eq!(
            r["visible"],
            json!({"name": false, "data": false, "fail": true, "retry": false}),
            "{ctx}"
        );
        assert_eq!(
            r["api"],
            json!([{"url": "/api/me", "status": 401}]),
            "{ctx}"
        );
    }

    // --- storage down: 503 with the Retry-After hint and a retry, which
    // goes back to loading (no statistics full of dashes) and asks again ---
    s.redis.stop().await;
    let api = api_me(&s, &valid).await;
    assert_eq!(api.0, 503, "/api/me with Redis stopped answers {api:?}");
    let server_says = api.1["error"].as_str().unwrap_or_default().to_owned();
    let r = browser
        .check(
            &page_url(&s, &valid, LIGHT_THEME),
            "unavailable",
            "light",
            true,
        )
        .await;
    let ctx = format!("unavailable: {r:#}\n{}", s.logs_tail());
    assert_settled(&r, "error", &ctx);
    assert_eq!(
        r["after_retry"],
        json!({"pressed": true, "state": "loading", "status": "Loading…", "data": false, "fail": false}),
        "right after Try again\n{ctx}"
    );
    assert_eq!(
        r["api"],
        json!([{"url": "/api/me", "status": 503}, {"url": "/api/me", "status": 503}]),
        "{ctx}"
    );
    assert_eq!(text(&r, "error-title"), "Couldn't load statistics", "{ctx}");
    assert_eq!(
        text(&r, "error"),
        "Statistics are temporarily unavailable. Try again in 5 s.",
        "{ctx}"
    );
    assert_eq!(text(&r, "error-detail"), server_says, "{ctx}");
    assert_eq!(
        r["visible"],
        json!({"name": false, "data": false, "fail": true, "retry": true}),
        "{ctx}"
    );

    // Nothing of the launch data or the token in any log.
    let logs = s.all_logs();
    for secret in [hash.as_str(), "AAHdF6IQAAAAAN0XohDhrOrc", "Mallory"] {
        assert!(!logs.contains(secret), "{secret:?} reached a log");
    }
    s.assert_clean();
}

// ---------------------------------------------------------------------------
// initData, signed as Telegram signs it
// ---------------------------------------------------------------------------

/// `hex(HMAC_SHA256(key = HMAC_SHA256("WebAppData", token), data_check_string))`
/// with the data-check-string of every field (`hash` excluded), sorted by
/// key, as `key=value` lines.
fn sign(fields: &[(&str, String)], token: &str) -> String {
    let mut sorted: Vec<&(&str, String)> = fields.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let dcs = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"WebAppData").expect("any key length");
    mac.update(token.as_bytes());
    let secret = mac.finalize().into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret).expect("any key length");
    mac.update(dcs.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The query string Telegram hands the Mini App (values percent-encoded,
/// `hash` last).
fn encode(fields: &[(&str, String)], hash: &str) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .chain([format!("hash={hash}")])
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as
/// `encodeURIComponent` would (space as `%20`).
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The page URL Telegram opens: launch parameters in the fragment, each
/// value URL-encoded (so initData is encoded twice). An empty `theme`
/// leaves `tgWebAppThemeParams` out.
fn page_url(s: &Stack, init_data: &str, theme: &str) -> String {
    let mut url = format!(
        "{}/app/#tgWebAppData={}&tgWebAppVersion=7.0&tgWebAppPlatform=web",
        s.base_url(),
        pct(init_data)
    );
    if !theme.is_empty() {
        url.push_str("&tgWebAppThemeParams=");
        url.push_str(&pct(theme));
    }
    url
}

/// `GET /api/me` with `Authorization: tma <raw>`: status and JSON body.
async fn api_me(s: &Stack, raw: &str) -> (u16, Value) {
    let resp = http()
        .get(format!("{}/api/me", s.base_url()))
        .header("Authorization", format!("tma {raw}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /api/me: {e}\n{}", s.logs_tail()));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------

struct Browser {
    node: PathBuf,
    script: PathBuf,
    chromium: PathBuf,
    outdir: PathBuf,
}

impl Browser {
    /// The prerequisites, or `None` after a loud skip message (a panic
    /// when `E2E_REQUIRE_BROWSER` is set).
    fn find() -> Option<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
        let chromium = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        let node = which("node");
        let mut missing = Vec::new();
        if node.is_none() {
            missing.push("`node` on PATH (apt-get install nodejs npm)".to_owned());
        }
        if !chromium.is_file() {
            missing.push(format!("{} (apt-get install chromium)", chromium.display()));
        }
        if !dir
            .join("node_modules/playwright-core/package.json")
            .is_file()
        {
            missing.push(format!(
                "{}/node_modules/playwright-core (npm ci --prefix tests/browser)",
                dir.display()
            ));
        }
        if missing.is_empty() {
            return Some(Self {
                node: node.expect("checked"),
                script: dir.join("check_page.mjs"),
                chromium,
                outdir: target_dir().join("e2e-output"),
            });
        }
        let msg = format!(
            "SKIPPED: the Mini App browser test did NOT run - missing: {}.",
            missing.join("; ")
        );
        let require = std::env::var("E2E_REQUIRE_BROWSER")
            .map(|v| matches!(v.as_str(), "1" | "true" | "yes"))
            .unwrap_or(false);
        if require {
            panic!("{msg} (E2E_REQUIRE_BROWSER is set, so this is a failure)");
        }
        let bar = "!".repeat(78);
        loud(&format!("\n{bar}\n{msg}\n{bar}\n"));
        None
    }

    /// Runs `check_page.mjs` on `url` and returns its report; the
    /// screenshot is `target/e2e-output/miniapp-<label>.png`, the report
    /// and the script's stderr lie beside it.
    /// With `retry`, the script presses "Try again" once the page has
    /// settled (`after_retry` in the report).
    async fn check(&self, url: &str, label: &str, scheme: &str, retry: bool) -> Value {
        std::fs::create_dir_all(&self.outdir).expect("create target/e2e-output");
        let out_path = self.outdir.join(format!("miniapp-{label}.json"));
        let err_path = self.outdir.join(format!("miniapp-{label}.stderr"));
        let out = std::fs::File::create(&out_path).expect("create report file");
        let err = std::fs::File::create(&err_path).expect("create stderr file");
        let mut cmd = Command::new(&self.node);
        cmd.arg(&self.script)
            .arg(url)
            .arg(&self.outdir)
            .arg(label)
            .arg(scheme)
            .args(retry.then_some("retry"))
            .env("CHROMIUM", &self.chromium)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        die_with_parent(&mut cmd);
        // Spawned on the test's own thread: the death signal is tied to it.
        let mut child = cmd.spawn().expect("spawn node");
        let started = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait for node") {
                break st;
            }
            if started.elapsed() > BROWSER_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "check_page.mjs ({label}) did not finish within {BROWSER_TIMEOUT:?}; stderr:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        assert!(
            status.success(),
            "check_page.mjs ({label}) failed: {status}\nstdout: {stdout}\nstderr: {stderr}"
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("check_page.mjs ({label}) printed no report ({e}): {stdout}\nstderr: {stderr}")
        })
    }
}

fn assert_settled(r: &Value, state: &str, ctx: &str) {
    assert_eq!(r["settled"], true, "the page never settled\n{ctx}");
    assert_eq!(r["http_status"], 200, "GET /app/\n{ctx}");
    assert_eq!(r["state"], state, "{ctx}");
    assert_eq!(
        r["page_errors"],
        json!([]),
        "uncaught errors in the page\n{ctx}"
    );
    // Only Telegram's SDK script is off-origin, and it is blocked here.
    for u in r["blocked"].as_array().into_iter().flatten() {
        assert_eq!(u, "https://telegram.org/js/telegram-web-app.js", "{ctx}");
    }
    assert!(
        r["scroll_width"].as_i64() <= r["client_width"].as_i64(),
        "no horizontal scrolling at phone width\n{ctx}"
    );
    let png = r["screenshot"].as_str().unwrap_or_default();
    assert!(
        std::fs::metadata(png).is_ok_and(|m| m.len() > 1000),
        "screenshot {png:?}\n{ctx}"
    );
}

fn text(r: &Value, id: &str) -> String {
    r["text"][id].as_str().unwrap_or_default().to_owned()
}

/// `s` with every run of digits replaced by `N`.
fn digits_as_n(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('N') {
            out.push('N');
        }
    }
    out
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// The browser dies with the test process, even when that is killed.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// (year, month 1-12, day) in UTC of a time in milliseconds since the
/// epoch (the browser runs in UTC).
fn utc_date(ms: i64) -> (i64, usize, i64) {
    // Howard Hinnant's civil_from_days.
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as usize, day)
}

#[test]
fn helpers_match_known_values() {
    assert_eq!(utc_date(0), (1970, 1, 1));
    assert_eq!(utc_date(1_700_000_000_000), (2023, 11, 14));
    assert_eq!(utc_date(951_782_400_000), (2000, 2, 29));
    assert_eq!(pct("a b+/é"), "a%20b%2B%2F%C3%A9");
    // VALID_BASIC of ingress/src/miniapp/testdata/vectors.rs, signed
    // independently by gen_vectors.py (Python stdlib).
    let user = r#"{"id":42,"first_name":"Ann","username":"ann","language_code":"en"}"#;
    let fields = [
        ("query_id", "AAHdF6IQAAAAAN0XohDhrOrc".to_owned()),
        ("user", user.to_owned()),
        ("auth_date", "1700000000".to_owned()),
    ];
    let token = "1234567890:AAF-test_token_for_miniapp_vectors0";
    let expected = "query_id=AAHdF6IQAAAAAN0XohDhrOrc&user=%7B%22id%22%3A42%2C%22first_name%22%3A%22Ann%22%2C%22username%22%3A%22ann%22%2C%22language_code%22%3A%22en%22%7D&auth_date=1700000000&hash=daed38394c69adf6ce931a7f2d9af4ac2c9b5156e5ab902e9b6c8cd45bfdc85e";
    assert_eq!(encode(&fields, &sign(&fields, token)), expected);
}
