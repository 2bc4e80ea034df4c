//! The error policy: every failure of a handler is an [`ApiError`], answered as
//! `{"detail": "…"}` with the status 0.4 used (422 carries FastAPI's list form). Internal errors
//! are logged and shown as a generic message.

use axum::{
    extract::{FromRequest, Request},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::error;

use crate::{auth::AuthError, limits};

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
    pub(super) fn unauthorized(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }
    pub(super) fn forbidden(detail: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }
    pub(super) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    pub(super) fn internal(e: impl std::fmt::Display) -> Self {
        error!(error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
    /// The same error with a `Retry-After` of `secs` seconds.
    pub(super) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    /// 429 with `Retry-After`.
    pub(super) fn too_many(wait: limits::RetryAfter, detail: &str) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, detail).retry_after(wait.secs())
    }
    /// 503 with `Retry-After`: every password-hashing slot stayed busy.
    pub(super) fn busy_hashing(wait: limits::RetryAfter) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "the server is busy checking passwords; try again in a moment")
            .retry_after(wait.secs())
    }
    pub(super) fn unprocessable(loc: &[&str], msg: impl Into<String>) -> Self {
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

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// An error answer: `{"detail": "…"}` (422 carries FastAPI's list of errors instead).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// A message, or for 422 a list of `{type, loc, msg}`.
    detail: String,
}

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

/// A `multipart/form-data` body whose rejections (another content type, no boundary) become 0.4's
/// 422 form, like [`Body`], instead of axum's plain-text 400.
pub struct Form(pub axum::extract::Multipart);

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Multipart::from_request(req, state).await {
            Ok(m) => Ok(Form(m)),
            Err(e) => Err(ApiError::unprocessable(&["body"], e.body_text())),
        }
    }
}

/// Runs blocking auth-store work off the async runtime.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?.map_err(ApiError::from)
}
