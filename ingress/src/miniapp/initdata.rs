//! Server-side validation of Telegram Mini App launch data (`initData`).
//!
//! Implements Telegram's rule
//! (<https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app>):
//!
//! ```text
//! data_check_string = every field except `hash`, URL-decoded, as `key=value`,
//!                     sorted by key, joined by '\n'
//! secret_key        = HMAC_SHA256(key = "WebAppData", message = bot_token)
//! hash              = hex(HMAC_SHA256(key = secret_key, message = data_check_string))
//! ```
//!
//! Newer clients also send `signature` (an Ed25519 signature for third-party
//! validation); it is an ordinary field here and therefore part of the
//! data-check-string. Only `hash` is excluded.
//!
//! Beyond the signature this module is strict where Telegram's data never
//! varies, so that no two different field sets share a data-check-string:
//! duplicate keys, empty keys, a `=` in a key, or a line break in a key or
//! value are refused.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use shared::config::BotToken;

type HmacSha256 = Hmac<Sha256>;

/// initData beyond this size is refused before any parsing or hashing. Real
/// launch data is well under 2 KiB.
pub const MAX_INIT_DATA_LEN: usize = 8 * 1024;

/// How far `auth_date` may lie in the future (clock skew between Telegram
/// and this server) before the data is refused.
pub const MAX_CLOCK_SKEW_SECS: i64 = 60;

/// Why initData was refused. The messages are safe to show to the client
/// and to log: they never contain the initData itself or the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitDataError {
    #[error("initData is empty")]
    Empty,
    #[error("initData is too large (over {MAX_INIT_DATA_LEN} bytes)")]
    TooLarge,
    #[error("initData has no `{0}` field")]
    Missing(&'static str),
    #[error("initData is malformed: {0}")]
    Malformed(&'static str),
    #[error("initData repeats the field `{0}`")]
    DuplicateKey(String),
    #[error("initData signature does not match (the data was altered, or signed for another bot)")]
    BadHash,
    #[error(
        "initData has expired (signed {age_secs} s ago, accepted for {max_age_secs} s); \
         reopen the Mini App from Telegram"
    )]
    Expired { age_secs: i64, max_age_secs: u64 },
    #[error("initData auth_date lies in the future (check the server clock)")]
    FromFuture,
    #[error("initData carries no user")]
    NoUser,
}

/// The `user` object of initData (Telegram's `WebAppUser`). Unknown fields
/// are ignored so new Telegram additions do not break validation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct WebAppUser {
    pub id: i64,
    #[serde(default)]
    pub first_name: String,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub language_code: Option<String>,
    pub photo_url: Option<String>,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub is_premium: bool,
    #[serde(default)]
    pub allows_write_to_pm: bool,
    #[serde(default)]
    pub added_to_attachment_menu: bool,
}

/// Validated launch data. Only constructed by [`validate`], so holding one
/// means Telegram signed every field in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitData {
    /// Unix seconds at which Telegram signed the data.
    pub auth_date: i64,
    pub user: Option<WebAppUser>,
    pub query_id: Option<String>,
    pub start_param: Option<String>,
    pub chat_type: Option<String>,
    pub chat_instance: Option<String>,
}

impl InitData {
    /// The launching user; launches from the attachment menu of a chat may
    /// lack one, and a per-user API cannot serve those.
    pub fn require_user(self) -> Result<WebAppUser, InitDataError> {
        self.user.ok_or(InitDataError::NoUser)
    }
}

/// Validates `raw` (the query string Telegram hands the Mini App, exactly as
/// received) for the bot `token` at time `now_unix` (seconds since the
/// epoch).
///
/// `max_age` bounds how old `auth_date` may be; `Duration::ZERO` disables the
/// age check (the signature is still required). An `auth_date` more than
/// [`MAX_CLOCK_SKEW_SECS`] ahead of `now_unix` is refused.
///
/// The signature is checked before any field is interpreted, so every error
/// after [`InitDataError::BadHash`] concerns data Telegram really signed.
pub fn validate(
    raw: &str,
    token: &BotToken,
    max_age: Duration,
    now_unix: i64,
) -> Result<InitData, InitDataError> {
    validate_with_token(raw, token.expose(), max_age, now_unix)
}

