//! A stand-in for Authentik's users API, on a local port, with knobs to make it fail.
//!
//! It answers like Authentik 2026.2 does:
//! - `GET /api/v3/core/users/{pk}/` → the stored user JSON; unknown pk → 404
//!   `{"detail": "No User matches the given query."}`.
//! - `GET /api/v3/core/users/?page=N&page_size=M` → `{"pagination", "results",
//!   "autocomplete"}`, ordered by pk, with Django's paginator arithmetic (page size 20
//!   by default, at most 100; a page past the last → 404 `{"detail": "Invalid page."}`).
//! - `GET /api/v3/core/groups/{uuid}/` → the group (schema `Group`, `users` = its
//!   members' pks, `users_obj: null` as for `include_users=false`); unknown → 404.
//!   Groups come from the users' `groups_obj`, and [`rename_group`](AuthentikStub::rename_group)
//!   / [`delete_group`](AuthentikStub::delete_group) change them everywhere, as Authentik
//!   does. `GET /api/v3/core/groups/` lists them (Django paging).
//! - `GET /api/v3/core/users/me/` → the token's own user (`SessionUser`), see
//!   [`set_me`](AuthentikStub::set_me).
//! - The user list filters by `username`, `email` and `uuid`, as Authentik's does.
//! - Without `Authorization: Bearer <token>` → 403 `{"detail": "Token invalid/expired"}`.
//!
//! For harnesses outside Rust (the browser tests, the demo) a control API, exempt from
//! the token check and the knobs: `PUT /_stub/users/{pk}` with a partial user
//! (`username`, `name`, `email`, `groups` as names, `is_active`, `type`; the rest from
//! [`fixtures::user`]) answers 200 with the full user; `DELETE /_stub/users/{pk}` 204.
//!
//! Knobs, applied in this order before routing: [`set_delay`](AuthentikStub::set_delay),
//! [`set_slow_ratio`](AuthentikStub::set_slow_ratio),
//! [`set_fail_ratio`](AuthentikStub::set_fail_ratio) (with
//! [`set_hang`](AuthentikStub::set_hang)), [`set_rate_limited`](AuthentikStub::set_rate_limited),
//! [`set_canned_response`](AuthentikStub::set_canned_response),
//! [`set_forbidden`](AuthentikStub::set_forbidden), then the token check.

pub mod fixtures;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Authentik's default `pagination.default_page_size`.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Authentik's default `pagination.max_page_size`.
pub const MAX_PAGE_SIZE: u64 = 100;

const USERS_PATH: &str = "/api/v3/core/users/";
const GROUPS_PATH: &str = "/api/v3/core/groups/";

/// A least-privilege service account, as the project's blueprint creates it.
fn default_me() -> Value {
    json!({
        "user": {
            "pk": 100, "username": "idsync-sync", "name": "idsync sync", "is_active": true,
            "is_superuser": false, "groups": [], "roles": [{"pk": "9a1b2c3d-0000-4000-8000-000000000001", "name": "idsync sync - read users and groups"}],
            "email": "", "avatar": "data:image/svg+xml;base64,", "uid": "0".repeat(64),
            "settings": {}, "type": "service_account", "system_permissions": []
        }
    })
}

/// A running stub. Clones share the server; it stops when the last clone is dropped, or
/// at [`stop`](Self::stop).
#[derive(Clone)]
pub struct AuthentikStub {
    shared: Arc<Shared>,
    guard: Arc<ShutdownGuard>,
    addr: SocketAddr,
}

impl std::fmt::Debug for AuthentikStub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthentikStub")
            .field("url", &self.url())
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

/// A request as the stub received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/api/v3/core/users/?page=1&page_size=100`.
    pub uri: String,
    /// Header names lowercase, values lossily decoded, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct ShutdownGuard {
    shutdown: watch::Sender<bool>,
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

