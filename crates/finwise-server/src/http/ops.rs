//! Probes, metrics, the data status of a tenant, and the API's own documentation.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use super::{
    error::{ApiError, ApiResult, ErrorBody},
    extract::{SyncMember, TenantAccess},
    openapi_document, AppState,
};
use crate::loads;

#[utoipa::path(get, path = "/ping", tag = "operations", responses((status = 200, description = "0.4 liveness answer", body = Object)))]
pub(super) async fn ping() -> Json<Value> {
    Json(json!({ "status": "online", "message": "FinWise Backend is running" }))
}

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "the process answers", body = Object)))]
pub(super) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, description = "storage writable and migrations applied", body = Object), (status = 503, description = "not ready; the body says why", body = Object)))]
pub(super) async fn ready(State(app): AppState) -> Response {
    let store = std::sync::Arc::clone(&app.store);
    let r = tokio::task::spawn_blocking(move || store.readiness()).await;
    let Ok(r) = r else { return StatusCode::SERVICE_UNAVAILABLE.into_response() };
    let body = json!({
        "ready": r.ready,
        "storage": r.engine,
        "storage_writable": r.writable,
        "migrations_applied": r.schema_version == Some(r.expected_schema_version),
        "schema_version": r.schema_version,
        "expected_schema_version": r.expected_schema_version,
        "error": r.error,
    });
    let status = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus / OpenMetrics text", content_type = "application/openmetrics-text")))]
pub(super) async fn metrics(State(app): AppState) -> Response {
    app.metrics.open_tenants.set(app.writers.open_count() as i64);
    app.metrics.tcp_connections_open.set(app.conns.open() as i64);
    app.metrics.ws_buffered_bytes.set(app.conns.buffers().inbound() as i64);
    app.metrics.ws_outbound_bytes.set(app.conns.buffers().outbound() as i64);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render())
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/websocket/health", tag = "operations", responses((status = 200, description = "0.4 connection statistics", body = Object)))]
pub(super) async fn websocket_health(State(app): AppState) -> Json<Value> {
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
pub(super) async fn data_status(
    State(app): AppState,
    TenantAccess { tenant: id, .. }: TenantAccess<SyncMember>,
) -> ApiResult<Json<Value>> {
    let store = std::sync::Arc::clone(&app.store);
    let status = tokio::task::spawn_blocking(move || loads::data_status(&*store, &id, None))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(serde_json::to_value(status).map_err(ApiError::internal)?))
}

pub(super) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

/// A self-contained page that renders `/openapi.json` (no script or style from elsewhere).
pub(super) async fn api_docs_page() -> axum::response::Html<&'static str> {
    axum::response::Html(API_DOCS_PAGE)
}

/// The `/docs` page (its inline script and style are allowed by hash in its CSP).
pub const API_DOCS_PAGE: &str = include_str!("../api_docs.html");
