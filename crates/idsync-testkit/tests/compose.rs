//! The container stack (docker-compose.yml, Dockerfile, .dockerignore and deploy/),
//! checked without a container engine, which CI does not have:
//!
//! - docker-compose.yml is resolved as `docker compose config` would (YAML merge keys,
//!   `${VAR:-default}` interpolation against an empty environment and against a `.env`,
//!   profiles) and validated against the vendored Compose Specification schema with
//!   every profile; then the stack's invariants: exact image versions, a healthcheck on
//!   every long-running service, start-up order, loopback-only ports, no secret value in
//!   any file, the idsync behind the gateway reachable only through it;
//! - deploy/apisix/apisix.yaml against a schema transcribed from APISIX 3.18.0's Lua
//!   sources (docs/reference/apisix/), and the settings the gateway depends on;
//! - the Dockerfiles (hadolint is not available): pinned bases, multi-stage, `--locked`,
//!   a non-root user, a healthcheck through the binary;
//! - deploy/init/generate-secrets.sh and deploy/bin/load-secrets, run here for real;
//! - the frontend's config.json and the Content-Security-Policy nginx sends.
//!
//! Every check is a function returning the problems it found, run on the real files
//! (no problem allowed) and on broken copies (the problem must be found).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use idsync_testkit::reference::{compose_spec_path, json_file, repo_root};
use serde_json::{Map, Value, json};

type Env = BTreeMap<String, String>;

/// Where the stack mounts the `secrets` volume.
const SECRETS_MOUNT: &str = "/run/idsync-secrets";

/// Names shared with the blueprints and the frontend (the lead's notes).
const ISSUER: &str = "http://localhost:9000/application/o/idsync/";
const FRONTEND_CLIENT_ID: &str = "idsync-frontend";
const GATEWAY_CLIENT_ID: &str = "idsync-gateway";
const GATEWAY_DISCOVERY: &str =
    "http://authentik.localhost:9000/application/o/idsync-gateway/.well-known/openid-configuration";
const GATEWAY_REDIRECT_URI: &str = "http://localhost:9080/ws/callback";
const INTERNAL_DISCOVERY: &str =
    "http://authentik-server:9000/application/o/idsync/.well-known/openid-configuration";
/// Environment variables the blueprints read on the Authentik worker (the lead's notes).
const BLUEPRINT_VARIABLES: &[&str] = &[
    "IDSYNC_WEBHOOK_SECRET",
    "IDSYNC_AUTHENTIK_TOKEN",
    "IDSYNC_GATEWAY_CLIENT_SECRET",
];

// ---------------------------------------------------------------------------------------
// Reading files

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// YAML to JSON, with YAML merge keys (`<<: *anchor`) applied, as Compose does.
fn yaml(text: &str) -> Result<Value, String> {
    let mut value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    value.apply_merge().map_err(|e| e.to_string())?;
    serde_json::to_value(value).map_err(|e| e.to_string())
}

fn compose_raw() -> Value {
    yaml(&read("docker-compose.yml")).expect("docker-compose.yml parses")
}