struct Shared {
    state: Mutex<StubState>,
    requests: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl StubState {
    /// Stores a user, first pointing its groups at the groups the stub already knows by
    /// name (a renamed group keeps its uuid), then noting any new ones.
    fn put_user(&mut self, pk: i64, mut user: Value) {
        let known: HashMap<String, uuid::Uuid> = self
            .groups
            .iter()
            .map(|(uuid, name)| (name.clone(), *uuid))
            .collect();
        if let Some(groups) = user.get_mut("groups_obj").and_then(Value::as_array_mut) {
            let mut ids = Vec::new();
            for group in groups.iter_mut() {
                let name = group.get("name").and_then(Value::as_str).map(str::to_owned);
                if let Some(uuid) = name.as_ref().and_then(|n| known.get(n)) {
                    group["pk"] = json!(uuid);
                }
                if let (Some(name), Some(uuid)) = (
                    name,
                    group
                        .get("pk")
                        .and_then(Value::as_str)
                        .and_then(|s| uuid::Uuid::parse_str(s).ok()),
                ) {
                    self.groups.entry(uuid).or_insert(name);
                    ids.push(json!(uuid));
                }
            }
            user["groups"] = Value::Array(ids);
        }
        if self.users.insert(pk, user).is_none() {
            self.order = None;
        }
    }

    fn group_named(&self, name: &str) -> Option<uuid::Uuid> {
        self.groups
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(uuid, _)| *uuid)
    }

    fn members(&self, uuid: uuid::Uuid) -> Vec<i64> {
        let key = uuid.to_string();
        self.users
            .iter()
            .filter(|(_, user)| {
                user.get("groups")
                    .and_then(Value::as_array)
                    .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(key.as_str())))
            })
            .map(|(pk, _)| *pk)
            .collect()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, StubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps `duration`, or less if the stub is stopped meanwhile.
    async fn sleep(&self, duration: Duration) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => {}
        }
    }
}

struct StubState {
    token: String,
    users: BTreeMap<i64, Value>,
    /// Every group seen in a user's `groups_obj` (uuid → name), until deleted.
    groups: BTreeMap<uuid::Uuid, String>,
    /// What `users/me/` answers.
    me: Value,
    /// The pks of `users` in order, for paging by index: rebuilt (O(users)) at the first
    /// listing after a user was added or removed, so that serving a page costs O(page),
    /// not a copy of every user.
    order: Option<Vec<i64>>,
    fetches: HashMap<i64, u64>,
    list_requests: u64,
    fail_ratio: f64,
    fault_counter: u64,
    /// That fraction of requests waits `slow.1` first (a slow upstream, not a failing one).
    slow: (f64, Duration),
    slow_counter: u64,
    hang: Duration,
    delay: Duration,
    forbidden: bool,
    rate_limited: Option<u64>,
    canned: Option<(StatusCode, String)>,
    last_request: Option<RecordedRequest>,
}

