//! The JWT-protected API over the read model and the event log.

mod schema;

use axum::Json;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use idsync_store::feed::{self, FeedItem};
use idsync_store::projections::users::{self, UserRow};
use idsync_store::projections::users_cache::{self, UsersCache};
use idsync_store::{Position, UserPk};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiError;
use crate::auth::Identifier;
use crate::auth::{AuthUser, tickets};
use crate::error::ErrorBody;
use crate::sync::on_demand::OnDemand;

/// What the API's handlers need; a sub-state of the router's state.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    /// Users' rows as the API sends them, kept correct by the hub.
    pub users_cache: Arc<UsersCache>,
    /// Syncs a caller's user at once when it is unknown (with Authentik configured).
    pub on_demand: Option<Arc<OnDemand>>,
    /// Commands of the admin API (erasure).
    pub store: Arc<idsync_store::EventStore>,
}

pub(crate) fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    ApiState: FromRef<S>,
    Identifier: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(whoami))
        .routes(routes!(list_users))
        .routes(routes!(get_user))
        .routes(routes!(erase_personal_data))
        .routes(routes!(user_events))
        .routes(routes!(list_events))
        .routes(routes!(create_stream_ticket))
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// Keyset paging: `after` is exclusive (a pk for users, a position for events).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// Return items after this pk/position (exclusive). Default 0: from the start.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many items, 1..=1000. Default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

impl PageParams {
    fn parse(query: Result<Query<PageParams>, QueryRejection>) -> Result<(i64, i64), ApiError> {
        let Query(p) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
        p.check()
    }

    fn check(self) -> Result<(i64, i64), ApiError> {
        let after = self.after.unwrap_or(0);
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if after < 0 {
            return Err(ApiError::InvalidRequest("after must be >= 0".to_owned()));
        }
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::InvalidRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        Ok((after, limit))
    }
}

/// Authentik's user types. Authentik registers its outposts and the service accounts of
/// client-credentials grants as users too; a filter keeps people's lists to people.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UserType {
    Internal,
    External,
    ServiceAccount,
    InternalServiceAccount,
}

impl UserType {
    fn as_str(self) -> &'static str {
        match self {
            UserType::Internal => "internal",
            UserType::External => "external",
            UserType::ServiceAccount => "service_account",
            UserType::InternalServiceAccount => "internal_service_account",
        }
    }
}

/// Longest search prefix accepted.
const MAX_QUERY_LEN: usize = 100;

/// `/api/users`: keyset paging, narrowed by a search prefix and a type.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsersQuery {
    /// Return users with a pk greater than this. Default 0: from the start.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many users, 1..=1000. Default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only users whose username, email or name starts with this (case-insensitive), at
    /// most 100 characters, no NUL. Empty: no filter.
    #[param(max_length = 100, pattern = "^[^\\u0000]*$")]
    q: Option<String>,
    /// Only users of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", inline)]
    user_type: Option<UserType>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsersPage {
    #[schema(value_type = Vec<schema::UserSchema>)]
    pub users: Vec<UserRow>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventsPage {
    #[schema(value_type = Vec<schema::FeedItemSchema>)]
    pub events: Vec<FeedItem>,
    /// Pass as `after` for the next page; null when this page reached the end.
    #[schema(value_type = Option<i64>)]
    pub next_after: Option<Position>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StreamTicket {
    /// Single use; pass as `?ticket=` to `/api/events/stream` or `/ws`.
    pub ticket: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Who idsync takes the caller to be, from the token alone (no database).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WhoAmI {
    pub sub: String,
    /// The caller's pk when `IDSYNC_OIDC_SUBJECT=pk`, or when their user is synced.
    pub user_pk: Option<i64>,
    pub admin: bool,
    pub groups: Vec<String>,
    pub preferred_username: Option<String>,
    /// Unix time the token expires.
    pub expires_at: i64,
    /// `bearer`, `ticket` or `gateway`.
    #[schema(value_type = String)]
    pub via: crate::auth::Via,
}

/// Who idsync takes the caller to be: subject, admin flag, token expiry.
#[utoipa::path(get, path = "/api/whoami", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = WhoAmI),
        (status = 401, description = "missing or invalid token (RFC 6750 challenge in WWW-Authenticate)", body = ErrorBody),
        (status = 503, description = "OIDC not configured, or the issuer is unreachable", body = ErrorBody),
    ))]