/// What a person who follows docs/deploy.md might put in `.env`: every seed set.
fn sample_dotenv() -> Env {
    [
        ("AUTHENTIK_SECRET_KEY", "k".repeat(60)),
        (
            "AUTHENTIK_BOOTSTRAP_PASSWORD",
            "correct-horse-battery".into(),
        ),
        ("AUTHENTIK_BOOTSTRAP_EMAIL", "ops@example.org".into()),
        ("IDSYNC_WEBHOOK_SECRET", "w".repeat(40)),
        ("POSTGRES_PASSWORD", "p".repeat(20)),
        ("RUST_LOG", "debug".into()),
        ("IDSYNC_GATEWAY_SUBNET", "10.99.0.0/28".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

// ---------------------------------------------------------------------------------------
// Compose's interpolation and profiles

/// One string interpolated as Compose does: `$$` is a `$`; `$VAR`, `${VAR}`;
/// `${VAR:-default}` (unset or empty) and `${VAR-default}` (unset); `${VAR:?error}` and
/// `${VAR?error}`; `${VAR:+alternative}` and `${VAR+alternative}`. Defaults may nest.
fn interpolate_str(input: &str, env: &Env) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(|| format!("unclosed ${{ in {input:?}"))?;
            out.push_str(&substitute(&body[..end], env)?);
            rest = &body[end + 1..];
        } else {
            let len = name_length(after);
            if len == 0 || after.starts_with(|c: char| c.is_ascii_digit()) {
                out.push('$');
                rest = after;
            } else {
                out.push_str(env.get(&after[..len]).map_or("", String::as_str));
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn name_length(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn substitute(body: &str, env: &Env) -> Result<String, String> {
    let bad = || format!("bad substitution ${{{body}}}");
    let (name, op) = body.split_at(name_length(body));
    let value = env.get(name);
    if name.is_empty() {
        return Err(bad());
    }
    if op.is_empty() {
        return Ok(value.cloned().unwrap_or_default());
    }
    // With a colon the operator tests "set and not empty", without it "set".
    let (has, op) = match op.strip_prefix(':') {
        Some(op) => (value.is_some_and(|v| !v.is_empty()), op),
        None => (value.is_some(), op),
    };
    let (kind, word) = op.split_at(op.len().min(1));
    match (kind, has) {
        ("-" | "?", true) => Ok(value.cloned().unwrap_or_default()),
        ("-", false) | ("+", true) => interpolate_str(word, env),
        ("+", false) => Ok(String::new()),
        ("?", false) => Err(format!(
            "required variable {name} is missing a value: {}",
            interpolate_str(word, env)?
        )),
        _ => Err(bad()),
    }
}

/// Every string value interpolated (keys are not, as in Compose).
fn interpolate(value: &Value, env: &Env) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => Value::String(interpolate_str(s, env)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| interpolate(v, env))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), interpolate(v, env)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// The model `docker compose --profile P... config` works with: interpolated, with
/// only the services enabled by `profiles` (those without `profiles` always are).
fn resolve(raw: &Value, env: &Env, profiles: &[&str]) -> Result<Value, String> {
    let mut model = interpolate(raw, env)?;
    let services = model
        .get_mut("services")
        .and_then(Value::as_object_mut)
        .ok_or("no services")?;
    services.retain(|_, service| match service.get("profiles") {
        None => true,
        Some(list) => list
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p.as_str().is_some_and(|p| profiles.contains(&p))),
    });
    Ok(model)
}

fn model(profiles: &[&str]) -> Value {
    resolve(&compose_raw(), &Env::new(), profiles).expect("docker-compose.yml resolves")
}

fn services(model: &Value) -> &Map<String, Value> {
    model["services"].as_object().expect("services")
}

fn service<'a>(model: &'a Value, name: &str) -> &'a Value {
    services(model)
        .get(name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// A service's environment as a map, whichever syntax the file uses.
fn environment(service: &Value) -> BTreeMap<String, String> {
    match service.get("environment") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item.to_owned(), String::new()),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn depends_on(service: &Value) -> BTreeMap<String, String> {
    match service.get("depends_on") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let condition = v["condition"].as_str().unwrap_or("service_started");
                (k.clone(), condition.to_owned())
            })
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|k| (k.to_owned(), "service_started".to_owned()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The services that are one-shot jobs: others wait for them to complete.
fn one_shot_services(model: &Value) -> BTreeSet<String> {
    services(model)
        .values()
        .flat_map(depends_on)
        .filter(|(_, condition)| condition == "service_completed_successfully")
        .map(|(name, _)| name)
        .collect()
}

fn networks_of(service: &Value) -> BTreeSet<String> {
    match service.get("networks") {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ if service.get("network_mode").is_some() => BTreeSet::new(),
        _ => BTreeSet::from(["default".to_owned()]),
    }
}

/// `(host_ip, host_port, container_port)` of each published port.
fn published_ports(service: &Value) -> Vec<(String, String, String)> {
    let Some(ports) = service.get("ports").and_then(Value::as_array) else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|port| match port {
            Value::Object(long) => (
                long.get("host_ip")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                long.get("published")
                    .map(|p| p.as_str().map_or(p.to_string(), str::to_owned))
                    .unwrap_or_default(),
                long.get("target").map(Value::to_string).unwrap_or_default(),
            ),
            other => {
                let short = other.as_str().map_or(other.to_string(), str::to_owned);
                let parts: Vec<&str> = short.split(':').collect();
                match parts.as_slice() {
                    [ip, host, container] => (
                        (*ip).to_owned(),
                        (*host).to_owned(),
                        (*container).to_owned(),
                    ),
                    [host, container] => {
                        (String::new(), (*host).to_owned(), (*container).to_owned())
                    }
                    _ => (String::new(), String::new(), short.clone()),
                }
            }
        })
        .collect()
}

/// A variable name with a word that says it holds a secret (`SECRETS_DIR` does not).
fn is_secret_name(key: &str) -> bool {
    key.to_ascii_uppercase()
        .split('_')
        .any(|word| ["PASSWORD", "PASS", "SECRET", "TOKEN", "KEY", "PASSPHRASE"].contains(&word))
}

// ---------------------------------------------------------------------------------------
// Compose: the checks

fn compose_validator() -> jsonschema::Validator {
    let schema = json_file(&compose_spec_path());
    jsonschema::draft7::options()
        .build(&schema)
        .expect("the Compose Specification schema compiles")
}

fn schema_problems(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}

/// What `docker compose config` would reject beyond the schema: references to services,
/// networks and volumes that the model does not have.
fn reference_problems(model: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let names: BTreeSet<&String> = services(model).keys().collect();
    let networks: BTreeSet<String> = model["networks"]
        .as_object()
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    let volumes: BTreeSet<String> = model["volumes"]
        .as_object()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default();
    for (name, svc) in services(model) {
        for target in depends_on(svc).keys() {
            if !names.contains(target) {
                problems.push(format!("{name} depends on {target}, which is not enabled"));
            }
        }
        for network in networks_of(svc) {
            if network != "default" && !networks.contains(&network) {
                problems.push(format!("{name} uses undeclared network {network}"));
            }
        }
        for mount in svc["volumes"].as_array().into_iter().flatten() {
            let source = match mount {
                Value::Object(long) if long["type"] == "volume" => long["source"].as_str(),
                Value::String(short) => short
                    .split(':')
                    .next()
                    .filter(|s| !s.starts_with('.') && !s.starts_with('/') && !s.starts_with('~')),
                _ => None,
            };
            if let Some(source) = source
                && !volumes.contains(source)
            {
                problems.push(format!("{name} mounts undeclared volume {source}"));
            }
        }
    }
    problems
}

/// An image reference pinned to one exact version: a digest, or a tag whose version has
/// every component (1.2.3; PostgreSQL's own versions are major.minor), or a Debian
/// date-stamped tag (trixie-20260803-slim). Not `latest`, not a bare major (`16`,
/// `22-slim`), not a major.minor of a three-part version (`1.95-slim`).
fn pin_problem(reference: &str) -> Option<String> {
    if reference.contains("@sha256:") {
        return None;
    }
    let last_segment = reference.rsplit('/').next().unwrap_or(reference);
    let Some((repository, tag)) = last_segment.split_once(':') else {
        return Some(format!("{reference}: no tag (means latest)"));
    };
    if tag == "latest" {
        return Some(format!("{reference}: latest"));
    }
    let version: String = tag
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let components = version.split('.').filter(|part| !part.is_empty()).count();
    let needed = if repository == "postgres" { 2 } else { 3 };
    if version.is_empty() {
        let mut parts = tag.split('-');
        let codename = parts.next().unwrap_or("");
        let date = parts.next().unwrap_or("");
        let dated = !codename.is_empty()
            && codename.chars().all(|c| c.is_ascii_lowercase())
            && date.len() == 8
            && date.chars().all(|c| c.is_ascii_digit());
        return (!dated).then(|| format!("{reference}: the tag names no exact version"));
    }
    (components < needed).then(|| {
        format!("{reference}: version {version} is not exact ({needed} components needed)")
    })
}

fn unpinned_images(model: &Value) -> Vec<String> {
    services(model)
        .iter()
        .filter(|(_, svc)| svc.get("build").is_none())
        .filter_map(|(name, svc)| match svc["image"].as_str() {
            None => Some(format!("{name}: neither image nor build")),
            Some(image) => pin_problem(image).map(|p| format!("{name}: {p}")),
        })
        .collect()
}

fn missing_healthchecks(model: &Value) -> Vec<String> {
    let one_shot = one_shot_services(model);
    let mut problems = Vec::new();
    for (name, svc) in services(model) {
        if one_shot.contains(name) {
            continue;
        }
        let Some(check) = svc.get("healthcheck") else {
            problems.push(format!(
                "{name}: a long-running service without a healthcheck"
            ));
            continue;
        };
        let test = &check["test"];
        let empty = match test {
            Value::String(command) => command.trim().is_empty(),
            Value::Array(words) => words.is_empty() || words[0] == "NONE",
            _ => true,
        };
        if check["disable"] == json!(true) || empty {
            problems.push(format!("{name}: healthcheck disabled or empty"));
        }
    }
    problems
}

fn dependency_problems(model: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let one_shot = one_shot_services(model);
    for (name, svc) in services(model) {
        let deps = depends_on(svc);
        let needs = |target: &str, condition: &str, why: &str, problems: &mut Vec<String>| {
            if deps.get(target).map(String::as_str) != Some(condition) {
                problems.push(format!(
                    "{name} must wait for {target} ({condition}): {why}"
                ));
            }
        };
        let mounts_secrets = svc["volumes"].as_array().into_iter().flatten().any(|m| {
            m["source"] == "secrets" || m.as_str().is_some_and(|s| s.starts_with("secrets:"))
        });
        if mounts_secrets && !one_shot.contains(name) {
            needs(
                "init",
                "service_completed_successfully",
                "it reads the secrets init generates",
                &mut problems,
            );
        }
        let env = environment(svc);
        if env.contains_key("DATABASE_URL_FILE") || env.contains_key("AUTHENTIK_POSTGRESQL__HOST") {
            needs(
                "postgres",
                "service_healthy",
                "it uses the database",
                &mut problems,
            );
        }
        if one_shot.contains(name) && !deps.is_empty() {
            problems.push(format!(
                "{name} is a one-shot job and should depend on nothing"
            ));
        }
    }
    problems
}

fn port_problems(model: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, svc) in services(model) {
        for (ip, host, container) in published_ports(svc) {
            if ip != "127.0.0.1" {
                problems.push(format!(
                    "{name}: port {host}:{container} is published on {:?}, not 127.0.0.1",
                    if ip.is_empty() {
                        "every interface"
                    } else {
                        &ip
                    }
                ));
            }
        }
    }
    problems
}

/// An environment value with a secret-looking name must be a file reference into the
/// secrets volume or empty (an unset seed); nothing else may carry a secret.
fn secret_value_problems(model: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, svc) in services(model) {
        for (key, value) in environment(svc) {
            if key.ends_with("_FILE") {
                if is_secret_name(&key) && !value.starts_with(&format!("{SECRETS_MOUNT}/")) {
                    problems.push(format!("{name}: {key} points outside the secrets volume"));
                }
                continue;
            }
            if !is_secret_name(&key) || value.is_empty() {
                continue;
            }
            if !value.starts_with(&format!("file://{SECRETS_MOUNT}/")) {
                problems.push(format!(
                    "{name}: {key} has a value in the file (use {key}_FILE or file://)"
                ));
            }
        }
    }
    problems
}

/// Words that look like generated secrets: long, with lower case, upper case and digits.
fn secret_looking_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "+=_.~-".contains(c)))
        .filter(|word| word.len() >= 20)
        .filter(|word| {
            word.chars().any(|c| c.is_ascii_lowercase())
                && word.chars().any(|c| c.is_ascii_uppercase())
                && word.chars().any(|c| c.is_ascii_digit())
        })
        .map(str::to_owned)
        .collect()
}