impl AuthentikStub {
    /// Starts a stub on `127.0.0.1:<free port>` that accepts `token`.
    ///
    /// # Panics
    ///
    /// When no local port can be bound (test support: the test cannot go on).
    pub async fn start(token: &str) -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), token)
            .await
            .expect("bind 127.0.0.1:0 for the Authentik stub")
    }

    /// Starts a stub on `addr` (port 0: a free one) that accepts `token`.
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub async fn start_on(addr: SocketAddr, token: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (sender, receiver) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(StubState {
                token: token.to_owned(),
                users: BTreeMap::new(),
                groups: BTreeMap::new(),
                me: default_me(),
                order: None,
                fetches: HashMap::new(),
                list_requests: 0,
                fail_ratio: 0.0,
                fault_counter: 0,
                slow: (0.0, Duration::ZERO),
                slow_counter: 0,
                hang: Duration::ZERO,
                delay: Duration::ZERO,
                forbidden: false,
                rate_limited: None,
                canned: None,
                last_request: None,
            }),
            requests: AtomicU64::new(0),
            shutdown: receiver.clone(),
        });
        let api = Router::new()
            .route(USERS_PATH, get(list_users))
            .route("/api/v3/core/users/me/", get(get_me))
            .route("/api/v3/core/users/{pk}/", get(get_user))
            .route(GROUPS_PATH, get(list_groups))
            .route("/api/v3/core/groups/{uuid}/", get(get_group))
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(shared.clone(), gate));
        let app = Router::new()
            .route(
                "/_stub/users/{pk}",
                put(control_put_user).delete(control_delete_user),
            )
            .merge(api)
            .with_state(shared.clone());
        let mut stopped = receiver;
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            });
            if let Err(error) = server.await {
                eprintln!("authentik stub stopped: {error}");
            }
        });
        Ok(Self {
            shared,
            guard: Arc::new(ShutdownGuard { shutdown: sender }),
            addr,
        })
    }

    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections; requests in flight (and hangs) end promptly.
    pub fn stop(&self) {
        self.guard.shutdown.send_replace(true);
    }

    /// Adds or replaces a user, keyed by its `pk`.
    ///
    /// # Panics
    ///
    /// When the value has no integer `pk` (use [`upsert_raw`](Self::upsert_raw)).
    pub fn upsert(&self, user: impl Into<Value>) {
        let user = user.into();
        let pk = user
            .get("pk")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("upsert needs an integer pk: {user}"));
        self.upsert_raw(pk, user);
    }

    /// Stores `body` as the user with pk `pk`, whatever it looks like (to serve malformed
    /// users).
    pub fn upsert_raw(&self, pk: i64, body: Value) {
        self.shared.lock().put_user(pk, body);
    }

    /// Adds or replaces many users at once (one lock, for large directories).
    ///
    /// # Panics
    ///
    /// When a value has no integer `pk`.
    pub fn upsert_many(&self, users: impl IntoIterator<Item = Value>) {
        let mut state = self.shared.lock();
        for user in users {
            let pk = user
                .get("pk")
                .and_then(Value::as_i64)
                .unwrap_or_else(|| panic!("upsert needs an integer pk: {user}"));
            state.put_user(pk, user);
        }
    }

    /// Renames the group called `old` (as Authentik does: every member's `groups_obj`
    /// shows the new name; the uuid stays). Returns its uuid, `None` if there is none.
    pub fn rename_group(&self, old: &str, new: &str) -> Option<uuid::Uuid> {
        let mut state = self.shared.lock();
        let uuid = state.group_named(old)?;
        state.groups.insert(uuid, new.to_owned());
        let key = uuid.to_string();
        for user in state.users.values_mut() {
            if let Some(groups) = user.get_mut("groups_obj").and_then(Value::as_array_mut) {
                for group in groups.iter_mut() {
                    if group.get("pk").and_then(Value::as_str) == Some(key.as_str()) {
                        group["name"] = json!(new);
                    }
                }
            }
        }
        Some(uuid)
    }

    /// Deletes the group called `name`: it leaves every member. Returns its uuid.
    pub fn delete_group(&self, name: &str) -> Option<uuid::Uuid> {
        let mut state = self.shared.lock();
        let uuid = state.group_named(name)?;
        state.groups.remove(&uuid);
        let key = uuid.to_string();
        for user in state.users.values_mut() {
            if let Some(ids) = user.get_mut("groups").and_then(Value::as_array_mut) {
                ids.retain(|id| id.as_str() != Some(key.as_str()));
            }
            if let Some(groups) = user.get_mut("groups_obj").and_then(Value::as_array_mut) {
                groups.retain(|g| g.get("pk").and_then(Value::as_str) != Some(key.as_str()));
            }
        }
        Some(uuid)
    }

    /// The uuid of the group called `name`, if there is one.
    pub fn group_uuid(&self, name: &str) -> Option<uuid::Uuid> {
        self.shared.lock().group_named(name)
    }

    /// What `GET /api/v3/core/users/me/` answers (a `SessionUser`); by default a
    /// service account that is no superuser and has no system permissions.
    pub fn set_me(&self, me: Value) {
        self.shared.lock().me = me;
    }

    /// Removes a user; returns what was stored.
    pub fn remove(&self, pk: i64) -> Option<Value> {
        let mut state = self.shared.lock();
        let removed = state.users.remove(&pk);
        if removed.is_some() {
            state.order = None;
        }
        removed
    }

    pub fn user(&self, pk: i64) -> Option<Value> {
        self.shared.lock().users.get(&pk).cloned()
    }

    /// Pks of the stored users, ascending.
    pub fn pks(&self) -> Vec<i64> {
        self.shared.lock().users.keys().copied().collect()
    }

    /// Replaces the accepted token (a rotation).
    pub fn set_token(&self, token: &str) {
        token.clone_into(&mut self.shared.lock().token);
    }

    /// Requests received, all paths and answers included.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests received for `/api/v3/core/users/{pk}/`, whatever they were answered.
    pub fn fetches(&self, pk: i64) -> u64 {
        self.shared.lock().fetches.get(&pk).copied().unwrap_or(0)
    }

    /// Requests received for the user list, whatever they were answered.
    pub fn list_requests(&self) -> u64 {
        self.shared.lock().list_requests
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.lock().last_request.clone()
    }

    /// Zeroes the request counters (not the fault counter).
    pub fn reset_counters(&self) {
        let mut state = self.shared.lock();
        state.fetches.clear();
        state.list_requests = 0;
        self.shared.requests.store(0, Ordering::SeqCst);
    }

    /// That fraction (0.0–1.0) of the requests from now on fails: evenly spread and
    /// deterministic (with 0.5, the 2nd, 4th, ... fail; with 1.0, all). A failing
    /// request hangs for [`set_hang`](Self::set_hang)'s duration, if any, then answers
    /// 500 with Django's HTML error page.
    pub fn set_fail_ratio(&self, ratio: f64) {
        let mut state = self.shared.lock();
        state.fail_ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        state.fault_counter = 0;
    }

    /// That fraction (0.0–1.0) of the requests from now on waits `delay` before it is
    /// handled (and may then fail too, per [`set_fail_ratio`](Self::set_fail_ratio)):
    /// evenly spread and deterministic, counted apart from the failures, so with 0.3
    /// failing and 0.05 slow some slow requests fail and most succeed.
    pub fn set_slow_ratio(&self, ratio: f64, delay: Duration) {
        let mut state = self.shared.lock();
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        state.slow = (ratio, delay);
        state.slow_counter = 0;
    }

    /// How long a failing request hangs before its 500 (zero: answers at once). Make it
    /// longer than the client's timeout to simulate a hung server.
    pub fn set_hang(&self, hang: Duration) {
        self.shared.lock().hang = hang;
    }

    /// Every request answers 403 `{"detail": "Token invalid/expired"}`, as for an
    /// expired token.
    pub fn set_forbidden(&self, forbidden: bool) {
        self.shared.lock().forbidden = forbidden;
    }

    /// Every request waits this long before being handled.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// `Some(seconds)`: every request answers 429 with `Retry-After: <seconds>`, as
    /// Authentik's throttling does.
    pub fn set_rate_limited(&self, retry_after_secs: Option<u64>) {
        self.shared.lock().rate_limited = retry_after_secs;
    }

    /// `Some((status, body))`: every request is answered so, with
    /// `Content-Type: application/json` whatever the body is.
    ///
    /// # Panics
    ///
    /// On a status outside 100–999.
    pub fn set_canned_response(&self, canned: Option<(u16, &str)>) {
        let canned = canned.map(|(status, body)| {
            let status = StatusCode::from_u16(status).expect("an HTTP status code");
            (status, body.to_owned())
        });
        self.shared.lock().canned = canned;
    }
}