fn validate_with_token(
    raw: &str,
    token: &str,
    max_age: Duration,
    now_unix: i64,
) -> Result<InitData, InitDataError> {
    if raw.is_empty() {
        return Err(InitDataError::Empty);
    }
    if raw.len() > MAX_INIT_DATA_LEN {
        return Err(InitDataError::TooLarge);
    }

    let mut fields = parse_fields(raw)?;
    let provided = fields
        .remove("hash")
        .ok_or(InitDataError::Missing("hash"))?;
    let provided = match hex::decode(provided.as_bytes()) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        _ => {
            return Err(InitDataError::Malformed(
                "hash is not 64 hexadecimal digits",
            ))
        }
    };

    let expected = sign(&data_check_string(&fields), token);
    if !shared::secret::ct_eq(&expected, &provided) {
        return Err(InitDataError::BadHash);
    }

    let auth_date: i64 = fields
        .get("auth_date")
        .ok_or(InitDataError::Missing("auth_date"))?
        .parse()
        .map_err(|_| InitDataError::Malformed("auth_date is not a whole number"))?;
    let age_secs = now_unix.saturating_sub(auth_date);
    if age_secs < -MAX_CLOCK_SKEW_SECS {
        return Err(InitDataError::FromFuture);
    }
    let max_age_secs = max_age.as_secs();
    if max_age_secs > 0 && age_secs > i64::try_from(max_age_secs).unwrap_or(i64::MAX) {
        return Err(InitDataError::Expired {
            age_secs,
            max_age_secs,
        });
    }

    let user = match fields.get("user") {
        None => None,
        Some(json) => Some(
            serde_json::from_str::<WebAppUser>(json)
                .map_err(|_| InitDataError::Malformed("user is not a valid user object"))?,
        ),
    };

    Ok(InitData {
        auth_date,
        user,
        query_id: fields.remove("query_id"),
        start_param: fields.remove("start_param"),
        chat_type: fields.remove("chat_type"),
        chat_instance: fields.remove("chat_instance"),
    })
}

/// URL-decodes the query string into a map, refusing anything that would
/// make the data-check-string ambiguous.
fn parse_fields(raw: &str) -> Result<BTreeMap<String, String>, InitDataError> {
    let mut fields = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        if key.is_empty() {
            return Err(InitDataError::Malformed("a field has an empty name"));
        }
        if key.contains(['=', '\n']) {
            return Err(InitDataError::Malformed(
                "a field name contains '=' or a line break",
            ));
        }
        if value.contains('\n') {
            return Err(InitDataError::Malformed(
                "a field value contains a line break",
            ));
        }
        if fields.contains_key(key.as_ref()) {
            return Err(InitDataError::DuplicateKey(printable_key(&key)));
        }
        fields.insert(key.into_owned(), value.into_owned());
    }
    Ok(fields)
}

/// The key as it may appear in an error message (echoed to the client and
/// possibly logged): short identifiers only.
fn printable_key(key: &str) -> String {
    if key.len() <= 32 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        key.to_owned()
    } else {
        "<unprintable>".to_owned()
    }
}