async fn whoami(AuthUser(caller): AuthUser) -> Json<WhoAmI> {
    Json(WhoAmI {
        sub: caller.claims.sub,
        user_pk: caller.user_pk.map(|pk| pk.0),
        admin: caller.is_admin,
        groups: caller.claims.groups,
        preferred_username: caller.claims.preferred_username,
        expires_at: caller.claims.exp,
        via: caller.via,
    })
}

/// The caller's own user.
#[utoipa::path(get, path = "/api/me", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller's user", body = schema::UserSchema),
        (status = 401, description = "missing or invalid token", body = ErrorBody),
        (status = 404, description = "the caller's user is not synced yet, and Authentik did not return it when asked", body = ErrorBody),
        (status = 503, description = "OIDC not configured or issuer unreachable", body = ErrorBody),
    ))]
async fn me(
    State(state): State<ApiState>,
    AuthUser(caller): AuthUser,
) -> Result<JsonBody, ApiError> {
    let not_synced = || {
        ApiError::NotFound(format!(
            "no synced user for subject {:?} yet (it appears once Authentik's webhook or reconcile brings it)",
            caller.claims.sub
        ))
    };
    if let Some(pk) = caller.user_pk
        && let Some(user) = user_json(&state, pk).await?
    {
        return Ok(user);
    }
    // Valid, but not synced yet (Authentik sent no webhook for this user): ask for them.
    if let Some(on_demand) = &state.on_demand
        && let Some(row) = on_demand.fetch(&state.pool, &caller.claims.sub).await
    {
        return Ok(JsonBody::of(&row));
    }
    Err(not_synced())
}

/// A JSON body made elsewhere: a user's (the JSON of a [`UserRow`], made once and possibly
/// shared by the users cache) or a page Postgres built.
pub(crate) struct JsonBody(axum::body::Bytes);

impl JsonBody {
    fn of(row: &UserRow) -> Self {
        Self(serde_json::to_vec(row).unwrap_or_default().into())
    }
}

use axum::response::IntoResponse as _;

impl axum::response::IntoResponse for JsonBody {
    fn into_response(self) -> axum::response::Response {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// User `pk`, from this process's users cache when it may answer, else from Postgres
/// (caching the row when that is safe: see `users_cache`).
async fn user_json(state: &ApiState, UserPk(pk): UserPk) -> Result<Option<JsonBody>, ApiError> {
    use crate::metrics::USERS_CACHE_READS;
    let cache = &state.users_cache;
    if let Some(hit) = cache.get(pk) {
        metrics::counter!(USERS_CACHE_READS, "result" => "hit").increment(1);
        return Ok(Some(JsonBody(hit.json.clone())));
    }
    let Some(ticket) = cache.ticket() else {
        metrics::counter!(USERS_CACHE_READS, "result" => "miss").increment(1);
        return Ok(users::get(&state.pool, pk)
            .await?
            .map(|row| JsonBody::of(&row)));
    };
    metrics::counter!(USERS_CACHE_READS, "result" => "fill").increment(1);
    Ok(users_cache::get_with_checkpoint(&state.pool, pk)
        .await?
        .map(|(row, checkpoint)| JsonBody(cache.fill(ticket, &row, checkpoint))))
}

/// Users ordered by pk, a page at a time, optionally searched by a prefix of the
/// username, email or name, and by type (admins only).
#[utoipa::path(get, path = "/api/users", tag = "users", security(("bearer" = [])), params(UsersQuery),
    responses(
        (status = 200, description = "OK", body = UsersPage),
        (status = 400, description = "invalid paging parameters", body = ErrorBody), (status = 401, description = "missing or invalid token (RFC 6750 challenge in WWW-Authenticate)", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody), (status = 503, description = "OIDC not configured, or the issuer is unreachable", body = ErrorBody),
    ))]