/// Faults, auth and accounting, in front of every route.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    let recorded = RecordedRequest {
        method: request.method().to_string(),
        uri: request
            .uri()
            .path_and_query()
            .map_or_else(|| path.clone(), ToString::to_string),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);

    let (delay, fail, hang, rate_limited, canned, forbidden, authorized) = {
        let mut state = shared.lock();
        state.last_request = Some(recorded);
        if path == USERS_PATH {
            state.list_requests += 1;
        } else if let Some(pk) = user_pk(&path) {
            *state.fetches.entry(pk).or_default() += 1;
        }
        let n = state.fault_counter;
        state.fault_counter += 1;
        let ratio = state.fail_ratio;
        let fail = ((n + 1) as f64 * ratio).floor() > (n as f64 * ratio).floor();
        let m = state.slow_counter;
        state.slow_counter += 1;
        let (slow_ratio, slow_delay) = state.slow;
        // Offset by half a period so slow and failing requests do not always coincide.
        let slow =
            ((m as f64 + 1.5) * slow_ratio).floor() > ((m as f64 + 0.5) * slow_ratio).floor();
        (
            state.delay + if slow { slow_delay } else { Duration::ZERO },
            fail,
            state.hang,
            state.rate_limited,
            state.canned.clone(),
            state.forbidden,
            presented.is_some_and(|p| !state.token.is_empty() && p == state.token),
        )
    };

    if !delay.is_zero() {
        shared.sleep(delay).await;
    }
    if fail {
        if !hang.is_zero() {
            shared.sleep(hang).await;
        }
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Server Error (500)</title>\n</head>\n<body>\n  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n",
        )
            .into_response();
    }
    if let Some(seconds) = rate_limited {
        let mut response = detail(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Request was throttled. Expected available in {seconds} seconds."),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    if let Some((status, body)) = canned {
        return (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    if forbidden || !authorized {
        return detail(StatusCode::FORBIDDEN, "Token invalid/expired");
    }
    next.run(request).await
}

async fn control_put_user(
    State(shared): State<Arc<Shared>>,
    Path(pk): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    // Any content type: `curl -d` sends form-encoded headers with a JSON body.
    let partial: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return detail(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
    };
    if pk <= 0 {
        return detail(StatusCode::BAD_REQUEST, "pk must be positive");
    }
    let mut state = shared.lock();
    match fixtures::user_from_partial(pk, &partial, state.users.get(&pk)) {
        Ok(fixture) => {
            state.put_user(pk, fixture.json());
            let user = state.users.get(&pk).cloned().unwrap_or_default();
            axum::Json(user).into_response()
        }
        Err(why) => detail(StatusCode::BAD_REQUEST, &why),
    }
}

async fn control_delete_user(State(shared): State<Arc<Shared>>, Path(pk): Path<i64>) -> Response {
    let mut state = shared.lock();
    if state.users.remove(&pk).is_some() {
        state.order = None;
    }
    StatusCode::NO_CONTENT.into_response()
}

fn user_pk(path: &str) -> Option<i64> {
    path.strip_prefix(USERS_PATH)?
        .strip_suffix('/')?
        .parse()
        .ok()
}

fn detail(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "detail": text }))).into_response()
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not found.")
}

