//! Property tests of the webhook parser (docs/contract.md, "Webhook intake"): whatever
//! arrives, `parse` answers (never panics); every body of the three accepted formats,
//! generated with its keys in any order and extra keys around them, is understood as
//! what it says; and the Python-literal reader gives back exactly what a `repr()`-like
//! encoder wrote. Case counts are modest so the normal test run stays quick; the
//! `cargo fuzz` targets (fuzz/) search much longer.

use idsync_authentik::webhook::{self, Action, Format, Notice, Parsed, Subject, python_literal};
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

/// proptest's default: 256 cases per property, or `PROPTEST_CASES` for a longer search.
fn config() -> ProptestConfig {
    ProptestConfig::default()
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Created),
        Just(Action::Updated),
        Just(Action::Deleted)
    ]
}

/// Extra keys a sender may add; never one the parser dispatches on.
fn extras() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z_]{1,10}", any_json(), 0..4).prop_map(|m| {
        m.into_iter()
            .filter(|(k, _)| !["action", "event_type", "body"].contains(&k.as_str()))
            .collect()
    })
}

/// A UUID written as Authentik may: hyphenated or as 32 hex digits, either case.
fn any_group() -> impl Strategy<Value = (uuid::Uuid, String)> {
    (any::<u128>(), any::<bool>(), any::<bool>()).prop_map(|(n, dashes, upper)| {
        let id = uuid::Uuid::from_u128(n);
        let text = if dashes {
            id.hyphenated().to_string()
        } else {
            id.simple().to_string()
        };
        (id, if upper { text.to_uppercase() } else { text })
    })
}