/// The gateway's guarantees: the idsync APISIX forwards to publishes no port and
/// believes identity headers only from an internal network that holds nothing but
/// itself and APISIX; an idsync with a published port trusts no proxy.
fn gateway_problems(model: &Value, apisix_upstreams: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let all = services(model);
    let trusted: BTreeMap<&String, Vec<String>> = all
        .iter()
        .filter_map(|(name, svc)| {
            let cidrs: Vec<String> = environment(svc)
                .get("IDSYNC_TRUSTED_PROXIES")?
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            (!cidrs.is_empty()).then_some((name, cidrs))
        })
        .collect();
    let is_apisix = |svc: &Value| {
        svc["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("apache/apisix:"))
    };
    for host in apisix_upstreams {
        match all.get(host) {
            None => problems.push(format!("APISIX forwards to {host}, which is not a service")),
            Some(svc) => {
                if !published_ports(svc).is_empty() {
                    problems.push(format!(
                        "{host}: APISIX forwards to it, yet it publishes a port (clients could bypass the gateway)"
                    ));
                }
                if !trusted.contains_key(host) {
                    problems.push(format!(
                        "{host}: APISIX forwards to it, but it trusts no proxy (X-Userinfo would be ignored)"
                    ));
                }
            }
        }
    }
    for (name, cidrs) in &trusted {
        let svc = &all[name.as_str()];
        if !published_ports(svc).is_empty() {
            problems.push(format!(
                "{name}: trusts proxies ({}) and publishes a port",
                cidrs.join(",")
            ));
        }
        for cidr in cidrs {
            let network = networks_of(svc).into_iter().find(|network| {
                model["networks"][network]["ipam"]["config"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["subnet"] == cidr.as_str())
            });
            let Some(network) = network else {
                problems.push(format!(
                    "{name}: trusts {cidr}, which is not the subnet of a network it is on"
                ));
                continue;
            };
            if model["networks"][&network]["internal"] != json!(true) {
                problems.push(format!("{name}: trusted network {network} is not internal"));
            }
            for (other, other_svc) in all {
                if other != *name
                    && networks_of(other_svc).contains(&network)
                    && !is_apisix(other_svc)
                    && !trusted.contains_key(other)
                {
                    problems.push(format!(
                        "{other} is on {name}'s trusted network {network} but is not the gateway"
                    ));
                }
            }
        }
    }
    problems
}

fn apisix_upstream_hosts(apisix: &Value) -> Vec<String> {
    apisix["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|route| route["upstream"]["nodes"].as_object())
        .flat_map(|nodes| nodes.keys())
        .map(|node| node.split(':').next().unwrap_or(node).to_owned())
        .collect()
}

fn apisix_yaml() -> Value {
    yaml(&read("deploy/apisix/apisix.yaml")).expect("apisix.yaml parses")
}

// ---------------------------------------------------------------------------------------
// Compose: the tests

#[test]
fn compose_file_is_valid_with_every_profile_and_environment() {
    let validator = compose_validator();
    let raw = compose_raw();
    for env in [Env::new(), sample_dotenv()] {
        for profiles in [&[][..], &["gateway"][..]] {
            let model = resolve(&raw, &env, profiles)
                .unwrap_or_else(|e| panic!("profiles {profiles:?}: {e}"));
            let mut problems = schema_problems(&validator, &model);
            problems.extend(reference_problems(&model));
            assert!(
                problems.is_empty(),
                "profiles {profiles:?}, env {:?}: {problems:#?}",
                env.keys().collect::<Vec<_>>()
            );
        }
    }
    let default_model = model(&[]);
    let default: BTreeSet<&str> = services(&default_model)
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        default,
        BTreeSet::from([
            "init",
            "postgres",
            "authentik-server",
            "authentik-worker",
            "idsync",
            "frontend"
        ]),
        "what `docker compose up` starts"
    );
    let gateway = model(&["gateway"]);
    assert!(services(&gateway).contains_key("apisix"));
    assert_eq!(
        service(&gateway, "apisix")["image"],
        "apache/apisix:3.18.0-debian",
        "the issue names this image (>= 3.17 strips a client's own X-Userinfo)"
    );
}

#[test]
fn compose_validation_rejects_broken_files() {
    let validator = compose_validator();
    let mut misspelt = model(&[]);
    misspelt["services"]["idsync"]["helthcheck"] = json!({"test": ["CMD", "true"]});
    assert!(
        !schema_problems(&validator, &misspelt).is_empty(),
        "unknown service key"
    );

    let mut bad_ports = model(&[]);
    bad_ports["services"]["frontend"]["ports"] = json!({"3000": 3000});
    assert!(
        !schema_problems(&validator, &bad_ports).is_empty(),
        "ports as a map"
    );

    let mut dangling = model(&["gateway"]);
    services_mut(&mut dangling).remove("idsync-gateway");
    assert!(
        !reference_problems(&dangling).is_empty(),
        "depends on a missing service"
    );

    assert!(
        resolve(
            &yaml("services:\n  a:\n    image: \"x:${TAG:?set TAG}\"\n").unwrap(),
            &Env::new(),
            &[]
        )
        .is_err(),
        "a required variable without a value must fail, as `docker compose` does"
    );
    let env = Env::from([("A".to_owned(), String::new())]);
    assert_eq!(
        interpolate_str("${A:-d} ${A-d} $${A} ${B:-${C:-n}}", &env).unwrap(),
        "d  ${A} n"
    );
}

fn services_mut(model: &mut Value) -> &mut Map<String, Value> {
    model["services"].as_object_mut().expect("services")
}

#[test]
fn images_are_pinned_to_exact_versions() {
    for profiles in [&[][..], &["gateway"][..]] {
        let problems = unpinned_images(&model(profiles));
        assert!(problems.is_empty(), "{problems:#?}");
    }
    for good in [
        "postgres:16.13-alpine3.23",
        "ghcr.io/goauthentik/server:2026.2.2",
        "apache/apisix:3.18.0-debian",
        "debian:trixie-20260803-slim",
        "rust:1.95.0-slim-trixie",
        "node@sha256:0123abcd",
    ] {
        assert_eq!(pin_problem(good), None, "{good}");
    }
    for bad in [
        "postgres",
        "postgres:latest",
        "postgres:16",
        "postgres:16-alpine",
        "node:22-slim",
        "rust:1.95-slim",
        "ghcr.io/goauthentik/server",
        "debian:trixie-slim",
    ] {
        assert!(pin_problem(bad).is_some(), "{bad} passed as pinned");
    }
}

#[test]
fn every_long_running_service_has_a_healthcheck() {
    let gateway = model(&["gateway"]);
    assert_eq!(
        one_shot_services(&gateway),
        BTreeSet::from(["init".to_owned()])
    );
    let problems = missing_healthchecks(&gateway);
    assert!(problems.is_empty(), "{problems:#?}");
    // Authentik's first start migrates for minutes: the start period must cover it.
    for name in ["authentik-server", "authentik-worker"] {
        let check = &service(&gateway, name)["healthcheck"];
        assert_eq!(check["test"], json!(["CMD", "ak", "healthcheck"]), "{name}");
        let period = check["start_period"].as_str().unwrap_or("");
        assert!(
            period.ends_with('m') && period.trim_end_matches('m').parse::<u32>().unwrap_or(0) >= 5,
            "{name}: start_period {period:?} is shorter than Authentik's first start"
        );
    }
    assert_eq!(
        service(&gateway, "idsync")["healthcheck"]["test"],
        json!(["CMD", "/usr/local/bin/idsync", "healthcheck"])
    );

    let mut broken = gateway.clone();
    services_mut(&mut broken)
        .get_mut("frontend")
        .and_then(Value::as_object_mut)
        .expect("frontend")
        .remove("healthcheck");
    broken["services"]["apisix"]["healthcheck"] = json!({"disable": true});
    let problems = missing_healthchecks(&broken);
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[test]
fn services_wait_for_what_they_need() {
    let gateway = model(&["gateway"]);
    let problems = dependency_problems(&gateway);
    assert!(problems.is_empty(), "{problems:#?}");
    for name in ["idsync", "idsync-gateway"] {
        assert_eq!(
            depends_on(service(&gateway, name))["postgres"],
            "service_healthy"
        );
    }
    for name in [
        "authentik-server",
        "authentik-worker",
        "postgres",
        "idsync",
        "apisix",
    ] {
        assert_eq!(
            depends_on(service(&gateway, name))["init"],
            "service_completed_successfully",
            "{name}"
        );
    }
    // APISIX must not wait for idsync to be *healthy*: on the first start idsync may be
    // unready while Authentik migrates, and an unhealthy dependency aborts `up`.
    assert_eq!(
        depends_on(service(&gateway, "apisix"))["idsync-gateway"],
        "service_started"
    );

    let mut broken = gateway.clone();
    broken["services"]["idsync"]["depends_on"]["postgres"]["condition"] = json!("service_started");
    broken["services"]["authentik-worker"]["depends_on"]
        .as_object_mut()
        .expect("depends_on")
        .remove("init");
    let problems = dependency_problems(&broken);
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[test]
fn ports_are_loopback_only_and_the_shared_ones() {
    let gateway = model(&["gateway"]);
    let problems = port_problems(&gateway);
    assert!(problems.is_empty(), "{problems:#?}");
    let published: BTreeMap<String, Vec<String>> = services(&gateway)
        .iter()
        .map(|(name, svc)| {
            let ports = published_ports(svc)
                .into_iter()
                .map(|(_, host, _)| host)
                .collect();
            (name.clone(), ports)
        })
        .filter(|(_, ports): &(String, Vec<String>)| !ports.is_empty())
        .collect();
    let expected: BTreeMap<String, Vec<String>> = [
        ("authentik-server", "9000"),
        ("idsync", "8080"),
        ("frontend", "3000"),
        ("apisix", "9080"),
    ]
    .into_iter()
    .map(|(s, p)| (s.to_owned(), vec![p.to_owned()]))
    .collect();
    assert_eq!(
        published, expected,
        "the ports everyone uses (Authentik 9000, idsync 8080, frontend 3000, gateway 9080)"
    );

    let mut broken = gateway.clone();
    broken["services"]["frontend"]["ports"] = json!(["3000:3000"]);
    assert_eq!(port_problems(&broken).len(), 1);
}

#[test]
fn the_idsync_behind_the_gateway_is_reachable_only_through_it() {
    let upstreams = apisix_upstream_hosts(&apisix_yaml());
    assert_eq!(upstreams, ["idsync-gateway"]);
    let gateway = model(&["gateway"]);
    let problems = gateway_problems(&gateway, &upstreams);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(gateway_problems(&model(&[]), &[]).is_empty());
    // The direct idsync (the frontend's API, webhooks) trusts no proxy at all.
    assert!(!environment(service(&gateway, "idsync")).contains_key("IDSYNC_TRUSTED_PROXIES"));
    // Moving the subnet moves the trust with it.
    let moved = resolve(&compose_raw(), &sample_dotenv(), &["gateway"]).expect("resolves");
    assert_eq!(
        environment(service(&moved, "idsync-gateway"))["IDSYNC_TRUSTED_PROXIES"],
        "10.99.0.0/28"
    );
    assert!(gateway_problems(&moved, &upstreams).is_empty());

    let mut published = gateway.clone();
    published["services"]["idsync-gateway"]["ports"] = json!(["127.0.0.1:8081:8080"]);
    assert_eq!(
        gateway_problems(&published, &upstreams).len(),
        2,
        "published"
    );

    let mut wide = gateway.clone();
    wide["services"]["idsync-gateway"]["environment"]["IDSYNC_TRUSTED_PROXIES"] =
        json!("172.16.0.0/12");
    assert_eq!(
        gateway_problems(&wide, &upstreams).len(),
        1,
        "trusting more than the gateway network"
    );

    let mut crowded = gateway.clone();
    crowded["services"]["frontend"]["networks"] = json!({"default": {}, "gateway": {}});
    assert_eq!(
        gateway_problems(&crowded, &upstreams).len(),
        1,
        "another service on the gateway network"
    );

    let mut open = gateway;
    open["networks"]["gateway"]["internal"] = json!(false);
    assert_eq!(
        gateway_problems(&open, &upstreams).len(),
        1,
        "a routable gateway network"
    );
}

#[test]
fn no_secret_value_is_in_the_stack_files() {
    for profiles in [&[][..], &["gateway"][..]] {
        let problems = secret_value_problems(&model(profiles));
        assert!(problems.is_empty(), "{problems:#?}");
    }
    for file in [
        "docker-compose.yml",
        "Dockerfile",
        "deploy/apisix/apisix.yaml",
        "deploy/apisix/config.yaml",
        "deploy/frontend/config.json",
        "deploy/frontend/nginx.conf",
        "deploy/frontend/Dockerfile",
        "deploy/init/generate-secrets.sh",
        "deploy/postgres/create-databases.sh",
        "deploy/bin/load-secrets",
    ] {
        let words = secret_looking_words(&read(file));
        assert!(
            words.is_empty(),
            "{file} holds what looks like a secret: {words:?}"
        );
    }
    let mut broken = model(&[]);
    broken["services"]["idsync"]["environment"]["IDSYNC_WEBHOOK_SECRET"] = json!("change-me");
    broken["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] = json!("/tmp/pw");
    assert_eq!(secret_value_problems(&broken).len(), 2);
    assert_eq!(
        secret_looking_words("key: Zx8kQ2mP9vR4tY7uW1aB3cD5 name: IDSYNC_GATEWAY_CLIENT_SECRET"),
        ["Zx8kQ2mP9vR4tY7uW1aB3cD5"]
    );
}

#[test]
fn idsync_settings_match_the_shared_names() {
    let gateway = model(&["gateway"]);
    let config: Value = serde_json::from_str(&read("deploy/frontend/config.json")).expect("json");
    for name in ["idsync", "idsync-gateway"] {
        let env = environment(service(&gateway, name));
        assert_eq!(
            env["IDSYNC_OIDC_ISSUER"], ISSUER,
            "{name}: the public issuer"
        );
        assert_eq!(
            env["IDSYNC_OIDC_DISCOVERY_URL"], INTERNAL_DISCOVERY,
            "{name}"
        );
        assert_eq!(
            env["IDSYNC_AUTHENTIK_URL"], "http://authentik-server:9000",
            "{name}"
        );
        assert!(
            env["IDSYNC_OIDC_AUDIENCE"]
                .split(',')
                .any(|a| a == FRONTEND_CLIENT_ID)
        );
        assert_eq!(env["IDSYNC_CORS_ORIGINS"], "http://localhost:3000");
        assert_eq!(
            env["IDSYNC_OIDC_SUBJECT"], "pk",
            "the blueprint's sub_mode is user_id"
        );
    }
    assert!(services(&gateway).contains_key("authentik-server"));
    assert_eq!(config["issuer"], ISSUER);
    assert_eq!(config["clientId"], FRONTEND_CLIENT_ID);
    assert_eq!(config["apiBaseUrl"], "http://localhost:8080");
    let worker = environment(service(&gateway, "authentik-worker"));
    assert_eq!(
        worker["IDSYNC_WEBHOOK_URL"],
        "http://idsync:8080/authentik/webhook"
    );
}

/// `!Env NAME` and `!Env [NAME, default]` in a blueprint: (name, has a default).
fn blueprint_env_reads(text: &str) -> Vec<(String, bool)> {
    let mut reads = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("!Env") {
        rest = &rest[at + 4..];
        let trimmed = rest.trim_start();
        if let Some(list) = trimmed.strip_prefix('[') {
            let inner = &list[..list.find(']').unwrap_or(list.len())];
            let mut items = inner.splitn(2, ',');
            let name = items.next().unwrap_or("").trim().trim_matches(['"', '\'']);
            let default = items
                .next()
                .map(str::trim)
                .filter(|d| !d.is_empty() && *d != "null");
            reads.push((name.to_owned(), default.is_some()));
        } else {
            let name: String = trimmed
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            reads.push((name, false));
        }
    }
    reads
}

#[test]
fn the_worker_gets_every_variable_the_blueprints_read() {
    let gateway = model(&["gateway"]);
    let worker = service(&gateway, "authentik-worker");
    let env = environment(worker);
    let provided = |name: &str| env.contains_key(name) || env.contains_key(&format!("{name}_FILE"));
    let mut wanted: BTreeSet<String> = BLUEPRINT_VARIABLES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    wanted.extend(
        [
            "AUTHENTIK_BOOTSTRAP_PASSWORD",
            "AUTHENTIK_BOOTSTRAP_TOKEN",
            "AUTHENTIK_BOOTSTRAP_EMAIL",
        ]
        .map(str::to_owned),
    );
    // The blueprints themselves, when they are in the tree: what they read without a
    // default must be on the worker.
    let dir = repo_root().join("authentik").join("blueprints");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).expect("blueprint");
                wanted.extend(
                    blueprint_env_reads(&text)
                        .into_iter()
                        .filter(|(_, has_default)| !has_default)
                        .map(|(name, _)| name),
                );
            }
        }
    }
    let missing: Vec<&String> = wanted.iter().filter(|name| !provided(name)).collect();
    assert!(missing.is_empty(), "the worker lacks {missing:?}");
    // The blueprints are where Authentik discovers custom ones.
    assert!(
        worker["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v == "./authentik/blueprints:/blueprints/custom:ro"),
        "authentik/blueprints mounted at /blueprints/custom"
    );
    assert_eq!(
        blueprint_env_reads(
            "key: !Env IDSYNC_X\nurl: !Env [IDSYNC_Y, \"http://a\"]\np: !Env [IDSYNC_Z, null]"
        ),
        [
            ("IDSYNC_X".to_owned(), false),
            ("IDSYNC_Y".to_owned(), true),
            ("IDSYNC_Z".to_owned(), false)
        ]
    );
}

// ---------------------------------------------------------------------------------------
// The secrets: generate-secrets.sh and load-secrets, for real

/// The files generate-secrets.sh writes for each service, with the length of each value
/// (`None`: not a random value).
/// One service's directory of secrets: its files and their lengths.
type ServiceSecrets = (&'static str, &'static [(&'static str, Option<usize>)]);

const SECRET_FILES: &[ServiceSecrets] = &[
    (
        "postgres",
        &[
            ("postgres_password", Some(40)),
            ("authentik_db_password", Some(40)),
            ("idsync_db_password", Some(40)),
        ],
    ),
    (
        "authentik",
        &[
            ("secret_key", Some(64)),
            ("db_password", Some(40)),
            ("bootstrap_password", Some(32)),
            ("bootstrap_token", Some(64)),
            ("webhook_secret", Some(48)),
            ("authentik_token", Some(64)),
            ("gateway_client_secret", Some(64)),
        ],
    ),
    (
        "idsync",
        &[
            ("database_url", None),
            ("webhook_secret", Some(48)),
            ("authentik_token", Some(64)),
            // `v1:` + base64 of 32 bytes, checked below.
            ("data_key", None),
        ],
    ),
    (
        "apisix",
        &[
            ("gateway_client_secret", Some(64)),
            ("session_secret", Some(48)),
        ],
    ),
];

/// The user ids the stack gives the services (docker-compose.yml, init's environment).
const SERVICE_UIDS: &[(&str, &str, u32)] = &[
    ("postgres", "POSTGRES_UID", 70),
    ("authentik", "AUTHENTIK_UID", 1000),
    ("idsync", "IDSYNC_UID", 10001),
    ("apisix", "APISIX_UID", 636),
];

struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "idsync-compose-test-{}-{label}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn generate_secrets(dir: &Path, env: &[(&str, &str)]) -> Output {
    let script = repo_root().join("deploy/init/generate-secrets.sh");
    let mut command = Command::new("sh");
    command
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("SECRETS_DIR", dir);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("sh runs")
}

fn uid_env() -> Vec<(&'static str, String)> {
    if running_as_root() {
        SERVICE_UIDS
            .iter()
            .map(|(_, var, uid)| (*var, uid.to_string()))
            .collect()
    } else {
        Vec::new()
    }
}

fn value_of(dir: &Path, relative: &str) -> String {
    let text =
        std::fs::read_to_string(dir.join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    text.strip_suffix('\n')
        .unwrap_or_else(|| panic!("{relative} does not end with a newline"))
        .to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

fn all_values(dir: &Path) -> BTreeMap<String, String> {
    SECRET_FILES
        .iter()
        .flat_map(|(service, files)| {
            files
                .iter()
                .map(move |(file, _)| format!("{service}/{file}"))
        })
        .map(|relative| {
            let value = value_of(dir, &relative);
            (relative, value)
        })
        .collect()
}

#[test]
fn generate_secrets_makes_strong_private_secrets_and_prints_none() {
    let tmp = TempDir::new("strong");
    let dir = tmp.0.join("secrets");
    let uids = uid_env();
    let env: Vec<(&str, &str)> = uids.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = generate_secrets(&dir, &env);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "generate-secrets failed: {printed}");

    let values = all_values(&dir);
    for (service, files) in SECRET_FILES {
        let service_dir = dir.join(service);
        assert_eq!(mode(&service_dir), 0o700, "{service}/");
        for (file, length) in *files {
            let path = service_dir.join(file);
            assert_eq!(mode(&path), 0o600, "{service}/{file}");
            let value = &values[&format!("{service}/{file}")];
            if let Some(length) = length {
                assert_eq!(value.len(), *length, "{service}/{file}");
                assert!(
                    value.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{service}/{file}"
                );
                // 62 symbols: log2(62) > 5.95 bits each, so >= 190 bits for 32 characters.
                assert!(*length as f64 * 62f64.log2() >= 128.0);
            }
            if !uids.is_empty() {
                let uid = SERVICE_UIDS
                    .iter()
                    .find(|(s, _, _)| s == service)
                    .expect("uid")
                    .2;
                assert_eq!(
                    std::fs::metadata(&path).expect("metadata").uid(),
                    uid,
                    "{service}/{file}"
                );
                assert_eq!(
                    std::fs::metadata(&service_dir).expect("metadata").uid(),
                    uid
                );
            }
            assert!(
                !printed.contains(value.as_str()),
                "the output shows the value of {service}/{file}"
            );
        }
    }
    assert_eq!(mode(&dir), 0o755);
    assert_eq!(mode(&dir.join("store")), 0o700);
    for entry in std::fs::read_dir(dir.join("store")).expect("store") {
        assert_eq!(mode(&entry.expect("entry").path()), 0o600);
    }

    // One value per secret, shared where two services must agree.
    let v = |k: &str| values[k].clone();
    assert_eq!(
        v("postgres/authentik_db_password"),
        v("authentik/db_password")
    );
    assert_eq!(v("authentik/webhook_secret"), v("idsync/webhook_secret"));
    assert_eq!(v("authentik/authentik_token"), v("idsync/authentik_token"));
    assert_eq!(
        v("authentik/gateway_client_secret"),
        v("apisix/gateway_client_secret")
    );
    assert_eq!(
        v("idsync/database_url"),
        format!(
            "postgres://idsync:{}@postgres:5432/idsync",
            v("postgres/idsync_db_password")
        )
    );
    let distinct: BTreeSet<String> = std::fs::read_dir(dir.join("store"))
        .expect("store")
        .map(|e| e.expect("entry").path())
        .filter(|p| !p.ends_with("idsync_database_url"))
        .map(|p| std::fs::read_to_string(p).expect("value"))
        .collect();
    assert_eq!(distinct.len(), 11, "eleven different secrets");
    // idsync's data key has `idsync keygen`'s format: 256 random bits.
    let data_key = v("idsync/data_key");
    let encoded = data_key.strip_prefix("v1:").expect("v1: prefix");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    assert_eq!(bytes.len(), 32, "{data_key}");
}

#[test]
fn generate_secrets_keeps_secrets_and_repairs_copies_on_the_next_run() {
    let tmp = TempDir::new("idempotent");
    let dir = tmp.0.join("secrets");
    let uids = uid_env();
    let env: Vec<(&str, &str)> = uids.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(generate_secrets(&dir, &env).status.success());
    let first = all_values(&dir);

    // A lost copy and a loosened mode are repaired from the store; nothing changes value.
    std::fs::remove_file(dir.join("idsync/webhook_secret")).expect("remove");
    std::fs::set_permissions(
        dir.join("authentik/secret_key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let out = generate_secrets(&dir, &env);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("generated"),
        "a second run generated something: {stdout}"
    );
    assert!(stdout.contains("kept authentik_secret_key"), "{stdout}");
    assert_eq!(all_values(&dir), first, "a second run changed a secret");
    assert_eq!(mode(&dir.join("authentik/secret_key")), 0o600);
}

#[test]
fn generate_secrets_takes_seeds_on_the_first_run_only_and_refuses_bad_ones() {
    let tmp = TempDir::new("seeds");
    let dir = tmp.0.join("secrets");
    let seed = "seeded-webhook-secret-0123456789abcdef";
    let out = generate_secrets(&dir, &[("IDSYNC_WEBHOOK_SECRET", seed)]);
    assert!(out.status.success());
    assert_eq!(value_of(&dir, "idsync/webhook_secret"), seed);
    assert_eq!(value_of(&dir, "authentik/webhook_secret"), seed);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("set idsync_webhook_secret from IDSYNC_WEBHOOK_SECRET")
    );

    // A different seed later is ignored, and said so without showing either value.
    let other = "another-webhook-secret-0123456789abcdef";
    let out = generate_secrets(&dir, &[("IDSYNC_WEBHOOK_SECRET", other)]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("differs and is ignored"), "{stdout}");
    assert!(!stdout.contains(seed) && !stdout.contains(other));
    assert_eq!(value_of(&dir, "idsync/webhook_secret"), seed);

    let twenty = "x".repeat(20);
    for (variable, value, why) in [
        (
            "IDSYNC_DB_PASSWORD",
            "p@ss/word:with-reserved",
            "URL-reserved characters",
        ),
        ("IDSYNC_WEBHOOK_SECRET", "short", "too short"),
        (
            "AUTHENTIK_SECRET_KEY",
            twenty.as_str(),
            "too short for Django",
        ),
    ] {
        let fresh = tmp.0.join(format!("bad-{variable}"));
        let out = generate_secrets(&fresh, &[(variable, value)]);
        assert!(!out.status.success(), "{variable} {why} was accepted");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            printed.contains(variable) && !printed.contains(value),
            "{printed}"
        );
        let written = std::fs::read_dir(fresh.join("store")).map_or(0, Iterator::count);
        assert_eq!(
            written, 0,
            "a bad {variable} must stop init before it writes anything"
        );
    }
}

#[test]
fn load_secrets_exports_files_and_refuses_what_it_cannot_read() {
    let tmp = TempDir::new("load");
    let file = tmp.0.join("secret");
    std::fs::write(&file, "s3cret value\n").expect("write");
    let run = |vars: &[(&str, &str)], command: &[&str]| {
        let mut cmd = Command::new("sh");
        cmd.arg(repo_root().join("deploy/bin/load-secrets"))
            .args(command)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().expect("sh runs")
    };
    let path = file.to_str().expect("utf-8 path");
    let out = run(
        &[("DEMO_TOKEN_FILE", path), ("PLAIN", "1")],
        &[
            "sh",
            "-c",
            "printf '%s|%s|%s' \"$DEMO_TOKEN\" \"${DEMO_TOKEN_FILE-unset}\" \"$PLAIN\"",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s3cret value|unset|1");

    let out = run(&[("DEMO_TOKEN_FILE", "/nonexistent/secret")], &["true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEMO_TOKEN_FILE"));

    let out = run(&[("DEMO_TOKEN_FILE", path), ("DEMO_TOKEN", "x")], &["true"]);
    assert!(!out.status.success(), "both NAME and NAME_FILE set");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret"));
}

/// Every `*_FILE` and `file://` path a service reads is a file generate-secrets.sh
/// writes, in the one directory of that service; whatever reads `*_FILE` without
/// knowing the convention runs behind load-secrets.
#[test]
fn every_secret_file_a_service_reads_is_one_init_writes_for_it() {
    let tmp = TempDir::new("paths");
    let dir = tmp.0.join("secrets");
    assert!(generate_secrets(&dir, &[]).status.success());
    let gateway = model(&["gateway"]);
    let dockerfile = read("Dockerfile");
    for (name, svc) in services(&gateway) {
        if name == "init" {
            continue;
        }
        let env = environment(svc);
        let mut dirs = BTreeSet::new();
        let mut needs_wrapper = false;
        for (key, value) in &env {
            let path = if key.ends_with("_FILE") {
                // The Postgres image reads POSTGRES_PASSWORD_FILE itself.
                needs_wrapper |= key != "POSTGRES_PASSWORD_FILE";
                value.as_str()
            } else if let Some(path) = value.strip_prefix("file://") {
                path
            } else {
                continue;
            };
            let relative = path
                .strip_prefix(&format!("{SECRETS_MOUNT}/"))
                .unwrap_or_else(|| panic!("{name}: {key} is outside the secrets volume"));
            assert!(
                dir.join(relative).is_file(),
                "{name}: {key} names {relative}, which init does not write"
            );
            dirs.insert(relative.split('/').next().unwrap_or("").to_owned());
        }
        assert!(
            dirs.len() <= 1,
            "{name} reads from several services' directories: {dirs:?}"
        );
        if needs_wrapper {
            let entrypoint = match svc.get("entrypoint") {
                Some(e) => e.to_string(),
                None if svc.get("build").is_some() => dockerfile_entrypoint(&dockerfile),
                None => String::new(),
            };
            assert!(
                entrypoint.contains("load-secrets"),
                "{name} has *_FILE variables but its entrypoint ({entrypoint}) does not load them"
            );
        }
    }
    // The uid init gives idsync's directory is the one the image runs as.
    let init = environment(service(&gateway, "init"));
    assert_eq!(
        format!("{}:{}", init["IDSYNC_UID"], init["IDSYNC_UID"]),
        last_user(&dockerfile).expect("USER in Dockerfile"),
    );
}

// ---------------------------------------------------------------------------------------
// Dockerfiles

#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// Instructions with line continuations joined and comments dropped.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        });
        current.clear();
    }
    out
}

/// The stages: (image, stage name, instructions after FROM).
fn stages(text: &str) -> Vec<(String, Option<String>, Vec<Instruction>)> {
    let mut stages: Vec<(String, Option<String>, Vec<Instruction>)> = Vec::new();
    for instruction in instructions(text) {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            stages.push((
                words.first().copied().unwrap_or("").to_owned(),
                name,
                Vec::new(),
            ));
        } else if let Some(stage) = stages.last_mut() {
            stage.2.push(instruction);
        }
    }
    stages
}

fn last_user(text: &str) -> Option<String> {
    stages(text)
        .last()?
        .2
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .map(|i| i.args.clone())
}

fn dockerfile_entrypoint(text: &str) -> String {
    instructions(text)
        .into_iter()
        .rev()
        .find(|i| i.keyword == "ENTRYPOINT")
        .map(|i| i.args)
        .unwrap_or_default()
}

/// hadolint-like checks of a Dockerfile: pinned bases, several stages with the last one
/// copying from an earlier, a non-root user, a healthcheck running `healthcheck_words`,
/// and, for Rust builds, `cargo build --locked`.
fn dockerfile_problems(text: &str, healthcheck_words: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let stages = stages(text);
    if stages.len() < 2 {
        problems.push("not a multi-stage build".to_owned());
    }
    let mut names = BTreeSet::new();
    for (image, name, _) in &stages {
        if !names.contains(image)
            && let Some(problem) = pin_problem(image)
        {
            problems.push(format!("FROM {problem}"));
        }
        names.extend(name.clone());
    }
    let Some((_, _, last)) = stages.last() else {
        return vec!["no FROM".to_owned()];
    };
    if !last
        .iter()
        .any(|i| i.keyword == "COPY" && i.args.contains("--from="))
    {
        problems.push("the final stage copies nothing from a build stage".to_owned());
    }
    match last_user(text) {
        None => problems.push("no USER in the final stage: it runs as root".to_owned()),
        Some(user) => {
            let name = user.split(':').next().unwrap_or("");
            if name == "root" || name == "0" {
                problems.push(format!("USER {user} is root"));
            }
        }
    }
    match last.iter().find(|i| i.keyword == "HEALTHCHECK") {
        None => problems.push("no HEALTHCHECK".to_owned()),
        Some(check) => {
            let command = check.args.split_once("CMD").map_or("", |(_, c)| c);
            for word in healthcheck_words {
                if !command.contains(word) {
                    problems.push(format!("the HEALTHCHECK does not run {word}: {command}"));
                }
            }
        }
    }
    for run in instructions(text).iter().filter(|i| i.keyword == "RUN") {
        if run.args.contains("cargo build") && !run.args.contains("--locked") {
            problems.push("cargo build without --locked".to_owned());
        }
        if run.args.contains("npm install") {
            problems.push("npm install instead of npm ci".to_owned());
        }
    }
    problems
}

#[test]
fn the_idsync_dockerfile_builds_locked_from_pinned_bases_and_runs_unprivileged() {
    let text = read("Dockerfile");
    let problems = dockerfile_problems(&text, &["/usr/local/bin/idsync", "healthcheck"]);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        instructions(&text).iter().any(|i| i.keyword == "RUN"
            && i.args.contains("cargo build")
            && i.args.contains("--locked")),
        "a cargo build --locked"
    );

    // The toolchain is at least the workspace's rust-version, and the runtime is the
    // same Debian release as the build (the binary links against its glibc).
    let stages = stages(&text);
    let rust = &stages[0].0;
    let tag = rust.split_once(':').expect("rust tag").1;
    let rust_version: Vec<u32> = tag
        .split('-')
        .next()
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse().expect("number"))
        .collect();
    let cargo = read("Cargo.toml");
    let declared = cargo
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml")
        .trim_matches('"');
    let declared: Vec<u32> = declared
        .split('.')
        .map(|p| p.parse().expect("number"))
        .collect();
    assert!(
        rust_version >= declared,
        "{rust} is older than rust-version {declared:?}"
    );
    let codename = |image: &str| {
        ["bookworm", "trixie", "forky"]
            .into_iter()
            .find(|c| image.contains(c))
            .map(str::to_owned)
    };
    let runtime = &stages.last().expect("stages").0;
    assert!(codename(rust).is_some(), "{rust} names its Debian release");
    assert_eq!(codename(rust), codename(runtime), "{rust} vs {runtime}");
    assert!(dockerfile_entrypoint(&text).contains("load-secrets"));
}

