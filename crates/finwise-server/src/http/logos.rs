//! Account and account-group logos (0.4: O6–O8), for members of the tenant only (0.4 checked
//! nothing). See [`crate::logos`].

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::{
    error::{blocking, ApiError, ApiResult, ErrorBody, Form},
    extract::{caller, require_member, tenant_id, SyncMember, TenantAccess},
    AppState,
};
use crate::logos;

/// Decodes running at once (each may take up to `logos::MAX_DECODE_BYTES` and a core).
static DECODES: Semaphore = Semaphore::const_new(2);

fn bad_image(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

#[utoipa::path(post, path = "/api/v1/logos/upload", tag = "logos", request_body(content = Vec<u8>, content_type = "multipart/form-data", description = "`file`: a PNG or JPEG image; `tenant_id` (or the X-Tenant-Id header); `entity_id`, `entity_type` (echoed)"), security(("bearer" = [])), responses((status = 201, description = "`logo_path` (`<tenant_id>/<uuid>.png`: the image resized to 128×128 PNG), `entity_id`, `entity_type`", body = Object), (status = 400, description = "not a PNG or JPEG image, an undecodable one, or one too large in pixels", body = ErrorBody), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member of the tenant", body = ErrorBody), (status = 413, description = "larger than max_logo_bytes", body = ErrorBody), (status = 422, description = "a part is missing, or the body is not a multipart form", body = ErrorBody)))]
pub(super) async fn upload(
    State(app): AppState,
    headers: HeaderMap,
    Form(mut form): Form,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = caller(&app, &headers)?;
    let (mut file, mut tenant, mut entity_id, mut entity_type) = (None, None, None, None);
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        ApiError::unprocessable(&["body"], format!("the form could not be read: {e}"))
    };
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        match field.name().unwrap_or_default() {
            "file" => file = Some(field.bytes().await.map_err(unreadable)?),
            "tenant_id" => tenant = Some(field.text().await.map_err(unreadable)?),
            "entity_id" => entity_id = Some(field.text().await.map_err(unreadable)?),
            "entity_type" => entity_type = Some(field.text().await.map_err(unreadable)?),
            _ => {}
        }
    }
    let header_tenant = headers.get("x-tenant-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let tenant = tenant
        .filter(|t| !t.is_empty())
        .or(header_tenant)
        .ok_or_else(|| ApiError::unprocessable(&["body", "tenant_id"], "Field required"))?;
    let tenant = tenant_id(&tenant)?;
    require_member(&app, &who, &tenant, false).await?;
    let file = file.ok_or_else(|| ApiError::unprocessable(&["body", "file"], "Field required"))?;
    let png = {
        let _turn = DECODES.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || logos::to_logo_png(&file))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| bad_image(e.to_string()))?
    };
    let (auth, t) = (Arc::clone(&app.auth), tenant.clone());
    let name = blocking(move || auth.put_logo(&t, &png)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"logo_path": format!("{tenant}/{name}"), "entity_id": entity_id, "entity_type": entity_type})),
    ))
}

/// The file name of a logo path, checked (400 for anything but `<uuid>.png|jpg|jpeg`).
fn logo_name(file: &str) -> ApiResult<&str> {
    if logos::valid_name(file) {
        Ok(file)
    } else {
        Err(ApiError::new(StatusCode::BAD_REQUEST, "Invalid logo path format. Expected 'tenant_id/<uuid>.png'."))
    }
}

#[utoipa::path(get, path = "/api/v1/logos/{tenant_id}/{file}", tag = "logos", params(("tenant_id" = String, Path, description = "tenant id"), ("file" = String, Path, description = "`<uuid>.png`")), security(("bearer" = [])), responses((status = 200, description = "the logo", content_type = "image/png", body = Vec<u8>), (status = 400, description = "not a logo path", body = ErrorBody), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member of the tenant", body = ErrorBody), (status = 404, description = "no such logo", body = ErrorBody)))]
pub(super) async fn get_logo(
    State(app): AppState,
    access: TenantAccess<SyncMember>,
    Path((_, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let name = logo_name(&file)?.to_owned();
    let (auth, t, n) = (Arc::clone(&app.auth), access.tenant, name.clone());
    let bytes = blocking(move || auth.logo(&t, &n)).await?.ok_or_else(|| ApiError::not_found("Logo not found"))?;
    let mut res = (StatusCode::OK, Bytes::from(bytes)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(logos::content_type(&name)));
    // a name is never reused: the bytes behind it never change
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    Ok(res)
}

#[utoipa::path(delete, path = "/api/v1/logos/{tenant_id}/{file}", tag = "logos", params(("tenant_id" = String, Path, description = "tenant id"), ("file" = String, Path, description = "`<uuid>.png`")), security(("bearer" = [])), responses((status = 204, description = "deleted"), (status = 400, description = "not a logo path", body = ErrorBody), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member of the tenant", body = ErrorBody), (status = 404, description = "no such logo", body = ErrorBody), (status = 409, description = "an account or account group still shows it", body = ErrorBody)))]
pub(super) async fn delete_logo(
    State(app): AppState,
    access: TenantAccess<SyncMember>,
    Path((_, file)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let name = logo_name(&file)?.to_owned();
    let tenant = access.tenant;
    let path = format!("{tenant}/{name}");
    let (store, t) = (Arc::clone(&app.store), tenant.clone());
    let users = tokio::task::spawn_blocking(move || logos::users_of(&*store, &t, &path))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    if !users.is_empty() {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("the logo is still used by {}", users.join(", "))));
    }
    let auth = Arc::clone(&app.auth);
    match blocking(move || auth.delete_logo(&tenant, &name)).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("Logo not found")),
    }
}