/// A Python literal as `repr()` writes it, for JSON-like data: `True`/`False`/`None`,
/// single-quoted strings (double quotes when the text holds a single quote and no
/// double quote, as Python does), escapes for backslashes, quotes and control
/// characters.
fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            // Rust's `{:?}` is the shortest text that reads back as the same f64, and
            // always has a `.` or an exponent, like Python's float repr.
            None => format!("{:?}", n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => py_str(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", py_str(k), py_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn notice(action: Action, subject: Subject, event_id: Option<String>, format: Format) -> Parsed {
    Parsed::Notice(Notice {
        action,
        subject,
        event_id,
        format,
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = webhook::parse(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(value in any_json()) {
        let _ = webhook::parse(value.to_string().as_bytes());
    }

    /// Bodies that look like each format but hold anything at all in its fields.
    #[test]
    fn format_shaped_json_never_panics(
        key in prop_oneof![Just("action"), Just("event_type"), Just("body")],
        fields in prop::collection::btree_map(
            prop_oneof![Just("action".to_owned()), Just("event_type".to_owned()), Just("pk".to_owned()),
                Just("model_app".to_owned()), Just("model_name".to_owned()), Just("model_pk".to_owned()),
                Just("event_id".to_owned()), Just("body".to_owned())],
            any_json(), 0..8),
        first in any_json(),
    ) {
        let mut body: Map<String, Value> = fields.into_iter().collect();
        body.insert(key.to_owned(), first);
        let _ = webhook::parse(Value::Object(body).to_string().as_bytes());
    }

    #[test]
    fn dotnet_sample_bodies_are_read(action in any_action(), pk in 1..=i64::MAX, extra in extras()) {
        let mut body = extra;
        body.insert("event_type".into(), json!(action.as_str()));
        body.insert("pk".into(), json!(pk));
        prop_assert_eq!(
            webhook::parse(Value::Object(body).to_string().as_bytes()),
            Ok(notice(action, Subject::User(pk), None, Format::DotnetSample))
        );
    }

    #[test]
    fn mapping_bodies_for_users_are_read(
        action in any_action(),
        pk in 1..=i64::MAX,
        event_id in proptest::option::of("[ -~]{0,20}[!-~]"),
        extra in extras(),
    ) {
        let mut body = extra;
        body.insert("action".into(), json!(action.as_str()));
        body.insert("model_app".into(), json!("authentik_core"));
        body.insert("model_name".into(), json!("user"));
        body.insert("model_pk".into(), json!(pk));
        body.insert("event_id".into(), json!(event_id));
        let expected_id = event_id.map(|id| {
            let id = id.trim();
            uuid::Uuid::try_parse(id).map_or_else(|_| id.to_owned(), |u| u.hyphenated().to_string())
        });
        prop_assert_eq!(
            webhook::parse(Value::Object(body).to_string().as_bytes()),
            Ok(notice(action, Subject::User(pk), expected_id, Format::Mapping))
        );
    }

    /// The same event's id with or without dashes, in either case, dedupes to one key.
    #[test]
    fn mapping_event_ids_that_are_uuids_are_canonical(
        action in any_action(), (id, written) in any_group(), (group, group_text) in any_group(),
    ) {
        let body = json!({
            "event_id": written, "action": action.as_str(), "model_app": "authentik_core",
            "model_name": "group", "model_pk": group_text,
        });
        prop_assert_eq!(
            webhook::parse(body.to_string().as_bytes()),
            Ok(notice(action, Subject::Group(group), Some(id.hyphenated().to_string()), Format::Mapping))
        );
    }

    #[test]
    fn other_models_are_ignored(
        action in any_action(), app in "[a-z_]{1,20}", model in "[a-z_]{1,20}", pk in any_json(),
    ) {
        prop_assume!(!(app == "authentik_core" && (model == "user" || model == "group")));
        let body = json!({"action": action.as_str(), "model_app": app, "model_name": model, "model_pk": pk});
        let parsed = webhook::parse(body.to_string().as_bytes());
        prop_assert!(matches!(parsed, Ok(Parsed::Ignored { .. })), "{:?}", parsed);
    }

    /// Authentik's default body: the context is a Python literal whose keys come in any
    /// order, with other keys (request, geo...) and names holding quotes and escapes.
    #[test]
    fn default_bodies_are_read_in_any_key_order(
        action in any_action(),
        subject in prop_oneof![
            (1..=i64::MAX).prop_map(|pk| (Subject::User(pk), json!(pk), "user")),
            any_group().prop_map(|(id, text)| (Subject::Group(id), json!(text), "group")),
        ],
        name in ".{0,20}",
        extra in prop::collection::btree_map("[a-z_]{1,10}", any_json(), 0..4),
        order in Just(vec!["pk", "app", "model_name", "name"]).prop_shuffle(),
    ) {
        let (subject, pk, model_name) = subject;
        let mut model = Map::new();
        for key in order {
            let value = match key {
                "pk" => pk.clone(),
                "app" => json!("authentik_core"),
                "model_name" => json!(model_name),
                _ => json!(name),
            };
            model.insert(key.to_owned(), value);
        }
        let mut context: Map<String, Value> = extra.into_iter().filter(|(k, _)| k != "model").collect();
        context.insert("model".into(), Value::Object(model));
        let summary = format!("{}: {}", action.as_str(), py_repr(&Value::Object(context)));
        prop_assert_eq!(
            webhook::parse(json!({"body": summary, "severity": "notice"}).to_string().as_bytes()),
            Ok(notice(action, subject, None, Format::DefaultBody))
        );
    }

    #[test]
    fn python_literals_round_trip(value in any_json()) {
        let text = py_repr(&value);
        prop_assert_eq!(python_literal::parse(&text), Ok(value), "{}", text);
    }

    #[test]
    fn python_literal_reader_never_panics(text in ".{0,200}") {
        let _ = python_literal::parse(&text);
    }

    /// Valid literals cut short anywhere, or with a character swapped in: errors, never
    /// a panic (offsets, escapes and multi-byte characters near the cut included).
    #[test]
    fn damaged_python_literals_never_panic(value in any_json(), cut in any::<prop::sample::Index>(), c in any::<char>()) {
        let text = py_repr(&value);
        let chars: Vec<char> = text.chars().collect();
        let at = cut.index(chars.len() + 1);
        let truncated: String = chars[..at].iter().collect();
        let _ = python_literal::parse(&truncated);
        let mut swapped = chars.clone();
        if at < swapped.len() {
            swapped[at] = c;
        }
        let _ = python_literal::parse(&swapped.into_iter().collect::<String>());
    }
}
