//! REST API under `/api/v2`, shaped like SFTPGo v2: Basic-auth token
//! exchange, JWT bearer auth, users CRUD, live connections. Every error is JSON
//! `{"message","error"}`, 404 and 405 included.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine;
use ferry_proto::error::ErrorCode;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::defender::Event;
use crate::folders::{FolderInput, FolderView};
use crate::store::{Order, StoreError, now_ms};
use crate::users::{UserInput, UserView};

/// Audience of API tokens.
const AUDIENCE_API: &str = "API";
/// Header carrying an API key (SFTPGo's name).
const API_KEY_HEADER: &str = "x-sftpgo-api-key";
/// How often a key's `last_use_at` is written at most.
const API_KEY_TOUCH_MS: i64 = 60_000;

/// A reply that only says what happened.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}

/// A 201 reply with `Location` (and SFTPGo's `X-Object-ID` when given).
fn created(body: impl Serialize, location: &str, object_id: Option<&str>) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(Ok(v)) = object_id.map(HeaderValue::from_str) {
        resp.headers_mut().insert("x-object-id", v);
    }
    resp
}

fn msg(text: &str) -> Json<Message> {
    Json(Message {
        message: text.to_string(),
    })
}

/// Every error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub message: String,
    /// The HTTP reason phrase.
    pub error: String,
}

/// `GET /api/v2/token`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenReply {
    pub access_token: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

/// `GET /api/v2/version`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionReply {
    pub version: String,
    pub build_date: String,
    pub commit_hash: String,
    pub features: Vec<String>,
}

/// `POST /api/v2/apikeys`: the key, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyCreated {
    pub message: String,
    /// `<id>.<secret>`.
    pub key: String,
}

/// `POST /api/v2/loaddata`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoadReply {
    pub message: String,
    pub added: usize,
    pub updated: usize,
    pub skipped: usize,
    /// What was changed on the way in, and scans that did not start.
    pub notes: Vec<String>,
}

/// A transfer in progress on a live connection.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransferView {
    /// `upload` or `download`.
    pub operation_type: String,
    pub path: String,
    /// Unix time in milliseconds.
    pub start_time: i64,
    /// Bytes so far.
    pub size: i64,
}

/// A live connection on some edge.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub username: String,
    pub connection_id: String,
    pub client_version: String,
    /// The real client address (from the PROXY header when one is used).
    pub remote_address: String,
    pub connection_time: i64,
    pub last_activity: i64,
    pub protocol: String,
    pub active_transfers: Vec<TransferView>,
    /// The edge holding the connection.
    pub node: String,
}

/// A running quota scan of a user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserScan {
    pub username: String,
    pub start_time: i64,
}

/// A running quota scan of a folder.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FolderScan {
    pub name: String,
    pub start_time: i64,
}

/// `GET /api/v2/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusReply {
    pub data_provider: ProviderStatus,
    pub edges: Vec<crate::fleet::EdgeSummary>,
    pub defender: DefenderStatus,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderStatus {
    pub is_active: bool,
    pub driver: String,
    pub error: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DefenderStatus {
    pub is_active: bool,
}

/// A host the defender scores or bans.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DefenderHostView {
    /// The address, hex encoded (SFTPGo's id).
    pub id: String,
    pub ip: String,
    pub score: u32,
    /// RFC 3339 end of the ban; empty when not banned.
    pub ban_time: String,
}

/// Largest backup `POST /api/v2/loaddata` accepts.
pub const MAX_RESTORE_BYTES: usize = 64 * 1024 * 1024;

/// Limits of the REST API (`httpd`).
#[derive(Debug, Clone)]
pub struct RestSettings {
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Lifetime of access tokens, in seconds.
    pub token_lifetime_secs: i64,
    /// Timeouts and connection caps of the listener.
    pub listener: crate::rest_listener::ListenerLimits,
}

impl Default for RestSettings {
    fn default() -> Self {
        Self {
            max_body: 1024 * 1024,
            // SFTPGo's jwt lifetime: 20 minutes.
            token_lifetime_secs: 20 * 60,
            listener: Default::default(),
        }
    }
}

/// An API failure, rendered as SFTPGo's JSON error body.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            Json(ErrorBody {
                message: self.message,
                error: self.code.reason().to_string(),
            }),
        )
            .into_response();
        if self.code == ErrorCode::Unauthenticated {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ferry\""),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::new(ErrorCode::NotFound, "not found"),
            StoreError::AlreadyExists(m) => ApiError::new(ErrorCode::AlreadyExists, m),
            StoreError::Invalid(m) => ApiError::new(ErrorCode::BadRequest, m),
            StoreError::Unavailable(m) => {
                tracing::error!(error = m, "database unavailable");
                ApiError::new(ErrorCode::Unavailable, "the database is unavailable")
            }
            StoreError::Internal(m) => {
                tracing::error!(error = m, "database error");
                ApiError::new(ErrorCode::Internal, "database error")
            }
        }
    }
}

impl From<crate::password_slots::Busy> for ApiError {
    fn from(e: crate::password_slots::Busy) -> Self {
        ApiError::new(ErrorCode::Unavailable, e.to_string())
    }
}

/// A JSON body, decoded whatever its `Content-Type` (SFTPGo's clients often
/// send none). Errors name the offending field; nothing is decoded twice.
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<Arc<AppState>> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rej| {
                if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        format!(
                            "request body larger than {} bytes (httpd.max_request_size)",
                            state.rest.max_body
                        ),
                    )
                } else {
                    ApiError::bad_request(rej.body_text())
                }
            })?;
        let mut value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        integral_numbers(&mut value);
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path.is_empty() || path == "." {
                    ApiError::bad_request(format!("invalid JSON body: {inner}"))
                } else {
                    ApiError::bad_request(format!("invalid JSON body at {path}: {inner}"))
                }
            })
    }
}

/// Turns numbers like `5.0` into integers: JSON Schema (and JavaScript)
/// treat them as integers, serde's integer fields would refuse them.
pub fn integral_numbers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f >= i64::MIN as f64
                && f < i64::MAX as f64
            {
                *v = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// Claims of an admin access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub username: String,
    pub permissions: Vec<String>,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The API key id when the caller authenticated with a key (never in
    /// signed tokens).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_key: String,
    /// [`crate::admins::authority`] of the admin when the token was issued.
    #[serde(default)]
    pub authz: String,
}

/// An authenticated admin, from a valid Bearer token or API key.
pub struct Admin(Claims);

impl Admin {
    /// Fails with 403 naming the permission unless the admin holds it.
    fn require(&self, perm: &str) -> Result<(), ApiError> {
        if self.0.permissions.iter().any(|p| p == "*" || p == perm) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this operation requires the {perm:?} permission"),
            ))
        }
    }

    /// Homes and folder paths that contain one of Ferry's own directories or
    /// files (`/`, a parent of the data directory) need `*`: 400 naming the
    /// field otherwise. (Paths inside them are refused for everyone by the
    /// validation.)
    fn check_reach<'a>(
        &self,
        paths: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), ApiError> {
        if self.0.permissions.iter().any(|p| p == "*") {
            return Ok(());
        }
        // An empty path is an object-backed folder's: nothing on disk.
        for (field, path) in paths.into_iter().filter(|(_, p)| !p.is_empty()) {
            crate::server_paths::check_contains(field, path).map_err(ApiError::bad_request)?;
        }
        Ok(())
    }

    /// Fails with 403 when the caller used an API key (key management,
    /// password changes and logout need a token, as in SFTPGo).
    fn forbid_api_key(&self) -> Result<(), ApiError> {
        if self.0.api_key.is_empty() {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "this operation is not allowed with API key authentication: use a token",
            ))
        }
    }
}

