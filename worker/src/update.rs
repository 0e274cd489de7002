//! The parts of an Update the handlers read. Every field is optional or
//! defaulted: Telegram adds fields and update kinds over time, and an update
//! this version does not understand must be counted, never fail.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    pub username: Option<String>,
    pub language_code: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub id: i64,
    #[serde(rename = "type", default)]
    pub kind: String,
}

impl Chat {
    pub fn is_private(&self) -> bool {
        self.kind == "private"
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub message_id: i64,
    pub from: Option<User>,
    pub chat: Chat,
    pub text: Option<String>,
    pub message_thread_id: Option<i64>,
    #[serde(default)]
    pub is_topic_message: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WithFrom {
    pub from: Option<User>,
    pub user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    pub update_id: i64,
    pub message: Option<Message>,
    pub edited_message: Option<WithFrom>,
    pub callback_query: Option<WithFrom>,
    pub inline_query: Option<WithFrom>,
    pub chosen_inline_result: Option<WithFrom>,
    pub my_chat_member: Option<WithFrom>,
    pub chat_member: Option<WithFrom>,
    pub chat_join_request: Option<WithFrom>,
    pub message_reaction: Option<WithFrom>,
    pub poll_answer: Option<WithFrom>,
}

impl Update {
    /// Parses a stored update. Telegram sends UTF-8, yet a bad byte can
    /// still reach the stream (polling, entries stored before the ingress
    /// checked bodies), and serde refuses the whole update for one bad byte
    /// in a name - leaving the user unanswered. Bad bytes become U+FFFD
    /// instead; a valid body is parsed without a copy.
    pub fn parse(raw: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_str(&String::from_utf8_lossy(raw))
    }

    /// The person behind the update, if any (channel posts have none).
    pub fn sender(&self) -> Option<&User> {
        if let Some(m) = &self.message {
            return m.from.as_ref();
        }
        [
            &self.edited_message,
            &self.callback_query,
            &self.inline_query,
            &self.chosen_inline_result,
            &self.my_chat_member,
            &self.chat_member,
            &self.chat_join_request,
            &self.message_reaction,
            &self.poll_answer,
        ]
        .into_iter()
        .flatten()
        .find_map(|w| w.from.as_ref().or(w.user.as_ref()))
    }
}

/// A command as typed: `/name@bot args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    /// Lower-cased, without the slash.
    pub name: String,
    /// The `@bot` part, if the command was addressed.
    pub addressee: Option<&'a str>,
    pub args: &'a str,
}

/// Parses a leading command. Telegram's command syntax: `/` then up to 32
/// letters, digits and underscores, optionally `@botusername`.
pub fn parse_command(text: &str) -> Option<Command<'_>> {
    let rest = text.strip_prefix('/')?;
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (head, args) = rest.split_at(end);
    let (name, addressee) = match head.split_once('@') {
        Some((n, a)) => (n, Some(a)),
        None => (head, None),
    };
    if name.is_empty()
        || name.len() > 32
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    Some(Command {
        name: name.to_ascii_lowercase(),
        addressee,
        args: args.trim(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let c = parse_command("/start ref_42").unwrap();
        assert_eq!(
            (c.name.as_str(), c.addressee, c.args),
            ("start", None, "ref_42")
        );
        let c = parse_command("/Stats@Our_Bot").unwrap();
        assert_eq!(
            (c.name.as_str(), c.addressee, c.args),
            ("stats", Some("Our_Bot"), "")
        );
        assert!(parse_command("hello").is_none());
        assert!(parse_command("/").is_none());
        assert!(parse_command("/слово").is_none());
    }

    #[test]
    fn a_bad_byte_in_a_name_becomes_a_replacement_character() {
        let mut raw = br#"{"update_id":5,"message":{"message_id":1,"chat":{"id":7,"type":"private"},"from":{"id":7,"first_name":"Ann"#.to_vec();
        raw.push(0xff);
        raw.extend_from_slice(br#"a"},"text":"/start"}}"#);
        assert!(
            serde_json::from_slice::<Update>(&raw).is_err(),
            "serde alone refuses it"
        );
        let u = Update::parse(&raw).expect("parsed despite the bad byte");
        assert_eq!(
            u.sender().map(|u| u.first_name.as_str()),
            Some("Ann\u{fffd}a")
        );
        assert!(Update::parse(b"{not json").is_err());
    }

    #[test]
    fn real_updates_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/telegram/updates");
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for f in rd.flatten() {
            if f.path().extension().is_some_and(|e| e == "json") {
                let body = std::fs::read(f.path()).unwrap();
                let u: Update =
                    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{:?}: {e}", f.path()));
                assert!(u.update_id != 0);
            }
        }
    }
}