#[test]
fn the_frontend_dockerfile_uses_npm_ci_pinned_bases_and_no_root() {
    let problems = dockerfile_problems(&read("deploy/frontend/Dockerfile"), &["127.0.0.1:3000"]);
    assert!(problems.is_empty(), "{problems:#?}");
    let gateway = model(&["gateway"]);
    assert_eq!(
        service(&gateway, "frontend")["build"]["dockerfile"],
        "deploy/frontend/Dockerfile"
    );
}

#[test]
fn dockerfile_checks_catch_broken_files() {
    let good = read("Dockerfile");
    let words = ["/usr/local/bin/idsync", "healthcheck"];
    for (broken, expected) in [
        (
            good.replace("rust:1.95.0-slim-trixie", "rust:latest"),
            "latest",
        ),
        (
            good.replace("FROM rust:1.95.0-slim-trixie", "FROM rust:1.95-slim-trixie"),
            "not exact",
        ),
        (good.replace("--locked ", ""), "--locked"),
        (good.replace("USER 10001:10001", "USER root"), "root"),
        (good.replace("USER 10001:10001", ""), "no USER"),
        (good.replace("HEALTHCHECK", "# HEALTHCHECK"), "HEALTHCHECK"),
    ] {
        let problems = dockerfile_problems(&broken, &words);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "expected a problem about {expected:?}, got {problems:#?}"
        );
    }
    let single = "FROM debian:trixie-20260803-slim\nUSER 1\nHEALTHCHECK CMD [\"x\"]\n";
    assert!(
        dockerfile_problems(single, &["x"])
            .iter()
            .any(|p| p.contains("multi-stage"))
    );
}