async fn list_users(
    State(state): State<ApiState>,
    AuthUser(caller): AuthUser,
    query: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    caller.require_admin()?;
    let Query(query) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let (after, limit) = PageParams {
        after: query.after,
        limit: query.limit,
    }
    .check()?;
    let prefix = query.q.filter(|q| !q.is_empty());
    if prefix
        .as_ref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY_LEN)
    {
        return Err(ApiError::InvalidRequest(format!(
            "q must be at most {MAX_QUERY_LEN} characters"
        )));
    }
    // PostgreSQL's text cannot hold NUL: refused here rather than failing the query (500).
    if prefix.as_ref().is_some_and(|q| q.contains('\0')) {
        return Err(ApiError::InvalidRequest(
            "q must not contain NUL characters".to_owned(),
        ));
    }
    let filter = users::UserFilter {
        prefix,
        user_type: query.user_type.map(|t| t.as_str().to_owned()),
    };
    let cache = &state.users_cache;
    let key = users_cache::PageKey {
        after,
        limit,
        filter,
    };
    let page = match cache.page(&key) {
        Some(hit) => {
            metrics::counter!(crate::metrics::USERS_CACHE_READS, "result" => "page_hit")
                .increment(1);
            hit
        }
        None => {
            let ticket = cache.ticket();
            let page = users::search(&state.pool, &key.filter, after, limit).await?;
            match ticket {
                Some(ticket) => cache.fill_page(ticket, key, page),
                None => std::sync::Arc::new(users_cache::CachedPage::uncached(page)),
            }
        }
    };
    let page = &page.page;
    let next_after = (page.count == limit).then_some(page.last_pk).flatten();
    // The users array is already JSON (written from the rows): it goes out inside the
    // `UsersPage` shape as it is.
    let mut body = Vec::with_capacity(page.users.len() + 40);
    body.extend_from_slice(br#"{"users":"#);
    body.extend_from_slice(&page.users);
    body.extend_from_slice(br#","next_after":"#);
    match next_after {
        Some(pk) => body.extend_from_slice(pk.to_string().as_bytes()),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    Ok(JsonBody(body.into()).into_response())
}

/// One user (admins, or the user themself).
#[utoipa::path(get, path = "/api/users/{pk}", tag = "users", security(("bearer" = [])),
    params(("pk" = i64, Path, description = "Authentik's user pk")),
    responses(
        (status = 200, description = "OK", body = schema::UserSchema),
        (status = 400, description = "`pk` is not an integer (or out of the 64-bit range)", body = ErrorBody),
        (status = 401, description = "missing or invalid token (RFC 6750 challenge in WWW-Authenticate)", body = ErrorBody),
        (status = 403, description = "not allowed for this caller (insufficient_scope)", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody), (status = 503, description = "OIDC not configured, or the issuer is unreachable", body = ErrorBody),
    ))]
async fn get_user(
    State(state): State<ApiState>,
    AuthUser(caller): AuthUser,
    pk: Result<Path<i64>, PathRejection>,
) -> Result<JsonBody, ApiError> {
    let pk = pk_of(pk)?;
    caller.require_read(pk)?;
    user_json(&state, pk)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {pk}")))
}

/// Forget a user's personal data (right to erasure, admins only): its data key is
/// destroyed and `UserErased` appended; from then on its personal fields read as `null`
/// with `"erased": true`, in the API, the feeds and after replay. Idempotent.
#[utoipa::path(delete, path = "/api/users/{pk}/personal-data", tag = "users", security(("bearer" = [])),
    params(("pk" = i64, Path, description = "Authentik's user pk")),
    responses(
        (status = 204, description = "erased (or erased before)"),
        (status = 400, description = "`pk` is not an integer (or out of the 64-bit range)", body = ErrorBody),
        (status = 401, description = "missing or invalid token (RFC 6750 challenge in WWW-Authenticate)", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 404, description = "no such user in the event log", body = ErrorBody),
        (status = 503, description = "OIDC not configured, the issuer unreachable, or the database unavailable", body = ErrorBody),
    ))]
