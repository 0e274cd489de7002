//! The machine-readable Bot API spec (`bot-api-spec.json`): loaded once,
//! indexed by method, and used to check every parameter - recursively into
//! object parameters - the way the real API would accept or refuse it.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Deserialize)]
pub struct Field {
    pub name: String,
    pub types: Vec<String>,
    pub required: bool,
}

#[derive(Debug, Deserialize)]
struct RawMethod {
    name: String,
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Debug, Deserialize)]
struct RawType {
    #[serde(default)]
    fields: Option<Vec<Field>>,
    #[serde(default)]
    subtypes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RawSpec {
    methods: HashMap<String, RawMethod>,
    types: HashMap<String, RawType>,
}

/// One Bot API method as the spec describes it.
#[derive(Debug)]
pub struct MethodSpec {
    pub name: String,
    pub fields: Vec<Field>,
}

/// The Bot API spec, indexed for validation.
#[derive(Debug)]
pub struct Spec {
    /// Lower-cased method name -> method.
    methods: HashMap<String, MethodSpec>,
    types: HashMap<String, RawType>,
}

/// Where the spec lives by default: `../shared/telegram/` beside the
/// repository (this crate is `tests/fake-bot-api/` inside it).
pub const SPEC_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/telegram/bot-api-spec.json"
);

/// The spec's path: `BOT_API_SPEC` when set (a checkout laid out
/// differently, or a newer spec), else [`SPEC_PATH`].
pub fn spec_path() -> String {
    std::env::var("BOT_API_SPEC")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| SPEC_PATH.to_owned())
}

/// The spec, loaded once per test process.
///
/// # Panics
/// When the spec cannot be read or parsed: every check would be void, so
/// the test must not go on as if the calls were valid.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = spec_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("cannot read the Bot API spec at {path} (set BOT_API_SPEC to its path): {e}")
        });
        let raw: RawSpec = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("cannot parse the Bot API spec at {path}: {e}"));
        Spec {
            methods: raw
                .methods
                .into_values()
                .map(|m| {
                    (
                        m.name.to_ascii_lowercase(),
                        MethodSpec {
                            name: m.name,
                            fields: m.fields,
                        },
                    )
                })
                .collect(),
            types: raw.types,
        }
    })
}

const MAX_DEPTH: usize = 12;

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "Integer",
        Value::Number(_) => "Float",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

pub(crate) fn is_container_type(ty: &str) -> bool {
    !matches!(
        ty,
        "Integer" | "Float" | "String" | "Boolean" | "True" | "InputFile"
    )
}

impl Spec {
    /// Case-insensitive method lookup, like Telegram's.
    pub fn method(&self, name: &str) -> Option<&MethodSpec> {
        self.methods.get(&name.to_ascii_lowercase())
    }

    /// Checks `v` against alternative types (`Integer or String`).
    pub fn check_any(&self, v: &Value, types: &[String], path: &str) -> Result<(), String> {
        self.check_any_at(v, types, path, 0)
    }