#[test]
fn dockerignore_keeps_build_output_dependencies_and_secrets_out() {
    let entries: BTreeSet<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches("**/").trim_end_matches('/').to_owned())
        .collect();
    for wanted in ["target", "node_modules", ".git", ".env", "frontend/dist"] {
        assert!(
            entries.contains(wanted),
            ".dockerignore does not exclude {wanted}"
        );
    }
    let ignored = read(".gitignore");
    assert!(
        ignored.lines().any(|l| l.trim() == ".env"),
        ".env must not be committed"
    );
}

// ---------------------------------------------------------------------------------------
// APISIX

fn apisix_validator() -> jsonschema::Validator {
    let schema = json_file(
        &repo_root()
            .join("docs/reference/apisix")
            .join("apisix-3.18.0.schema.json"),
    );
    jsonschema::draft7::options()
        .build(&schema)
        .expect("the APISIX schema compiles")
}

/// APISIX refuses a standalone file whose last 10 bytes do not match `#END\s*$`.
fn ends_with_end_flag(text: &str) -> bool {
    let bytes = text.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(10)..];
    String::from_utf8_lossy(tail).trim_end().ends_with("#END")
}

fn route<'a>(apisix: &'a Value, uri: &str) -> &'a Value {
    apisix["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| {
            r["uri"] == uri
                || r["uris"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|u| u == uri))
        })
        .unwrap_or_else(|| panic!("no route for {uri}"))
}

