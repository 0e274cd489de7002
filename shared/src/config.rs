//! Configuration, parsed once from the environment into a typed struct.
//!
//! Every error names the variable and never echoes a secret value, because
//! the message is printed as the one line a failed deployment shows.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use url::Url;

use crate::secret;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration error: {var} is required{hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("configuration error: {var} {reason}")]
    Invalid { var: &'static str, reason: String },
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// The bot token. `Debug`/`Display` are redacted so it cannot reach a log
/// line by accident; `expose` is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken(String);

impl BotToken {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let raw = raw.trim();
        let (id, rest) = raw.split_once(':').ok_or_else(|| {
            invalid(
                "TELEGRAM_BOT_TOKEN",
                "is not a bot token (expected <digits>:<secret> as given by @BotFather)",
            )
        })?;
        let ok = !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(invalid(
                "TELEGRAM_BOT_TOKEN",
                "is not a bot token (expected <digits>:<secret> as given by @BotFather)",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The numeric bot id (the part before the colon): not secret.
    pub fn bot_id(&self) -> &str {
        self.0.split(':').next().unwrap_or_default()
    }
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BotToken({}:<redacted>)", self.bot_id())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone)]
pub struct Config {
    /// `None` only when the bot is disabled.
    pub token: Option<BotToken>,
    pub disabled: bool,
    /// The public webhook URL; `None` means polling mode.
    pub webhook_url: Option<Url>,
    pub webhook_secret: String,
    pub drop_pending_updates: bool,
    /// How often the ingress checks that Telegram still has its webhook
    /// (and puts it back if not); `None` = never after start-up.
    pub webhook_check: Option<Duration>,
    pub webapp_url: Option<Url>,
    pub api_url: Url,
    /// `None` when `REDIS_URL` is unset: the all-in-one then uses its
    /// embedded queue; ingress and worker use [`Config::redis_url_or_default`].
    pub redis_url: Option<String>,
    /// The names of this bot's Redis keys (`REDIS_KEY_PREFIX`), laid out
    /// for one server until the store learns it talks to a cluster.
    pub redis_keys: crate::keys::Keys,
    /// `REDIS_CLUSTER`, `QUEUE_SHARDS`, `REDIS_WAIT_REPLICAS`.
    pub redis_layout: crate::queue::RedisLayout,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    /// Messages per second for the whole bot; 0 = unlimited.
    pub send_rate: u32,
    /// Messages per second for broadcasts sent with
    /// `allow_paid_broadcast`; `None`: broadcasts use the bot's budget.
    pub paid_broadcast_rate: Option<u32>,
    /// How long a worker holds a broadcast recipient it is sending to;
    /// a killed worker's recipients are sent by another after it.
    pub broadcast_lease: Duration,
    pub worker_concurrency: usize,
    pub max_deliveries: u32,
    pub claim_idle: Duration,
    pub metrics_port: Option<u16>,
    pub initdata_max_age: Duration,
    /// `OUTBOX_API_KEY`: the bearer key of the outbound HTTP API
    /// (`/api/outbox`, `/api/broadcasts`); `None` turns the API off (its
    /// routes answer 404). A secret: redacted in `Debug`, never logged.
    pub outbox_api_key: Option<String>,
    /// Keep each chat's updates in acceptance order across workers.
    pub per_chat_order: bool,
    /// Fast-lane deadlines per kind (`WORKER_DEADLINES` over the defaults).
    pub deadlines: crate::queue::Deadlines,
    /// This process's identity (consumer name, leases, locks); the
    /// all-in-one's ingress and worker share it.
    pub instance: crate::instance::Instance,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("token", &self.token)
            .field("disabled", &self.disabled)
            .field("webhook_url", &self.webhook_url.as_ref().map(Url::as_str))
            .field("webhook_secret", &"<redacted>")
            .field(
                "outbox_api_key",
                &self.outbox_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("api_url", &self.api_url.as_str())
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_key_prefix", &self.redis_keys.prefix())
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Hides the passwords in a Redis URL for logging: the user-info one
/// (`redis://user:pw@host`) and the query one (`?pass=`, which redis-rs reads
/// for unix sockets, and `?password=`). A value that is not a URL is not
/// echoed at all, since it could be anything.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut u) = Url::parse(raw) else {
        return "<not a URL>".to_owned();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let is_secret = |k: &str| k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password");
    if u.query_pairs().any(|(k, _)| is_secret(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const WEBHOOK_PATH: &str = "/telegram/webhook/";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Parses from any lookup so tests need not touch the process
    /// environment. Empty values count as unset: platforms often render an
    /// unset variable as an empty one.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let disabled = parse_bool(get("DISABLE_TELEGRAM_BOT"), "DISABLE_TELEGRAM_BOT", false)?;
        let token = match get("TELEGRAM_BOT_TOKEN") {
            Some(raw) => Some(BotToken::parse(&raw)?),
            None if disabled => None,
            None => {
                return Err(ConfigError::Missing {
                    var: "TELEGRAM_BOT_TOKEN",
                    hint: " (the token from @BotFather; set DISABLE_TELEGRAM_BOT=true to run without a bot)",
                })
            }
        };

        let railway_domain = get("RAILWAY_PUBLIC_DOMAIN");
        if let Some(d) = &railway_domain {
            if d.contains('/') || d.contains(':') || d.contains(' ') {
                return Err(invalid(
                    "RAILWAY_PUBLIC_DOMAIN",
                    "must be a bare host name like example.up.railway.app",
                ));
            }
        }
        let webhook_url = match get("TELEGRAM_WEBHOOK_URL") {
            Some(raw) => Some(parse_https("TELEGRAM_WEBHOOK_URL", &raw)?),
            None => match &railway_domain {
                Some(d) => Some(parse_https(
                    "RAILWAY_PUBLIC_DOMAIN",
                    &format!("https://{d}{WEBHOOK_PATH}"),
                )?),
                None => None,
            },
        };
        let webapp_url = match get("TELEGRAM_WEBAPP_URL") {
            Some(raw) => Some(parse_https("TELEGRAM_WEBAPP_URL", &raw)?),
            None => match &railway_domain {
                Some(d) => Some(parse_https(
                    "RAILWAY_PUBLIC_DOMAIN",
                    &format!("https://{d}/app/"),
                )?),
                None => None,
            },
        };

        let webhook_secret = match get("TELEGRAM_WEBHOOK_SECRET") {
            Some(s) if secret::is_valid_webhook_secret(&s) => s,
            Some(_) => {
                return Err(invalid(
                    "TELEGRAM_WEBHOOK_SECRET",
                    "must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule for secret_token)",
                ))
            }
            None => token
                .as_ref()
                .map(|t| secret::derive_webhook_secret(t.expose()))
                .unwrap_or_default(),
        };

        let api_url = match get("TELEGRAM_API_URL") {
            Some(raw) => {
                let u = Url::parse(&raw)
                    .map_err(|e| invalid("TELEGRAM_API_URL", format!("is not a URL: {e}")))?;
                if u.scheme() != "https" && u.scheme() != "http" {
                    return Err(invalid(
                        "TELEGRAM_API_URL",
                        "must be an http:// or https:// URL",
                    ));
                }
                u
            }
            None => Url::parse("https://api.telegram.org").expect("static url"),
        };

        let redis_url = match get("REDIS_URL") {
            Some(raw) => {
                let u = Url::parse(&raw).map_err(|_| {
                    invalid("REDIS_URL", "is not a URL (expected redis://host:port)")
                })?;
                if !matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
                    return Err(invalid(
                        "REDIS_URL",
                        "must start with redis:// (or rediss://)",
                    ));
                }
                Some(raw)
            }
            None => None,
        };

        // Unset (or empty, like every variable here) keeps the names a
        // deployment from before the variable already has in its Redis.
        let redis_keys = match get("REDIS_KEY_PREFIX") {
            Some(raw) => crate::keys::Keys::new(&raw)
                .map_err(|e| invalid("REDIS_KEY_PREFIX", e.to_string()))?,
            None => crate::keys::Keys::default(),
        };

        let host: IpAddr = match get("HOST") {
            Some(h) => h
                .parse()
                .map_err(|_| invalid("HOST", "must be an IP address like 0.0.0.0 or ::"))?,
            None => IpAddr::from([0, 0, 0, 0]),
        };
        let port: u16 = parse_num(get("PORT"), "PORT", 8080)?;

        let log_format = match get("LOG_FORMAT")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("pretty") | Some("text") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(invalid("LOG_FORMAT", "must be json or pretty")),
        };

        let worker_concurrency: usize =
            parse_num(get("WORKER_CONCURRENCY"), "WORKER_CONCURRENCY", 16)?;
        if worker_concurrency == 0 {
            return Err(invalid("WORKER_CONCURRENCY", "must be at least 1"));
        }
        let max_deliveries: u32 =
            parse_num(get("WORKER_MAX_DELIVERIES"), "WORKER_MAX_DELIVERIES", 5)?;
        if max_deliveries == 0 {
            return Err(invalid("WORKER_MAX_DELIVERIES", "must be at least 1"));
        }
        let claim_idle_ms: u64 =
            parse_num(get("WORKER_CLAIM_IDLE_MS"), "WORKER_CLAIM_IDLE_MS", 30_000)?;
        if claim_idle_ms < 100 {
            return Err(invalid("WORKER_CLAIM_IDLE_MS", "must be at least 100"));
        }
        let metrics_port = match get("METRICS_PORT") {
            Some(_) => Some(parse_num(get("METRICS_PORT"), "METRICS_PORT", 0u16)?),
            None => None,
        };
        let initdata_max_age: u64 = parse_num(
            get("TELEGRAM_INITDATA_MAX_AGE"),
            "TELEGRAM_INITDATA_MAX_AGE",
            86_400,
        )?;

        let webhook_check_secs: u64 = parse_num(
            get("TELEGRAM_WEBHOOK_CHECK_SECS"),
            "TELEGRAM_WEBHOOK_CHECK_SECS",
            60,
        )?;

        // Visible ASCII only: it travels in an HTTP header, and a key no
        // client can send would lock the API shut without saying why.
        let outbox_api_key = match get("OUTBOX_API_KEY") {
            Some(k) if k.bytes().all(|b| b.is_ascii_graphic()) => Some(k),
            Some(_) => {
                return Err(invalid(
                    "OUTBOX_API_KEY",
                    "must be visible ASCII without spaces (it is sent as `Authorization: Bearer <key>`)",
                ))
            }
            None => None,
        };

        let redis_layout = crate::queue::RedisLayout {
            cluster: match get("REDIS_CLUSTER") {
                Some(v) => Some(parse_bool(Some(v), "REDIS_CLUSTER", false)?),
                None => None,
            },
            shards: parse_num(get("QUEUE_SHARDS"), "QUEUE_SHARDS", 1u16)?,
            wait_replicas: parse_num(get("REDIS_WAIT_REPLICAS"), "REDIS_WAIT_REPLICAS", 0u32)?,
        };
        if redis_layout.shards == 0 || redis_layout.shards > 1024 {
            return Err(invalid("QUEUE_SHARDS", "must be between 1 and 1024"));
        }

        let per_chat_order = match get("WORKER_ORDERING")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("chat") => true,
            Some("none") => false,
            Some(_) => return Err(invalid("WORKER_ORDERING", "must be chat or none")),
        };

        let paid_broadcast_rate = match get("TELEGRAM_PAID_BROADCAST_RATE") {
            None => None,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(r) if (1..=1000).contains(&r) => Some(r),
                _ => {
                    return Err(invalid(
                        "TELEGRAM_PAID_BROADCAST_RATE",
                        "must be messages per second, 1 to 1000",
                    ))
                }
            },
        };
        let broadcast_lease_ms: u64 = parse_num(
            get("WORKER_BROADCAST_LEASE_MS"),
            "WORKER_BROADCAST_LEASE_MS",
            75_000,
        )?;
        if broadcast_lease_ms < 1_000 {
            return Err(invalid(
                "WORKER_BROADCAST_LEASE_MS",
                "must be at least 1000",
            ));
        }
        let deadlines =
            crate::queue::Deadlines::parse(get("WORKER_DEADLINES").as_deref().unwrap_or(""))
                .map_err(|e| invalid("WORKER_DEADLINES", e.to_string()))?;

        Ok(Self {
            redis_layout,
            per_chat_order,
            deadlines,
            paid_broadcast_rate,
            broadcast_lease: Duration::from_millis(broadcast_lease_ms),
            instance: crate::instance::Instance::new(),
            token: if disabled { None } else { token },
            disabled,
            webhook_url,
            webhook_secret,
            drop_pending_updates: parse_bool(
                get("TELEGRAM_DROP_PENDING_UPDATES"),
                "TELEGRAM_DROP_PENDING_UPDATES",
                false,
            )?,
            webhook_check: (webhook_check_secs > 0)
                .then(|| Duration::from_secs(webhook_check_secs)),
            webapp_url,
            api_url,
            redis_url,
            redis_keys,
            listen: SocketAddr::new(host, port),
            log_format,
            send_rate: parse_num(get("TELEGRAM_SEND_RATE"), "TELEGRAM_SEND_RATE", 30)?,
            worker_concurrency,
            max_deliveries,
            claim_idle: Duration::from_millis(claim_idle_ms),
            metrics_port,
            initdata_max_age: Duration::from_secs(initdata_max_age),
            outbox_api_key,
        })
    }

    pub fn redis_url_or_default(&self) -> &str {
        self.redis_url.as_deref().unwrap_or(DEFAULT_REDIS_URL)
    }
}

fn parse_https(var: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let u = Url::parse(raw).map_err(|e| invalid(var, format!("is not a valid URL: {e}")))?;
    if u.scheme() != "https" {
        return Err(invalid(
            var,
            format!(
                "must be an https:// URL (got {}://); Telegram only calls https",
                u.scheme()
            ),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(invalid(var, "must include a host"));
    }
    Ok(u)
}

fn parse_bool(v: Option<String>, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(invalid(var, "must be true/false (also 1/0, yes/no)")),
    }
}

fn parse_num<T: std::str::FromStr>(
    v: Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| {
            invalid(
                var,
                format!("must be a non-negative whole number (got {s:?})"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const TOKEN: &str = "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn missing_token_names_the_variable() {
        let e = cfg(&[]).unwrap_err();
        assert!(e.to_string().contains("TELEGRAM_BOT_TOKEN"), "{e}");
    }

    #[test]
    fn key_prefix_defaults_to_todays_names_and_refuses_whitespace_by_name() {
        let c = cfg(&[("DISABLE_TELEGRAM_BOT", "yes")]).unwrap();
        assert_eq!(c.redis_keys.stream(), "tgbot:updates");
        let c = cfg(&[("DISABLE_TELEGRAM_BOT", "yes"), ("REDIS_KEY_PREFIX", "")]).unwrap();
        assert_eq!(c.redis_keys.prefix(), "tgbot:");
        let c = cfg(&[
            ("DISABLE_TELEGRAM_BOT", "yes"),
            ("REDIS_KEY_PREFIX", "shop:"),
        ])
        .unwrap();
        assert_eq!(c.redis_keys.stream(), "shop:updates");
        let e = cfg(&[
            ("DISABLE_TELEGRAM_BOT", "yes"),
            ("REDIS_KEY_PREFIX", "my bot:"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("REDIS_KEY_PREFIX") && e.to_string().contains("whitespace"),
            "{e}"
        );
    }

    #[test]
    fn cluster_and_shard_settings_are_checked_by_name() {
        let c = cfg(&[("DISABLE_TELEGRAM_BOT", "yes")]).unwrap();
        assert_eq!(c.redis_layout.cluster, None, "asked of the server");
        assert_eq!(c.redis_layout.shards, 1);
        assert_eq!(c.redis_layout.wait_replicas, 0);
        let c = cfg(&[
            ("DISABLE_TELEGRAM_BOT", "yes"),
            ("REDIS_CLUSTER", "true"),
            ("QUEUE_SHARDS", "3"),
            ("REDIS_WAIT_REPLICAS", "1"),
        ])
        .unwrap();
        assert_eq!(c.redis_layout.cluster, Some(true));
        assert_eq!(c.redis_layout.shards, 3);
        assert_eq!(c.redis_layout.wait_replicas, 1);
        for (var, bad) in [
            ("QUEUE_SHARDS", "0"),
            ("QUEUE_SHARDS", "many"),
            ("REDIS_CLUSTER", "maybe"),
            ("REDIS_WAIT_REPLICAS", "-1"),
        ] {
            let e = cfg(&[("DISABLE_TELEGRAM_BOT", "yes"), (var, bad)]).unwrap_err();
            assert!(e.to_string().contains(var), "{var}={bad}: {e}");
        }
    }

    #[test]
    fn disabled_bot_needs_no_token() {
        let c = cfg(&[("DISABLE_TELEGRAM_BOT", "yes")]).unwrap();
        assert!(c.disabled && c.token.is_none());
    }

    #[test]
    fn http_webhook_url_is_refused_by_name() {
        let e = cfg(&[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("TELEGRAM_WEBHOOK_URL", "http://x.example/hook"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("TELEGRAM_WEBHOOK_URL") && e.to_string().contains("https"),
            "{e}"
        );
        let e = cfg(&[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("TELEGRAM_WEBAPP_URL", "http://x.example/app"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("TELEGRAM_WEBAPP_URL"), "{e}");
    }

    #[test]
    fn railway_domain_derives_urls_and_explicit_url_wins() {
        let c = cfg(&[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("RAILWAY_PUBLIC_DOMAIN", "bot.up.railway.app"),
        ])
        .unwrap();
        assert_eq!(
            c.webhook_url.unwrap().as_str(),
            "https://bot.up.railway.app/telegram/webhook/"
        );
        assert_eq!(
            c.webapp_url.unwrap().as_str(),
            "https://bot.up.railway.app/app/"
        );
        let c = cfg(&[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("RAILWAY_PUBLIC_DOMAIN", "bot.up.railway.app"),
            ("TELEGRAM_WEBHOOK_URL", "https://other.example/hook"),
        ])
        .unwrap();
        assert_eq!(
            c.webhook_url.unwrap().as_str(),
            "https://other.example/hook"
        );
    }

    #[test]
    fn bad_token_error_does_not_echo_it() {
        let e = cfg(&[("TELEGRAM_BOT_TOKEN", "12345:bad token with spaces")]).unwrap_err();
        assert!(!e.to_string().contains("bad token"), "{e}");
        assert!(e.to_string().contains("TELEGRAM_BOT_TOKEN"));
    }

    #[test]
    fn secret_is_derived_or_validated() {
        let a = cfg(&[("TELEGRAM_BOT_TOKEN", TOKEN)]).unwrap();
        let b = cfg(&[("TELEGRAM_BOT_TOKEN", TOKEN)]).unwrap();
        assert_eq!(a.webhook_secret, b.webhook_secret);
        let e = cfg(&[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("TELEGRAM_WEBHOOK_SECRET", "has space"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("TELEGRAM_WEBHOOK_SECRET"));
    }

    #[test]
    fn numbers_are_checked() {
        let e = cfg(&[("TELEGRAM_BOT_TOKEN", TOKEN), ("PORT", "eighty")]).unwrap_err();
        assert!(e.to_string().contains("PORT"));
        let e = cfg(&[("TELEGRAM_BOT_TOKEN", TOKEN), ("WORKER_CONCURRENCY", "0")]).unwrap_err();
        assert!(e.to_string().contains("WORKER_CONCURRENCY"));
        let e = cfg(&[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("WORKER_DEADLINES", "callback_query"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("WORKER_DEADLINES"), "{e}");
        for bad in ["0", "1001", "fast"] {
            let e = cfg(&[
                ("TELEGRAM_BOT_TOKEN", TOKEN),
                ("TELEGRAM_PAID_BROADCAST_RATE", bad),
            ])
            .unwrap_err();
            assert!(
                e.to_string().contains("TELEGRAM_PAID_BROADCAST_RATE"),
                "{e}"
            );
        }
        let c = cfg(&[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("TELEGRAM_PAID_BROADCAST_RATE", "500"),
        ])
        .unwrap();
        assert_eq!(c.paid_broadcast_rate, Some(500));
    }

    #[test]
    fn webhook_check_defaults_to_a_minute_and_zero_turns_it_off() {
        let c = cfg(&[("TELEGRAM_BOT_TOKEN", TOKEN)]).unwrap();
        assert_eq!(c.webhook_check, Some(Duration::from_secs(60)));
        let c = cfg(&[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("TELEGRAM_WEBHOOK_CHECK_SECS", "0"),
        ])
        .unwrap();
        assert_eq!(c.webhook_check, None);
        let e = cfg(&[
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("TELEGRAM_WEBHOOK_CHECK_SECS", "often"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("TELEGRAM_WEBHOOK_CHECK_SECS"));
    }

    #[test]
    fn redact_url_hides_every_redis_password_form() {
        let cases = [
            ("redis://user:hunter2@h:6379/0", "redis://user:***@h:6379/0"),
            (
                "redis+unix:///run/r.sock?db=1&pass=hunter2",
                "redis+unix:///run/r.sock?db=1&pass=***",
            ),
            (
                "unix:///run/r.sock?user=u&password=hunter2",
                "unix:///run/r.sock?user=u&password=***",
            ),
            (
                "redis://h:6379?PASS=hunter2&protocol=resp3",
                "redis://h:6379?PASS=***&protocol=resp3",
            ),
            ("redis://h:6379", "redis://h:6379"),
        ];
        for (raw, want) in cases {
            assert_eq!(redact_url(raw), want, "{raw}");
        }
        assert!(!redact_url("not a url hunter2").contains("hunter2"));
    }

    #[test]
    fn outbox_key_is_optional_checked_and_never_shown() {
        let base = ("DISABLE_TELEGRAM_BOT", "yes");
        assert_eq!(cfg(&[base]).unwrap().outbox_api_key, None);
        assert_eq!(
            cfg(&[base, ("OUTBOX_API_KEY", " ")])
                .unwrap()
                .outbox_api_key,
            None
        );
        let c = cfg(&[base, ("OUTBOX_API_KEY", "k-3f9a_Secret")]).unwrap();
        assert_eq!(c.outbox_api_key.as_deref(), Some("k-3f9a_Secret"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("k-3f9a_Secret") && shown.contains("<redacted>"),
            "{shown}"
        );
        let e = cfg(&[base, ("OUTBOX_API_KEY", "two words")]).unwrap_err();
        assert!(e.to_string().contains("OUTBOX_API_KEY"), "{e}");
        assert!(!e.to_string().contains("two words"), "{e}");
    }

    #[test]
    fn debug_redacts_token() {
        let c = cfg(&[("TELEGRAM_BOT_TOKEN", TOKEN)]).unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"), "{s}");
    }
}
