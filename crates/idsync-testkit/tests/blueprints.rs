//! The blueprints under `authentik/blueprints/` against Authentik's own blueprint schema
//! (vendored as `authentik/reference/<version>/blueprints-schema.json`), with Authentik's
//! custom YAML tags understood, and against the names the rest of the project uses.
//!
//! How a file is checked ([`check`]):
//! - it parses as YAML, every tag is one Authentik's loader knows, with the arguments it
//!   expects;
//! - each tag is replaced by a placeholder of the JSON type Authentik would put there:
//!   `!KeyOf x` and `!Find [model, ...]` by a primary key of the referenced model (an
//!   integer for users and providers, a UUID otherwise), `!Env`/`!Format` by strings,
//!   `!Condition` by a boolean, `!If` by its branches (which must agree), `!AtIndex` of a
//!   `!FindObject` by a value of the schema type of that field;
//! - the result validates against `blueprints-schema.json` (formats asserted, `uuid`
//!   included), and each entry's `attrs` and `identifiers` against its model's schema with
//!   undeclared fields refused (Authentik silently ignores a misspelled attribute);
//! - every `!KeyOf x` names the `id: x` of an *earlier* entry of the same file (Authentik
//!   resolves it against entries already applied), ids are unique, `!Find` names a known
//!   model and fields it has, and every event matcher sets `action`.
//!
//! The checker also runs on Authentik's shipped blueprints (it must accept them) and on
//! broken copies of ours (it must refuse them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use idsync_testkit::reference;
use serde_json::{Map, Value as Json, json};
use serde_norway::Value as Yaml;
use serde_norway::value::TaggedValue;

/// The files this issue delivers; a missing one is a failure, an extra one is checked too.
const OUR_FILES: [&str; 4] = [
    "idsync-enrollment.yaml",
    "idsync-gateway.yaml",
    "idsync-oidc.yaml",
    "idsync-sync.yaml",
];

/// Environment variables the blueprints read (the shared notes list them for the worker).
const OUR_ENV: [&str; 6] = [
    "IDSYNC_AUTHENTIK_TOKEN",
    "IDSYNC_FRONTEND_URL",
    "IDSYNC_GATEWAY_CLIENT_SECRET",
    "IDSYNC_GATEWAY_URL",
    "IDSYNC_WEBHOOK_SECRET",
    "IDSYNC_WEBHOOK_URL",
];

const UUID_PLACEHOLDER: &str = "00000000-0000-4000-8000-000000000000";
const INT_PLACEHOLDER: i64 = 1;

// ---------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------

fn blueprints_dir() -> PathBuf {
    reference::repo_root().join("authentik").join("blueprints")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn our_blueprint(name: &str) -> String {
    read(&blueprints_dir().join(name))
}

struct Schema {
    /// The whole blueprint schema.
    whole: jsonschema::Validator,
    /// `$defs` of the schema.
    defs: Map<String, Json>,
    /// Strict validators of `model_<name>`, built on first use.
    strict: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

fn compile(schema: &Json) -> jsonschema::Validator {
    jsonschema::draft7::options()
        .should_validate_formats(true)
        // Draft 7 has no `uuid` format; the blueprint schema uses it for every foreign key.
        .with_format("uuid", |s: &str| uuid::Uuid::parse_str(s).is_ok())
        .build(schema)
        .unwrap_or_else(|e| panic!("the blueprint schema does not compile: {e}"))
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let root = reference::json_file(&reference::blueprints_schema_path());
        let defs = root["$defs"]
            .as_object()
            .expect("blueprints-schema.json has $defs")
            .clone();
        Schema {
            whole: compile(&root),
            defs,
            strict: Mutex::new(HashMap::new()),
        }
    })
}

impl Schema {
    fn model_def(&self, model: &str) -> Option<&Json> {
        self.defs.get(&format!("model_{model}"))
    }

    fn properties(&self, model: &str) -> Option<&Map<String, Json>> {
        self.model_def(model)?
            .get("properties")
            .and_then(Json::as_object)
    }

    /// `model_<model>` with every object that lists its properties closed to others.
    fn strict(&self, model: &str) -> Option<std::sync::Arc<jsonschema::Validator>> {
        let mut cache = self.strict.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = cache.get(model) {
            return Some(v.clone());
        }
        let mut def = self.model_def(model)?.clone();
        close_objects(&mut def);
        let validator = std::sync::Arc::new(compile(&def));
        cache.insert(model.to_owned(), validator.clone());
        Some(validator)
    }
}

fn close_objects(schema: &mut Json) {
    match schema {
        Json::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Json::Bool(false));
            }
            for value in map.values_mut() {
                close_objects(value);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// Primary keys of users and of providers are integers in Authentik; every other model
/// has a UUID (the schema agrees: `application.provider` and `policybinding.user` are
/// integers, every other reference a `uuid` string).
fn pk_placeholder(model: &str) -> Json {
    let (app, name) = model.split_once('.').unwrap_or((model, ""));
    if model == "authentik_core.user"
        || (app.starts_with("authentik_providers_") && name.ends_with("provider"))
    {
        json!(INT_PLACEHOLDER)
    } else {
        json!(UUID_PLACEHOLDER)
    }
}

/// A value of the type a schema node describes, for `!AtIndex` of a `!FindObject`.
fn placeholder_for(schema: &Json) -> Json {
    if let Some(first) = schema
        .get("enum")
        .and_then(Json::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Json::Array(kinds)) => kinds.iter().find(|k| *k != "null").cloned(),
        other => other.cloned(),
    };
    match kind.as_ref().and_then(Json::as_str) {
        Some("array") => json!([]),
        Some("object") => json!({}),
        Some("boolean") => json!(false),
        Some("integer" | "number") => json!(INT_PLACEHOLDER),
        Some("string") if schema.get("format") == Some(&json!("uuid")) => json!(UUID_PLACEHOLDER),
        Some("string") => json!("placeholder"),
        _ => Json::Null,
    }
}

