//! Sharing a tenant: its members.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;

use super::{
    error::{blocking, ApiError, ApiResult, Body, ErrorBody},
    extract::{TenantAccess, TenantRequest, TokenMember, TokenOwner},
    AppState,
};
use crate::auth;

#[utoipa::path(get, path = "/tenants/{id}/members", tag = "members", params(("id" = String, Path, description = "tenant id")), security(("bearer" = [])), responses((status = 200, body = Vec<auth::Member>), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody)))]
pub(super) async fn list_members(
    State(app): AppState,
    TenantAccess { tenant: id, .. }: TenantAccess<TokenMember>,
) -> ApiResult<Json<Vec<auth::Member>>> {
    let auth = Arc::clone(&app.auth);
    Ok(Json(blocking(move || auth.members(&id)).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct AddMemberBody {
    #[schema(format = Email)]
    email: String,
    /// `member` (default) or `owner`
    #[schema(pattern = "^(member|owner)$")]
    role: Option<String>,
}

#[utoipa::path(post, path = "/tenants/{id}/members", tag = "members", params(("id" = String, Path, description = "tenant id")), request_body = AddMemberBody, security(("bearer" = [])), responses((status = 200, description = "the members after the change", body = Vec<auth::Member>), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody), (status = 422, description = "invalid body (FastAPI list form), or no user with this e-mail", body = ErrorBody)))]
pub(super) async fn add_member(
    State(app): AppState,
    request: TenantRequest<TokenOwner>,
    Body(b): Body<AddMemberBody>,
) -> ApiResult<Json<Vec<auth::Member>>> {
    let TenantAccess { tenant: id, .. } = request.authorize().await?;
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

#[utoipa::path(delete, path = "/tenants/{id}/members/{user_id}", tag = "members", params(("id" = String, Path, description = "tenant id"), ("user_id" = String, Path)), security(("bearer" = [])), responses((status = 204, description = "removed (or left); the member's open sockets close with 1008 `membership revoked`"), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member of the tenant, or a member removing someone else", body = ErrorBody), (status = 404, description = "not found", body = ErrorBody), (status = 409, description = "the tenant's last owner cannot leave or be removed", body = ErrorBody)))]
pub(super) async fn remove_member(
    State(app): AppState,
    TenantAccess { tenant: id, user, .. }: TenantAccess<TokenMember>,
    Path((_, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let auth = Arc::clone(&app.auth);
    let (tid, uid) = (id.clone(), user_id.clone());
    // any member may leave (remove themselves); only an owner removes others
    let leaving = user.as_deref() == Some(user_id.as_str());
    if !leaving {
        let (auth, tid) = (Arc::clone(&auth), tid.clone());
        let role = blocking(move || match user {
            Some(u) => auth.role(&tid, &u),
            None => Ok(None), // never: TokenMember admits token users only
        })
        .await?;
        if role.as_deref() != Some("owner") {
            return Err(ApiError::forbidden("only an owner can remove other members; a member can only leave"));
        }
    }
    let removed = blocking(move || auth.remove_member(&tid, &uid)).await?;
    if removed {
        // Open sockets of the removed member close now, not at their next reconnect.
        app.hub.publish(&id, crate::hub::Event::Revoke { user_id: user_id.clone() });
        if app.relay.is_some() {
            // and on every other server of the database (the removal itself has committed: a
            // failed announcement is logged, and the other servers' sockets end at their token's
            // expiry or next reconnect)
            let (store, event) = (Arc::clone(&app.store), format!("revoke:{id}:{user_id}"));
            if let Err(e) = blocking(move || Ok(crate::relay::announce(&*store, &event)?)).await {
                tracing::warn!(tenant = %id, error = ?e, "could not tell the other servers about a removed member");
            }
        }
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("not a member"))
    }
}