/// Authenticates an `X-SFTPGO-API-KEY` header as an admin.
async fn api_key_admin(
    state: &Arc<AppState>,
    value: &str,
    peer: Option<std::net::SocketAddr>,
) -> Result<Admin, ApiError> {
    let client = peer.map(|p| p.ip().to_canonical());
    if let Some(ip) = client {
        refuse_banned(state, ip)?;
    }
    let denied = |m: &str| ApiError::new(ErrorCode::Unauthenticated, m.to_string());
    let (key_id, secret, named) =
        crate::apikeys::parse_header(value).ok_or_else(|| denied("invalid API key"))?;
    // Guessing keys scores like guessing passwords.
    let guessed = |event, reason| {
        if let Some(peer) = peer {
            login_failed(state, peer, named.unwrap_or(""), "api_key", event, reason);
        }
        denied("invalid API key")
    };
    let key = match state.store.api_key(key_id.to_string()).await {
        Ok(k) => k,
        Err(StoreError::NotFound) => {
            crate::passwords::verify(secret.to_string(), state.dummy_hash.clone()).await?;
            return Err(guessed(Event::NoSuchUser, "no such API key"));
        }
        Err(e) => return Err(e.into()),
    };
    if !state
        .api_key_cache
        .verify(key_id, secret.to_string(), key.data.api_key.clone())
        .await?
    {
        return Err(guessed(Event::LoginFailed, "invalid API key secret"));
    }
    if key.data.scope != crate::apikeys::SCOPE_ADMIN {
        return Err(denied("this API key is not valid for the admin API"));
    }
    let now = now_ms();
    if key.data.expires_at > 0 && key.data.expires_at < now {
        return Err(denied("this API key has expired"));
    }
    let username = match (&key.admin, named) {
        (Some(bound), None) => bound.clone(),
        (Some(bound), Some(n)) if n == bound => bound.clone(),
        (Some(_), Some(_)) => return Err(denied("this API key is bound to another admin")),
        (None, Some(n)) => n.to_string(),
        (None, None) => {
            return Err(denied(
                "this API key is not bound to an admin: send <key>.<admin username>",
            ));
        }
    };
    let admin = match state.store.admin(username.clone()).await {
        Ok(a) => a,
        Err(StoreError::NotFound) => return Err(denied("invalid API key")),
        Err(e) => return Err(e.into()),
    };
    let filters: serde_json::Value = serde_json::from_str(&admin.data.filters).unwrap_or_default();
    if admin.data.status != 1 {
        return Err(denied("the admin is disabled"));
    }
    if filters.get("allow_api_key_auth").and_then(|v| v.as_bool()) != Some(true) {
        return Err(denied(
            "API key authentication is not allowed for this admin (filters.allow_api_key_auth)",
        ));
    }
    let allowed = crate::admins::allow_list(&filters).unwrap_or_default();
    if !allowed.is_empty()
        && !client.is_some_and(|ip| allowed.iter().any(|n| n.contains(&ip.to_canonical())))
    {
        return Err(denied(
            "the client address is not in the admin's allow list",
        ));
    }
    if now - key.data.last_use_at > API_KEY_TOUCH_MS {
        let store = state.store.clone();
        let id = key_id.to_string();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(id, now).await {
                tracing::warn!(error = %e, "cannot record API key use");
            }
        });
    }
    let secs = now / 1000;
    Ok(Admin(Claims {
        sub: username.clone(),
        username,
        permissions: serde_json::from_str(&admin.data.permissions).unwrap_or_default(),
        aud: AUDIENCE_API.into(),
        iat: secs,
        nbf: secs,
        exp: secs,
        jti: String::new(),
        api_key: key_id.to_string(),
        authz: String::new(),
    }))
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(value) = parts.headers.get(API_KEY_HEADER) {
            let client = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0);
            let value = value
                .to_str()
                .map_err(|_| ApiError::new(ErrorCode::Unauthenticated, "invalid API key"))?;
            return api_key_admin(state, value, client).await;
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "missing bearer token"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE_API]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&state.jwt_key),
            &validation,
        )
        .map_err(|e| ApiError::new(ErrorCode::Unauthenticated, format!("invalid token: {e}")))?;
        if !data.claims.api_key.is_empty() {
            return Err(ApiError::new(ErrorCode::Unauthenticated, "invalid token"));
        }
        if state
            .store
            .is_token_revoked(data.claims.jti.clone())
            .await?
        {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "this token has been revoked (logout)",
            ));
        }
        // The admin as stored now, not as when the token was issued.
        let refused = |m: &str| ApiError::new(ErrorCode::Unauthenticated, m.to_string());
        let admin = match state.store.admin(data.claims.username.clone()).await {
            Ok(a) => a,
            Err(StoreError::NotFound) => {
                return Err(refused("the admin of this token no longer exists"));
            }
            Err(e) => return Err(e.into()),
        };
        if admin.data.status != 1 {
            return Err(refused("the admin of this token is disabled"));
        }
        let now = crate::admins::authority(&state.jwt_key, &admin.data);
        if !bool::from(now.as_bytes().ct_eq(data.claims.authz.as_bytes())) {
            return Err(refused(
                "the admin's password, permissions or allow list changed after this token was \
                 issued: request a new token",
            ));
        }
        let mut claims = data.claims;
        claims.permissions = serde_json::from_str(&admin.data.permissions).unwrap_or_default();
        Ok(Admin(claims))
    }
}

/// The OpenAPI document's frame: title, security schemes, and the error
/// responses every operation can give (added by [`StandardErrors`]).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Ferry REST API",
        description = "SFTPGo v2-compatible administration API of Ferry's control plane. \
                       Authenticate with a token from GET /api/v2/token (Basic) as \
                       `Authorization: Bearer`, or with an API key in X-SFTPGO-API-KEY."
    ),
    components(schemas(ErrorBody, SortOrder, UsageMode))
)]
struct ApiDoc;

/// Adds the security schemes and, to every operation, the error responses
/// `ApiError` can produce (all with the `ErrorBody` shape).
struct StandardErrors;

impl utoipa::Modify for StandardErrors {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "BearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "APIKeyAuth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-SFTPGO-API-KEY"))),
        );
        components.add_security_scheme(
            "BasicAuth",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in api.paths.paths.iter_mut() {
            let api_path = path.starts_with("/api/v2/");
            for (method, op) in [
                ("get", item.get.as_mut()),
                ("post", item.post.as_mut()),
                ("put", item.put.as_mut()),
                ("delete", item.delete.as_mut()),
            ] {
                let Some(op) = op else { continue };
                let secured = op
                    .security
                    .as_ref()
                    .is_none_or(|s| !s.is_empty() && path != "/api/v2/version");
                let mut codes: Vec<(&str, &str)> = vec![("503", "the database is unavailable")];
                if api_path && path != "/api/v2/version" {
                    codes.push(("401", "missing, expired, revoked or invalid credentials"));
                }
                if secured && api_path && path != "/api/v2/token" {
                    codes.extend([
                        (
                            "400",
                            "invalid parameters or body; the message names the field",
                        ),
                        ("403", "a permission is missing; the message names it"),
                        ("404", "not found"),
                        ("500", "internal error"),
                    ]);
                }
                if method == "post" || method == "put" {
                    codes.push(("409", "already exists or already running"));
                }
                if op.request_body.is_some() {
                    codes.push(("413", "request body too large"));
                }
                for (code, description) in codes {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error(description));
                }
            }
        }
    }
}

