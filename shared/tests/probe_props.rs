//! Properties of `shared::envelope::probe`, the ingress's parser for
//! webhook bodies (SPEC.md "Ingress HTTP surface", "What is never
//! acceptable": no panic on bad input):
//! - arbitrary bytes never panic, and whatever is accepted really is a JSON
//!   object with that integer `update_id`;
//! - any JSON object with an integer `update_id` is accepted with that id,
//!   whatever else it holds;
//! - JSON that is not an object is refused as such; an object without an
//!   integer `update_id` is refused as such.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use shared::envelope::{probe, BadUpdate};

/// Update kinds the probe reads an ordering key from.
const KNOWN_KINDS: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
    "message_reaction",
    "message_reaction_count",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
    "callback_query",
    "inline_query",
    "chosen_inline_result",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll_answer",
];

fn arb_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::num::f64::NORMAL
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_]{1,12}",
        1 => any::<String>(),
        2 => prop::sample::select(KNOWN_KINDS).prop_map(str::to_owned),
        1 => prop::sample::select(&["chat", "from", "user", "id", "message"][..]).prop_map(str::to_owned),
    ]
}

/// Arbitrary JSON, a few levels deep, with keys that often hit the fields
/// the probe looks into (`message`, `chat`, `id`, ...).
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(arb_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A well-formed `{ "chat": {"id": ..}, "from": {"id": ..} }` part.
fn arb_chat_part() -> impl Strategy<Value = Value> {
    (any::<i64>(), any::<i64>()).prop_map(|(chat, from)| {
        serde_json::json!({
            "message_id": 1,
            "chat": { "id": chat, "type": "private" },
            "from": { "id": from, "is_bot": false, "first_name": "P" },
            "text": "/start",
        })
    })
}

/// Other fields of an update: anything, but never `update_id`.
fn arb_fields() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(
        arb_key(),
        prop_oneof![3 => arb_json(), 1 => arb_chat_part()],
        0..8,
    )
    .prop_map(|m| {
        m.into_iter()
            .filter(|(k, _)| k != "update_id")
            .collect::<Map<_, _>>()
    })
}

/// Serializes compactly or pretty, with optional surrounding whitespace.
fn render(v: &Value, pretty: bool, pad: &str) -> Vec<u8> {
    let body = if pretty {
        serde_json::to_string_pretty(v).expect("serialize")
    } else {
        serde_json::to_string(v).expect("serialize")
    };
    format!("{pad}{body}{pad}").into_bytes()
}

fn arb_pad() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,3}"
}

/// What `probe` accepted must be an object with that integer update_id.
fn check_accepted_is_real(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(p) = probe(body) {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            TestCaseError::fail(format!("accepted a body that is not JSON ({e}): {body:?}"))
        })?;
        prop_assert!(v.is_object(), "accepted a non-object: {v}");
        prop_assert_eq!(v["update_id"].as_i64(), Some(p.update_id));
    }
    Ok(())
}