#[test]
fn apisix_yaml_ends_with_end_and_matches_the_transcribed_schema() {
    let text = read("deploy/apisix/apisix.yaml");
    assert!(ends_with_end_flag(&text), "apisix.yaml must end with #END");
    let validator = apisix_validator();
    let problems = schema_problems(&validator, &apisix_yaml());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn apisix_schema_and_end_flag_reject_broken_files() {
    let validator = apisix_validator();
    let good = apisix_yaml();
    let mut cases = Vec::new();
    let mut typo = good.clone();
    let oidc = &mut typo["routes"][0]["plugins"]["openid-connect"];
    let action = oidc
        .as_object_mut()
        .expect("oidc")
        .remove("unauth_action")
        .expect("set");
    oidc["unauth_acton"] = action;
    cases.push(("a misspelt key APISIX would ignore", typo));
    let mut allow = good.clone();
    allow["routes"][0]["plugins"]["openid-connect"]["unauth_action"] = json!("allow");
    cases.push(("an unknown unauth_action", allow));
    let mut no_session = good.clone();
    no_session["routes"][0]["plugins"]["openid-connect"]
        .as_object_mut()
        .expect("oidc")
        .remove("session");
    cases.push(("no session without bearer_only", no_session));
    let mut short = good.clone();
    short["routes"][0]["plugins"]["openid-connect"]["session"]["secret"] = json!("short");
    cases.push(("a session secret under 16 characters", short));
    let mut both = good.clone();
    both["routes"][1]["uri"] = json!("/ws/login");
    cases.push(("uri and uris together", both));
    let mut no_discovery = good;
    no_discovery["routes"][0]["plugins"]["openid-connect"]
        .as_object_mut()
        .expect("oidc")
        .remove("discovery");
    cases.push(("no discovery", no_discovery));
    for (what, broken) in cases {
        assert!(
            !schema_problems(&validator, &broken).is_empty(),
            "{what} passed"
        );
    }
    assert!(!ends_with_end_flag("routes: []\n"));
    assert!(!ends_with_end_flag(
        "routes: []\n#END\n# a comment after the flag\n"
    ));
    assert!(ends_with_end_flag("routes: []\n#END"));
}

#[test]
fn the_gateway_route_passes_anonymous_users_and_forwards_only_userinfo() {
    let apisix = apisix_yaml();
    let ws = route(&apisix, "/ws");
    assert_eq!(ws["enable_websocket"], true);
    let oidc = &ws["plugins"]["openid-connect"];
    assert_eq!(
        oidc["unauth_action"], "pass",
        "anonymous sockets get through"
    );
    assert_eq!(oidc["set_userinfo_header"], true);
    assert_eq!(
        oidc["set_access_token_header"], false,
        "its issuer is not idsync's"
    );
    assert_eq!(oidc["client_id"], GATEWAY_CLIENT_ID);
    assert_eq!(oidc["discovery"], GATEWAY_DISCOVERY);
    assert_eq!(oidc["redirect_uri"], GATEWAY_REDIRECT_URI);

    // The login route shares the client and the session (one cookie), and is where the
    // redirect URI and the logout path are served.
    let login = route(&apisix, "/ws/login");
    let mut same = login["plugins"]["openid-connect"].clone();
    same["unauth_action"] = json!("pass");
    assert_eq!(&same, oidc, "the two routes differ only in unauth_action");
    assert_eq!(login["plugins"]["openid-connect"]["unauth_action"], "auth");
    let callback_path = GATEWAY_REDIRECT_URI.trim_start_matches("http://localhost:9080");
    assert!(std::ptr::eq(route(&apisix, callback_path), login));
    assert!(std::ptr::eq(
        route(&apisix, oidc["logout_path"].as_str().expect("logout_path")),
        login
    ));

    // Secrets are references to variables that the compose file gives APISIX and that
    // config.yaml passes to the workers; nothing secret is inline.
    let gateway = model(&["gateway"]);
    let apisix_env = environment(service(&gateway, "apisix"));
    let config = yaml(&read("deploy/apisix/config.yaml")).expect("config.yaml");
    let declared: Vec<&str> = config["nginx_config"]["envs"]
        .as_array()
        .expect("envs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for secret in [&oidc["client_secret"], &oidc["session"]["secret"]] {
        let name = secret
            .as_str()
            .and_then(|s| s.strip_prefix("$env://"))
            .unwrap_or_else(|| panic!("{secret} is not a $env:// reference"));
        assert!(
            apisix_env.contains_key(&format!("{name}_FILE")),
            "{name}_FILE on apisix"
        );
        assert!(
            declared.contains(&name),
            "{name} in config.yaml nginx_config.envs"
        );
    }
    // APISIX reaches Authentik under the browser's name: an alias on a shared network.
    let host = GATEWAY_DISCOVERY
        .trim_start_matches("http://")
        .split([':', '/'])
        .next()
        .expect("host");
    let server = service(&gateway, "authentik-server");
    let shared = networks_of(service(&gateway, "apisix"));
    assert!(
        shared.iter().any(|n| server["networks"][n]["aliases"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a == host))),
        "{host} is not an alias of authentik-server on a network APISIX is on"
    );
}