/// The router and the OpenAPI document, both built from the handlers'
/// annotations (a route cannot exist without its documentation).
fn documented(max_body: usize) -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let restore = OpenApiRouter::new()
        .routes(routes!(loaddata, loaddata_file))
        .layer(DefaultBodyLimit::max(MAX_RESTORE_BYTES));
    let rest = OpenApiRouter::new()
        .routes(routes!(version))
        .routes(routes!(token))
        .routes(routes!(logout))
        .routes(routes!(list_api_keys, add_api_key))
        .routes(routes!(get_api_key, update_api_key, delete_api_key))
        .routes(routes!(list_users, add_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(list_groups, add_group))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(list_folders, add_folder))
        .routes(routes!(get_folder, update_folder, delete_folder))
        .routes(routes!(user_quota_usage))
        .routes(routes!(user_scans))
        .routes(routes!(scan_user))
        .routes(routes!(folder_scans))
        .routes(routes!(scan_folder))
        .routes(routes!(folder_quota_usage))
        .routes(routes!(list_admins, add_admin))
        .routes(routes!(get_admin, update_admin, delete_admin))
        .routes(routes!(change_password))
        .routes(routes!(dumpdata))
        .routes(routes!(status))
        .routes(routes!(list_connections))
        .routes(routes!(close_connection))
        .routes(routes!(defender_hosts))
        .routes(routes!(defender_host, defender_unban))
        .layer(DefaultBodyLimit::max(max_body));
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .merge(rest)
        .merge(restore)
        .split_for_parts();
    // After the routes are in: the modifier walks every operation.
    utoipa::Modify::modify(&StandardErrors, &mut api);
    (router, api)
}

/// The OpenAPI document (what `/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented(1024 * 1024).1
}

pub fn router(state: Arc<AppState>) -> Router {
    let (routes, api) = documented(state.rest.max_body);
    routes
        .merge(utoipa_swagger_ui::SwaggerUi::new("/openapi").url("/openapi.json", api))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// `GET /metrics`: Prometheus text, unauthenticated (as SFTPGo's).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")),
    security(())
)]
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &crate::metrics::METRICS;
    m.dataprovider_availability
        .set(i64::from(state.store.ping().await.is_ok()));
    m.edges_attached.set(state.fleet.edges().len() as i64);
    m.defender_banned_hosts.set(
        state
            .defender
            .hosts()
            .iter()
            .filter(|h| h.ban_until_ms > 0)
            .count() as i64,
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ferry_dataplane::metrics::render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "not found")
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"message": "method not allowed", "error": "Method Not Allowed"})),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses((status = 200, description = "ready: the database answers", body = String, content_type = "text/plain")),
    security(())
)]
async fn readyz(state: State<Arc<AppState>>) -> Response {
    healthz(state).await
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "the database answers", body = String, content_type = "text/plain")),
    security(())
)]
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => ApiError::from(match e {
            StoreError::Unavailable(m) | StoreError::Internal(m) => StoreError::Unavailable(m),
            other => other,
        })
        .into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/api/v2/version",
    tag = "maintenance",
    responses((status = 200, body = VersionReply)),
    security(())
)]
async fn version() -> Json<VersionReply> {
    Json(VersionReply {
        version: ferry_proto::VERSION.into(),
        build_date: String::new(),
        commit_hash: String::new(),
        features: [
            "+sqlite",
            "+postgresql",
            "+mysql",
            "+memory",
            "-bolt",
            "-s3",
            "-gcs",
        ]
        .map(String::from)
        .to_vec(),
    })
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// 403 for an address the defender bans (REST logins count like SSH ones).
fn refuse_banned(state: &AppState, ip: std::net::IpAddr) -> Result<(), ApiError> {
    if state.defender.is_banned(ip) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "client address banned by the defender (common.defender): try again later",
        ));
    }
    Ok(())
}

/// A failed REST login (token or API key): SFTPGo's `connection_failed` line
/// with protocol HTTP (what fail2ban matches), and the defender's score for
/// the client address (a ban reaches every edge too).
fn login_failed(
    state: &AppState,
    client: std::net::SocketAddr,
    username: &str,
    login_type: &str,
    event: Event,
    reason: &str,
) {
    let ip = client.ip().to_canonical();
    tracing::info!(
        sender = "connection_failed",
        client_ip = %ip,
        username,
        login_type,
        protocol = "HTTP",
        error = reason,
        remote_address = %client,
        "login failed"
    );
    if state.defender.record(ip, event) {
        tracing::warn!(remote_address = %client, "client address banned by the defender");
        state.fleet.broadcast(&state.defender.bans_message());
    }
}

/// `GET /api/v2/token`: Basic admin credentials in, JWT out.
#[utoipa::path(
    get,
    path = "/api/v2/token",
    tag = "token",
    responses((status = 200, body = TokenReply)),
    security(("BasicAuth" = []))
)]
async fn token(
    State(state): State<Arc<AppState>>,
    axum::extract::ConnectInfo(client): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let unauthorized = || {
        let mut r =
            ApiError::new(ErrorCode::Unauthenticated, "invalid credentials").into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"ferry\""),
        );
        r
    };
    let ip = client.ip().to_canonical();
    refuse_banned(&state, ip)?;
    let Some((username, password)) = basic_credentials(&headers) else {
        return Ok(unauthorized());
    };
    let failed = |event, reason| {
        login_failed(&state, client, &username, "password", event, reason);
        Ok(unauthorized())
    };
    let admin = match state.store.admin(username.clone()).await {
        Ok(a) => a,
        Err(StoreError::NotFound) => {
            crate::passwords::verify(password, state.dummy_hash.clone()).await?;
            return failed(Event::NoSuchUser, "no such admin");
        }
        Err(e) => return Err(e.into()),
    };
    if !crate::passwords::verify(password, admin.data.password.clone()).await? {
        return failed(Event::LoginFailed, "invalid password");
    }
    if admin.data.status != 1 {
        return failed(Event::LoginFailed, "admin disabled");
    }
    let filters: serde_json::Value = serde_json::from_str(&admin.data.filters).unwrap_or_default();
    let allowed = crate::admins::allow_list(&filters).unwrap_or_default();
    if !allowed.is_empty() && !allowed.iter().any(|n| n.contains(&ip)) {
        return failed(
            Event::LoginFailed,
            "client address not in the admin's allow list",
        );
    }
    let now = now_ms() / 1000;
    let claims = Claims {
        sub: username.clone(),
        username: username.clone(),
        permissions: serde_json::from_str(&admin.data.permissions).unwrap_or_default(),
        aud: AUDIENCE_API.into(),
        iat: now,
        nbf: now,
        exp: now + state.rest.token_lifetime_secs,
        jti: crate::random_token(12),
        api_key: String::new(),
        authz: crate::admins::authority(&state.jwt_key, &admin.data),
    };
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&state.jwt_key),
    )
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot sign token: {e}")))?;
    if let Err(e) = state.store.set_admin_last_login(username, now_ms()).await {
        tracing::warn!(error = %e, "cannot record admin last login");
    }
    let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok(Json(TokenReply {
        access_token: jwt,
        expires_at,
    })
    .into_response())
}

