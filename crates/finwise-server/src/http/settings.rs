//! The 0.4 frontend's per-user settings (O11–O13). A token user reads and writes only their own;
//! a legacy (tokenless) client any existing user's, as 0.4 allowed (docs/SECURITY.md).

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    Json,
};

use super::{
    error::{blocking, ApiError, ApiResult, Body, ErrorBody},
    extract::caller,
    AppState,
};
use crate::{
    auth::{AuthError, AuthStore},
    settings::{SettingsUpdate, UserSettings},
    App,
};

/// Runs `f` on the settings of the user the request may act for: the token's user, who must be
/// the one in the path (403 otherwise); for a legacy client the path's user, who must exist (404).
async fn for_user(
    app: &Arc<App>,
    headers: &HeaderMap,
    user_id: String,
    f: impl FnOnce(&AuthStore, &str) -> Result<UserSettings, AuthError> + Send + 'static,
) -> ApiResult<Json<UserSettings>> {
    let who = caller(app, headers)?;
    let user = who.acting_user(Some(&user_id))?.unwrap_or(user_id);
    let auth = Arc::clone(&app.auth);
    let settings = blocking(move || match auth.user(&user)? {
        Some(_) => f(&auth, &user).map(Some),
        None => Ok(None),
    })
    .await?;
    settings.map(Json).ok_or_else(|| ApiError::not_found("User not found"))
}

#[utoipa::path(get, path = "/api/v1/user/settings/{user_id}", tag = "settings", params(("user_id" = String, Path, description = "user id")), security(("bearer" = [])), responses((status = 200, description = "the user's settings (created with the defaults when there were none)", body = UserSettings), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "another user's settings", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody)))]
pub(super) async fn get_settings(
    State(app): AppState,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> ApiResult<Json<UserSettings>> {
    for_user(&app, &headers, user_id, |auth, user| auth.user_settings(user)).await
}

#[utoipa::path(put, path = "/api/v1/user/settings/{user_id}", tag = "settings", params(("user_id" = String, Path, description = "user id")), request_body = SettingsUpdate, security(("bearer" = [])), responses((status = 200, description = "the stored settings: the update's when it is newer than the stored ones, else the stored ones", body = UserSettings), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "another user's settings", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody), (status = 422, description = "invalid body (FastAPI list form)", body = ErrorBody)))]
pub(super) async fn put_settings(
    State(app): AppState,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    Body(update): Body<SettingsUpdate>,
) -> ApiResult<Json<UserSettings>> {
    update.validate().map_err(|(field, msg)| ApiError::unprocessable(&["body", field], &msg))?;
    for_user(&app, &headers, user_id, move |auth, user| auth.put_user_settings(user, &update)).await
}

#[utoipa::path(post, path = "/api/v1/user/settings/{user_id}/reset", tag = "settings", params(("user_id" = String, Path, description = "user id")), security(("bearer" = [])), responses((status = 200, description = "the defaults, stored anew", body = UserSettings), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "another user's settings", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody)))]
pub(super) async fn reset_settings(
    State(app): AppState,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> ApiResult<Json<UserSettings>> {
    for_user(&app, &headers, user_id, |auth, user| auth.reset_user_settings(user)).await
}
