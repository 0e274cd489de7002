//! Rules the real API enforces beyond parameter types: inline keyboard
//! buttons, and the HTML and MarkdownV2 entity parsers (a reply a user
//! would never see is the client's bug, so it is a violation).

use serde_json::Value;

/// Inline keyboard rules of the real API.
pub(crate) fn check_reply_markup(rm: Option<&Value>, chat: Option<i64>) -> Option<String> {
    let rows = rm?.get("inline_keyboard")?.as_array()?;
    for row in rows {
        for b in row.as_array().into_iter().flatten() {
            let actions = [
                "url",
                "callback_data",
                "web_app",
                "login_url",
                "switch_inline_query",
                "switch_inline_query_current_chat",
                "switch_inline_query_chosen_chat",
                "copy_text",
                "callback_game",
                "pay",
            ];
            let n = actions.iter().filter(|a| b.get(**a).is_some()).count();
            if n == 0 {
                return Some(
                    "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
                        .into(),
                );
            }
            if n > 1 {
                return Some("can't parse inline keyboard button: more than one action".into());
            }
            if b.get("text")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Some("can't parse inline keyboard button: Text must be non-empty".into());
            }
            if let Some(w) = b.get("web_app") {
                if chat.is_some_and(|c| c < 0) {
                    return Some("BUTTON_TYPE_INVALID".into());
                }
                let u = w.get("url").and_then(Value::as_str).unwrap_or("");
                if !u.starts_with("https://") {
                    return Some(format!(
                        "inline keyboard button Web App URL '{u}' is invalid: Only HTTPS links are allowed"
                    ));
                }
            }
            if let Some(u) = b.get("url").and_then(Value::as_str) {
                let ok = ["https://", "http://", "tg://"]
                    .iter()
                    .any(|s| u.starts_with(s) && u.len() > s.len());
                if !ok {
                    return Some(format!("inline keyboard button URL '{u}' is invalid"));
                }
            }
            if let Some(d) = b.get("callback_data").and_then(Value::as_str) {
                if !(1..=64).contains(&d.len()) {
                    return Some("BUTTON_DATA_INVALID".into());
                }
            }
        }
    }
    None
}

/// Parses Telegram's HTML subset; returns the plain text or the error the
/// real API gives ("can't parse entities: ...").
pub fn check_html(text: &str) -> Result<String, String> {
    const TAGS: &[&str] = &[
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
        "tg-time",
    ];
    let mut out = String::new();
    let mut stack: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let c = bytes[i];
        if c == b'<' {
            let Some(end) = text[i..].find('>') else {
                return Err(format!(
                    "can't parse entities: Unclosed start tag at byte offset {i}"
                ));
            };
            let inner = &text[i + 1..i + end];
            if let Some(name) = inner.strip_prefix('/') {
                let name = name.trim().to_ascii_lowercase();
                match stack.pop() {
                    Some(open) if open == name || name.is_empty() => {}
                    Some(open) => {
                        return Err(format!(
                            "can't parse entities: Unmatched end tag at byte offset {i}, expected \"</{open}>\", found \"</{name}>\""
                        ))
                    }
                    None => {
                        return Err(format!(
                            "can't parse entities: Unexpected end tag at byte offset {i}"
                        ))
                    }
                }
            } else {
                let name = inner
                    .split(|c: char| c.is_ascii_whitespace())
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if !TAGS.contains(&name.as_str()) {
                    return Err(format!(
                        "can't parse entities: Unsupported start tag \"{name}\" at byte offset {i}"
                    ));
                }
                stack.push(name);
            }
            i += end + 1;
        } else if c == b'&' {
            let rest = &text[i..];
            let ent = ["&lt;", "&gt;", "&amp;", "&quot;"]
                .iter()
                .find(|e| rest.starts_with(**e));
            match ent {
                Some(e) => {
                    out.push(match *e {
                        "&lt;" => '<',
                        "&gt;" => '>',
                        "&amp;" => '&',
                        _ => '"',
                    });
                    i += e.len();
                }
                None => {
                    // Numeric entities are decoded, anything else is literal.
                    out.push('&');
                    i += 1;
                }
            }
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!(
            "can't parse entities: Can't find end tag corresponding to start tag \"{open}\""
        ));
    }
    Ok(out)
}

/// MarkdownV2: the characters that are never formatting must be escaped.
/// (A subset of the real parser: enough to catch unescaped user input.)
pub fn check_markdown_v2(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.char_indices().peekable();
    let mut in_code = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            '`' => in_code = !in_code,
            '.' | '!' | '-' | '=' | '+' | '#' | '|' | '{' | '}' if !in_code => {
                return Err(format!(
                    "can't parse entities: Character '{c}' is reserved and must be escaped with the preceding '\\' (byte offset {i})"
                ));
            }
            '*' | '_' | '~' if !in_code => {}
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_rules() {
        assert_eq!(check_html("<b>Hi</b> &amp; you").unwrap(), "Hi & you");
        assert!(check_html("Hi <Tom>").is_err());
        assert!(check_html("<b>Hi").is_err());
        assert!(check_html("<b>Hi</i>").is_err());
        assert!(check_markdown_v2("Hi Anne-Marie").is_err());
        assert!(check_markdown_v2("Hi Anne\\-Marie").is_ok());
    }
}