/// `GET /api/v2/logout`: revokes the calling token on every replica.
#[utoipa::path(
    get,
    path = "/api/v2/logout",
    tag = "token",
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []))
)]
async fn logout(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<Json<Message>, ApiError> {
    admin.forbid_api_key()?;
    state
        .store
        .revoke_token(admin.0.jti.clone(), admin.0.exp)
        .await?;
    tracing::info!(admin = admin.0.username, "admin logged out");
    Ok(msg("Your token has been invalidated"))
}

#[utoipa::path(
    get,
    path = "/api/v2/apikeys",
    tag = "API keys",
    params(ListParams),
    responses((status = 200, body = [crate::apikeys::ApiKeyView])),
    security(("BearerAuth" = []))
)]
async fn list_api_keys(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<crate::apikeys::ApiKeyView>>, ApiError> {
    admin.forbid_api_key()?;
    admin.require("*")?;
    let (offset, limit, order) = query(params)?.parse()?;
    let rows = state.store.api_keys(offset, limit, order).await?;
    Ok(Json(
        rows.iter().map(crate::apikeys::ApiKeyView::from).collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v2/apikeys/{id}",
    tag = "API keys",
    params(("id" = String, Path, description = "key id")),
    responses((status = 200, body = crate::apikeys::ApiKeyView)),
    security(("BearerAuth" = []))
)]
async fn get_api_key(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<crate::apikeys::ApiKeyView>, ApiError> {
    admin.forbid_api_key()?;
    admin.require("*")?;
    let row = state.store.api_key(id).await?;
    Ok(Json(crate::apikeys::ApiKeyView::from(&row)))
}

#[utoipa::path(
    post,
    path = "/api/v2/apikeys",
    tag = "API keys",
    request_body(content = crate::apikeys::ApiKeyInput, content_type = "application/json"),
    responses((status = 201, body = ApiKeyCreated, headers(("Location" = String)))),
    security(("BearerAuth" = []))
)]
async fn add_api_key(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiJson(input): ApiJson<crate::apikeys::ApiKeyInput>,
) -> Result<Response, ApiError> {
    admin.forbid_api_key()?;
    admin.require("*")?;
    let mut key = input.validate(None).map_err(ApiError::bad_request)?;
    let (key_id, secret) = crate::apikeys::generate();
    key.data.key_id = key_id.clone();
    key.data.api_key = crate::passwords::hash(secret.clone())
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
    state.store.add_api_key(key).await?;
    tracing::info!(admin = admin.0.username, key_id, "API key added");
    Ok(created(
        ApiKeyCreated {
            message:
                "API key created. This is the only time the API key is visible, please save it."
                    .into(),
            key: format!("{key_id}.{secret}"),
        },
        &format!("/api/v2/apikeys/{key_id}"),
        Some(&key_id),
    ))
}

#[utoipa::path(
    put,
    path = "/api/v2/apikeys/{id}",
    tag = "API keys",
    params(("id" = String, Path, description = "key id")),
    request_body(content = crate::apikeys::ApiKeyInput, content_type = "application/json"),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []))
)]
async fn update_api_key(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<crate::apikeys::ApiKeyInput>,
) -> Result<Json<Message>, ApiError> {
    admin.forbid_api_key()?;
    admin.require("*")?;
    let existing = state.store.api_key(id.clone()).await?;
    let key = input
        .validate(Some(&existing))
        .map_err(ApiError::bad_request)?;
    state.store.update_api_key(key).await?;
    tracing::info!(admin = admin.0.username, key_id = id, "API key updated");
    Ok(msg("API key updated"))
}

#[utoipa::path(
    delete,
    path = "/api/v2/apikeys/{id}",
    tag = "API keys",
    params(("id" = String, Path, description = "key id")),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []))
)]
async fn delete_api_key(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    admin.forbid_api_key()?;
    admin.require("*")?;
    state.store.delete_api_key(id.clone()).await?;
    tracing::info!(admin = admin.0.username, key_id = id, "API key deleted");
    Ok(msg("API key deleted"))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DumpParams {
    /// File name (no directories) written in the backups directory; required
    /// unless output-data=1.
    #[serde(rename = "output-file")]
    output_file: Option<String>,
    /// 1: return the backup in the reply instead of writing a file.
    #[serde(rename = "output-data")]
    #[param(minimum = 0, maximum = 1)]
    output_data: Option<u8>,
    /// 1: indent the JSON.
    #[param(minimum = 0, maximum = 1)]
    indent: Option<u8>,
}

/// `GET /api/v2/dumpdata`: the backup in the reply (`output-data=1`) or
/// written to the backups directory as `output-file` (a plain file name).
#[utoipa::path(
    get,
    path = "/api/v2/dumpdata",
    tag = "maintenance",
    params(DumpParams),
    responses((status = 200, description = "the backup (output-data=1), else {\"message\"}", body = Object)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn dumpdata(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    params: Result<Query<DumpParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    admin.require("*")?;
    let params = query(params)?;
    let file = match params.output_data {
        Some(1) => None,
        None | Some(0) => {
            let name = params.output_file.as_deref().unwrap_or("").trim();
            crate::backup::check_file_name(name).map_err(ApiError::bad_request)?;
            Some(name.to_string())
        }
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "invalid output-data {o}: use 0 or 1"
            )));
        }
    };
    let rows = state.store.dump().await?;
    let doc = crate::backup::render(&rows);
    let text = if params.indent == Some(1) {
        serde_json::to_vec_pretty(&doc)
    } else {
        serde_json::to_vec(&doc)
    }
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    match file {
        None => {
            tracing::info!(admin = admin.0.username, "backup sent");
            Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
        }
        Some(name) => {
            let dir = state.backups_dir.clone();
            let path =
                tokio::task::spawn_blocking(move || crate::backup::write_file(&dir, &name, &text))
                    .await
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
                    .map_err(|e| {
                        // The reason names server paths: the log gets it,
                        // the client a summary.
                        tracing::error!(admin = admin.0.username, error = e, "cannot save backup");
                        ApiError::new(
                            ErrorCode::Internal,
                            "cannot write the backup file (the server log says why)",
                        )
                    })?;
            tracing::info!(admin = admin.0.username, path = %path.display(), "backup saved");
            Ok(msg("Data saved").into_response())
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LoadParams {
    /// 0: no scan, 1: scan every restored user, 2: only users with quota limits.
    #[serde(rename = "scan-quota")]
    #[param(value_type = Option<u8>, minimum = 0, maximum = 2)]
    scan_quota: Option<String>,
    /// 0: add and replace, 1: add new objects only, 2: as 0 and disconnect
    /// replaced users.
    #[param(value_type = Option<u8>, minimum = 0, maximum = 2)]
    mode: Option<String>,
}

/// `POST /api/v2/loaddata`: restores a backup (the body) all or nothing.
#[utoipa::path(
    post,
    path = "/api/v2/loaddata",
    tag = "maintenance",
    params(LoadParams),
    request_body(content = Object, description = "a backup in SFTPGo's format (v2 or 1.x)", content_type = "application/json"),
    responses((status = 200, body = LoadReply)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn loaddata(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    params: Result<Query<LoadParams>, axum::extract::rejection::QueryRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<LoadReply>, ApiError> {
    admin.require("*")?;
    let params = query(params)?;
    let mode = crate::backup::Mode::parse(params.mode.as_deref()).map_err(ApiError::bad_request)?;
    let scan = crate::backup::ScanQuota::parse(params.scan_quota.as_deref())
        .map_err(ApiError::bad_request)?;
    let body = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("backups larger than {MAX_RESTORE_BYTES} bytes cannot be restored over HTTP: use ferry loaddata"),
            )
        } else {
            ApiError::bad_request(rej.body_text())
        }
    })?;
    restore_bytes(&state, &admin, &body, mode, scan).await
}