#[test]
fn apisix_runs_standalone_with_the_mounted_files() {
    let config = yaml(&read("deploy/apisix/config.yaml")).expect("config.yaml");
    assert_eq!(config["deployment"]["role"], "data_plane");
    assert_eq!(
        config["deployment"]["role_data_plane"]["config_provider"],
        "yaml"
    );
    assert_eq!(config["apisix"]["enable_admin"], false);
    assert_eq!(config["apisix"]["node_listen"], json!([9080]));
    let status_port = config["apisix"]["status"]["port"]
        .as_u64()
        .expect("status port");
    let gateway = model(&["gateway"]);
    let apisix = service(&gateway, "apisix");
    assert_eq!(environment(apisix)["APISIX_STAND_ALONE"], "true");
    let mounts: Vec<&str> = apisix["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for (file, target) in [
        ("config.yaml", "/usr/local/apisix/conf/config.yaml"),
        ("apisix.yaml", "/usr/local/apisix/conf/apisix.yaml"),
    ] {
        assert!(
            mounts.contains(&format!("./deploy/apisix/{file}:{target}:ro").as_str()),
            "{file} mounted read-only at {target}"
        );
    }
    assert!(
        apisix["healthcheck"]["test"]
            .to_string()
            .contains(&format!("/dev/tcp/127.0.0.1/{status_port}")),
        "the healthcheck asks the status port"
    );
}