/// What checking one file found.
#[derive(Debug, Default)]
struct Report {
    /// The blueprint with every tag replaced by its placeholder.
    json: Json,
    problems: Vec<String>,
    /// Environment variables the file reads.
    env: BTreeSet<String>,
}

struct Entry {
    model: String,
    id: Option<String>,
}

struct Converter<'a> {
    schema: &'a Schema,
    entries: &'a [Entry],
    ids: &'a HashMap<String, usize>,
    context: &'a Map<String, Json>,
    /// The entry being converted (`None` for the blueprint's `context`).
    current: Option<usize>,
    location: String,
    problems: Vec<String>,
    env: BTreeSet<String>,
}

fn scalar_str(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn python_str(value: &Json, repr: bool) -> Option<String> {
    Some(match value {
        Json::String(s) if repr => format!("'{s}'"),
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Null => "None".into(),
        _ => return None,
    })
}

impl Converter<'_> {
    fn problem(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.problems
            .push(format!("{}{path}: {msg}", self.location));
    }

    /// JSON for a YAML node; `None` when a tag's type cannot be known (already reported
    /// where it matters).
    fn convert(&mut self, value: &Yaml, path: &str) -> Option<Json> {
        match value {
            Yaml::Null => Some(Json::Null),
            Yaml::Bool(b) => Some(Json::Bool(*b)),
            Yaml::Number(n) => {
                Some(serde_json::to_value(n).unwrap_or_else(|_| Json::String(n.to_string())))
            }
            Yaml::String(s) => Some(Json::String(s.clone())),
            Yaml::Sequence(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match self.convert(item, &format!("{path}/{i}")) {
                        Some(v) => out.push(v),
                        None => self.problem(&format!("{path}/{i}"), "value of unknown type"),
                    }
                }
                Some(Json::Array(out))
            }
            Yaml::Mapping(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let Some(key) = scalar_str(k) else {
                        self.problem(path, "a mapping key that is not a scalar");
                        continue;
                    };
                    let child = format!("{path}/{key}");
                    match self.convert(v, &child) {
                        Some(v) => {
                            out.insert(key, v);
                        }
                        None => self.problem(&child, "value of unknown type"),
                    }
                }
                Some(Json::Object(out))
            }
            Yaml::Tagged(tagged) => self.tag(tagged, path),
        }
    }

    fn args<'v>(&mut self, tagged: &'v TaggedValue, path: &str) -> Option<&'v [Yaml]> {
        match &tagged.value {
            Yaml::Sequence(items) => Some(items),
            _ => {
                self.problem(path, format!("{} takes a sequence", tagged.tag));
                None
            }
        }
    }

    fn tag(&mut self, tagged: &TaggedValue, path: &str) -> Option<Json> {
        let name = tagged.tag.to_string();
        match name.as_str() {
            "!KeyOf" => self.key_of(tagged, path),
            "!Find" => {
                let model = self.find_model(tagged, path)?;
                Some(pk_placeholder(&model))
            }
            "!FindObject" => {
                self.find_model(tagged, path)?;
                Some(json!({}))
            }
            "!Env" => self.env(tagged, path),
            "!Context" => self.context(tagged, path),
            "!Format" => self.format(tagged, path),
            "!Condition" => self.condition(tagged, path),
            "!If" => self.if_tag(tagged, path),
            "!AtIndex" => self.at_index(tagged, path),
            "!Enumerate" | "!Index" | "!Value" | "!File" | "!ParseJSON" => {
                self.problem(path, format!("{name} is not handled by this checker"));
                None
            }
            other => {
                self.problem(
                    path,
                    format!("unknown tag {other}: Authentik's loader refuses it"),
                );
                None
            }
        }
    }

    fn key_of(&mut self, tagged: &TaggedValue, path: &str) -> Option<Json> {
        let Yaml::String(id) = &tagged.value else {
            self.problem(path, "!KeyOf takes an id");
            return None;
        };
        let Some(&index) = self.ids.get(id) else {
            self.problem(
                path,
                format!("!KeyOf {id}: no entry of this file has `id: {id}`"),
            );
            return None;
        };
        match self.current {
            Some(current) if index >= current => {
                self.problem(
                    path,
                    format!(
                        "!KeyOf {id}: entry {index} with that id is not before this one \
                         (Authentik resolves it against entries already applied)"
                    ),
                );
                None
            }
            _ => Some(pk_placeholder(&self.entries[index].model)),
        }
    }

    /// Checks `[model, [field, value], ...]` and returns the model.
    fn find_model(&mut self, tagged: &TaggedValue, path: &str) -> Option<String> {
        let args = self.args(tagged, path)?;
        let Some(Yaml::String(model)) = args.first() else {
            self.problem(path, format!("{} needs a model name first", tagged.tag));
            return None;
        };
        let Some(properties) = self.schema.properties(model) else {
            self.problem(path, format!("{}: unknown model {model}", tagged.tag));
            return None;
        };
        let properties = properties.clone();
        if args.len() < 2 {
            self.problem(path, format!("{} {model}: no condition", tagged.tag));
        }
        for (i, cond) in args.iter().enumerate().skip(1) {
            let pair = match cond {
                Yaml::Sequence(pair) if pair.len() == 2 => pair,
                _ => {
                    self.problem(
                        path,
                        format!("{}: condition {i} is not [field, value]", tagged.tag),
                    );
                    continue;
                }
            };
            let Some(field) = scalar_str(&pair[0]) else {
                self.problem(
                    path,
                    format!("{}: condition {i} has no field name", tagged.tag),
                );
                continue;
            };
            let base = field.split("__").next().unwrap_or(&field);
            if base != "pk" && !properties.contains_key(base) {
                self.problem(
                    path,
                    format!("{}: {model} has no field {field:?}", tagged.tag),
                );
            }
            self.convert(&pair[1], &format!("{path}/{i}"));
        }
        Some(model.clone())
    }

    fn env(&mut self, tagged: &TaggedValue, path: &str) -> Option<Json> {
        let (key, default) = match &tagged.value {
            Yaml::String(key) => (key.clone(), None),
            Yaml::Sequence(args) if args.len() == 2 => {
                let Some(key) = scalar_str(&args[0]) else {
                    self.problem(path, "!Env needs a variable name");
                    return None;
                };
                (key, Some(self.convert(&args[1], path)?))
            }
            _ => {
                self.problem(path, "!Env takes NAME or [NAME, default]");
                return None;
            }
        };
        self.env.insert(key.clone());
        // The default stands for the unset case when it is a value; a null default only
        // makes sense when the entry's conditions require the variable, so stand for the
        // set case then, as without a default.
        match default {
            Some(value) if !value.is_null() => Some(value),
            _ => Some(Json::String(format!("${{{key}}}"))),
        }
    }

    fn context(&mut self, tagged: &TaggedValue, path: &str) -> Option<Json> {
        let (key, default) = match &tagged.value {
            Yaml::String(key) => (key.clone(), None),
            Yaml::Sequence(args) if args.len() == 2 => (
                scalar_str(&args[0]).unwrap_or_default(),
                self.convert(&args[1], path),
            ),
            _ => {
                self.problem(path, "!Context takes KEY or [KEY, default]");
                return None;
            }
        };
        if let Some(value) = self.context.get(&key) {
            return Some(value.clone());
        }
        Some(default.unwrap_or_else(|| Json::String(format!("<context {key}>"))))
    }

    /// Python's `format % tuple(args)` for the `%s`, `%r`, `%d` and `%%` Authentik
    /// blueprints use; the arguments are the placeholders of the tags.
    fn format(&mut self, tagged: &TaggedValue, path: &str) -> Option<Json> {
        let args = self.args(tagged, path)?;
        let Some(Yaml::String(template)) = args.first() else {
            self.problem(path, "!Format needs a format string first");
            return None;
        };
        let values: Vec<Option<Json>> = args[1..]
            .iter()
            .enumerate()
            .map(|(i, a)| self.convert(a, &format!("{path}/{}", i + 1)))
            .collect();
        let mut out = String::new();
        let mut used = 0;
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some(spec @ ('s' | 'r' | 'd')) => {
                    let arg = values.get(used).cloned().flatten();
                    used += 1;
                    match arg.as_ref().and_then(|a| python_str(a, spec == 'r')) {
                        Some(text) => out.push_str(&text),
                        None => out.push_str("<?>"),
                    }
                }
                other => {
                    self.problem(path, format!("!Format: unsupported conversion %{other:?}"));
                    return None;
                }
            }
        }
        if used != values.len() {
            self.problem(
                path,
                format!(
                    "!Format: {used} conversions for {} arguments (Python raises TypeError)",
                    values.len()
                ),
            );
        }
        Some(Json::String(out))
    }

    fn condition(&mut self, tagged: &TaggedValue, path: &str) -> Option<Json> {
        let args = self.args(tagged, path)?;
        match args.first().and_then(scalar_str) {
            Some(mode)
                if ["AND", "NAND", "OR", "NOR", "XOR", "XNOR"]
                    .contains(&mode.to_uppercase().as_str()) => {}
            other => self.problem(path, format!("!Condition: unknown mode {other:?}")),
        }
        if args.len() < 2 {
            self.problem(path, "!Condition needs at least one value after the mode");
        }
        for (i, arg) in args.iter().enumerate().skip(1) {
            self.convert(arg, &format!("{path}/{i}"));
        }
        Some(Json::Bool(true))
    }

    fn if_tag(&mut self, tagged: &TaggedValue, path: &str) -> Option<Json> {
        let args = self.args(tagged, path)?;
        match args.len() {
            1 => {
                self.convert(&args[0], &format!("{path}/0"));
                Some(Json::Bool(true))
            }
            3 => {
                self.convert(&args[0], &format!("{path}/0"));
                let yes = self.convert(&args[1], &format!("{path}/1"));
                let no = self.convert(&args[2], &format!("{path}/2"));
                match (yes, no) {
                    (Some(a), Some(b)) if json_type(&a) != json_type(&b) => {
                        self.problem(
                            path,
                            format!(
                                "!If branches differ in type ({} and {})",
                                json_type(&a),
                                json_type(&b)
                            ),
                        );
                        Some(a)
                    }
                    (Some(a), _) => Some(a),
                    (None, b) => b,
                }
            }
            n => {
                self.problem(path, format!("!If takes 1 or 3 values, not {n}"));
                None
            }
        }
    }

    fn at_index(&mut self, tagged: &TaggedValue, path: &str) -> Option<Json> {
        let args = self.args(tagged, path)?;
        if !(2..=3).contains(&args.len()) {
            self.problem(
                path,
                "!AtIndex takes [object, key] or [object, key, default]",
            );
            return None;
        }
        let key = scalar_str(&args[1]);
        let default = args
            .get(2)
            .and_then(|d| self.convert(d, &format!("{path}/2")));
        // The field of a found object: a value of that field's schema type.
        if let Yaml::Tagged(inner) = &args[0]
            && inner.tag == "FindObject"
        {
            let model = self.find_model(inner, &format!("{path}/0"))?;
            let field = key.unwrap_or_default();
            let Some(field_schema) = self
                .schema
                .properties(&model)
                .and_then(|p| p.get(&field))
                .cloned()
            else {
                self.problem(path, format!("!AtIndex: {model} has no field {field:?}"));
                return default;
            };
            return Some(placeholder_for(&field_schema));
        }
        let object = self.convert(&args[0], &format!("{path}/0"));
        let found = match (&object, &key) {
            (Some(Json::Object(map)), Some(k)) => map.get(k).cloned(),
            (Some(Json::Array(items)), Some(k)) => {
                k.parse::<usize>().ok().and_then(|i| items.get(i).cloned())
            }
            _ => None,
        };
        found.or(default).or_else(|| {
            self.problem(path, "!AtIndex: cannot tell what this yields");
            None
        })
    }
}

