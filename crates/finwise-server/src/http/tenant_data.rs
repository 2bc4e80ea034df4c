//! A tenant as a FinWise 0.4 file (O9, O10): export downloads the tenant in the 0.4 tenant
//! SQLite layout, which 0.4's "SQLite import" takes back (no lock-in); import takes such a file
//! (from 0.4 or from us) as a new tenant owned by the caller. The file is read by the same code
//! as `finwise import-legacy` ([`crate::legacy`]), never trusted: written to a temp file of ours,
//! opened read-only and immutable with its schema untrusted, refused as a whole (422) when it is
//! not a valid 0.4 tenant file.

use std::{path::PathBuf, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    error::{blocking, ApiError, ApiResult, ErrorBody, Form},
    extract::{caller, require_member, tenant_id, Caller},
    AppState,
};
use crate::{auth::AuthError, legacy, names, TenantId};

/// Imports and exports running at once (each holds a tenant file in memory and on disk).
static FILES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A temp file of ours (a household's books: readable by this user only), removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn create(what: &str, contents: &[u8]) -> std::io::Result<TempFile> {
        use std::io::Write;
        let f = TempFile(std::env::temp_dir().join(format!("finwise-{what}-{}.db", uuid::Uuid::new_v4().simple())));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&f.0)?.write_all(contents)?;
        Ok(f)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct ExportQuery {
    /// the tenant to export
    tenant_id: String,
}

/// `filename="<ascii>"; filename*=UTF-8''<percent-encoded>`, so any tenant name makes a header.
fn attachment(name: &str) -> HeaderValue {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_. ".contains(c) { c } else { '_' }).collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or(HeaderValue::from_static("attachment"))
}

#[utoipa::path(get, path = "/api/v1/tenant/export-database", tag = "tenants", params(ExportQuery), security(("bearer" = [])), responses((status = 200, description = "the tenant as a FinWise 0.4 tenant file (SQLite)", content_type = "application/octet-stream", body = Vec<u8>), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member of the tenant, or (for a token user) no such tenant", body = ErrorBody), (status = 404, description = "no such tenant (legacy clients)", body = ErrorBody)))]
pub(super) async fn export_database(
    State(app): AppState,
    headers: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let who = caller(&app, &headers)?;
    let id = tenant_id(&q.tenant_id)?;
    // a token user is told "not a member" for a tenant that does not exist too, so that the
    // answer does not reveal which tenant ids exist; a legacy client (no user) gets 404
    let user = matches!(who, Caller::User(_));
    if user {
        require_member(&app, &who, &id, false).await?;
    }
    let auth = Arc::clone(&app.auth);
    let tid = id.clone();
    let tenant = blocking(move || auth.tenant(&tid)).await?.ok_or_else(|| ApiError::not_found("Tenant not found"))?;
    if !user {
        require_member(&app, &who, &id, false).await?;
    }
    let store = Arc::clone(&app.store);
    let _turn = FILES.acquire().await.map_err(ApiError::internal)?;
    let bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
        // an empty file is an empty database: SQLite writes into the one made private here
        let file = TempFile::create("export", &[])?;
        legacy::export_tenant(&*store, &id, &file.0)?;
        Ok(std::fs::read(&file.0)?)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let stamp = chrono::Utc::now().format("%Y%m%d_%H%M%S");
    let mut res = (StatusCode::OK, Bytes::from(bytes)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_DISPOSITION, attachment(&format!("mandant_{}_{stamp}.sqlite", tenant.name)));
    Ok(res)
}

/// Who owns an imported tenant: the token's user (an `X-User-Id` given must be them); a legacy
/// client names the user with `X-User-Id`, or the tenant it works in with `X-Tenant-Id`.
async fn import_owner(app: &Arc<crate::App>, who: &Caller, headers: &HeaderMap) -> ApiResult<String> {
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let named = match (who, header("x-user-id")) {
        (_, Some(u)) => Some(u),
        // only a tenant legacy clients may use names its owner (never a token user's tenant)
        (Caller::Legacy, None) => match header("x-tenant-id").and_then(|t| TenantId::parse(&t)) {
            Some(t) => {
                let auth = Arc::clone(&app.auth);
                blocking(move || Ok(auth.legacy_open(&t)?.then(|| auth.tenant(&t)).transpose()?.flatten()))
                    .await?
                    .map(|t| t.user_id)
            }
            None => None,
        },
        (Caller::User(_), None) => None,
    };
    let user = who
        .acting_user(named.as_deref())?
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "name the owner with the X-User-Id header"))?;
    let auth = Arc::clone(&app.auth);
    let u = user.clone();
    match blocking(move || auth.user(&u)).await? {
        Some(_) => Ok(user),
        None => Err(ApiError::not_found("User not found")),
    }
}

fn refuse(msg: impl Into<String>) -> ApiError {
    ApiError::unprocessable(&["body", "database_file"], msg)
}