async fn get_user(State(shared): State<Arc<Shared>>, Path(pk): Path<String>) -> Response {
    // Django's lookup of a non-integer pk is a 404 as well.
    let user = pk
        .parse::<i64>()
        .ok()
        .and_then(|pk| shared.lock().users.get(&pk).cloned());
    match user {
        Some(user) => axum::Json(user).into_response(),
        None => detail(StatusCode::NOT_FOUND, "No User matches the given query."),
    }
}

async fn get_me(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.lock().me.clone()).into_response()
}

async fn get_group(State(shared): State<Arc<Shared>>, Path(uuid): Path<String>) -> Response {
    let state = shared.lock();
    let found = uuid::Uuid::parse_str(&uuid)
        .ok()
        .and_then(|uuid| state.groups.get(&uuid).map(|name| (uuid, name.clone())));
    match found {
        Some((uuid, name)) => {
            axum::Json(fixtures::group_json(uuid, &name, &state.members(uuid))).into_response()
        }
        None => detail(StatusCode::NOT_FOUND, "No Group matches the given query."),
    }
}

async fn list_groups(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return detail(StatusCode::BAD_REQUEST, "Malformed query string.");
    };
    let state = shared.lock();
    let all: Vec<Value> = state
        .groups
        .iter()
        .map(|(uuid, name)| fixtures::group_json(*uuid, name, &state.members(*uuid)))
        .collect();
    paged(&query, all)
}

/// A Django page of `items` per `page`/`page_size`.
fn paged(query: &HashMap<String, String>, items: Vec<Value>) -> Response {
    let page_size = page_size(query);
    let Some(page) = paginate(
        items.len() as u64,
        page_size,
        query.get("page").map(String::as_str),
    ) else {
        return detail(StatusCode::NOT_FOUND, "Invalid page.");
    };
    let start = usize::try_from(page.start).unwrap_or(usize::MAX);
    let results: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(usize::try_from(page.len).unwrap_or(usize::MAX))
        .collect();
    axum::Json(json!({
        "pagination": page.pagination,
        "results": results,
        "autocomplete": {},
    }))
    .into_response()
}