fn json_type(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

const ENTRY_KEYS: [&str; 7] = [
    "model",
    "id",
    "state",
    "conditions",
    "identifiers",
    "attrs",
    "permissions",
];

/// Everything [`check`] can say about one blueprint text.
fn check(name: &str, text: &str) -> Report {
    let schema = schema();
    let mut report = Report::default();
    let doc: Yaml = match serde_norway::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            report.problems.push(format!("{name}: not YAML: {e}"));
            return report;
        }
    };
    let Some(raw_entries) = doc.get("entries").and_then(Yaml::as_sequence) else {
        report.problems.push(format!("{name}: no `entries` list"));
        return report;
    };

    // Pass 1: models and ids.
    let mut entries = Vec::new();
    let mut ids = HashMap::new();
    for (i, raw) in raw_entries.iter().enumerate() {
        let model = raw
            .get("model")
            .and_then(Yaml::as_str)
            .unwrap_or_default()
            .to_owned();
        let id = raw.get("id").and_then(Yaml::as_str).map(str::to_owned);
        if let Some(id) = &id
            && ids.insert(id.clone(), i).is_some()
        {
            report
                .problems
                .push(format!("{name}: id {id:?} is used twice"));
        }
        entries.push(Entry { model, id });
    }

    // The blueprint's own context, for `!Context`.
    let no_context = Map::new();
    let mut converter = Converter {
        schema,
        entries: &entries,
        ids: &ids,
        context: &no_context,
        current: None,
        location: format!("{name}: context"),
        problems: Vec::new(),
        env: BTreeSet::new(),
    };
    let context = doc
        .get("context")
        .and_then(|c| converter.convert(c, ""))
        .and_then(|c| c.as_object().cloned())
        .unwrap_or_default();
    let mut problems = std::mem::take(&mut report.problems);
    problems.extend(converter.problems);
    let mut env = converter.env;

    // Pass 2: every part of the document, tags replaced.
    let mut json_doc = Map::new();
    let Yaml::Mapping(top) = &doc else {
        report.problems.push(format!("{name}: not a mapping"));
        return report;
    };
    for (key, value) in top {
        let Some(key) = scalar_str(key) else { continue };
        if key == "entries" {
            continue;
        }
        let mut converter = Converter {
            schema,
            entries: &entries,
            ids: &ids,
            context: &context,
            current: None,
            location: format!("{name}: {key}"),
            problems: Vec::new(),
            env: BTreeSet::new(),
        };
        if let Some(v) = converter.convert(value, "") {
            json_doc.insert(key, v);
        }
        problems.extend(converter.problems);
        env.extend(converter.env);
    }
    let mut json_entries = Vec::new();
    for (i, raw) in raw_entries.iter().enumerate() {
        let entry = &entries[i];
        let location = format!(
            "{name}: entries[{i}] ({}{})",
            entry.model,
            entry
                .id
                .as_deref()
                .map(|id| format!(", id {id}"))
                .unwrap_or_default()
        );
        let mut converter = Converter {
            schema,
            entries: &entries,
            ids: &ids,
            context: &context,
            current: Some(i),
            location: location.clone(),
            problems: Vec::new(),
            env: BTreeSet::new(),
        };
        let converted = converter.convert(raw, "").unwrap_or(Json::Null);
        problems.extend(converter.problems);
        env.extend(converter.env);

        let Some(object) = converted.as_object() else {
            problems.push(format!("{location}: an entry must be a mapping"));
            continue;
        };
        for key in object.keys() {
            if !ENTRY_KEYS.contains(&key.as_str()) {
                problems.push(format!("{location}: unknown entry key {key:?}"));
            }
        }
        if schema.model_def(&entry.model).is_none() {
            problems.push(format!(
                "{location}: unknown model {:?} (not in blueprints-schema.json)",
                entry.model
            ));
        } else if let Some(validator) = schema.strict(&entry.model) {
            for part in ["identifiers", "attrs"] {
                let Some(value) = object.get(part) else {
                    continue;
                };
                if entry.model == "authentik_blueprints.metaapplyblueprint" && part == "identifiers"
                {
                    continue;
                }
                let mut value = value.clone();
                // `pk` may identify any object; it is not an attribute.
                if let Some(map) = value.as_object_mut() {
                    map.remove("pk");
                }
                for error in validator.iter_errors(&value) {
                    problems.push(format!(
                        "{location}: {part}{}: {error}",
                        error.instance_path()
                    ));
                }
            }
        }
        if entry.model == "authentik_policies_event_matcher.eventmatcherpolicy" {
            let action = converted.pointer("/attrs/action");
            if action.is_none_or(|a| a.is_null() || a == "") {
                problems.push(format!(
                    "{location}: an event matcher without `action` crashes Authentik's validator"
                ));
            }
        }
        json_entries.push(converted);
    }
    json_doc.insert("entries".into(), Json::Array(json_entries));
    let json_doc = Json::Object(json_doc);

    for error in schema.whole.iter_errors(&json_doc) {
        let at = error.instance_path().to_string();
        // A failed `oneOf` over all models says little; the strict check above says why.
        let text = error.to_string();
        let text = if text.len() > 300 {
            format!("{}...", &text[..300])
        } else {
            text
        };
        problems.push(format!("{name}: blueprints-schema.json: {at}: {text}"));
    }

    report.json = json_doc;
    report.problems = problems;
    report.env = env;
    report
}