/// Restores a backup given as bytes (request body or backup file).
async fn restore_bytes(
    state: &AppState,
    admin: &Admin,
    body: &[u8],
    mode: crate::backup::Mode,
    scan: crate::backup::ScanQuota,
) -> Result<Json<LoadReply>, ApiError> {
    let mut doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the backup is not valid JSON: {e}")))?;
    integral_numbers(&mut doc);
    let outcome = crate::backup::restore(state, &doc, mode, scan)
        .await
        .map_err(|e| match e {
            crate::backup::RestoreError::Invalid(m) => ApiError::bad_request(m),
            crate::backup::RestoreError::Store(e) => e.into(),
        })?;
    tracing::info!(
        admin = admin.0.username,
        added = outcome.report.added,
        updated = outcome.report.updated,
        skipped = outcome.report.skipped,
        "backup restored"
    );
    Ok(Json(LoadReply {
        message: "Data restored".into(),
        added: outcome.report.added,
        updated: outcome.report.updated,
        skipped: outcome.report.skipped,
        notes: outcome.notes,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LoadFileParams {
    /// A backup in the backups directory: its file name, or its absolute
    /// path there.
    #[serde(rename = "input-file")]
    input_file: Option<String>,
    /// 0: no scan, 1: scan every restored user, 2: only users with quota limits.
    #[serde(rename = "scan-quota")]
    #[param(value_type = Option<u8>, minimum = 0, maximum = 2)]
    scan_quota: Option<String>,
    /// 0: add and replace, 1: add new objects only, 2: as 0 and disconnect
    /// replaced users.
    #[param(value_type = Option<u8>, minimum = 0, maximum = 2)]
    mode: Option<String>,
}

/// `GET /api/v2/loaddata?input-file=`: restores a backup file from the
/// backups directory (SFTPGo reads any absolute path; Ferry only its backups
/// directory, so the API cannot be made to read other server files).
#[utoipa::path(
    get,
    path = "/api/v2/loaddata",
    tag = "maintenance",
    params(LoadFileParams),
    responses((status = 200, body = LoadReply)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn loaddata_file(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    params: Result<Query<LoadFileParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LoadReply>, ApiError> {
    admin.require("*")?;
    let params = query(params)?;
    let mode = crate::backup::Mode::parse(params.mode.as_deref()).map_err(ApiError::bad_request)?;
    let scan = crate::backup::ScanQuota::parse(params.scan_quota.as_deref())
        .map_err(ApiError::bad_request)?;
    let given = params.input_file.unwrap_or_default();
    if given.trim().is_empty() {
        return Err(ApiError::bad_request(
            "missing input-file: the name of a backup in the backups directory",
        ));
    }
    let name = match std::path::Path::new(&given) {
        p if p.is_absolute() => p
            .strip_prefix(&state.backups_dir)
            .ok()
            .and_then(|rest| rest.to_str())
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "input-file {given:?} is not in the backups directory \
                     (data_provider.backups_path)"
                ))
            })?,
        _ => given.clone(),
    };
    crate::backup::check_file_name(&name)
        .map_err(|e| ApiError::bad_request(e.replace("output-file", "input-file")))?;
    let path = state.backups_dir.join(&name);
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|_| ApiError::new(ErrorCode::NotFound, format!("backup {name:?} not found")))?;
    if meta.len() > MAX_RESTORE_BYTES as u64 {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "backups larger than {MAX_RESTORE_BYTES} bytes cannot be restored over HTTP: use ferry loaddata"
            ),
        ));
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot read {name:?}: {e}")))?;
    restore_bytes(&state, &admin, &bytes, mode, scan).await
}

/// Sort order of lists (by name).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(clippy::upper_case_acronyms, dead_code)]
enum SortOrder {
    ASC,
    DESC,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// At most 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    #[param(value_type = Option<SortOrder>)]
    order: Option<String>,
}

impl ListParams {
    fn parse(self) -> Result<(i64, i64, Order), ApiError> {
        let offset = self.offset.unwrap_or(0);
        let limit = self.limit.unwrap_or(100);
        if offset < 0 {
            return Err(ApiError::bad_request("offset must not be negative"));
        }
        if !(1..=500).contains(&limit) {
            return Err(ApiError::bad_request("limit must be between 1 and 500"));
        }
        let order = match self.order.as_deref() {
            None | Some("ASC") => Order::Asc,
            Some("DESC") => Order::Desc,
            Some(o) => {
                return Err(ApiError::bad_request(format!(
                    "invalid order {o:?}: use ASC or DESC"
                )));
            }
        };
        Ok((offset, limit, order))
    }
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

#[utoipa::path(
    get,
    path = "/api/v2/users",
    tag = "users",
    params(ListParams),
    responses((status = 200, body = [UserView])),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn list_users(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    admin.require("view_users")?;
    let (offset, limit, order) = query(params)?.parse()?;
    let rows = state.store.users(offset, limit, order).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let folders = state.store.user_folders(row.id).await?;
        let groups = state.store.user_groups(row.id).await?;
        out.push(UserView::full(row, &folders, &groups).redacted());
    }
    Ok(Json(out))
}