    fn check_any_at(
        &self,
        v: &Value,
        types: &[String],
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        let mut first_err = None;
        for ty in types {
            match self.check_one(v, ty, path, depth) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if types.len() > 1 {
            return Err(format!(
                "{path}: expected {}, got {}",
                types.join(" or "),
                kind(v)
            ));
        }
        Err(first_err.unwrap_or_else(|| format!("{path}: no type given")))
    }

    fn check_one(&self, v: &Value, ty: &str, path: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        let expect = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(format!("{path}: expected {ty}, got {}", kind(v)))
            }
        };
        match ty {
            "Integer" => expect(v.is_i64() || v.is_u64()),
            "Float" => expect(v.is_number()),
            "String" => expect(v.is_string()),
            "Boolean" => expect(v.is_boolean()),
            "True" => expect(v == &Value::Bool(true)),
            // A file_id, an URL or attach://<name>; uploads are multipart,
            // which this fake does not take.
            "InputFile" => expect(v.is_string()),
            _ => {
                if let Some(inner) = ty.strip_prefix("Array of ") {
                    let Value::Array(items) = v else {
                        return Err(format!("{path}: expected {ty}, got {}", kind(v)));
                    };
                    for (i, item) in items.iter().enumerate() {
                        self.check_one(item, inner, &format!("{path}[{i}]"), depth + 1)?;
                    }
                    return Ok(());
                }
                let Some(t) = self.types.get(ty) else {
                    // A type the spec does not describe: nothing to check.
                    return Ok(());
                };
                if let Some(subs) = t.subtypes.as_ref().filter(|s| !s.is_empty()) {
                    let mut errs = Vec::new();
                    for sub in subs {
                        match self.check_one(v, sub, path, depth + 1) {
                            Ok(()) => return Ok(()),
                            Err(e) => errs.push(e),
                        }
                    }
                    // The most telling error: the one from the variant whose
                    // `type` discriminator matched, if any.
                    let pick = errs
                        .iter()
                        .find(|e| !e.contains(".type:") && !e.contains("unknown field"))
                        .or(errs.first())
                        .cloned()
                        .unwrap_or_default();
                    return Err(format!("{path}: not a valid {ty} ({pick})"));
                }
                let Value::Object(obj) = v else {
                    return Err(format!("{path}: expected {ty} object, got {}", kind(v)));
                };
                match &t.fields {
                    Some(fields) => self.check_fields(obj, fields, path, depth + 1),
                    None => Ok(()),
                }
            }
        }
    }

    fn check_fields(
        &self,
        obj: &Map<String, Value>,
        fields: &[Field],
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}.")
        };
        for (k, v) in obj {
            if v.is_null() {
                continue;
            }
            let Some(f) = fields.iter().find(|f| &f.name == k) else {
                return Err(format!("{prefix}{k}: unknown field"));
            };
            self.check_any_at(v, &f.types, &format!("{prefix}{k}"), depth)?;
            // Subtypes discriminated by `type` say so as "must be X" in the
            // description; the field list alone cannot tell them apart, so
            // BotCommandScopeChat's fields would accept {"type":"default"}.
            // Good enough: the discriminator is at least a string.
        }
        for f in fields.iter().filter(|f| f.required) {
            if obj.get(&f.name).is_none_or(Value::is_null) {
                return Err(format!("{prefix}{}: required field is missing", f.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_checks_types() {
        let s = spec();
        let m = s.method("SENDMESSAGE").expect("case-insensitive");
        assert_eq!(m.name, "sendMessage");
        let chat = &m.fields.iter().find(|f| f.name == "chat_id").unwrap().types;
        assert!(s.check_any(&json!(5), chat, "chat_id").is_ok());
        assert!(s.check_any(&json!("@x"), chat, "chat_id").is_ok());
        assert!(s.check_any(&json!(true), chat, "chat_id").is_err());
        let rm = &m
            .fields
            .iter()
            .find(|f| f.name == "reply_markup")
            .unwrap()
            .types;
        let good = json!({"inline_keyboard": [[{"text": "a", "web_app": {"url": "https://x"}}]]});
        assert!(s.check_any(&good, rm, "reply_markup").is_ok());
        let bad = json!({"inline_keyboard": [[{"text": "a", "web_app": {"link": "https://x"}}]]});
        assert!(s.check_any(&bad, rm, "reply_markup").is_err());
        let bad = json!({"inline_keyboard": [{"text": "a", "url": "https://x"}]});
        assert!(s.check_any(&bad, rm, "reply_markup").is_err());
        let rp = &m
            .fields
            .iter()
            .find(|f| f.name == "reply_parameters")
            .unwrap()
            .types;
        assert!(s
            .check_any(&json!({"message_id": 3}), rp, "reply_parameters")
            .is_ok());
        assert!(s
            .check_any(&json!({"message_id": "3"}), rp, "reply_parameters")
            .is_err());
        assert!(s
            .check_any(&json!({"chat_id": 3}), rp, "reply_parameters")
            .is_err());
    }

    #[test]
    fn scopes_are_subtypes() {
        let s = spec();
        let m = s.method("setMyCommands").unwrap();
        let scope = &m.fields.iter().find(|f| f.name == "scope").unwrap().types;
        assert!(s
            .check_any(&json!({"type": "default"}), scope, "scope")
            .is_ok());
        assert!(s
            .check_any(&json!({"type": "chat", "chat_id": 1}), scope, "scope")
            .is_ok());
        assert!(s
            .check_any(&json!({"kind": "chat"}), scope, "scope")
            .is_err());
    }
}