fn assert_clean(name: &str, report: &Report) {
    assert!(
        report.problems.is_empty(),
        "{name} has problems:\n  {}",
        report.problems.join("\n  ")
    );
}

/// The problems of `text` after replacing `from` (which must occur) by `to`.
fn problems_after(name: &str, from: &str, to: &str) -> Vec<String> {
    let text = our_blueprint(name);
    assert!(text.contains(from), "{name} no longer contains {from:?}");
    check(name, &text.replacen(from, to, 1)).problems
}

fn assert_refused(name: &str, from: &str, to: &str, expect: &str) {
    let problems = problems_after(name, from, to);
    assert!(
        problems.iter().any(|p| p.contains(expect)),
        "replacing {from:?} by {to:?} in {name} should be refused with {expect:?}; problems: {problems:#?}"
    );
}

/// Entries of a checked blueprint by model, as JSON with placeholders.
fn entries_of<'a>(report: &'a Report, model: &str) -> Vec<&'a Json> {
    report.json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["model"] == model)
        .collect()
}

fn the_entry<'a>(report: &'a Report, model: &str, identifier: (&str, &str)) -> &'a Json {
    let found: Vec<_> = entries_of(report, model)
        .into_iter()
        .filter(|e| e["identifiers"][identifier.0] == identifier.1)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {model} with {identifier:?}, found {found:#?}"
    );
    found[0]
}

