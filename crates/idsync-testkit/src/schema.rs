//! Validating JSON against a component schema of an OpenAPI 3.0 document (Authentik's
//! `schema.yml`), by turning the component into a JSON Schema (draft 2020-12) for the
//! `jsonschema` crate.
//!
//! The conversion, as OpenAPI 3.0.3 defines its schema dialect:
//! - `$ref: '#/components/schemas/X'` becomes `#/$defs/X`; only the components reachable
//!   from the one asked for are carried. Siblings of a `$ref` are ignored, as in 3.0.
//! - `nullable: true` admits `null`: `type: T` becomes `type: [T, "null"]` (and `null`
//!   joins an `enum`); a schema without `type` is wrapped in `anyOf: [.., {type: null}]`.
//! - Validation is of a *response*: `readOnly` properties are expected, `writeOnly` ones
//!   are not required.
//! - Boolean `exclusiveMinimum`/`exclusiveMaximum` (the draft-4 form) become numbers.
//! - `format` is asserted: `uuid` and `date-time` as JSON Schema defines them; `email`
//!   also accepts `""`, which Authentik sends for a user without an address although its
//!   schema says `format: email`. Formats JSON Schema does not know (`binary`,
//!   `double`, ...) are annotations.
//! - `additionalProperties` is kept as written; where it is absent, OpenAPI allows extra
//!   members. [`Strictness::Strict`] forbids them instead, to catch invented or
//!   misspelled fields in fixtures (do not use it for schemas built with `allOf` of
//!   objects).
//! - `allOf`, `oneOf`, `anyOf`, `not`, `items`, `properties`, `additionalProperties`
//!   are converted recursively; `enum`, `default`, `example` are data and left alone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Map, Value, json};

const COMPONENT_PREFIX: &str = "#/components/schemas/";
const DEFS_PREFIX: &str = "#/$defs/";

/// Whether objects without `additionalProperties` accept members they do not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// As OpenAPI says: undeclared members are allowed.
    #[default]
    Lenient,
    /// Undeclared members are errors (fixtures must not invent fields).
    Strict,
}

/// Parses a YAML (or JSON) document into JSON.
pub fn parse_yaml(text: &str) -> Result<Value, String> {
    serde_norway::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// The JSON Schema (draft 2020-12) equivalent of `components/schemas/<component>` of
/// the OpenAPI document `doc`.
pub fn to_json_schema(
    doc: &Value,
    component: &str,
    strictness: Strictness,
) -> Result<Value, String> {
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .ok_or("the document has no components/schemas")?;
    let mut defs = Map::new();
    let mut seen = BTreeSet::from([component.to_owned()]);
    let mut queue = VecDeque::from([component.to_owned()]);
    while let Some(name) = queue.pop_front() {
        let schema = schemas
            .get(&name)
            .ok_or_else(|| format!("no component schema {name:?}"))?;
        let mut refs = BTreeSet::new();
        let converted = convert(schema, strictness, false, &mut refs)?;
        defs.insert(name, converted);
        for referenced in refs {
            if seen.insert(referenced.clone()) {
                queue.push_back(referenced);
            }
        }
    }
    Ok(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("{DEFS_PREFIX}{}", escape_pointer(component)),
        "$defs": defs,
    }))
}

/// A compiled validator for one component; build once, validate many values.
pub struct ComponentValidator {
    component: String,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for ComponentValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentValidator")
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

impl ComponentValidator {
    pub fn new(doc: &Value, component: &str, strictness: Strictness) -> Result<Self, String> {
        let schema = to_json_schema(doc, component, strictness)?;
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .with_format("email", |s: &str| s.is_empty() || looks_like_email(s))
            .build(&schema)
            .map_err(|e| format!("component {component:?} does not compile: {e}"))?;
        Ok(Self {
            component: component.to_owned(),
            validator,
        })
    }

