//! The command registry: one registration line per command gives routing
//! (including `/cmd@bot`), the `/help` list and the `setMyCommands` menu in
//! every language a description was given in - so the three can never
//! disagree, as they did when they lived in three files.

use std::collections::BTreeSet;

use serde_json::{json, Value};

/// A command's description, with translations for the menu and `/help`.
#[derive(Debug, Clone)]
pub struct Description {
    default: String,
    by_lang: Vec<(String, String)>,
}

impl Description {
    pub fn new(default: impl Into<String>) -> Self {
        Self {
            default: default.into(),
            by_lang: Vec::new(),
        }
    }

    /// The description for users whose client speaks `lang` (`ru`, `de`...).
    pub fn lang(mut self, lang: impl Into<String>, text: impl Into<String>) -> Self {
        self.by_lang.push((lang.into(), text.into()));
        self
    }

    /// The text for a language code as Telegram sends it (`ru`, `ru-RU`).
    pub fn for_lang(&self, code: Option<&str>) -> &str {
        let Some(code) = code else {
            return &self.default;
        };
        let primary = code.split(['-', '_']).next().unwrap_or(code);
        self.by_lang
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(primary))
            .map(|(_, t)| t.as_str())
            .unwrap_or(&self.default)
    }
}

impl From<&str> for Description {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Description {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// A registered command, as `/help` and the menu show it.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    /// Lower case, without the slash.
    pub name: String,
    pub description: Description,
}

/// A command as typed: `/name@bot args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// Lower-cased, without the slash.
    pub name: String,
    /// The `@bot` part, if the command was addressed.
    pub addressee: Option<&'a str>,
    pub args: &'a str,
}

/// Parses a leading command. Telegram's command syntax: `/` then up to 32
/// letters, digits and underscores, optionally `@botusername`.
pub fn parse(text: &str) -> Option<Parsed<'_>> {
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
    Some(Parsed {
        name: name.to_ascii_lowercase(),
        addressee,
        args: args.trim(),
    })
}

/// What routing decided for a message's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// A registered command (its index in the registry).
    Command(usize),
    /// Unknown, but meant for us (private chat, or `/x@ourbot`): help.
    Help,
    /// Another bot's command, or a bare unknown one in a group: not ours.
    Ignore,
}

/// Decides who answers a command. In groups a bare unknown command belongs
/// to another bot or to nobody: answering it would spam the group.
pub(crate) fn route(
    registry: &[CommandInfo],
    cmd: &Parsed<'_>,
    our_username: &str,
    private: bool,
) -> Route {
    if let Some(to) = cmd.addressee {
        if !to.eq_ignore_ascii_case(our_username) {
            return Route::Ignore;
        }
    }
    match registry.iter().position(|c| c.name == cmd.name) {
        Some(i) => Route::Command(i),
        None if private || cmd.addressee.is_some() => Route::Help,
        None => Route::Ignore,
    }
}

/// The command list in a user's language, one `/name - description` a line.
pub fn help_lines(registry: &[CommandInfo], lang: Option<&str>) -> String {
    registry
        .iter()
        .map(|c| format!("/{} - {}", c.name, c.description.for_lang(lang)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `setMyCommands` calls for the menu: the default list and one per
/// language any description was translated into.
pub fn menu(registry: &[CommandInfo]) -> Vec<Value> {
    let langs: BTreeSet<&str> = registry
        .iter()
        .flat_map(|c| c.description.by_lang.iter().map(|(l, _)| l.as_str()))
        .collect();
    let list = |lang: Option<&str>| -> Value {
        json!(registry
            .iter()
            .map(|c| json!({ "command": c.name, "description": c.description.for_lang(lang) }))
            .collect::<Vec<_>>())
    };
    let mut calls = vec![json!({ "commands": list(None) })];
    for l in langs {
        calls.push(json!({ "commands": list(Some(l)), "language_code": l }));
    }
    calls
}

/// Checks a name as Telegram's menu accepts it: 1-32 of `a-z0-9_`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Vec<CommandInfo> {
        vec![
            CommandInfo {
                name: "start".into(),
                description: Description::new("Start").lang("ru", "Начать"),
            },
            CommandInfo {
                name: "ping".into(),
                description: "Ping".into(),
            },
        ]
    }

    #[test]
    fn commands_parse() {
        let c = parse("/start ref_42").unwrap();
        assert_eq!(
            (c.name.as_str(), c.addressee, c.args),
            ("start", None, "ref_42")
        );
        let c = parse("/Stats@Our_Bot").unwrap();
        assert_eq!(
            (c.name.as_str(), c.addressee, c.args),
            ("stats", Some("Our_Bot"), "")
        );
        assert!(parse("hello").is_none());
        assert!(parse("/").is_none());
        assert!(parse("/слово").is_none());
    }

    #[test]
    fn routing_follows_the_registry_and_the_addressee() {
        let r = registry();
        let at = |t: &str, private| route(&r, &parse(t).unwrap(), "our_bot", private);
        assert_eq!(at("/ping", false), Route::Command(1));
        assert_eq!(at("/ping@Our_Bot", false), Route::Command(1));
        assert_eq!(at("/ping@other_bot", true), Route::Ignore);
        assert_eq!(at("/nope", true), Route::Help);
        assert_eq!(at("/nope", false), Route::Ignore);
        assert_eq!(at("/nope@our_bot", false), Route::Help);
    }

    #[test]
    fn help_and_menu_come_from_the_same_registry() {
        let r = registry();
        assert_eq!(
            help_lines(&r, Some("ru-RU")),
            "/start - Начать\n/ping - Ping"
        );
        let m = menu(&r);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["commands"][0]["description"], "Start");
        assert_eq!(m[1]["language_code"], "ru");
        assert_eq!(m[1]["commands"][0]["description"], "Начать");
        assert!(valid_name("start_2") && !valid_name("Start") && !valid_name(""));
    }
}