/// `key=value` lines sorted by key (the `BTreeMap` order, bytewise), joined
/// by '\n'. `hash` must already be removed.
fn data_check_string(fields: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(fields.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn sign(data_check_string: &str, token: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(b"WebAppData").expect("HMAC takes any key length");
    mac.update(token.as_bytes());
    let secret_key = mac.finalize().into_bytes();
    let mut mac = HmacSha256::new_from_slice(&secret_key).expect("HMAC takes any key length");
    mac.update(data_check_string.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors signed by `testdata/gen_vectors.py` (Python stdlib only).
    #[allow(dead_code)]
    mod v {
        include!("testdata/vectors.rs");
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn token(raw: &str) -> BotToken {
        BotToken::parse(raw).unwrap()
    }

    fn check(raw: &str) -> Result<InitData, InitDataError> {
        validate(raw, &token(v::TOKEN), DAY, v::AUTH_DATE + 10)
    }

    #[test]
    fn valid_basic() {
        let d = check(v::VALID_BASIC).unwrap();
        assert_eq!(d.auth_date, v::AUTH_DATE);
        assert_eq!(d.query_id.as_deref(), Some("AAHdF6IQAAAAAN0XohDhrOrc"));
        let u = d.require_user().unwrap();
        assert_eq!(u.id, 42);
        assert_eq!(u.first_name, "Ann");
        assert_eq!(u.username.as_deref(), Some("ann"));
        assert_eq!(u.language_code.as_deref(), Some("en"));
        assert_eq!(u.last_name, None);
        assert!(!u.is_premium);
    }

    /// The example published with the tma.js validator docs, signed by an
    /// implementation that shares nothing with this one.
    #[test]
    fn public_reference_vector() {
        let raw = "query_id=AAHdF6IQAAAAAN0XohDhrOrc&user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%7D&auth_date=1662771648&hash=c501b71e775f74ce10e377dea85a7ea24ecd640b223ea86dfe453e0eaed2e2b2";
        let t = token("5768337691:AAH5YkoiEuPk8-FZa32hStHTqXiLPtAEhx8");
        let u = validate(raw, &t, DAY, 1_662_771_648)
            .unwrap()
            .require_user()
            .unwrap();
        assert_eq!((u.id, u.first_name.as_str()), (279_058_397, "Vladislav"));
        assert!(u.is_premium);
    }

    /// A real-shaped launch from a current client: `signature` present,
    /// spaces as %20, `+` as %2B, escaped slashes in the JSON.
    #[test]
    fn public_reference_vector_with_signature() {
        let raw = "user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%20%2B%20-%20%3F%20%5C%2F%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%2C%22allows_write_to_pm%22%3Atrue%2C%22photo_url%22%3A%22https%3A%5C%2F%5C%2Ft.me%5C%2Fi%5C%2Fuserpic%5C%2F320%5C%2F4FPEE4tmP3ATHa57u6MqTDih13LTOiMoKoLDRG4PnSA.svg%22%7D&chat_instance=8134722200314281151&chat_type=private&auth_date=1733509682&signature=TYJxVcisqbWjtodPepiJ6ghziUL94-KNpG8Pau-X7oNNLNBM72APCpi_RKiUlBvcqo5L-LAxIc3dnTzcZX_PDg&hash=a433d8f9847bd6addcc563bff7cc82c89e97ea0d90c11fe5729cae6796a36d73";
        let t = token("7342037359:AAHI25ES9xCOMPokpYoz-p8XVrZUdygo2J4");
        let d = validate(raw, &t, DAY, 1_733_509_682).unwrap();
        assert_eq!(d.chat_type.as_deref(), Some("private"));
        let u = d.require_user().unwrap();
        assert_eq!(u.first_name, "Vladislav + - ? /");
        assert_eq!(
            u.photo_url.as_deref(),
            Some("https://t.me/i/userpic/320/4FPEE4tmP3ATHa57u6MqTDih13LTOiMoKoLDRG4PnSA.svg")
        );
        // Dropping the signature field breaks the hash: it is signed data.
        let without = raw.replace(
            "&signature=TYJxVcisqbWjtodPepiJ6ghziUL94-KNpG8Pau-X7oNNLNBM72APCpi_RKiUlBvcqo5L-LAxIc3dnTzcZX_PDg",
            "",
        );
        assert_eq!(
            validate(&without, &t, DAY, 1_733_509_682),
            Err(InitDataError::BadHash)
        );
    }

    #[test]
    fn url_encoding_edge_cases() {
        for raw in [v::VALID_EDGE_PLUS, v::VALID_EDGE_PCT] {
            let d = check(raw).unwrap();
            assert_eq!(d.start_param.as_deref(), Some("a+b=c&d%e f"));
            assert_eq!(d.chat_instance.as_deref(), Some("-8134722200314281151"));
            let u = d.require_user().unwrap();
            assert_eq!(u.id, 7_000_000_001);
            assert_eq!(u.first_name, "A&B=C+D%E F");
            assert_eq!(u.last_name.as_deref(), Some("Ünïcødé Алиса 🚀"));
            assert_eq!(
                u.photo_url.as_deref(),
                Some("https://t.me/i/userpic/320/x.svg")
            );
            assert!(u.is_premium && u.allows_write_to_pm);
        }
        // A literal '+' decodes to a space, so it is not the signed '+'.
        let plus = v::VALID_EDGE_PCT.replace("a%2Bb", "a+b");
        assert_eq!(check(&plus), Err(InitDataError::BadHash));
    }

    #[test]
    fn signature_field_is_part_of_the_data_check_string() {
        let u = check(v::VALID_WITH_SIGNATURE)
            .unwrap()
            .require_user()
            .unwrap();
        assert_eq!(u.id, 42);
        assert_eq!(check(v::SIGNATURE_EXCLUDED), Err(InitDataError::BadHash));
        let stripped = v::VALID_WITH_SIGNATURE.replace("&signature=", "&signaturX=");
        assert_eq!(check(&stripped), Err(InitDataError::BadHash));
    }

    #[test]
    fn tampered_fields_are_rejected() {
        for (from, to) in [
            ("%3A42%2C", "%3A43%2C"), // user id
            ("auth_date=1700000000", "auth_date=1700000001"),
            ("%22Ann%22", "%22Anne%22"),      // first_name
            ("query_id=AAH", "query_id=BAH"), // another field
        ] {
            let tampered = v::VALID_BASIC.replace(from, to);
            assert_ne!(tampered, v::VALID_BASIC);
            assert_eq!(check(&tampered), Err(InitDataError::BadHash), "{from}");
        }
        // A changed hash digit, and an added field.
        let mut flipped = v::VALID_BASIC.to_owned();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(check(&flipped), Err(InitDataError::BadHash));
        let added = format!("{}&start_param=x", v::VALID_BASIC);
        assert_eq!(check(&added), Err(InitDataError::BadHash));
        // A removed field.
        let removed = v::VALID_BASIC.replace("query_id=AAHdF6IQAAAAAN0XohDhrOrc&", "");
        assert_eq!(check(&removed), Err(InitDataError::BadHash));
    }

    #[test]
    fn hash_is_case_insensitive_hex_and_checked_for_shape() {
        let (body, hash) = v::VALID_BASIC.rsplit_once("hash=").unwrap();
        let upper = format!("{body}hash={}", hash.to_uppercase());
        assert!(check(&upper).is_ok());
        let short = format!("{body}hash={}", &hash[..62]);
        assert!(matches!(check(&short), Err(InitDataError::Malformed(_))));
        let nonhex = format!("{body}hash={}zz", &hash[..62]);
        assert!(matches!(check(&nonhex), Err(InitDataError::Malformed(_))));
        let empty = format!("{body}hash=");
        assert!(matches!(check(&empty), Err(InitDataError::Malformed(_))));
    }

    #[test]
    fn wrong_token_is_rejected() {
        let other = token(v::OTHER_TOKEN);
        for raw in [
            v::VALID_BASIC,
            v::VALID_EDGE_PLUS,
            v::VALID_WITH_SIGNATURE,
            v::VALID_NO_USER,
        ] {
            assert_eq!(
                validate(raw, &other, DAY, v::AUTH_DATE),
                Err(InitDataError::BadHash)
            );
        }
    }

    #[test]
    fn expiry_and_clock_skew() {
        let t = token(v::TOKEN);
        let at = |now| validate(v::VALID_BASIC, &t, DAY, now);
        assert!(at(v::AUTH_DATE).is_ok());
        assert!(at(v::AUTH_DATE + 86_400).is_ok(), "exactly max_age is fine");
        assert_eq!(
            at(v::AUTH_DATE + 86_401),
            Err(InitDataError::Expired {
                age_secs: 86_401,
                max_age_secs: 86_400
            })
        );
        assert!(at(v::AUTH_DATE - MAX_CLOCK_SKEW_SECS).is_ok());
        assert_eq!(
            at(v::AUTH_DATE - MAX_CLOCK_SKEW_SECS - 1),
            Err(InitDataError::FromFuture)
        );
        // A short window.
        let short = Duration::from_secs(300);
        assert!(validate(v::VALID_BASIC, &t, short, v::AUTH_DATE + 300).is_ok());
        assert!(matches!(
            validate(v::VALID_BASIC, &t, short, v::AUTH_DATE + 301),
            Err(InitDataError::Expired { .. })
        ));
        // Zero disables the age check, not the signature or the skew check.
        assert!(validate(v::VALID_BASIC, &t, Duration::ZERO, i64::MAX).is_ok());
        assert_eq!(
            validate(v::VALID_BASIC, &t, Duration::ZERO, 0),
            Err(InitDataError::FromFuture)
        );
        // An expired message says what to do and leaks nothing.
        let msg = at(v::AUTH_DATE + 100_000).unwrap_err().to_string();
        assert!(msg.contains("expired") && msg.contains("reopen"), "{msg}");
    }

    #[test]
    fn missing_fields() {
        assert_eq!(check(""), Err(InitDataError::Empty));
        let no_hash = v::VALID_BASIC.rsplit_once("&hash=").unwrap().0;
        assert_eq!(check(no_hash), Err(InitDataError::Missing("hash")));
        assert_eq!(check("user=x"), Err(InitDataError::Missing("hash")));
        assert_eq!(
            check(v::VALID_NO_AUTH_DATE),
            Err(InitDataError::Missing("auth_date"))
        );
        let d = check(v::VALID_NO_USER).unwrap();
        assert_eq!(d.user, None);
        assert_eq!(d.require_user(), Err(InitDataError::NoUser));
    }

    #[test]
    fn malformed_signed_fields() {
        assert!(matches!(
            check(v::VALID_BAD_AUTH_DATE),
            Err(InitDataError::Malformed(m)) if m.contains("auth_date")
        ));
        assert!(matches!(
            check(v::VALID_BAD_USER),
            Err(InitDataError::Malformed(m)) if m.contains("user")
        ));
        // An empty value is a field like any other.
        let d = check(v::VALID_EMPTY_VALUE).unwrap();
        assert_eq!(d.start_param.as_deref(), Some(""));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let dup_auth = format!("{}&auth_date=1700000000", v::VALID_BASIC);
        assert_eq!(
            check(&dup_auth),
            Err(InitDataError::DuplicateKey("auth_date".into()))
        );
        let (_, hash) = v::VALID_BASIC.rsplit_once("hash=").unwrap();
        let dup_hash = format!("{}&hash={hash}", v::VALID_BASIC);
        assert_eq!(
            check(&dup_hash),
            Err(InitDataError::DuplicateKey("hash".into()))
        );
        // Same key spelled with percent-encoding is the same key.
        let dup_enc = format!("{}&%75ser=%7B%7D", v::VALID_BASIC);
        assert_eq!(
            check(&dup_enc),
            Err(InitDataError::DuplicateKey("user".into()))
        );
        let weird = format!("{0}&%0Ax%0A=1&%0Ax%0A=2", "a=1");
        assert!(matches!(check(&weird), Err(InitDataError::Malformed(_))));
        let long = format!("{0}={1}&{0}={1}", "k".repeat(40), "v");
        assert_eq!(
            check(&long),
            Err(InitDataError::DuplicateKey("<unprintable>".into()))
        );
    }

    #[test]
    fn ambiguous_data_check_strings_are_rejected() {
        // Same data-check-string as VALID_BASIC, so the HMAC matches; the
        // line break inside a value is what must stop it.
        assert_eq!(
            check(v::SMUGGLED_NEWLINE),
            Err(InitDataError::Malformed(
                "a field value contains a line break"
            ))
        );
        assert!(matches!(
            check("a%3Db=c&hash=00"),
            Err(InitDataError::Malformed(_))
        ));
        assert!(matches!(
            check("=x&hash=00"),
            Err(InitDataError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let big = format!("{}&x={}", v::VALID_BASIC, "a".repeat(MAX_INIT_DATA_LEN));
        assert_eq!(check(&big), Err(InitDataError::TooLarge));
    }

    #[test]
    fn garbage_never_panics() {
        for raw in [
            "&",
            "&&&",
            "=",
            "%",
            "%zz=%",
            "hash",
            "hash=%FF%FE",
            "user=%FF&hash=zz",
            "\u{0}=\u{0}",
            "🚀=🚀&hash=🚀",
        ] {
            assert!(check(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn errors_never_echo_the_token() {
        let t = token(v::TOKEN);
        let secret = v::TOKEN.split_once(':').unwrap().1;
        for raw in [v::VALID_BASIC, v::SIGNATURE_EXCLUDED, v::VALID_BAD_USER, ""] {
            if let Err(e) = validate(raw, &t, DAY, v::AUTH_DATE + 10 * 86_400) {
                assert!(!e.to_string().contains(secret));
                assert!(!format!("{e:?}").contains(secret));
            }
        }
    }
}