/// Shapes found by `objects_with_an_integer_update_id_are_accepted`: a
/// known field (or its `chat`/`from`) given as an array with more elements
/// than the probe's struct has fields. serde reports the extra elements as
/// a syntax error (`TrailingCharacters`), so `probe` skips its fallback and
/// answers NotJson - a 400 for a valid JSON object with an integer id.
#[test]
fn arrays_under_known_fields_are_still_updates() {
    let mut refused = Vec::new();
    for body in [
        r#"{"update_id":1,"message":[null,null,null,null]}"#,
        r#"{"update_id":2,"message":{"chat":[1,2]}}"#,
        r#"{"message":[[0,null]],"update_id":3}"#,
        r#"{"update_id":4,"callback_query":[null,null,null]}"#,
    ] {
        let p = probe(body.as_bytes());
        let id = serde_json::from_str::<Value>(body).expect("valid JSON")["update_id"].as_i64();
        if p.as_ref().ok().map(|p| p.update_id) != id {
            refused.push(format!("{body} -> {p:?}"));
        }
    }
    assert!(
        refused.is_empty(),
        "valid updates refused:\n  {}",
        refused.join("\n  ")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..4096)) {
        check_accepted_is_real(&body)?;
    }

    #[test]
    fn almost_json_never_panics(
        prefix in prop::sample::select(&["", "{", "{\"update_id\":", "[", " {\"update_id\": 1, "][..]),
        rest in "[{}\\[\\]\":,0-9a-z_. eE+\\-\\\\]{0,300}",
    ) {
        let body = format!("{prefix}{rest}");
        check_accepted_is_real(body.as_bytes())?;
    }

    #[test]
    fn truncated_updates_are_refused(
        id in any::<i64>(),
        fields in arb_fields(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut m = fields;
        m.insert("update_id".into(), Value::from(id));
        let text = serde_json::to_string(&Value::Object(m)).expect("serialize");
        let cut = cut.index(text.len());
        // Cut on a char boundary below the full length: never valid JSON.
        let cut = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        // Refused; the reason may be NotJson or NoUpdateId (a truncated
        // body whose known field has the wrong type is reported as the
        // latter): both are a 400.
        let r = probe(&text.as_bytes()[..cut]);
        prop_assert!(r.is_err(), "accepted a truncated body (cut at {} of {:?}): {:?}", cut, text, r);
    }

    /// The contract: one JSON object with an integer `update_id` is an
    /// update, "the rest of its shape is the worker's business".
    #[test]
    fn objects_with_an_integer_update_id_are_accepted(
        id in any::<i64>(),
        fields in arb_fields(),
        pretty in any::<bool>(),
        pad in arb_pad(),
    ) {
        let mut m = fields;
        m.insert("update_id".into(), Value::from(id));
        let v = Value::Object(m);
        let body = render(&v, pretty, &pad);
        match probe(&body) {
            Ok(p) => prop_assert_eq!(p.update_id, id),
            Err(e) => prop_assert!(false, "refused ({e}): {v}"),
        }
    }

    #[test]
    fn a_message_update_is_keyed_by_its_chat(
        id in any::<i64>(),
        kind in prop::sample::select(&["message", "edited_message", "channel_post", "my_chat_member"][..]),
        part in arb_chat_part(),
    ) {
        let chat = part["chat"]["id"].as_i64().expect("chat id");
        let v = serde_json::json!({ "update_id": id, kind: part });
        let p = probe(v.to_string().as_bytes()).expect("accepted");
        prop_assert_eq!(p.update_id, id);
        prop_assert_eq!(p.key, format!("c{chat}"));
    }

    #[test]
    fn non_objects_are_refused(
        v in arb_json().prop_filter("not an object", |v| !v.is_object()),
        pretty in any::<bool>(),
        pad in arb_pad(),
    ) {
        let body = render(&v, pretty, &pad);
        prop_assert_eq!(probe(&body), Err(BadUpdate::NotObject), "{}", v);
    }

    #[test]
    fn objects_without_an_integer_update_id_are_refused(
        fields in arb_fields(),
        bad in prop::option::of(
            arb_json().prop_filter("not an i64", |v| v.as_i64().is_none())
        ),
        pretty in any::<bool>(),
        pad in arb_pad(),
    ) {
        let mut m = fields;
        if let Some(b) = bad {
            m.insert("update_id".into(), b);
        }
        let v = Value::Object(m);
        let body = render(&v, pretty, &pad);
        // Refused (a 400). The reason should be NoUpdateId; see
        // `objects_with_an_integer_update_id_are_accepted` for the shapes
        // that are misreported as NotJson.
        let r = probe(&body);
        prop_assert!(
            matches!(r, Err(BadUpdate::NoUpdateId | BadUpdate::NotJson)),
            "{}: {:?}", v, r
        );
    }
}