/// DRF: a page_size that is not a positive integer falls back to the default; a larger
/// one is cut to the maximum.
fn page_size(query: &HashMap<String, String>) -> u64 {
    query
        .get("page_size")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .map_or(DEFAULT_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE))
}

async fn list_users(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return detail(StatusCode::BAD_REQUEST, "Malformed query string.");
    };
    // Authentik's exact-match filters: the answer is the filtered list, paged.
    let filters: Vec<(&str, &String)> = ["username", "email", "uuid"]
        .into_iter()
        .filter_map(|field| query.get(field).map(|value| (field, value)))
        .collect();
    if !filters.is_empty() {
        let matching: Vec<Value> = shared
            .lock()
            .users
            .values()
            .filter(|user| {
                filters.iter().all(|(field, value)| {
                    user.get(*field).and_then(Value::as_str) == Some(value.as_str())
                })
            })
            .cloned()
            .collect();
        return paged(&query, matching);
    }
    let page_size = page_size(&query);
    let (page, results) = {
        let mut state = shared.lock();
        let Some(page) = paginate(
            state.users.len() as u64,
            page_size,
            query.get("page").map(String::as_str),
        ) else {
            return detail(StatusCode::NOT_FOUND, "Invalid page.");
        };
        let state = &mut *state;
        let order = state
            .order
            .get_or_insert_with(|| state.users.keys().copied().collect());
        let start = usize::try_from(page.start).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(page.len).unwrap_or(usize::MAX));
        let results: Vec<Value> = order
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .filter_map(|pk| state.users.get(pk).cloned())
            .collect();
        (page, results)
    };
    axum::Json(json!({
        "pagination": page.pagination,
        "results": results,
        "autocomplete": {},
    }))
    .into_response()
}

struct Page {
    start: u64,
    len: u64,
    pagination: Value,
}

/// Django's `Paginator` and authentik's `Pagination.get_paginated_response`: page
/// numbers from 1, `"last"` allowed, one empty page when there are no items; `None`
/// for an invalid page.
fn paginate(count: u64, page_size: u64, page: Option<&str>) -> Option<Page> {
    let total_pages = if count == 0 {
        1
    } else {
        count.div_ceil(page_size)
    };
    let number = match page {
        None => 1,
        Some("last") => total_pages,
        Some(text) => text.trim().parse::<u64>().ok()?,
    };
    if number == 0 || number > total_pages {
        return None;
    }
    let start = (number - 1) * page_size;
    let end = (start + page_size).min(count);
    Some(Page {
        start,
        len: end - start,
        pagination: json!({
            "next": if number < total_pages { number + 1 } else { 0 },
            "previous": number - 1, // 0 on the first page
            "count": count,
            "current": number,
            "total_pages": total_pages,
            "start_index": if count == 0 { 0 } else { start + 1 },
            "end_index": end,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_arithmetic_matches_django() {
        let p = paginate(250, 100, Some("3")).expect("page 3");
        assert_eq!((p.start, p.len), (200, 50));
        assert_eq!(
            p.pagination,
            json!({"next": 0, "previous": 2, "count": 250, "current": 3, "total_pages": 3,
                   "start_index": 201, "end_index": 250})
        );
        let p = paginate(250, 100, None).expect("page 1");
        assert_eq!(p.pagination["next"], 2);
        assert_eq!(p.pagination["previous"], 0);
        assert_eq!(p.pagination["end_index"], 100);
        let empty = paginate(0, 20, Some("1")).expect("one empty page");
        assert_eq!(
            empty.pagination,
            json!({"next": 0, "previous": 0, "count": 0, "current": 1, "total_pages": 1,
                   "start_index": 0, "end_index": 0})
        );
        assert_eq!(paginate(250, 100, Some("last")).map(|p| p.start), Some(200));
        for bad in ["0", "4", "x", "-1", "1.5"] {
            assert!(paginate(250, 100, Some(bad)).is_none(), "{bad}");
        }
    }

    #[test]
    fn user_paths() {
        assert_eq!(user_pk("/api/v3/core/users/7/"), Some(7));
        assert_eq!(user_pk("/api/v3/core/users/7"), None);
        assert_eq!(user_pk("/api/v3/core/users/"), None);
        assert_eq!(user_pk("/api/v3/core/users/me/"), None);
    }
}
