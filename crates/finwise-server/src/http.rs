//! REST endpoints (0.4 shapes plus tokens and membership), the WebSocket upgrade, the web client.
//!
//! Errors map to responses in one place, [`ApiError`]: `{"detail": "…"}` with the status 0.4 used
//! (422 carries FastAPI's list form). Internal errors are logged and shown as a generic message.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ws::WebSocketUpgrade, ConnectInfo, FromRequest, Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
    Form, Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Value};
use tracing::{error, info, warn};

use crate::{
    auth::{self, AuthError},
    limits, loads, names,
    openapi::Accuracy,
    ws, App, TenantId,
};

type AppState = State<Arc<App>>;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: Value,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError { status, detail: Value::from(detail.into()), retry_after: None }
    }
    fn unauthorized(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }
    fn forbidden(detail: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }
    fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        error!(error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
    /// 429 with `Retry-After`.
    fn too_many(wait: limits::RetryAfter, detail: &str) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, detail);
        e.retry_after = Some(wait.secs());
        e
    }
    /// 503 with `Retry-After`: every password-hashing slot stayed busy.
    fn busy_hashing(wait: limits::RetryAfter) -> Self {
        let mut e =
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "the server is busy checking passwords; try again in a moment");
        e.retry_after = Some(wait.secs());
        e
    }
    fn unprocessable(loc: &[&str], msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: json!([{ "type": "value_error", "loc": loc, "msg": msg.into() }]),
            retry_after: None,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::EmailTaken | AuthError::NameTaken | AuthError::TenantNameExists(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
            }
            AuthError::TenantIdTaken | AuthError::LastOwner => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            AuthError::BadRefreshToken => ApiError::unauthorized(&e.to_string()),
            AuthError::Storage(_) | AuthError::Other(_) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(json!({ "detail": self.detail }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose rejections become 0.4's 422 form.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError::unprocessable(&["body"], e.body_text())),
        }
    }
}

/// Runs blocking auth-store work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, AuthError> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?.map_err(ApiError::from)
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A valid access token of this user.
    User(String),
    /// A 0.4 client without a token, allowed only with `--allow-legacy-clients`.
    Legacy,
}

