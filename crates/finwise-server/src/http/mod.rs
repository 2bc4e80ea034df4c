//! REST endpoints (0.4 shapes plus tokens and membership), the WebSocket upgrade, the web client.
//!
//! Here: the router, the middleware every request passes (request ids, the body deadline, CORS
//! and security headers) and the OpenAPI document. The handlers live by resource: `accounts`,
//! `tenants`, `members`, `sync` (the WebSocket upgrade) and `ops` (probes, metrics, data status,
//! the docs). Errors map to responses in one place, [`ApiError`] (`error`): `{"detail": "…"}`
//! with the status 0.4 used (422 carries FastAPI's list form); internal errors are logged and
//! shown as a generic message. Who may act on a tenant is decided in one place too, the
//! [`TenantAccess`] extractor (`extract`).

mod accounts;
mod error;
mod extract;
mod logos;
mod members;
mod ops;
mod settings;
mod sync;
mod tenant_data;
mod tenants;

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
    Router,
};

pub use self::{
    error::{ApiError, Body, ErrorBody},
    extract::{
        authenticate, Caller, Member, Owner, Rule, SyncMember, TenantAccess, TenantRequest, TokenMember, TokenOwner,
    },
    ops::API_DOCS_PAGE,
};
use crate::{openapi::Accuracy, App};

type AppState = State<Arc<App>>;

pub fn router(app: Arc<App>) -> Router {
    let cors = crate::browser::cors_layer(&app.config);
    let r = Router::new()
        .route("/register", post(accounts::register))
        .route("/login", post(accounts::login))
        .route("/token", post(accounts::token))
        .route("/tenants", get(tenants::list_tenants).post(tenants::create_tenant))
        .route("/tenants/", get(tenants::list_tenants).post(tenants::create_tenant))
        .route("/tenants/{id}", put(tenants::rename_tenant))
        .route("/tenants/{id}/complete", delete(tenants::delete_tenant))
        .route("/tenants/{id}/sync-queue", delete(tenants::clear_sync_queue))
        .route("/tenants/{id}/members", get(members::list_members).post(members::add_member))
        .route("/tenants/{id}/members/{user_id}", delete(members::remove_member))
        .route("/ping", get(ops::ping))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi_json))
        .route("/docs", get(ops::api_docs_page))
        .route("/api/v1/websocket/health", get(ops::websocket_health))
        .route("/api/v1/sync/data-status/{tenant_id}", get(ops::data_status))
        .route(
            "/api/v1/logos/upload",
            post(logos::upload).layer(axum::extract::DefaultBodyLimit::max(app.config.max_logo_bytes)),
        )
        .route("/api/v1/logos/{tenant_id}/{file}", get(logos::get_logo).delete(logos::delete_logo))
        .route("/api/v1/tenant/export-database", get(tenant_data::export_database))
        .route(
            "/api/v1/tenant/import-database",
            post(tenant_data::import_database).layer(axum::extract::DefaultBodyLimit::max(app.config.max_import_bytes)),
        )
        .route("/api/v1/user/settings/{user_id}", get(settings::get_settings).put(settings::put_settings))
        .route("/api/v1/user/settings/{user_id}/reset", post(settings::reset_settings))
        .route("/ws_finwise/ws/{tenant_id}", get(sync::ws_upgrade))
        // an API path that names no endpoint is the API's 404 (JSON), not the web app's shell
        .route("/api", axum::routing::any(api_not_found))
        .route("/api/", axum::routing::any(api_not_found))
        .route("/api/{*rest}", axum::routing::any(api_not_found));
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

async fn api_not_found() -> ApiError {
    ApiError::not_found("Not Found")
}

/// Largest request body (the JSON bodies of this API are small); the tenant import takes up to
/// `max_import_bytes`.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

fn body_limit(app: &crate::App, path: &str) -> usize {
    match path {
        "/api/v1/tenant/import-database" => app.config.max_import_bytes,
        "/api/v1/logos/upload" => app.config.max_logo_bytes,
        _ => MAX_BODY_BYTES,
    }
}

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
    let limit = body_limit(&app, req.uri().path());
    if declared.is_some_and(|n| n > limit as u64) {
        return closing(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(app.config.http_body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(_)) => closing(StatusCode::BAD_REQUEST, "the request body could not be read (too large or cut off)"),
        Err(_) => closing(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"),
    }
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
        accounts::register,
        accounts::login,
        accounts::token,
        tenants::list_tenants,
        tenants::create_tenant,
        tenants::rename_tenant,
        tenants::delete_tenant,
        tenants::clear_sync_queue,
        members::list_members,
        members::add_member,
        members::remove_member,
        ops::ping,
        ops::health,
        ops::ready,
        ops::metrics,
        ops::websocket_health,
        ops::data_status,
        logos::upload,
        logos::get_logo,
        logos::delete_logo,
        tenant_data::export_database,
        tenant_data::import_database,
        settings::get_settings,
        settings::put_settings,
        settings::reset_settings,
        sync::ws_upgrade,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth, &Accuracy),
    tags(
        (name = "accounts", description = "registration, login, tokens"),
        (name = "tenants", description = "tenants (households) of the caller"),
        (name = "members", description = "sharing a tenant"),
        (name = "sync", description = "the WebSocket and the data status"),
        (name = "operations", description = "probes and metrics"),
        (name = "settings", description = "the 0.4 frontend's per-user settings"),
        (name = "logos", description = "account and account-group logos"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document as JSON.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

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