/// Checks and reads an uploaded file as a 0.4 tenant file; refuses it as a whole.
fn read_upload(bytes: &[u8]) -> ApiResult<legacy::TenantFile> {
    if !bytes.starts_with(b"SQLite format 3\0") {
        return Err(refuse("not a SQLite database file"));
    }
    let file = TempFile::create("import", bytes).map_err(ApiError::internal)?;
    // (the message never names our temp file)
    let conn = legacy::open_ro(&file.0).map_err(|_| refuse("not a readable SQLite database"))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| refuse(format!("the database is damaged: {e}")))?;
    if check != "ok" {
        return Err(refuse(format!("the database is damaged: {check}")));
    }
    let missing: Vec<&str> = legacy::REQUIRED_TABLES.into_iter().filter(|t| !legacy::has_table(&conn, t)).collect();
    if !missing.is_empty() {
        return Err(refuse(format!("not a FinWise 0.4 tenant file: no table {}", missing.join(", "))));
    }
    let read = legacy::read_tenant(&conn).map_err(|e| refuse(format!("{e:#}")))?;
    if !read.errors.is_empty() {
        let shown: Vec<&str> = read.errors.iter().take(10).map(String::as_str).collect();
        return Err(refuse(format!(
            "{} row(s) cannot be imported, nothing was: {}",
            read.errors.len(),
            shown.join("; ")
        )));
    }
    Ok(read)
}

#[utoipa::path(post, path = "/api/v1/tenant/import-database", tag = "tenants", request_body(content = Vec<u8>, content_type = "multipart/form-data", description = "`database_file`: a FinWise 0.4 tenant file (.sqlite or .db); `new_tenant_name`: the new tenant's name"), security(("bearer" = [])), responses((status = 200, description = "the new tenant: message, tenant_id, tenant_name, entities, warnings", body = Object), (status = 400, description = "the owner is not named (legacy clients)", body = ErrorBody), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 404, description = "the owner does not exist", body = ErrorBody), (status = 413, description = "the file is larger than max_import_bytes", body = ErrorBody), (status = 422, description = "not a valid 0.4 tenant file, an invalid name, or a body that is not a multipart form; nothing was imported", body = ErrorBody)))]
pub(super) async fn import_database(
    State(app): AppState,
    headers: HeaderMap,
    Form(mut form): Form,
) -> ApiResult<Json<Value>> {
    let who = caller(&app, &headers)?;
    let owner = import_owner(&app, &who, &headers).await?;
    let (mut file, mut name) = (None, None);
    while let Some(field) = form.next_field().await.map_err(|e| refuse(format!("the form could not be read: {e}")))? {
        match field.name() {
            Some("database_file") => {
                let ok_suffix = field.file_name().is_none_or(|n| {
                    let n = n.to_ascii_lowercase();
                    n.ends_with(".sqlite") || n.ends_with(".db")
                });
                if !ok_suffix {
                    return Err(refuse("only SQLite files (.sqlite or .db) are accepted"));
                }
                file = Some(field.bytes().await.map_err(|e| refuse(format!("the file could not be read: {e}")))?);
            }
            Some("new_tenant_name") => {
                name = Some(field.text().await.map_err(|e| {
                    ApiError::unprocessable(&["body", "new_tenant_name"], format!("could not be read: {e}"))
                })?)
            }
            _ => {}
        }
    }
    let file = file.ok_or_else(|| ApiError::unprocessable(&["body", "database_file"], "Field required"))?;
    let name = name.ok_or_else(|| ApiError::unprocessable(&["body", "new_tenant_name"], "Field required"))?;
    let name = names::name(&name).map_err(|m| ApiError::unprocessable(&["body", "new_tenant_name"], m))?;
    let _turn = FILES.acquire().await.map_err(ApiError::internal)?;
    let read = tokio::task::spawn_blocking(move || read_upload(&file)).await.map_err(ApiError::internal)??;

    let id = TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("a fresh v4 uuid is canonical");
    let (store, auth, tid, legacy_open) =
        (Arc::clone(&app.store), Arc::clone(&app.auth), id.clone(), matches!(who, Caller::Legacy));
    let entities = read.entities;
    let count = entities.len();
    blocking(move || {
        // the data first (nobody knows the new id yet), then the tenant that makes it visible;
        // if the tenant cannot be made, the data goes again
        let written = store.open_tenant(&tid).and_then(|mut db| legacy::write_entities(&mut *db, &entities));
        let created =
            written.map_err(AuthError::from).and_then(|_| auth.create_tenant(&tid, &name, &owner, legacy_open));
        if created.is_err() {
            let _ = store.delete_tenant_data(&tid);
        }
        created
    })
    .await
    .map(|t| {
        Json(json!({
            "message": "Mandant erfolgreich importiert",
            "tenant_id": t.uuid,
            "tenant_name": t.name,
            "entities": count,
            "warnings": read.warnings,
        }))
    })
}
