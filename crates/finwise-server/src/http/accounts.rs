//! Accounts: registration, login, tokens.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    Form, Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::{
    error::{blocking, ApiError, ApiResult, Body, ErrorBody},
    AppState,
};
use crate::{
    auth::{self, AuthError},
    names, App,
};

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct RegisterBody {
    /// Shown to other members; no control or invisible characters.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

#[utoipa::path(post, path = "/register", tag = "accounts", request_body = RegisterBody, responses((status = 201, description = "the new user", body = auth::User), (status = 400, description = "e-mail or name taken", body = ErrorBody), (status = 403, description = "registration disabled", body = ErrorBody), (status = 422, description = "invalid body (FastAPI list form)", body = ErrorBody)))]
pub(super) async fn register(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Body(b): Body<RegisterBody>,
) -> ApiResult<impl IntoResponse> {
    if !app.config.registration_enabled {
        return Err(ApiError::forbidden("registration is disabled on this server"));
    }
    let ip = app.proxies.client_ip(addr.ip(), &headers);
    // off the runtime: on PostgreSQL the counter is a row of the shared database
    let a = Arc::clone(&app);
    blocking(move || Ok(a.registrations.attempt(&ip.to_string())))
        .await?
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
pub(super) struct LoginBody {
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
    // (off the runtime: on PostgreSQL the counter is a row of the shared database)
    let (a, k) = (Arc::clone(app), account_key.clone());
    blocking(move || Ok(a.login_accounts.attempt(&k)))
        .await?
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
            let a = Arc::clone(app);
            blocking(move || {
                a.login_accounts.clear(&account_key);
                Ok(())
            })
            .await?;
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
pub(super) async fn login(
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
pub(super) struct TokenForm {
    #[schema(pattern = "^(password|refresh_token)$")]
    grant_type: String,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

#[utoipa::path(post, path = "/token", tag = "accounts", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded", description = "grant_type `password` (username, password) or `refresh_token` (refresh_token; rotated, a reused one revokes its family)"), responses((status = 200, description = "access_token, refresh_token, token_type, expires_in", body = Object), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 422, description = "invalid body (FastAPI list form)", body = ErrorBody)))]
pub(super) async fn token(
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