// ---------------------------------------------------------------------------------------
// The frontend container

fn csp(nginx_conf: &str) -> BTreeMap<String, Vec<String>> {
    let start = nginx_conf
        .find("Content-Security-Policy \"")
        .expect("a Content-Security-Policy header")
        + "Content-Security-Policy \"".len();
    let policy = &nginx_conf[start..start + nginx_conf[start..].find('"').expect("closing quote")];
    policy
        .split(';')
        .map(str::split_whitespace)
        .filter_map(|mut words| {
            let name = words.next()?.to_owned();
            Some((name, words.map(str::to_owned).collect()))
        })
        .collect()
}

fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("absolute URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// What the page needs the CSP to allow, from its config.json, and what the CSP must
/// never allow (inline or evaluated script).
fn csp_problems(policy: &BTreeMap<String, Vec<String>>, config: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let script = policy
        .get("script-src")
        .or_else(|| policy.get("default-src"))
        .cloned()
        .unwrap_or_default();
    if script.is_empty() {
        problems.push("no script-src or default-src".to_owned());
    }
    for forbidden in [
        "'unsafe-inline'",
        "'unsafe-eval'",
        "*",
        "data:",
        "http:",
        "https:",
    ] {
        if script.iter().any(|s| s == forbidden) {
            problems.push(format!("script-src allows {forbidden}"));
        }
    }
    for directive in ["default-src", "object-src", "base-uri", "frame-ancestors"] {
        if !policy.contains_key(directive) {
            problems.push(format!("no {directive}"));
        }
    }
    let connect = policy.get("connect-src").cloned().unwrap_or_default();
    let mut needed = Vec::new();
    for key in ["issuer", "apiBaseUrl", "authentikUrl", "gatewayWsUrl"] {
        if let Some(url) = config[key].as_str() {
            needed.push(origin(url));
        }
    }
    if let Some(api) = config["apiBaseUrl"].as_str() {
        needed.push(origin(&api.replacen("http", "ws", 1)));
    }
    for origin in needed {
        if !connect.contains(&origin) {
            problems.push(format!("connect-src does not allow {origin}"));
        }
    }
    problems
}

#[test]
fn the_frontend_config_has_the_shared_shape_and_the_csp_allows_exactly_it() {
    let config: Value = serde_json::from_str(&read("deploy/frontend/config.json")).expect("json");
    assert_eq!(
        config,
        json!({
            "issuer": ISSUER,
            "clientId": FRONTEND_CLIENT_ID,
            "apiBaseUrl": "http://localhost:8080",
            "enrollmentFlowSlug": "idsync-enrollment",
            "authentikUrl": "http://localhost:9000",
            "gatewayWsUrl": "ws://localhost:9080/ws",
        })
    );
    let nginx = read("deploy/frontend/nginx.conf");
    let policy = csp(&nginx);
    let problems = csp_problems(&policy, &config);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(nginx.contains("listen 3000;"));
    let gateway = model(&["gateway"]);
    let frontend = service(&gateway, "frontend");
    assert!(
        frontend["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v == "./deploy/frontend/config.json:/usr/share/nginx/html/config.json:ro"),
        "config.json is mounted next to index.html"
    );

    let mut moved = config.clone();
    moved["apiBaseUrl"] = json!("https://api.example.org");
    assert_eq!(
        csp_problems(&policy, &moved).len(),
        2,
        "https and wss origins"
    );
    let mut inline = policy.clone();
    inline.insert(
        "script-src".into(),
        vec!["'self'".into(), "'unsafe-inline'".into()],
    );
    assert_eq!(csp_problems(&inline, &config).len(), 1);
}

// ---------------------------------------------------------------------------------------
// The documentation of the stack

#[test]
fn the_readme_starts_with_docker_compose_up_and_the_docs_name_the_real_images() {
    let readme = read("README.md");
    let first_block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|block| block.lines().next())
        .expect("a shell block in README.md");
    assert_eq!(
        first_block, "docker compose up",
        "the README's first command"
    );
    let deploy = read("docs/deploy.md");
    for (name, svc) in services(&model(&["gateway"])) {
        if let Some(image) = svc["image"].as_str() {
            assert!(
                deploy.contains(image),
                "docs/deploy.md does not name {name}'s image {image}"
            );
        }
        assert!(
            deploy.contains(&format!("`{name}`")),
            "docs/deploy.md does not describe {name}"
        );
    }
}