    /// The component this validates against.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// `Ok` or every error, each as `<JSON pointer to the value>: <what is wrong>`.
    pub fn validate(&self, value: &Value) -> Result<(), Vec<String>> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(value)
            .map(|error| {
                let path = error.instance_path().to_string();
                let path = if path.is_empty() {
                    "(root)".to_owned()
                } else {
                    path
                };
                format!("{path}: {error}")
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Validates `value` against `components/schemas/<component>` of `doc` (lenient about
/// undeclared members, as OpenAPI is).
pub fn validate_component(doc: &Value, component: &str, value: &Value) -> Result<(), Vec<String>> {
    ComponentValidator::new(doc, component, Strictness::Lenient)
        .map_err(|e| vec![e])?
        .validate(value)
}

/// Like [`validate_component`], but members the schema does not declare are errors.
pub fn validate_component_strict(
    doc: &Value,
    component: &str,
    value: &Value,
) -> Result<(), Vec<String>> {
    ComponentValidator::new(doc, component, Strictness::Strict)
        .map_err(|e| vec![e])?
        .validate(value)
}

/// `local@domain` with a dot-free-or-dotted domain; the JSON Schema `email` format is
/// stricter than Django's, this is close to Django's `EmailValidator` in spirit.
fn looks_like_email(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !s.chars().any(char::is_whitespace)
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    }
}

fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn unescape_pointer(name: &str) -> String {
    name.replace("~1", "/").replace("~0", "~")
}

/// Converts one OpenAPI schema object. `in_composition`: a direct member of
/// `allOf`/`anyOf`/`oneOf`, where strictness would reject the siblings' members.
fn convert(
    node: &Value,
    strictness: Strictness,
    in_composition: bool,
    refs: &mut BTreeSet<String>,
) -> Result<Value, String> {
    let Some(object) = node.as_object() else {
        // `true`/`false` schemas, or something odd that jsonschema will judge.
        return Ok(node.clone());
    };
    if let Some(reference) = object.get("$ref") {
        let reference = reference.as_str().ok_or("$ref is not a string")?;
        let name = reference
            .strip_prefix(COMPONENT_PREFIX)
            .ok_or_else(|| format!("unsupported $ref {reference:?}"))?;
        refs.insert(unescape_pointer(name));
        return Ok(json!({ "$ref": format!("{DEFS_PREFIX}{name}") }));
    }

    let mut out = Map::new();
    let mut write_only = BTreeSet::new();
    for (key, value) in object {
        match key.as_str() {
            "nullable" => {}
            "properties" => {
                let properties = value.as_object().ok_or("properties is not an object")?;
                let mut converted = Map::new();
                for (name, schema) in properties {
                    if schema.get("writeOnly").and_then(Value::as_bool) == Some(true) {
                        write_only.insert(name.clone());
                    }
                    converted.insert(name.clone(), convert(schema, strictness, false, refs)?);
                }
                out.insert(key.clone(), Value::Object(converted));
            }
            "items" | "not" => {
                out.insert(key.clone(), convert(value, strictness, false, refs)?);
            }
            "additionalProperties" => {
                let converted = if value.is_object() {
                    convert(value, strictness, false, refs)?
                } else {
                    value.clone()
                };
                out.insert(key.clone(), converted);
            }
            "allOf" | "anyOf" | "oneOf" => {
                let members = value
                    .as_array()
                    .ok_or_else(|| format!("{key} is not an array"))?
                    .iter()
                    .map(|member| convert(member, strictness, true, refs))
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(key.clone(), Value::Array(members));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }

    // Draft-4 style booleans.
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(flag) = out.get(exclusive).and_then(Value::as_bool) {
            out.remove(exclusive);
            match out.remove(bound) {
                Some(limit) if flag => {
                    out.insert(exclusive.to_owned(), limit);
                }
                Some(limit) => {
                    out.insert(bound.to_owned(), limit);
                }
                None => {}
            }
        }
    }

    // Responses need not carry write-only members.
    if let Some(Value::Array(required)) = out.get_mut("required") {
        required.retain(|name| name.as_str().is_none_or(|n| !write_only.contains(n)));
    }

    if strictness == Strictness::Strict
        && !in_composition
        && out.contains_key("properties")
        && !out.contains_key("additionalProperties")
    {
        out.insert("additionalProperties".to_owned(), Value::Bool(false));
    }

    if object.get("nullable").and_then(Value::as_bool) == Some(true) {
        return Ok(admit_null(out));
    }
    Ok(Value::Object(out))
}

fn admit_null(mut schema: Map<String, Value>) -> Value {
    let has_composition = ["allOf", "anyOf", "oneOf", "not"]
        .iter()
        .any(|k| schema.contains_key(*k));
    match schema.get("type").cloned() {
        Some(Value::String(kind)) if !has_composition => {
            schema.insert("type".to_owned(), json!([kind, "null"]));
            if let Some(Value::Array(values)) = schema.get_mut("enum")
                && !values.contains(&Value::Null)
            {
                values.push(Value::Null);
            }
            Value::Object(schema)
        }
        _ => json!({ "anyOf": [Value::Object(schema), { "type": "null" }] }),
    }
}

/// Names of the components `component` reaches through `$ref`s, itself included; for
/// reports and for checking what a validation covered.
pub fn reachable_components(doc: &Value, component: &str) -> Result<Vec<String>, String> {
    let schema = to_json_schema(doc, component, Strictness::Lenient)?;
    let defs: BTreeMap<String, Value> = schema
        .get("$defs")
        .and_then(Value::as_object)
        .map(|m| m.clone().into_iter().collect())
        .unwrap_or_default();
    Ok(defs.into_keys().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        parse_yaml(
            r##"
openapi: 3.0.3
components:
  schemas:
    Thing:
      type: object
      properties:
        id:
          type: integer
          readOnly: true
        when:
          type: string
          format: date-time
          nullable: true
        uuid:
          type: string
          format: uuid
        email:
          type: string
          format: email
        kind:
          allOf:
          - $ref: '#/components/schemas/KindEnum'
          nullable: true
        parts:
          type: array
          items:
            $ref: '#/components/schemas/Part'
          nullable: true
        secret:
          type: string
          writeOnly: true
        ratio:
          type: number
          minimum: 0
          exclusiveMinimum: true
      required: [id, secret, parts]
    Part:
      type: object
      properties:
        name:
          type: string
      required: [name]
    KindEnum:
      enum: [a, b]
      type: string
"##,
        )
        .expect("yaml")
    }

    fn check(value: Value) -> Result<(), Vec<String>> {
        validate_component(&doc(), "Thing", &value)
    }

    #[test]
    fn accepts_what_the_schema_allows() {
        check(json!({"id": 1, "parts": null})).expect("nullable array");
        check(json!({
            "id": 1, "parts": [{"name": "x"}], "when": null, "kind": null,
            "uuid": "6a4f3c0e-5c1b-4a8e-9b1f-2f6f0a1b2c3d", "email": "", "extra": true
        }))
        .expect("valid");
        check(
            json!({"id": 1, "parts": [], "when": "2026-01-02T03:04:05.123456Z", "kind": "a",
                     "email": "a@b.example"}),
        )
        .expect("valid");
    }

    #[test]
    fn rejects_what_it_does_not() {
        let cases = [
            json!({"parts": []}),
            json!({"id": "1", "parts": []}),
            json!({"id": 1}),
            json!({"id": 1, "parts": [{}]}),
            json!({"id": 1, "parts": [], "when": "yesterday"}),
            json!({"id": 1, "parts": [], "uuid": "not-a-uuid"}),
            json!({"id": 1, "parts": [], "kind": "c"}),
            json!({"id": 1, "parts": [], "email": "nobody"}),
            json!({"id": 1, "parts": [], "ratio": 0}),
        ];
        for case in cases {
            assert!(check(case.clone()).is_err(), "{case} should fail");
        }
    }

    #[test]
    fn errors_name_the_place() {
        let errors = check(json!({"id": 1, "parts": [{"name": 5}]})).expect_err("invalid");
        assert!(
            errors.iter().any(|e| e.starts_with("/parts/0/name")),
            "{errors:?}"
        );
    }

    #[test]
    fn strict_rejects_undeclared_members() {
        let value = json!({"id": 1, "parts": [{"name": "x", "nmae": "y"}]});
        check(value.clone()).expect("lenient");
        assert!(validate_component_strict(&doc(), "Thing", &value).is_err());
    }

    #[test]
    fn only_reachable_components_are_carried() {
        assert_eq!(reachable_components(&doc(), "Part").expect("ok"), ["Part"]);
        assert_eq!(
            reachable_components(&doc(), "Thing").expect("ok"),
            ["KindEnum", "Part", "Thing"]
        );
        assert!(validate_component(&doc(), "Nope", &json!({})).is_err());
    }
}