impl Caller {
    /// The user a request acts for: the token's user (and any `user_id` given must match it),
    /// or in legacy mode whatever `user_id` the client names.
    fn acting_user(&self, user_id: Option<&str>) -> ApiResult<Option<String>> {
        match self {
            Caller::User(u) => match user_id {
                Some(given) if given != u => Err(ApiError::forbidden("user_id does not match the authenticated user")),
                _ => Ok(Some(u.clone())),
            },
            Caller::Legacy => Ok(user_id.map(str::to_owned)),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Authenticates a request: a token is always checked; without one, only legacy mode lets it in.
pub fn authenticate(app: &App, token: Option<&str>) -> ApiResult<Caller> {
    authenticate_until(app, token).map(|(who, _)| who)
}

/// [`authenticate`], and until when (ms since the epoch) the token stays valid: `verify`
/// accepts it while the current whole second is at most `exp` + leeway. `None` without a token.
fn authenticate_until(app: &App, token: Option<&str>) -> ApiResult<(Caller, Option<i64>)> {
    match token {
        Some(t) => app
            .keys
            .verify(t)
            .map(|c| (Caller::User(c.sub), Some((c.exp + crate::auth::TOKEN_LEEWAY_SECS + 1) * 1000)))
            .map_err(|_| ApiError::unauthorized("invalid or expired access token")),
        None if app.config.allow_legacy_clients => Ok((Caller::Legacy, None)),
        None => Err(ApiError::unauthorized("Not authenticated")),
    }
}

fn caller(app: &App, headers: &HeaderMap) -> ApiResult<Caller> {
    authenticate(app, bearer(headers))
}

pub fn router(app: Arc<App>) -> Router {
    let cors = crate::browser::cors_layer(&app.config);
    let r = Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/token", post(token))
        .route("/tenants", get(list_tenants).post(create_tenant))
        .route("/tenants/", get(list_tenants).post(create_tenant))
        .route("/tenants/{id}", put(rename_tenant))
        .route("/tenants/{id}/complete", delete(delete_tenant))
        .route("/tenants/{id}/sync-queue", delete(clear_sync_queue))
        .route("/tenants/{id}/members", get(list_members).post(add_member))
        .route("/tenants/{id}/members/{user_id}", delete(remove_member))
        .route("/ping", get(ping))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(api_docs_page))
        .route("/api/v1/websocket/health", get(websocket_health))
        .route("/api/v1/sync/data-status/{tenant_id}", get(data_status))
        .route("/ws_finwise/ws/{tenant_id}", get(ws_upgrade));
    let r = crate::web::mount(r, app.config.web_dir.as_deref());
    let with_ids = axum::middleware::from_fn_with_state(Arc::clone(&app), request_span);
    // a body must arrive whole within `http_body_timeout` (408); headers and idle connections
    // are timed in `net`
    let body_deadline = axum::middleware::from_fn_with_state(Arc::clone(&app), body_deadline);
    r.layer(body_deadline)
        .layer(cors)
        .layer(axum::middleware::from_fn(crate::browser::security_headers))
        .layer(with_ids)
        .with_state(app)
}

/// Largest request body (the JSON bodies of this API are small).
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Reads a request's body completely within `http_body_timeout` before the handler runs: a body
/// trickled in byte by byte gets 408 and the connection is closed, instead of holding a
/// connection and a task for as long as the client likes. Bodies over [`MAX_BODY_BYTES`] get 413.
async fn body_deadline(State(app): AppState, req: Request, next: axum::middleware::Next) -> Response {
    let h = req.headers();
    let declared = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared == Some(0) || (declared.is_none() && !h.contains_key(header::TRANSFER_ENCODING)) {
        return next.run(req).await;
    }
    let closing = |status: StatusCode, detail: &str| {
        let mut res = ApiError::new(status, detail).into_response();
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        res
    };
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return closing(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(app.config.http_body_timeout, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(_)) => closing(StatusCode::BAD_REQUEST, "the request body could not be read (too large or cut off)"),
        Err(_) => closing(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"),
    }
}

/// An error answer: `{"detail": "…"}` (422 carries FastAPI's list of errors instead).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// A message, or for 422 a list of `{type, loc, msg}`.
    detail: String,
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let comps = api.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The OpenAPI document of the REST API, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "FinWise Sync", description = "REST API of the FinWise Sync server (0.4 paths plus tokens and membership). The WebSocket protocol is in docs/PROTOCOL.md."),
    paths(
        register, login, token, list_tenants, create_tenant, rename_tenant, delete_tenant, clear_sync_queue,
        list_members, add_member, remove_member, ping, health, ready, metrics, websocket_health, data_status, ws_upgrade
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth, &Accuracy),
    tags(
        (name = "accounts", description = "registration, login, tokens"),
        (name = "tenants", description = "tenants (households) of the caller"),
        (name = "members", description = "sharing a tenant"),
        (name = "sync", description = "the WebSocket and the data status"),
        (name = "operations", description = "probes and metrics"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document as JSON.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

/// A self-contained page that renders `/openapi.json` (no script or style from elsewhere).
async fn api_docs_page() -> axum::response::Html<&'static str> {
    axum::response::Html(API_DOCS_PAGE)
}

/// The `/docs` page (its inline script and style are allowed by hash in its CSP).
pub const API_DOCS_PAGE: &str = include_str!("api_docs.html");

/// Gives every HTTP request a span with a request id (the client's `x-request-id` when it sends a
/// sane one, else a fresh one), so every log line of the request carries it; echoes the id in the
/// response and counts the response status.
async fn request_span(State(app): AppState, req: Request, next: axum::middleware::Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut res = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    app.metrics.http(res.status().as_u16());
    span.in_scope(|| tracing::debug!(status = res.status().as_u16(), "answered"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus / OpenMetrics text", content_type = "application/openmetrics-text")))]
async fn metrics(State(app): AppState) -> Response {
    app.metrics.open_tenants.set(app.writers.open_count() as i64);
    app.metrics.tcp_connections_open.set(app.conns.open() as i64);
    app.metrics.ws_buffered_bytes.set(app.conns.buffers().inbound() as i64);
    app.metrics.ws_outbound_bytes.set(app.conns.buffers().outbound() as i64);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render())
        .into_response()
}

#[derive(Deserialize, utoipa::ToSchema)]
struct RegisterBody {
    /// Shown to other members; no control or invisible characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF]*[^\s\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF][^\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF]*$"
    )]
    name: String,
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

#[utoipa::path(post, path = "/register", tag = "accounts", request_body = RegisterBody, responses((status = 201, description = "the new user", body = auth::User), (status = 400, description = "e-mail or name taken", body = ErrorBody), (status = 403, description = "registration disabled", body = ErrorBody), (status = 422, description = "invalid body (FastAPI list form)", body = ErrorBody)))]
async fn register(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Body(b): Body<RegisterBody>,
) -> ApiResult<impl IntoResponse> {
    if !app.config.registration_enabled {
        return Err(ApiError::forbidden("registration is disabled on this server"));
    }
    let ip = app.proxies.client_ip(addr.ip(), &headers);
    app.registrations
        .attempt(&ip.to_string())
        .map_err(|r| ApiError::too_many(r, "too many registrations from your address; try again later"))?;
    let email = names::email(&b.email).map_err(|m| ApiError::unprocessable(&["body", "email"], m))?;
    let name = names::name(&b.name).map_err(|m| ApiError::unprocessable(&["body", "name"], m))?;
    let chars = b.password.chars().count();
    if !(8..=1024).contains(&chars) {
        return Err(ApiError::unprocessable(&["body", "password"], "password must be 8 to 1024 characters"));
    }
    let auth = Arc::clone(&app.auth);
    let user = app
        .hash_gate
        .run(move || {
            let hash = auth::hash_password(&b.password);
            auth.create_user(&name, &email, &hash)
        })
        .await
        .map_err(ApiError::busy_hashing)??;
    info!(user = %user.uuid, "user registered");
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LoginBody {
    username_or_email: String,
    password: String,
}

/// Checks credentials with throttling per account and per address. Returns the user id.
async fn check_credentials(
    app: &Arc<App>,
    ip: std::net::IpAddr,
    login: &str,
    password: String,
) -> ApiResult<auth::User> {
    // An address with many failures is slowed (one attempt per `login_address_delay`), never
    // locked: the right password of an account that is not under attack still gets through.
    app.login_addresses
        .admit(ip)
        .map_err(|r| ApiError::too_many(r, "too many failed logins from your address; wait a moment and try again"))?;
    // Looked up as typed (NFC): the columns compare ASCII case-insensitively, and lower-casing
    // here would break names with upper-case non-ASCII letters ("Ölsen").
    let login: String = unicode_normalization::UnicodeNormalization::nfc(login.trim()).collect();
    let auth = Arc::clone(&app.auth);
    let key = login.clone();
    let found = blocking(move || auth.find_login(&key)).await?;
    // One key per account, whichever of name and e-mail is typed; unknown logins count too.
    let account_key = match &found {
        Some((user, _)) => user.uuid.clone(),
        None => format!("login:{}", login.to_lowercase()),
    };
    // Counted before the password is checked, atomically: however many guesses arrive at once,
    // at most `login_attempts_per_account` of them are ever evaluated in a window.
    app.login_accounts
        .attempt(&account_key)
        .map_err(|r| ApiError::too_many(r, "too many failed logins; try again later"))?;
    let auth = Arc::clone(&app.auth);
    let ok = app
        .hash_gate
        .run(move || -> Result<Option<auth::User>, AuthError> {
            let Some((user, hash)) = found else {
                // Same work as a real check, so timing does not reveal which accounts exist.
                static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let _ = auth::verify_password(&password, DUMMY.get_or_init(|| auth::hash_password("not a password")));
                return Ok(None);
            };
            let (ok, rehash) = auth::verify_password(&password, &hash);
            if ok && rehash {
                auth.set_password_hash(&user.uuid, &auth::hash_password(&password))?;
            }
            Ok(ok.then_some(user))
        })
        .await
        .map_err(ApiError::busy_hashing)??;
    match ok {
        Some(user) => {
            app.login_accounts.clear(&account_key);
            Ok(user)
        }
        None => {
            app.login_addresses.fail(ip);
            warn!(address = %ip, "failed login");
            Err(ApiError::unauthorized("Incorrect username or password"))
        }
    }
}

/// A fresh access token and a refresh token of `family` (a new family at login).
async fn token_pair(app: &Arc<App>, user_id: &str, family: Option<String>) -> ApiResult<Value> {
    let auth = Arc::clone(&app.auth);
    let uid = user_id.to_owned();
    let ttl = app.keys.refresh_ttl;
    let refresh = blocking(move || {
        let family = family.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        auth.issue_refresh(&uid, &family, ttl)
    })
    .await?;
    Ok(json!({
        "access_token": app.keys.issue(user_id),
        "token_type": "bearer",
        "expires_in": app.keys.access_ttl.as_secs(),
        "refresh_token": refresh,
    }))
}

#[utoipa::path(post, path = "/login", tag = "accounts", request_body = LoginBody, responses((status = 200, description = "the user with `access_token`, `refresh_token`, `token_type`, `expires_in`", body = Object), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 429, description = "too many failed logins (Retry-After)", body = ErrorBody)))]
async fn login(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Body(b): Body<LoginBody>,
) -> ApiResult<Json<Value>> {
    let ip = app.proxies.client_ip(addr.ip(), &headers);
    let user = check_credentials(&app, ip, &b.username_or_email, b.password).await?;
    let mut body = serde_json::to_value(&user).map_err(ApiError::internal)?;
    let tokens = token_pair(&app, &user.uuid, None).await?;
    if let (Some(o), Value::Object(t)) = (body.as_object_mut(), tokens) {
        o.extend(t);
    }
    Ok(Json(body))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct TokenForm {
    #[schema(pattern = "^(password|refresh_token)$")]
    grant_type: String,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

#[utoipa::path(post, path = "/token", tag = "accounts", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded", description = "grant_type `password` (username, password) or `refresh_token` (refresh_token; rotated, a reused one revokes its family)"), responses((status = 200, description = "access_token, refresh_token, token_type, expires_in", body = Object), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 422, description = "invalid body (FastAPI list form)", body = ErrorBody)))]
async fn token(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> ApiResult<Json<Value>> {
    let Form(f) = form.map_err(|e| ApiError::unprocessable(&["body"], e.body_text()))?;
    match f.grant_type.as_str() {
        "password" => {
            let (Some(u), Some(p)) = (f.username, f.password) else {
                return Err(ApiError::unprocessable(&["body", "username"], "username and password are required"));
            };
            let user = check_credentials(&app, app.proxies.client_ip(addr.ip(), &headers), &u, p).await?;
            Ok(Json(token_pair(&app, &user.uuid, None).await?))
        }
        "refresh_token" => {
            let Some(rt) = f.refresh_token else {
                return Err(ApiError::unprocessable(&["body", "refresh_token"], "refresh_token is required"));
            };
            let auth = Arc::clone(&app.auth);
            let (user, family) = blocking(move || auth.use_refresh(&rt)).await?;
            Ok(Json(token_pair(&app, &user, Some(family)).await?))
        }
        other => Err(ApiError::new(StatusCode::BAD_REQUEST, format!("unsupported grant_type '{other}'"))),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
struct UserQuery {
    user_id: Option<String>,
}

#[utoipa::path(get, path = "/tenants/", tag = "tenants", params(UserQuery), security(("bearer" = [])), responses((status = 200, description = "tenants the caller is a member of", body = Vec<auth::Tenant>), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
async fn list_tenants(
    State(app): AppState,
    headers: HeaderMap,
    Query(q): Query<UserQuery>,
) -> ApiResult<impl IntoResponse> {
    let who = caller(&app, &headers)?;
    let user = who.acting_user(q.user_id.as_deref())?;
    let legacy = matches!(who, Caller::Legacy);
    let auth = Arc::clone(&app.auth);
    let tenants = blocking(move || {
        if let Some(u) = &user {
            if auth.user(u)?.is_none() {
                return Ok(None);
            }
        }
        auth.tenants(user.as_deref(), legacy).map(Some)
    })
    .await?;
    match tenants {
        Some(t) => Ok(Json(t)),
        None => Err(ApiError::not_found(format!("User with id {} not found", q.user_id.unwrap_or_default()))),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
struct CreateTenantBody {
    #[schema(format = Uuid, pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    uuid: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF]*[^\s\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF][^\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF]*$"
    )]
    name: String,
    user_id: Option<String>,
}

fn tenant_id(s: &str) -> ApiResult<TenantId> {
    TenantId::parse(s)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "tenant id must be a canonical lowercase UUID"))
}

#[utoipa::path(post, path = "/tenants/", tag = "tenants", request_body = CreateTenantBody, security(("bearer" = [])), responses((status = 200, description = "the tenant (idempotent for the same owner and id)", body = auth::Tenant), (status = 409, description = "the id belongs to another user's tenant", body = ErrorBody), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 422, description = "invalid body (FastAPI list form)", body = ErrorBody)))]
async fn create_tenant(
    State(app): AppState,
    headers: HeaderMap,
    Body(b): Body<CreateTenantBody>,
) -> ApiResult<Json<auth::Tenant>> {
    let who = caller(&app, &headers)?;
    let user = who
        .acting_user(b.user_id.as_deref())?
        .ok_or_else(|| ApiError::unprocessable(&["body", "user_id"], "Field required"))?;
    let id = match &b.uuid {
        Some(u) => tenant_id(u)?,
        None => TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("a fresh v4 uuid is canonical"),
    };
    let name = names::name(&b.name).map_err(|m| ApiError::unprocessable(&["body", "name"], m))?;
    let legacy = matches!(who, Caller::Legacy);
    let auth = Arc::clone(&app.auth);
    let tid = id.clone();
    let tenant = blocking(move || {
        if auth.user(&user)?.is_none() {
            return Ok(None);
        }
        auth.create_tenant(&tid, &name, &user, legacy).map(Some)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("User not found"))?;
    // Create the tenant's database now, so the first sync does not pay for it.
    let (reply, done) = tokio::sync::oneshot::channel();
    if app.writers.submit(&id, crate::writer::Job::Open { reply }).is_ok() {
        if let Ok(Err(e)) = done.await {
            warn!(tenant = %id, error = %e, "tenant database could not be created yet");
        }
    }
    Ok(Json(tenant))
}

/// Requires that the caller may act on the tenant: a member (an owner if `owner`); a legacy
/// client only on a tenant legacy clients created or that came from 0.4, never on a tenant of
/// token users.
async fn require_member(app: &Arc<App>, who: &Caller, tenant: &TenantId, owner: bool) -> ApiResult<()> {
    let Caller::User(u) = who else {
        let auth = Arc::clone(&app.auth);
        let t = tenant.clone();
        return match blocking(move || auth.legacy_open(&t)).await? {
            true => Ok(()),
            false => Err(ApiError::unauthorized("Not authenticated")),
        };
    };
    let auth = Arc::clone(&app.auth);
    let (t, u) = (tenant.clone(), u.clone());
    let role = blocking(move || auth.role(&t, &u)).await?;
    match role.as_deref() {
        Some("owner") => Ok(()),
        Some(_) if !owner => Ok(()),
        Some(_) => Err(ApiError::forbidden("only an owner of the tenant may do this")),
        None => Err(ApiError::forbidden("not a member of this tenant")),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
struct RenameBody {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF]*[^\s\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF][^\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF]*$"
    )]
    name: String,
}

#[utoipa::path(put, path = "/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "tenant id"), UserQuery), request_body = RenameBody, security(("bearer" = [])), responses((status = 200, body = auth::Tenant), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
async fn rename_tenant(
    State(app): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<UserQuery>,
    Body(b): Body<RenameBody>,
) -> ApiResult<Json<auth::Tenant>> {
    let who = caller(&app, &headers)?;
    who.acting_user(q.user_id.as_deref())?;
    let id = tenant_id(&id)?;
    let name = names::name(&b.name).map_err(|m| ApiError::unprocessable(&["body", "name"], m))?;
    require_member(&app, &who, &id, true).await?;
    let auth = Arc::clone(&app.auth);
    let user = match &who {
        Caller::User(u) => Some(u.clone()),
        Caller::Legacy => None,
    };
    let t = blocking(move || auth.rename_tenant(&id, &name, user.as_deref())).await?;
    t.map(Json).ok_or_else(|| ApiError::not_found("Tenant not found"))
}

#[utoipa::path(delete, path = "/tenants/{id}/complete", tag = "tenants", params(("id" = String, Path, description = "tenant id"), UserQuery), security(("bearer" = [])), responses((status = 200, description = "the deleted tenant; its database file is removed", body = auth::Tenant), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
async fn delete_tenant(
    State(app): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<auth::Tenant>> {
    let who = caller(&app, &headers)?;
    who.acting_user(q.user_id.as_deref())?;
    let id = tenant_id(&id)?;
    require_member(&app, &who, &id, true).await?;
    let auth = Arc::clone(&app.auth);
    let tid = id.clone();
    let tenant = blocking(move || auth.tenant(&tid)).await?.ok_or_else(|| ApiError::not_found("Tenant not found"))?;
    app.hub.publish(&id, crate::hub::Event::Close { code: 1001, reason: "tenant deleted" });
    app.writers.close(&id).await;
    let path = app.data.tenant_db(&id);
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(ApiError::internal(e));
            }
        }
    }
    let auth = Arc::clone(&app.auth);
    let tid = id.clone();
    blocking(move || auth.delete_tenant(&tid)).await?;
    info!(tenant = %id, "tenant deleted");
    Ok(Json(tenant))
}

#[utoipa::path(delete, path = "/tenants/{id}/sync-queue", tag = "tenants", params(("id" = String, Path, description = "tenant id"), UserQuery), security(("bearer" = [])), responses((status = 200, description = "0.4 compatibility: there is never a server-side queue", body = Object), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody)))]
async fn clear_sync_queue(
    State(app): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<Value>> {
    let who = caller(&app, &headers)?;
    who.acting_user(q.user_id.as_deref())?;
    let id = tenant_id(&id)?;
    require_member(&app, &who, &id, false).await?;
    // This server keeps no queue: every entry is acked or refused when it arrives.
    Ok(Json(
        json!({ "message": "Sync queue is empty: this server answers every entry when it arrives", "tenant_id": id.as_str() }),
    ))
}

#[utoipa::path(get, path = "/tenants/{id}/members", tag = "members", params(("id" = String, Path, description = "tenant id")), security(("bearer" = [])), responses((status = 200, body = Vec<auth::Member>), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody)))]
async fn list_members(
    State(app): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<auth::Member>>> {
    let who = caller(&app, &headers)?;
    let Caller::User(_) = who else { return Err(ApiError::unauthorized("Not authenticated")) };
    let id = tenant_id(&id)?;
    require_member(&app, &who, &id, false).await?;
    let auth = Arc::clone(&app.auth);
    Ok(Json(blocking(move || auth.members(&id)).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct AddMemberBody {
    #[schema(format = Email)]
    email: String,
    /// `member` (default) or `owner`
    #[schema(pattern = "^(member|owner)$")]
    role: Option<String>,
}

#[utoipa::path(post, path = "/tenants/{id}/members", tag = "members", params(("id" = String, Path, description = "tenant id")), request_body = AddMemberBody, security(("bearer" = [])), responses((status = 200, description = "the members after the change", body = Vec<auth::Member>), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody), (status = 422, description = "invalid body (FastAPI list form), or no user with this e-mail", body = ErrorBody)))]
async fn add_member(
    State(app): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(b): Body<AddMemberBody>,
) -> ApiResult<Json<Vec<auth::Member>>> {
    let who = caller(&app, &headers)?;
    let Caller::User(_) = who else { return Err(ApiError::unauthorized("Not authenticated")) };
    let id = tenant_id(&id)?;
    require_member(&app, &who, &id, true).await?;
    let role = b.role.unwrap_or_else(|| "member".into());
    if role != "member" && role != "owner" {
        return Err(ApiError::unprocessable(&["body", "role"], "role must be 'member' or 'owner'"));
    }
    let auth = Arc::clone(&app.auth);
    let email = b.email.trim().to_lowercase();
    let members = blocking(move || {
        let Some(user) = auth.user_by_email(&email)? else { return Ok(None) };
        auth.add_member(&id, &user.uuid, &role)?;
        auth.members(&id).map(Some)
    })
    .await?;
    // 422, not 404: the tenant exists; what names nothing is the e-mail in the body
    members
        .map(Json)
        .ok_or_else(|| ApiError::unprocessable(&["body", "email"], "no user with this e-mail is registered here"))
}

#[utoipa::path(delete, path = "/tenants/{id}/members/{user_id}", tag = "members", params(("id" = String, Path, description = "tenant id"), ("user_id" = String, Path)), security(("bearer" = [])), responses((status = 204, description = "removed; the member's open sockets close with 1008"), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
async fn remove_member(
    State(app): AppState,
    headers: HeaderMap,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let who = caller(&app, &headers)?;
    let Caller::User(_) = who else { return Err(ApiError::unauthorized("Not authenticated")) };
    let id = tenant_id(&id)?;
    require_member(&app, &who, &id, true).await?;
    let auth = Arc::clone(&app.auth);
    let (tid, uid) = (id.clone(), user_id.clone());
    let removed = blocking(move || auth.remove_member(&tid, &uid)).await?;
    if removed {
        // Open sockets of the removed member close now, not at their next reconnect.
        app.hub.publish(&id, crate::hub::Event::Revoke { user_id });
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("not a member"))
    }
}

#[utoipa::path(get, path = "/ping", tag = "operations", responses((status = 200, description = "0.4 liveness answer", body = Object)))]
async fn ping() -> Json<Value> {
    Json(json!({ "status": "online", "message": "FinWise Backend is running" }))
}

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "the process answers", body = Object)))]
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, description = "data dir writable and migrations applied", body = Object), (status = 503, description = "not ready; the body says why", body = Object)))]
async fn ready(State(app): AppState) -> Response {
    let dir = app.data.tenants_dir();
    let probe = dir.join(".ready-probe");
    let writable = std::fs::write(&probe, b"ok").and_then(|_| std::fs::remove_file(&probe)).is_ok();
    let auth_db = app.data.auth_db();
    let migrations = tokio::task::spawn_blocking(move || auth_schema_version(&auth_db)).await.ok().flatten();
    let migrated = migrations == Some(auth::AUTH_SCHEMA_VERSION as i64);
    let ok = writable && migrated;
    let body = json!({
        "ready": ok,
        "data_dir_writable": writable,
        "migrations_applied": migrated,
        "auth_schema_version": migrations,
        "expected_auth_schema_version": auth::AUTH_SCHEMA_VERSION,
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `PRAGMA user_version` of the auth database, read on a fresh read-only connection.
fn auth_schema_version(path: &std::path::Path) -> Option<i64> {
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0)).ok()
}

#[utoipa::path(get, path = "/api/v1/websocket/health", tag = "operations", responses((status = 200, description = "0.4 connection statistics", body = Object)))]
async fn websocket_health(State(app): AppState) -> Json<Value> {
    let (connections, tenants) = app.hub.stats();
    Json(json!({
        "overall_health": "healthy",
        "connection_stats": { "total_connections": connections, "healthy_connections": connections, "tenant_count": tenants },
        "tenant_metrics": {},
        "heartbeat_status": "active",
        "open_tenant_databases": app.writers.open_count(),
        "timestamp": chrono::Utc::now().to_rfc3339(),
    }))
}

#[utoipa::path(get, path = "/api/v1/sync/data-status/{tenant_id}", tag = "sync", params(("tenant_id" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "`data_status_response`: 0.4 checksums plus the v2 tenant digest, seq and entity count", body = Object), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody)))]
async fn data_status(State(app): AppState, headers: HeaderMap, Path(tenant): Path<String>) -> ApiResult<Json<Value>> {
    let who = caller(&app, &headers)?;
    let id = tenant_id(&tenant)?;
    require_member(&app, &who, &id, false).await?;
    let path = app.data.tenant_db(&id);
    let status = tokio::task::spawn_blocking(move || loads::data_status(&path, &id, None))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(serde_json::to_value(status).map_err(ApiError::internal)?))
}

/// Initial read buffer of a WebSocket connection.
const WS_READ_BUFFER: usize = 4 * 1024;

#[derive(Deserialize, utoipa::IntoParams)]
struct WsQuery {
    token: Option<String>,
}

#[utoipa::path(get, path = "/ws_finwise/ws/{tenant_id}", tag = "sync", params(("tenant_id" = String, Path), WsQuery), security(("bearer" = [])), responses((status = 101, description = "WebSocket upgrade; the messages are described in docs/PROTOCOL.md"), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody)))]
async fn ws_upgrade(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    meter: Option<axum::Extension<Arc<crate::net::Meter>>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<WsQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let tenant = tenant_id(&tenant)?;
    let token = q.token.as_deref().or_else(|| bearer(&headers));
    // The socket lives as long as the token it was opened with (see `ws::run`).
    let (who, token_valid_until_ms) = authenticate_until(&app, token)?;
    if matches!(who, Caller::Legacy) && !crate::browser::websocket_origin_ok(&app.config, &headers) {
        // browsers apply no CORS to WebSockets: a tokenless socket from a foreign page is refused
        return Err(ApiError::forbidden("this origin may not open a socket without a token"));
    }
    require_member(&app, &who, &tenant, false).await?;
    let user = match &who {
        Caller::User(u) => Some(u.clone()),
        Caller::Legacy => None,
    };
    // one user (a legacy client: one address) holds at most `max_connections_per_user` sockets
    let key = match &user {
        Some(u) => format!("user:{u}"),
        None => format!("address:{}", app.proxies.client_ip(addr.ip(), &headers)),
    };
    let Some(place) = app.user_conns.take(&key, app.config.max_connections_per_user) else {
        let mut e =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many open connections for this user; close some first");
        e.retry_after = Some(5);
        return Err(e);
    };
    // checked after who is calling: a request without a token learns 401 first
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("not a WebSocket upgrade request: {}", e.body_text()))
    })?;
    let meter = meter.map(|axum::Extension(m)| m);
    if let Some(m) = &meter {
        m.upgraded();
    }
    let max = app.config.max_batch_bytes.max(app.config.max_message_bytes);
    Ok(upgrade
        .max_message_size(max)
        .max_frame_size(max)
        // tungstenite's default 128 KiB read buffer per socket would dominate the memory of idle
        // connections; it grows when a large message arrives.
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            ws::run(app, socket, ws::Session { tenant, user, token_valid_until_ms, meter, _place: place })
        }))
}