fn checked(name: &str) -> Report {
    let report = check(name, &our_blueprint(name));
    assert_clean(name, &report);
    report
}

// ---------------------------------------------------------------------------------------
// Our blueprints are valid
// ---------------------------------------------------------------------------------------

#[test]
fn every_blueprint_is_valid_for_authentik_2026_2() {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(blueprints_dir()).expect("authentik/blueprints exists") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let report = check(&name, &read(&path));
        assert_clean(&name, &report);
        assert_eq!(report.json["version"], 1, "{name}: version 1");
        assert!(
            report.json["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("idsync - ")),
            "{name}: metadata.name names it as idsync's"
        );
        found.insert(name);
    }
    for name in OUR_FILES {
        assert!(
            found.contains(name),
            "authentik/blueprints/{name} is missing"
        );
    }
}

#[test]
fn the_checker_accepts_authentiks_own_blueprints() {
    // A positive control: the blueprints Authentik ships must pass the same checks.
    let dir = reference::authentik_dir();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("reference dir") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if !name.ends_with(".yaml") || name == "schema.yml" {
            continue;
        }
        let report = check(&name, &read(&path));
        assert_clean(&name, &report);
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} shipped blueprints checked");
}

#[test]
fn blueprints_read_exactly_the_documented_environment() {
    let mut env = BTreeSet::new();
    for name in OUR_FILES {
        env.extend(checked(name).env);
    }
    let expected: BTreeSet<String> = OUR_ENV.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(env, expected, "the environment the blueprints read");
    let readme = read(&reference::repo_root().join("authentik").join("README.md"));
    for var in OUR_ENV {
        assert!(
            readme.contains(var),
            "authentik/README.md does not mention {var}"
        );
    }
    for name in OUR_FILES {
        assert!(
            readme.contains(name),
            "authentik/README.md does not mention {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// ... and say what the rest of the project expects
// ---------------------------------------------------------------------------------------

/// The managed ids of the scope mappings a provider entry `!Find`s, from the raw YAML.
fn found_scopes(name: &str, provider_name: &str) -> BTreeSet<String> {
    let doc: Yaml = serde_norway::from_str(&our_blueprint(name)).expect("yaml");
    let entries = doc["entries"].as_sequence().expect("entries");
    let provider = entries
        .iter()
        .find(|e| {
            e["model"] == "authentik_providers_oauth2.oauth2provider"
                && e["identifiers"]["name"] == provider_name
        })
        .expect("provider entry");
    let mut scopes = BTreeSet::new();
    for mapping in provider["attrs"]["property_mappings"]
        .as_sequence()
        .expect("list")
    {
        let Yaml::Tagged(find) = mapping else {
            panic!("property mapping {mapping:?} is not a !Find")
        };
        assert!(find.tag == "Find", "{mapping:?}");
        let args = find.value.as_sequence().expect("args");
        assert_eq!(args[0], "authentik_providers_oauth2.scopemapping");
        assert_eq!(args[1][0], "managed");
        scopes.insert(
            args[1][1]
                .as_str()
                .expect("managed id")
                .trim_start_matches("goauthentik.io/providers/oauth2/scope-")
                .to_owned(),
        );
    }
    scopes
}

/// The provider's signing key is the self-signed certificate, and when that does not exist
/// yet the value is one Authentik refuses (the blueprint fails instead of creating a
/// provider that signs HS256).
fn assert_signing_key_guarded(name: &str, provider_name: &str) {
    let doc: Yaml = serde_norway::from_str(&our_blueprint(name)).expect("yaml");
    let provider = doc["entries"]
        .as_sequence()
        .expect("entries")
        .iter()
        .find(|e| e["identifiers"]["name"] == provider_name)
        .expect("provider entry");
    let Yaml::Tagged(guard) = &provider["attrs"]["signing_key"] else {
        panic!("{name}: signing_key is not an !If");
    };
    assert!(guard.tag == "If", "{name}: {guard:?}");
    let args = guard.value.as_sequence().expect("args");
    let find =
        "!Find [authentik_crypto.certificatekeypair, [name, authentik Self-signed Certificate]]";
    for arg in &args[..2] {
        let Yaml::Tagged(found) = arg else {
            panic!("{name}: expected {find}")
        };
        assert!(found.tag == "Find", "{name}: {arg:?}");
        assert_eq!(found.value[0], "authentik_crypto.certificatekeypair");
        assert_eq!(found.value[1][0], "name");
        assert_eq!(found.value[1][1], "authentik Self-signed Certificate");
    }
    let fallback = args[2].as_str().expect("a text");
    assert!(uuid::Uuid::parse_str(fallback).is_err(), "{fallback}");
    assert!(
        fallback.contains("authentik Self-signed Certificate"),
        "{fallback}"
    );
}

#[test]
fn frontend_provider_and_application_match_the_shared_names() {
    let report = checked("idsync-oidc.yaml");
    let provider = the_entry(
        &report,
        "authentik_providers_oauth2.oauth2provider",
        ("name", "idsync"),
    );
    let attrs = &provider["attrs"];
    assert_eq!(attrs["client_type"], "public");
    assert_eq!(attrs["client_id"], "idsync-frontend");
    assert_eq!(attrs["sub_mode"], "user_id", "sub must be the user's pk");
    assert_eq!(attrs["issuer_mode"], "per_provider");
    assert_eq!(
        attrs["redirect_uris"],
        json!([{"matching_mode": "strict", "url": "http://localhost:3000/"}]),
        "with IDSYNC_FRONTEND_URL unset"
    );
    assert!(
        attrs["signing_key"].is_string(),
        "a signing key (RS256), never HS256"
    );
    assert!(
        attrs["access_token_validity"].is_string(),
        "access token lifetime stated"
    );
    assert!(
        attrs.get("client_secret").is_none(),
        "a public client has no secret"
    );
    assert_eq!(
        found_scopes("idsync-oidc.yaml", "idsync"),
        BTreeSet::from(["email", "offline_access", "openid", "profile"].map(String::from))
    );

    let app = the_entry(&report, "authentik_core.application", ("slug", "idsync"));
    assert_eq!(
        app["attrs"]["provider"],
        json!(INT_PLACEHOLDER),
        "!KeyOf the provider"
    );
}

#[test]
fn gateway_client_is_confidential_with_its_secret_from_the_environment() {
    let report = checked("idsync-gateway.yaml");
    let provider = the_entry(
        &report,
        "authentik_providers_oauth2.oauth2provider",
        ("name", "idsync-gateway"),
    );
    let attrs = &provider["attrs"];
    assert_eq!(attrs["client_type"], "confidential");
    assert_eq!(attrs["client_id"], "idsync-gateway");
    assert_eq!(attrs["client_secret"], "${IDSYNC_GATEWAY_CLIENT_SECRET}");
    assert_eq!(attrs["sub_mode"], "user_id");
    assert_eq!(
        attrs["redirect_uris"],
        json!([{"matching_mode": "strict", "url": "http://localhost:9080/ws/callback"}])
    );
    assert!(attrs["signing_key"].is_string());
    assert_signing_key_guarded("idsync-gateway.yaml", "idsync-gateway");
    assert!(found_scopes("idsync-gateway.yaml", "idsync-gateway").contains("openid"));
    the_entry(
        &report,
        "authentik_core.application",
        ("slug", "idsync-gateway"),
    );
    // Every entry waits for the secret: without it, the file applies nothing.
    for entry in report.json["entries"].as_array().expect("entries") {
        assert_eq!(entry["conditions"], json!([true]), "{entry:#}");
    }
}

#[test]
fn service_account_may_read_users_and_groups_and_nothing_else() {
    let report = checked("idsync-sync.yaml");
    let roles = entries_of(&report, "authentik_rbac.role");
    assert_eq!(roles.len(), 1);
    let permissions: BTreeSet<&str> = roles[0]["attrs"]["permissions"]
        .as_array()
        .expect("permissions")
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert_eq!(
        permissions,
        BTreeSet::from(["authentik_core.view_user", "authentik_core.view_group"])
    );

    let user = the_entry(&report, "authentik_core.user", ("username", "idsync-sync"));
    let attrs = &user["attrs"];
    assert_eq!(attrs["type"], "service_account");
    assert_eq!(attrs["roles"], json!([UUID_PLACEHOLDER]));
    assert!(
        attrs.get("password").is_none(),
        "no password: it cannot sign in"
    );
    assert!(
        attrs.get("permissions").is_none(),
        "permissions only through the role"
    );
    for group in entries_of(&report, "authentik_core.group") {
        assert_eq!(group["attrs"]["is_superuser"], false, "{group:#}");
        assert!(group["attrs"].get("roles").is_none(), "{group:#}");
    }
    // Nothing else in any file names the service account or grants permissions.
    for name in OUR_FILES {
        let other = checked(name);
        for entry in other.json["entries"].as_array().expect("entries") {
            assert!(entry.get("permissions").is_none(), "{name}: {entry:#}");
            if entry["model"] == "authentik_rbac.role" {
                assert_eq!(name, "idsync-sync.yaml");
            }
        }
    }

    let token = the_entry(
        &report,
        "authentik_core.token",
        ("identifier", "idsync-sync-token"),
    );
    let attrs = &token["attrs"];
    assert_eq!(attrs["intent"], "api");
    assert_eq!(attrs["expiring"], false);
    assert_eq!(attrs["key"], "${IDSYNC_AUTHENTIK_TOKEN}");
    assert_eq!(
        attrs["user"],
        json!(INT_PLACEHOLDER),
        "!KeyOf the service account"
    );
}

#[test]
fn webhook_reports_user_and_group_changes_once_each() {
    let report = checked("idsync-sync.yaml");
    let transport = the_entry(
        &report,
        "authentik_events.notificationtransport",
        ("name", "idsync"),
    );
    let attrs = &transport["attrs"];
    assert_eq!(attrs["mode"], "webhook");
    assert_eq!(attrs["send_once"], true);
    assert_eq!(attrs["webhook_url"], "http://idsync:8080/authentik/webhook");
    assert!(attrs["webhook_mapping_body"].is_string());
    assert!(attrs["webhook_mapping_headers"].is_string());

    let mut matched = BTreeSet::new();
    for policy in entries_of(
        &report,
        "authentik_policies_event_matcher.eventmatcherpolicy",
    ) {
        let attrs = &policy["attrs"];
        assert!(
            attrs.get("app").is_none_or(Json::is_null),
            "`app` is the module that logged the event, never authentik.core: {policy:#}"
        );
        matched.insert((
            attrs["action"].as_str().expect("action").to_owned(),
            attrs["model"].as_str().expect("model").to_owned(),
        ));
    }
    let mut expected = BTreeSet::new();
    for action in ["model_created", "model_updated", "model_deleted"] {
        for model in ["authentik_core.user", "authentik_core.group"] {
            expected.insert((action.to_owned(), model.to_owned()));
        }
    }
    assert_eq!(matched, expected);

    let rules = entries_of(&report, "authentik_events.notificationrule");
    assert_eq!(rules.len(), 1);
    let rule = &rules[0]["attrs"];
    assert!(
        rule["destination_group"].is_string(),
        "a rule with no destination sends nothing"
    );
    assert_eq!(rule["transports"].as_array().map(Vec::len), Some(1));

    // One binding per matcher, all on the rule.
    let raw: Yaml = serde_norway::from_str(&our_blueprint("idsync-sync.yaml")).expect("yaml");
    let mut bound = BTreeSet::new();
    for entry in raw["entries"].as_sequence().expect("entries") {
        if entry["model"] != "authentik_policies.policybinding" {
            continue;
        }
        let key_of = |v: &Yaml| match v {
            Yaml::Tagged(t) if t.tag == "KeyOf" => t.value.as_str().map(str::to_owned),
            _ => None,
        };
        assert_eq!(
            key_of(&entry["identifiers"]["target"]).as_deref(),
            Some("rule")
        );
        bound.insert(key_of(&entry["identifiers"]["policy"]).expect("policy"));
    }
    assert_eq!(bound.len(), 6, "{bound:?}");
}

#[test]
fn enrollment_flow_is_linked_from_the_default_login_page() {
    let report = checked("idsync-enrollment.yaml");
    let flow = the_entry(
        &report,
        "authentik_flows.flow",
        ("slug", "idsync-enrollment"),
    );
    assert_eq!(flow["attrs"]["designation"], "enrollment");
    assert_eq!(flow["attrs"]["authentication"], "require_unauthenticated");

    // The stage of Authentik's default authentication flow, by the name that blueprint
    // gives it.
    let default_flow =
        read(&reference::authentik_dir().join("flow-default-authentication-flow.yaml"));
    assert!(default_flow.contains("name: default-authentication-identification"));
    let stage = the_entry(
        &report,
        "authentik_stages_identification.identificationstage",
        ("name", "default-authentication-identification"),
    );
    assert!(stage["attrs"]["enrollment_flow"].is_string());

    // Prompt, write (create), login, in that order.
    let raw: Yaml = serde_norway::from_str(&our_blueprint("idsync-enrollment.yaml")).expect("yaml");
    let entries = raw["entries"].as_sequence().expect("entries");
    let model_of_id: BTreeMap<&str, &str> = entries
        .iter()
        .filter_map(|e| Some((e["id"].as_str()?, e["model"].as_str()?)))
        .collect();
    let mut bound: Vec<(i64, &str)> = entries
        .iter()
        .filter(|e| e["model"] == "authentik_flows.flowstagebinding")
        .map(|e| {
            let Yaml::Tagged(stage) = &e["identifiers"]["stage"] else {
                panic!("stage is a !KeyOf")
            };
            let id = stage.value.as_str().expect("id");
            (
                e["identifiers"]["order"].as_i64().expect("order"),
                model_of_id[id],
            )
        })
        .collect();
    bound.sort();
    let models: Vec<&str> = bound.iter().map(|b| b.1).collect();
    assert_eq!(
        models,
        [
            "authentik_stages_prompt.promptstage",
            "authentik_stages_user_write.userwritestage",
            "authentik_stages_user_login.userloginstage",
        ]
    );
    let write = entries_of(&report, "authentik_stages_user_write.userwritestage");
    assert_eq!(write[0]["attrs"]["user_creation_mode"], "always_create");
    assert_eq!(write[0]["attrs"]["create_users_as_inactive"], false);
}

// ---------------------------------------------------------------------------------------
// The checker says no
// ---------------------------------------------------------------------------------------

#[test]
fn a_misspelled_attribute_is_refused() {
    assert_refused(
        "idsync-oidc.yaml",
        "sub_mode: user_id",
        "sub_mod: user_id",
        "Additional properties are not allowed",
    );
    assert_refused(
        "idsync-sync.yaml",
        "send_once: true",
        "send_one: true",
        "send_one",
    );
    assert_refused(
        "idsync-enrollment.yaml",
        "user_creation_mode: always_create",
        "creation_mode: always_create",
        "creation_mode",
    );
}

#[test]
fn a_wrong_value_is_refused() {
    assert_refused(
        "idsync-oidc.yaml",
        "sub_mode: user_id",
        "sub_mode: pk",
        "sub_mode",
    );
    assert_refused(
        "idsync-oidc.yaml",
        "client_type: public",
        "client_type: open",
        "client_type",
    );
    assert_refused(
        "idsync-sync.yaml",
        "- authentik_core.view_group",
        "- authentik_core.read_group",
        "permissions",
    );
    assert_refused(
        "idsync-sync.yaml",
        "send_once: true",
        "send_once: 1",
        "send_once",
    );
    assert_refused(
        "idsync-sync.yaml",
        "model: authentik_core.group\n  - model: authentik_policies_event_matcher",
        "model: authentik_core.groups\n  - model: authentik_policies_event_matcher",
        "attrs/model",
    );
    assert_refused(
        "idsync-enrollment.yaml",
        "designation: enrollment",
        "designation: signup",
        "designation",
    );
}

#[test]
fn broken_references_are_refused() {
    assert_refused(
        "idsync-sync.yaml",
        "webhook_mapping_body: !KeyOf mapping-body",
        "webhook_mapping_body: !KeyOf mapping-bdy",
        "no entry of this file has `id: mapping-bdy`",
    );
    // The role used before its entry: Authentik cannot resolve it yet.
    assert_refused(
        "idsync-sync.yaml",
        "      roles:\n        - !KeyOf sync-role",
        "      roles:\n        - !KeyOf rule",
        "is not before this one",
    );
    // A user's pk where a UUID belongs.
    assert_refused(
        "idsync-sync.yaml",
        "destination_group: !KeyOf webhook-recipients",
        "destination_group: !KeyOf service-account",
        "destination_group",
    );
    assert_refused(
        "idsync-oidc.yaml",
        "!Find [authentik_crypto.certificatekeypair, [name,",
        "!Find [authentik_crypto.certificate, [name,",
        "unknown model authentik_crypto.certificate",
    );
    assert_refused(
        "idsync-oidc.yaml",
        "[slug, default-provider-invalidation-flow]",
        "[slug_name, default-provider-invalidation-flow]",
        "has no field \"slug_name\"",
    );
    assert_refused(
        "idsync-sync.yaml",
        "    id: transport\n",
        "    id: rule\n",
        "id \"rule\" is used twice",
    );
}

#[test]
fn broken_tags_and_models_are_refused() {
    assert_refused(
        "idsync-sync.yaml",
        "key: !Env IDSYNC_AUTHENTIK_TOKEN",
        "key: !Environment IDSYNC_AUTHENTIK_TOKEN",
        "unknown tag !Environment",
    );
    assert_refused(
        "idsync-oidc.yaml",
        "!Format [\"%s/\", !Env",
        "!Format [\"%s/%s\", !Env",
        "2 conversions for 1 arguments",
    );
    assert_refused(
        "idsync-sync.yaml",
        "!Condition [AND, !Env IDSYNC_AUTHENTIK_TOKEN]",
        "!Condition [MAYBE, !Env IDSYNC_AUTHENTIK_TOKEN]",
        "unknown mode",
    );
    assert_refused(
        "idsync-sync.yaml",
        "model: authentik_events.notificationtransport",
        "model: authentik_events.notificationtransports",
        "unknown model",
    );
    assert_refused(
        "idsync-enrollment.yaml",
        "        - [email, username]",
        "        - 7",
        "!If branches differ in type",
    );
    assert_refused(
        "idsync-sync.yaml",
        "entries:",
        "entrys:",
        "no `entries` list",
    );
    // Only the whole-document schema knows the blueprint's own keys.
    assert_refused(
        "idsync-sync.yaml",
        "metadata:\n  name:",
        "metadata:\n  title:",
        "blueprints-schema.json",
    );
    assert_refused(
        "idsync-oidc.yaml",
        "  - model: authentik_providers_oauth2.oauth2provider\n    id: provider",
        "  - model: authentik_providers_oauth2.oauth2provider\n    state: replaced\n    id: provider",
        "blueprints-schema.json",
    );
    assert_refused("idsync-sync.yaml", "version: 1", "version: [1", "not YAML");
}

#[test]
fn an_event_matcher_without_action_is_refused() {
    assert_refused(
        "idsync-sync.yaml",
        "      action: model_deleted\n      model: authentik_core.group",
        "      model: authentik_core.group",
        "without `action`",
    );
}
