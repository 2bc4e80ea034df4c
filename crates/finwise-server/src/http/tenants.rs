//! The caller's tenants: list, create, rename, delete, and 0.4's sync queue.

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::IntoResponse,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::{
    error::{blocking, ApiError, ApiResult, Body, ErrorBody},
    extract::{caller, tenant_id, Caller, Member, Owner, TenantAccess, TenantRequest, UserQuery},
    AppState,
};
use crate::{auth, names, TenantId};

#[utoipa::path(get, path = "/tenants/", tag = "tenants", params(UserQuery), security(("bearer" = [])), responses((status = 200, description = "tenants the caller is a member of", body = Vec<auth::Tenant>), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub(super) async fn list_tenants(
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
pub(super) struct CreateTenantBody {
    #[schema(format = Uuid, pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    uuid: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    user_id: Option<String>,
}

#[utoipa::path(post, path = "/tenants/", tag = "tenants", request_body = CreateTenantBody, security(("bearer" = [])), responses((status = 200, description = "the tenant (idempotent for the same owner and id)", body = auth::Tenant), (status = 409, description = "the id belongs to another user's tenant", body = ErrorBody), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 422, description = "invalid body (FastAPI list form)", body = ErrorBody)))]
pub(super) async fn create_tenant(
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

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct RenameBody {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
}

#[utoipa::path(put, path = "/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "tenant id"), UserQuery), request_body = RenameBody, security(("bearer" = [])), responses((status = 200, body = auth::Tenant), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub(super) async fn rename_tenant(
    State(app): AppState,
    request: TenantRequest<Owner>,
    Body(b): Body<RenameBody>,
) -> ApiResult<Json<auth::Tenant>> {
    // an invalid name is 422 before membership is looked up (also for a caller who is no owner)
    let valid_name = || names::name(&b.name).map_err(|m| ApiError::unprocessable(&["body", "name"], m));
    let (access, name) = request.authorize_with(valid_name).await?;
    let auth = Arc::clone(&app.auth);
    let TenantAccess { tenant: id, user, .. } = access;
    let t = blocking(move || auth.rename_tenant(&id, &name, user.as_deref())).await?;
    t.map(Json).ok_or_else(|| ApiError::not_found("Tenant not found"))
}

#[utoipa::path(delete, path = "/tenants/{id}/complete", tag = "tenants", params(("id" = String, Path, description = "tenant id"), UserQuery), security(("bearer" = [])), responses((status = 200, description = "the deleted tenant; its database file is removed", body = auth::Tenant), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody)))]
pub(super) async fn delete_tenant(
    State(app): AppState,
    TenantAccess { tenant: id, .. }: TenantAccess<Owner>,
) -> ApiResult<Json<auth::Tenant>> {
    let auth = Arc::clone(&app.auth);
    let tid = id.clone();
    let tenant = blocking(move || auth.tenant(&tid)).await?.ok_or_else(|| ApiError::not_found("Tenant not found"))?;
    app.hub.publish(&id, crate::hub::Event::Close { code: 1001, reason: "tenant deleted" });
    if app.relay.is_some() {
        // and on every other server of the database
        let (store, event) = (Arc::clone(&app.store), format!("close:{id}"));
        if let Err(e) = blocking(move || Ok(crate::relay::announce(&*store, &event)?)).await {
            warn!(tenant = %id, error = ?e, "could not tell the other servers about the deleted tenant");
        }
    }
    app.writers.close(&id).await;
    // the tenant first, its data second: on a shared database a server still writing it then
    // finds neither (see storage::postgres::lock_head), never data without its tenant
    let auth = Arc::clone(&app.auth);
    let tid = id.clone();
    blocking(move || auth.delete_tenant(&tid)).await?;
    let store = Arc::clone(&app.store);
    let tid = id.clone();
    tokio::task::spawn_blocking(move || store.delete_tenant_data(&tid))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    info!(tenant = %id, "tenant deleted");
    Ok(Json(tenant))
}

#[utoipa::path(delete, path = "/tenants/{id}/sync-queue", tag = "tenants", params(("id" = String, Path, description = "tenant id"), UserQuery), security(("bearer" = [])), responses((status = 200, description = "0.4 compatibility: there is never a server-side queue", body = Object), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody)))]
pub(super) async fn clear_sync_queue(TenantAccess { tenant: id, .. }: TenantAccess<Member>) -> ApiResult<Json<Value>> {
    // This server keeps no queue: every entry is acked or refused when it arrives.
    Ok(Json(
        json!({ "message": "Sync queue is empty: this server answers every entry when it arrives", "tenant_id": id.as_str() }),
    ))
}