#[utoipa::path(
    get,
    path = "/api/v2/users/{username}",
    tag = "users",
    params(("username" = String, Path, description = "user name"), ConfidentialParams),
    responses((status = 200, body = UserView)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn get_user(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(username): Path<String>,
    params: Result<Query<ConfidentialParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UserView>, ApiError> {
    admin.require("view_users")?;
    let reveal = match query(params)?.confidential_data {
        None | Some(0) => false,
        Some(1) => {
            admin.require("*")?;
            true
        }
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "invalid confidential_data {o}: use 0 or 1"
            )));
        }
    };
    let row = state.store.user(username).await?;
    let folders = state.store.user_folders(row.id).await?;
    let groups = state.store.user_groups(row.id).await?;
    let view = UserView::full(&row, &folders, &groups);
    Ok(Json(if reveal {
        view.revealed()
    } else {
        view.redacted()
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ConfidentialParams {
    /// 1: show secrets sealed by Ferry in the clear (needs the "*" permission).
    #[param(minimum = 0, maximum = 1)]
    confidential_data: Option<u8>,
}

#[utoipa::path(
    post,
    path = "/api/v2/users",
    tag = "users",
    request_body(content = UserInput, content_type = "application/json"),
    responses((status = 201, body = UserView, headers(("Location" = String)))),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn add_user(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiJson(input): ApiJson<UserInput>,
) -> Result<Response, ApiError> {
    admin.require("add_users")?;
    let valid = input.validate(None).map_err(ApiError::bad_request)?;
    admin.check_reach(user_paths(&valid))?;
    let mut write = valid.into_data().await.map_err(ApiError::bad_request)?;
    crate::groups::apply_expires_in(&state.store, &mut write).await?;
    let row = state
        .store
        .add_user_full(write)
        .await
        .map_err(|e| match e {
            StoreError::AlreadyExists(_) => ApiError::new(
                ErrorCode::AlreadyExists,
                "a user with this username already exists",
            ),
            other => other.into(),
        })?;
    tracing::info!(
        admin = admin.0.username,
        username = row.data.username,
        "user added"
    );
    let folders = state.store.user_folders(row.id).await?;
    let groups = state.store.user_groups(row.id).await?;
    Ok(created(
        UserView::full(&row, &folders, &groups).redacted(),
        &format!("/api/v2/users/{}", row.data.username),
        None,
    ))
}

/// The filesystem paths a user body sets: its home and the folders it
/// creates on the way.
fn user_paths(valid: &crate::users::ValidUser) -> Vec<(&str, &str)> {
    let mut paths = vec![("home_dir", valid.data.home_dir.as_str())];
    for m in &valid.mappings {
        if let Some(f) = &m.create {
            paths.push(("virtual_folders.mapped_path", f.path.as_str()));
        }
    }
    paths
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UpdateParams {
    /// 1: disconnect the user's live sessions on every edge.
    #[param(minimum = 0, maximum = 1)]
    disconnect: Option<u8>,
}

#[utoipa::path(
    put,
    path = "/api/v2/users/{username}",
    tag = "users",
    params(("username" = String, Path, description = "user name"), UpdateParams),
    request_body(content = UserInput, content_type = "application/json"),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn update_user(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(username): Path<String>,
    params: Result<Query<UpdateParams>, axum::extract::rejection::QueryRejection>,
    ApiJson(input): ApiJson<UserInput>,
) -> Result<Json<Message>, ApiError> {
    admin.require("edit_users")?;
    let params = query(params)?;
    let existing = state.store.user(username.clone()).await?;
    let valid = input
        .validate(Some(&existing))
        .map_err(ApiError::bad_request)?;
    admin.check_reach(user_paths(&valid))?;
    let write = valid.into_data().await.map_err(ApiError::bad_request)?;
    state.store.update_user_full(existing.id, write).await?;
    tracing::info!(admin = admin.0.username, username, "user updated");
    if params.disconnect == Some(1) {
        state.fleet.disconnect_user(&username);
    }
    Ok(msg("User updated"))
}

#[utoipa::path(
    delete,
    path = "/api/v2/users/{username}",
    tag = "users",
    params(("username" = String, Path, description = "user name")),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn delete_user(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<Message>, ApiError> {
    admin.require("del_users")?;
    state.store.delete_user(username.clone()).await?;
    state.verified.forget(&username);
    tracing::info!(admin = admin.0.username, username, "user deleted");
    state.fleet.disconnect_user(&username);
    Ok(msg("User deleted"))
}

/// A group's home template, if it sets one.
fn group_home(data: &crate::store::GroupData) -> Option<String> {
    let settings: serde_json::Value = serde_json::from_str(&data.user_settings).ok()?;
    settings
        .get("home_dir")
        .and_then(serde_json::Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

async fn group_view(
    state: &AppState,
    row: &crate::store::GroupRow,
) -> Result<crate::groups::GroupView, ApiError> {
    let (folders, users) = state.store.group_details(row.id).await?;
    Ok(crate::groups::GroupView::new(row, &folders, users).redacted())
}

#[utoipa::path(
    get,
    path = "/api/v2/groups",
    tag = "groups",
    params(ListParams),
    responses((status = 200, body = [crate::groups::GroupView])),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn list_groups(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<crate::groups::GroupView>>, ApiError> {
    admin.require("manage_groups")?;
    let (offset, limit, order) = query(params)?.parse()?;
    let rows = state.store.groups(offset, limit, order).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(group_view(&state, row).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(
    get,
    path = "/api/v2/groups/{name}",
    tag = "groups",
    params(("name" = String, Path, description = "group name")),
    responses((status = 200, body = crate::groups::GroupView)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn get_group(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<crate::groups::GroupView>, ApiError> {
    admin.require("manage_groups")?;
    let row = state.store.group(name).await?;
    Ok(Json(group_view(&state, &row).await?))
}

#[utoipa::path(
    post,
    path = "/api/v2/groups",
    tag = "groups",
    request_body(content = crate::groups::GroupInput, content_type = "application/json"),
    responses((status = 201, body = crate::groups::GroupView, headers(("Location" = String)))),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn add_group(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiJson(input): ApiJson<crate::groups::GroupInput>,
) -> Result<Response, ApiError> {
    admin.require("manage_groups")?;
    let (data, mappings) = input.validate(None).map_err(ApiError::bad_request)?;
    admin.check_reach(
        group_home(&data)
            .as_deref()
            .map(|h| ("user_settings.home_dir", h)),
    )?;
    let row = state
        .store
        .add_group(data, mappings)
        .await
        .map_err(|e| match e {
            StoreError::AlreadyExists(_) => ApiError::new(
                ErrorCode::AlreadyExists,
                "a group with this name already exists",
            ),
            other => other.into(),
        })?;
    tracing::info!(
        admin = admin.0.username,
        group = row.data.name,
        "group added"
    );
    Ok(created(
        group_view(&state, &row).await?,
        &format!("/api/v2/groups/{}", row.data.name),
        None,
    ))
}

#[utoipa::path(
    put,
    path = "/api/v2/groups/{name}",
    tag = "groups",
    params(("name" = String, Path, description = "group name")),
    request_body(content = crate::groups::GroupInput, content_type = "application/json"),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn update_group(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<crate::groups::GroupInput>,
) -> Result<Json<Message>, ApiError> {
    admin.require("manage_groups")?;
    let existing = state.store.group(name.clone()).await?;
    let (data, mappings) = input
        .validate(Some(&existing))
        .map_err(ApiError::bad_request)?;
    admin.check_reach(
        group_home(&data)
            .as_deref()
            .map(|h| ("user_settings.home_dir", h)),
    )?;
    state
        .store
        .update_group(existing.id, data, mappings)
        .await?;
    tracing::info!(admin = admin.0.username, group = name, "group updated");
    Ok(msg("Group updated"))
}

#[utoipa::path(
    delete,
    path = "/api/v2/groups/{name}",
    tag = "groups",
    params(("name" = String, Path, description = "group name")),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn delete_group(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Message>, ApiError> {
    admin.require("manage_groups")?;
    state.store.delete_group(name.clone()).await?;
    tracing::info!(admin = admin.0.username, group = name, "group deleted");
    Ok(msg("Group deleted"))
}

#[utoipa::path(
    get,
    path = "/api/v2/folders",
    tag = "folders",
    params(ListParams),
    responses((status = 200, body = [FolderView])),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn list_folders(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<FolderView>>, ApiError> {
    admin.require("manage_folders")?;
    let (offset, limit, order) = query(params)?.parse()?;
    let rows = state.store.folders(offset, limit, order).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let users = state.store.folder_users(row.id).await?;
        out.push(FolderView::new(row, users).redacted());
    }
    Ok(Json(out))
}

#[utoipa::path(
    get,
    path = "/api/v2/folders/{name}",
    tag = "folders",
    params(("name" = String, Path, description = "folder name")),
    responses((status = 200, body = FolderView)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn get_folder(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<FolderView>, ApiError> {
    admin.require("manage_folders")?;
    let row = state.store.folder(name).await?;
    let users = state.store.folder_users(row.id).await?;
    Ok(Json(FolderView::new(&row, users).redacted()))
}

#[utoipa::path(
    post,
    path = "/api/v2/folders",
    tag = "folders",
    request_body(content = FolderInput, content_type = "application/json"),
    responses((status = 201, body = FolderView, headers(("Location" = String)))),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn add_folder(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiJson(input): ApiJson<FolderInput>,
) -> Result<Response, ApiError> {
    admin.require("manage_folders")?;
    let data = input.validate(None).map_err(ApiError::bad_request)?;
    admin.check_reach([("mapped_path", data.path.as_str())])?;
    let row = state.store.add_folder(data).await.map_err(|e| match e {
        StoreError::AlreadyExists(_) => ApiError::new(
            ErrorCode::AlreadyExists,
            "a folder with this name already exists",
        ),
        other => other.into(),
    })?;
    tracing::info!(
        admin = admin.0.username,
        folder = row.data.name,
        "folder added"
    );
    Ok(created(
        FolderView::new(&row, Vec::new()).redacted(),
        &format!("/api/v2/folders/{}", row.data.name),
        None,
    ))
}

#[utoipa::path(
    put,
    path = "/api/v2/folders/{name}",
    tag = "folders",
    params(("name" = String, Path, description = "folder name")),
    request_body(content = FolderInput, content_type = "application/json"),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn update_folder(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<FolderInput>,
) -> Result<Json<Message>, ApiError> {
    admin.require("manage_folders")?;
    let existing = state.store.folder(name.clone()).await?;
    let data = input
        .validate(Some(&existing))
        .map_err(ApiError::bad_request)?;
    admin.check_reach([("mapped_path", data.path.as_str())])?;
    state
        .store
        .update_folder(existing.id, data.description, data.path, data.filesystem)
        .await?;
    tracing::info!(admin = admin.0.username, folder = name, "folder updated");
    Ok(msg("Folder updated"))
}

#[utoipa::path(
    delete,
    path = "/api/v2/folders/{name}",
    tag = "folders",
    params(("name" = String, Path, description = "folder name")),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn delete_folder(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Message>, ApiError> {
    admin.require("manage_folders")?;
    state.store.delete_folder(name.clone()).await?;
    tracing::info!(admin = admin.0.username, folder = name, "folder deleted");
    Ok(msg("Folder deleted"))
}

#[utoipa::path(
    get,
    path = "/api/v2/connections",
    tag = "connections",
    responses((status = 200, body = [ConnectionView])),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn list_connections(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    admin.require("view_conns")?;
    let out = state
        .fleet
        .connections()
        .into_iter()
        .map(|c| {
            let active_transfers = c
                .status
                .active_transfers
                .iter()
                .map(|t| TransferView {
                    operation_type: t.operation_type.clone(),
                    path: t.path.clone(),
                    start_time: t.start_time_ms,
                    size: t.size,
                })
                .collect();
            ConnectionView {
                username: c.opened.username.clone(),
                connection_id: c.opened.connection_id.clone(),
                client_version: c.opened.client_version.clone(),
                remote_address: c.opened.remote_address.clone(),
                connection_time: c.opened.connection_time_ms,
                last_activity: c.status.last_activity_ms,
                protocol: c.opened.protocol.clone(),
                active_transfers,
                node: c.edge_id.clone(),
            }
        })
        .collect();
    Ok(Json(out))
}

#[utoipa::path(
    delete,
    path = "/api/v2/connections/{connection_id}",
    tag = "connections",
    params(("connection_id" = String, Path, description = "connection id")),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn close_connection(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(connection_id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    admin.require("close_conns")?;
    if state.fleet.disconnect(&connection_id) {
        tracing::info!(
            admin = admin.0.username,
            connection_id,
            "connection close requested"
        );
        Ok(msg("Connection closed"))
    } else {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("connection {connection_id:?} not found"),
        ))
    }
}

#[utoipa::path(
    get,
    path = "/api/v2/admins",
    tag = "admins",
    params(ListParams),
    responses((status = 200, body = [crate::admins::AdminView])),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn list_admins(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<crate::admins::AdminView>>, ApiError> {
    admin.require("*")?;
    let (offset, limit, order) = query(params)?.parse()?;
    let rows = state.store.admins(offset, limit, order).await?;
    Ok(Json(
        rows.iter()
            .map(|r| crate::admins::AdminView::from(r).redacted())
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v2/admins/{username}",
    tag = "admins",
    params(("username" = String, Path, description = "admin name")),
    responses((status = 200, body = crate::admins::AdminView)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn get_admin(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<crate::admins::AdminView>, ApiError> {
    admin.require("*")?;
    let row = state.store.admin(username).await?;
    Ok(Json(crate::admins::AdminView::from(&row).redacted()))
}

#[utoipa::path(
    post,
    path = "/api/v2/admins",
    tag = "admins",
    request_body(content = crate::admins::AdminInput, content_type = "application/json"),
    responses((status = 201, body = crate::admins::AdminView, headers(("Location" = String)))),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn add_admin(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiJson(input): ApiJson<crate::admins::AdminInput>,
) -> Result<Response, ApiError> {
    admin.require("*")?;
    let valid = input.validate(None).map_err(ApiError::bad_request)?;
    let data = valid.into_data().await.map_err(ApiError::bad_request)?;
    let username = data.username.clone();
    state.store.add_admin(data).await.map_err(|e| match e {
        StoreError::AlreadyExists(_) => ApiError::new(
            ErrorCode::AlreadyExists,
            "an admin with this username already exists",
        ),
        other => other.into(),
    })?;
    tracing::info!(admin = admin.0.username, username, "admin added");
    let row = state.store.admin(username.clone()).await?;
    Ok(created(
        crate::admins::AdminView::from(&row).redacted(),
        &format!("/api/v2/admins/{username}"),
        None,
    ))
}

#[utoipa::path(
    put,
    path = "/api/v2/admins/{username}",
    tag = "admins",
    params(("username" = String, Path, description = "admin name")),
    request_body(content = crate::admins::AdminInput, content_type = "application/json"),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn update_admin(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(username): Path<String>,
    ApiJson(input): ApiJson<crate::admins::AdminInput>,
) -> Result<Json<Message>, ApiError> {
    admin.require("*")?;
    if !admin.0.api_key.is_empty() && username == admin.0.username {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "updating the admin impersonated with an API key is not allowed",
        ));
    }
    let existing = state.store.admin(username.clone()).await?;
    let valid = input
        .validate(Some(&existing))
        .map_err(ApiError::bad_request)?;
    if username == admin.0.username
        && (valid.data.permissions != existing.data.permissions
            || valid.data.status != existing.data.status)
    {
        return Err(ApiError::bad_request(
            "you cannot change your own permissions or status",
        ));
    }
    let data = valid.into_data().await.map_err(ApiError::bad_request)?;
    state.store.update_admin(existing.id, data).await?;
    tracing::info!(admin = admin.0.username, username, "admin updated");
    Ok(msg("Admin updated"))
}

#[utoipa::path(
    delete,
    path = "/api/v2/admins/{username}",
    tag = "admins",
    params(("username" = String, Path, description = "admin name")),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn delete_admin(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<Json<Message>, ApiError> {
    admin.require("*")?;
    if username == admin.0.username {
        return Err(ApiError::bad_request("you cannot delete yourself"));
    }
    state.store.delete_admin(username.clone()).await?;
    tracing::info!(admin = admin.0.username, username, "admin deleted");
    Ok(msg("Admin deleted"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct ChangePassword {
    current_password: String,
    #[schema(min_length = 1)]
    new_password: String,
}

/// `PUT /api/v2/admin/changepwd`: the calling admin changes their password.
#[utoipa::path(
    put,
    path = "/api/v2/admin/changepwd",
    tag = "admins",
    request_body(content = ChangePassword, content_type = "application/json"),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []))
)]
async fn change_password(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiJson(body): ApiJson<ChangePassword>,
) -> Result<Json<Message>, ApiError> {
    admin.forbid_api_key()?;
    if body.new_password.is_empty() {
        return Err(ApiError::bad_request("the new password cannot be empty"));
    }
    let mut row = state.store.admin(admin.0.username.clone()).await?;
    if !crate::passwords::verify(body.current_password, row.data.password.clone()).await? {
        return Err(ApiError::bad_request("the current password does not match"));
    }
    row.data.password = crate::passwords::hash(body.new_password)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
    row.data.updated_at = now_ms();
    state.store.update_admin(row.id, row.data).await?;
    tracing::info!(admin = admin.0.username, "admin password changed");
    Ok(msg("Password updated"))
}

/// How quota usage is changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum UsageMode {
    Reset,
    Add,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UsageParams {
    /// `reset` (default) sets the counters, `add` adds to them.
    #[param(value_type = Option<UsageMode>)]
    mode: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct UsageBody {
    #[serde(default)]
    used_quota_size: i64,
    #[serde(default)]
    used_quota_files: i64,
}

/// `mode=reset` (the default, as SFTPGo) sets the counters; `mode=add` adds.
fn usage_mode(
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
    body: &UsageBody,
) -> Result<bool, ApiError> {
    let reset = match query(params)?.mode.as_deref() {
        None | Some("reset") => true,
        Some("add") => false,
        Some(m) => {
            return Err(ApiError::bad_request(format!(
                "invalid mode {m:?}: use reset or add"
            )));
        }
    };
    if reset && (body.used_quota_size < 0 || body.used_quota_files < 0) {
        return Err(ApiError::bad_request(
            "used_quota_size and used_quota_files must not be negative",
        ));
    }
    Ok(reset)
}

#[utoipa::path(
    put,
    path = "/api/v2/quotas/users/{username}/usage",
    tag = "quota",
    params(("username" = String, Path, description = "user name"), UsageParams),
    request_body(content = UsageBody, content_type = "application/json"),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn user_quota_usage(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(username): Path<String>,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
    ApiJson(body): ApiJson<UsageBody>,
) -> Result<Json<Message>, ApiError> {
    admin.require("quota_scans")?;
    let reset = usage_mode(params, &body)?;
    crate::quota::admin_usage(
        &state,
        username.clone(),
        String::new(),
        body.used_quota_size,
        body.used_quota_files,
        reset,
    )
    .await?;
    tracing::info!(
        admin = admin.0.username,
        username,
        reset,
        "user quota usage updated"
    );
    Ok(msg("Quota updated"))
}

#[utoipa::path(
    put,
    path = "/api/v2/quotas/folders/{name}/usage",
    tag = "quota",
    params(("name" = String, Path, description = "folder name"), UsageParams),
    request_body(content = UsageBody, content_type = "application/json"),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn folder_quota_usage(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(name): Path<String>,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
    ApiJson(body): ApiJson<UsageBody>,
) -> Result<Json<Message>, ApiError> {
    admin.require("quota_scans")?;
    let reset = usage_mode(params, &body)?;
    crate::quota::admin_usage(
        &state,
        String::new(),
        name.clone(),
        body.used_quota_size,
        body.used_quota_files,
        reset,
    )
    .await?;
    tracing::info!(
        admin = admin.0.username,
        folder = name,
        reset,
        "folder quota usage updated"
    );
    Ok(msg("Quota updated"))
}

fn scan_reply(r: Result<(), crate::quota::ScanError>) -> Result<Response, ApiError> {
    use crate::quota::ScanError;
    match r {
        Ok(()) => Ok((StatusCode::ACCEPTED, msg("Scan started")).into_response()),
        Err(ScanError::Running) => Err(ApiError::new(
            ErrorCode::AlreadyExists,
            "a quota scan is already running",
        )),
        Err(ScanError::NoEdge) => Err(ApiError::new(
            ErrorCode::Unavailable,
            "no edge is attached to scan the storage",
        )),
        Err(ScanError::Storage(e)) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("the storage to scan cannot be used: {e}"),
        )),
        Err(ScanError::Store(e)) => Err(e.into()),
    }
}

#[utoipa::path(
    post,
    path = "/api/v2/quotas/users/{username}/scan",
    tag = "quota",
    params(("username" = String, Path, description = "user name")),
    responses((status = 202, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn scan_user(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    admin.require("quota_scans")?;
    scan_reply(crate::quota::start_scan(&state, username, String::new()).await)
}

#[utoipa::path(
    post,
    path = "/api/v2/quotas/folders/{name}/scan",
    tag = "quota",
    params(("name" = String, Path, description = "folder name")),
    responses((status = 202, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn scan_folder(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    admin.require("quota_scans")?;
    scan_reply(crate::quota::start_scan(&state, String::new(), name).await)
}

#[utoipa::path(
    get,
    path = "/api/v2/quotas/users/scans",
    tag = "quota",
    responses((status = 200, body = [UserScan])),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn user_scans(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<Json<Vec<UserScan>>, ApiError> {
    admin.require("quota_scans")?;
    let list: Vec<UserScan> = crate::quota::scans(&state, false)
        .into_iter()
        .map(|s| UserScan {
            username: s.username,
            start_time: s.start_time_ms,
        })
        .collect();
    Ok(Json(list))
}

#[utoipa::path(
    get,
    path = "/api/v2/quotas/folders/scans",
    tag = "quota",
    responses((status = 200, body = [FolderScan])),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn folder_scans(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<Json<Vec<FolderScan>>, ApiError> {
    admin.require("quota_scans")?;
    let list: Vec<FolderScan> = crate::quota::scans(&state, true)
        .into_iter()
        .map(|s| FolderScan {
            name: s.folder,
            start_time: s.start_time_ms,
        })
        .collect();
    Ok(Json(list))
}

/// `GET /api/v2/status`: the database and the attached edges.
#[utoipa::path(
    get,
    path = "/api/v2/status",
    tag = "maintenance",
    responses((status = 200, body = StatusReply)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn status(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<Json<StatusReply>, ApiError> {
    admin.require("view_status")?;
    let driver = state.store.backend().driver();
    let (active, error) = match state.store.ping().await {
        Ok(()) => (true, String::new()),
        Err(e) => (false, e.to_string()),
    };
    Ok(Json(StatusReply {
        data_provider: ProviderStatus {
            is_active: active,
            driver: driver.into(),
            error,
        },
        edges: state.fleet.edges(),
        defender: DefenderStatus {
            is_active: state.defender.enabled(),
        },
    }))
}

fn defender_view(h: &crate::defender::HostView) -> DefenderHostView {
    let ban_time = if h.ban_until_ms > 0 {
        chrono::DateTime::from_timestamp_millis(h.ban_until_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    } else {
        String::new()
    };
    DefenderHostView {
        id: crate::defender::host_id(h.ip),
        ip: h.ip.to_string(),
        score: h.score,
        ban_time,
    }
}

/// `GET /api/v2/defender/hosts`: addresses with a score or a ban.
#[utoipa::path(
    get,
    path = "/api/v2/defender/hosts",
    tag = "defender",
    responses((status = 200, body = [DefenderHostView])),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn defender_hosts(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<Json<Vec<DefenderHostView>>, ApiError> {
    admin.require("view_defender")?;
    let hosts: Vec<_> = state.defender.hosts().iter().map(defender_view).collect();
    Ok(Json(hosts))
}

fn defender_lookup(
    state: &AppState,
    id: &str,
) -> Result<(std::net::IpAddr, crate::defender::HostView), ApiError> {
    let missing = || ApiError::new(ErrorCode::NotFound, "host not found");
    let ip = crate::defender::ip_of_id(id).ok_or_else(missing)?;
    let host = state
        .defender
        .hosts()
        .into_iter()
        .find(|h| h.ip == ip.to_canonical())
        .ok_or_else(missing)?;
    Ok((ip, host))
}

/// `GET /api/v2/defender/hosts/{id}` (id: the address, hex encoded).
#[utoipa::path(
    get,
    path = "/api/v2/defender/hosts/{id}",
    tag = "defender",
    params(("id" = String, Path, description = "the address, hex encoded")),
    responses((status = 200, body = DefenderHostView)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn defender_host(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<DefenderHostView>, ApiError> {
    admin.require("view_defender")?;
    let (_, host) = defender_lookup(&state, &id)?;
    Ok(Json(defender_view(&host)))
}

/// `DELETE /api/v2/defender/hosts/{id}`: lifts the ban and forgets the
/// score, on every edge.
#[utoipa::path(
    delete,
    path = "/api/v2/defender/hosts/{id}",
    tag = "defender",
    params(("id" = String, Path, description = "the address, hex encoded")),
    responses((status = 200, body = Message)),
    security(("BearerAuth" = []), ("APIKeyAuth" = []))
)]
async fn defender_unban(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    admin.require("manage_defender")?;
    let (ip, _) = defender_lookup(&state, &id)?;
    state.defender.remove(ip);
    state.fleet.broadcast(&state.defender.bans_message());
    tracing::info!(admin = admin.0.username, %ip, "defender entry removed");
    Ok(msg("OK"))
}
