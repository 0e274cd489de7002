//! A call's parameters as Telegram reads them: from the query string, a
//! JSON body or a form body (form values are strings, converted to their
//! declared types), then validated against the method's spec.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Uri};
use serde_json::{json, Map, Value};

use crate::spec::{is_container_type, MethodSpec, Spec};

/// Converts a form or query value (always a string) to the typed value its
/// parameter declares, as the real Bot API does.
fn coerce_string(s: &str, types: &[String]) -> Value {
    for ty in types {
        match ty.as_str() {
            "Integer" => {
                if let Ok(i) = s.trim().parse::<i64>() {
                    return json!(i);
                }
            }
            "Float" => {
                if let Ok(f) = s.trim().parse::<f64>() {
                    return json!(f);
                }
            }
            "Boolean" | "True" => match s.trim() {
                "true" | "True" | "1" => return Value::Bool(true),
                "false" | "False" | "0" => return Value::Bool(false),
                _ => {}
            },
            "String" | "InputFile" => return Value::String(s.to_owned()),
            _ => {
                if let Ok(v @ (Value::Object(_) | Value::Array(_))) =
                    serde_json::from_str::<Value>(s)
                {
                    return v;
                }
            }
        }
    }
    Value::String(s.to_owned())
}

pub(crate) struct Parsed {
    pub(crate) params: Map<String, Value>,
    /// Keys whose values came as strings from a form or query.
    pub(crate) from_form: HashSet<String>,
}

pub(crate) fn parse_params(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<Parsed, String> {
    let mut p = Parsed {
        params: Map::new(),
        from_form: HashSet::new(),
    };
    if let Some(q) = uri.query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            p.from_form.insert(k.to_string());
            p.params
                .insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(p);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("application/json") || (ct.is_empty() && body.first() == Some(&b'{')) {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| format!("can't parse JSON request body: {e}"))?;
        let Value::Object(obj) = v else {
            return Err("JSON request body must be an object".into());
        };
        for (k, v) in obj {
            p.from_form.remove(&k);
            p.params.insert(k, v);
        }
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        for (k, v) in form_urlencoded::parse(body) {
            p.from_form.insert(k.to_string());
            p.params
                .insert(k.into_owned(), Value::String(v.into_owned()));
        }
    } else if ct.starts_with("multipart/form-data") {
        return Err("multipart/form-data is not supported by the fake Bot API".into());
    } else {
        return Err(format!("unsupported Content-Type {ct:?}"));
    }
    Ok(p)
}

/// Normalises and validates the parameters of a call against the spec.
pub(crate) fn validate(
    spec: &Spec,
    m: &MethodSpec,
    parsed: Parsed,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (k, v) in parsed.params {
        if v.is_null() {
            // Telegram treats an explicit null like an absent parameter.
            continue;
        }
        let Some(f) = m.fields.iter().find(|f| f.name == k) else {
            return Err(format!("unknown parameter \"{k}\" for method {}", m.name));
        };
        let v = match v {
            Value::String(s) if parsed.from_form.contains(&k) => coerce_string(&s, &f.types),
            // Object and array parameters may come JSON-encoded in a string
            // even in a JSON body; Telegram decodes them.
            Value::String(s)
                if !f.types.iter().any(|t| t == "String")
                    && f.types.iter().any(|t| is_container_type(t)) =>
            {
                match serde_json::from_str::<Value>(&s) {
                    Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
                    _ => Value::String(s),
                }
            }
            v => v,
        };
        spec.check_any(&v, &f.types, &k)
            .map_err(|e| format!("parameter {e}"))?;
        out.insert(k, v);
    }
    for f in m.fields.iter().filter(|f| f.required) {
        if !out.contains_key(&f.name) {
            return Err(format!(
                "parameter \"{}\" is required for method {}",
                f.name, m.name
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_coerce() {
        let t = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(coerce_string("12", &t(&["Integer", "String"])), json!(12));
        assert_eq!(coerce_string("@c", &t(&["Integer", "String"])), json!("@c"));
        assert_eq!(coerce_string("true", &t(&["Boolean"])), json!(true));
        assert_eq!(
            coerce_string("[\"message\"]", &t(&["Array of String"])),
            json!(["message"])
        );
    }
}