async fn erase_personal_data(
    State(state): State<ApiState>,
    AuthUser(caller): AuthUser,
    pk: Result<Path<i64>, PathRejection>,
) -> Result<axum::http::StatusCode, ApiError> {
    let pk = pk_of(pk)?;
    caller.require_admin()?;
    let metadata =
        idsync_domain::EventMetadata::new(idsync_domain::Source::Erasure, None, chrono::Utc::now());
    match state.store.erase(pk.0, &metadata).await {
        Ok(outcome) => {
            tracing::info!(pk = pk.0, ?outcome, admin = %caller.claims.sub, "personal data erased");
            Ok(axum::http::StatusCode::NO_CONTENT)
        }
        Err(idsync_store::StoreError::Domain(idsync_domain::UserError::Unknown { .. })) => {
            Err(ApiError::NotFound(format!("no user {pk}")))
        }
        Err(err) => Err(err.into()),
    }
}

/// One user's events, oldest first (admins, or the user themself).
#[utoipa::path(get, path = "/api/users/{pk}/events", tag = "events", security(("bearer" = [])),
    params(("pk" = i64, Path, description = "Authentik's user pk (any integer: a pk no user has has no events)"), PageParams),
    responses(
        (status = 200, description = "OK", body = EventsPage), (status = 400, description = "`pk` is not an integer, or invalid paging parameters", body = ErrorBody), (status = 401, description = "missing or invalid token (RFC 6750 challenge in WWW-Authenticate)", body = ErrorBody),
        (status = 403, description = "not allowed for this caller (insufficient_scope)", body = ErrorBody), (status = 503, description = "OIDC not configured, or the issuer is unreachable", body = ErrorBody),
    ))]
async fn user_events(
    State(state): State<ApiState>,
    AuthUser(caller): AuthUser,
    pk: Result<Path<i64>, PathRejection>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<EventsPage>, ApiError> {
    let pk = pk_of(pk)?;
    caller.require_read(pk)?;
    let (after, limit) = PageParams::parse(query)?;
    let events = feed::read_user_after(&state.pool, pk, Position(after), limit).await?;
    Ok(Json(events_page(events, limit)))
}

/// `{pk}`: anything but an integer (`abc`, a number past the 64-bit range) gets the
/// contract's JSON error, not axum's plain-text rejection.
fn pk_of(path: Result<Path<i64>, PathRejection>) -> Result<UserPk, ApiError> {
    path.map(|Path(pk)| UserPk(pk)).map_err(|e| {
        ApiError::InvalidRequest(format!(
            "pk must be a user's pk (an integer): {}",
            e.body_text()
        ))
    })
}

/// The global event log, by position (admins only).
#[utoipa::path(get, path = "/api/events", tag = "events", security(("bearer" = [])), params(PageParams),
    responses(
        (status = 200, description = "OK", body = EventsPage), (status = 400, description = "invalid paging parameters", body = ErrorBody), (status = 401, description = "missing or invalid token (RFC 6750 challenge in WWW-Authenticate)", body = ErrorBody),
        (status = 403, description = "not allowed for this caller (insufficient_scope)", body = ErrorBody), (status = 503, description = "OIDC not configured, or the issuer is unreachable", body = ErrorBody),
    ))]
async fn list_events(
    State(state): State<ApiState>,
    AuthUser(caller): AuthUser,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<EventsPage>, ApiError> {
    caller.require_admin()?;
    let (after, limit) = PageParams::parse(query)?;
    let events = feed::read_after(&state.pool, Position(after), limit).await?;
    Ok(Json(events_page(events, limit)))
}

fn events_page(events: Vec<FeedItem>, limit: i64) -> EventsPage {
    let next_after = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.position))
        .flatten();
    EventsPage { events, next_after }
}

/// Trade the bearer token for a single-use, 30-second ticket for the live feeds.
#[utoipa::path(post, path = "/api/stream-tickets", tag = "feeds", security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = StreamTicket), (status = 401, description = "missing or invalid token (RFC 6750 challenge in WWW-Authenticate)", body = ErrorBody), (status = 503, description = "OIDC not configured, or the issuer is unreachable", body = ErrorBody),
    ))]
async fn create_stream_ticket(
    State(state): State<ApiState>,
    AuthUser(caller): AuthUser,
) -> Result<Json<StreamTicket>, ApiError> {
    let ticket = tickets::issue(&state.pool, &caller).await?;
    Ok(Json(StreamTicket {
        ticket,
        expires_in: tickets::TICKET_TTL.as_secs(),
    }))
}
