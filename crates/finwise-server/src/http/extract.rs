//! Who is calling ([`Caller`], [`authenticate`]), and whether they may act on the tenant a
//! request names ([`TenantAccess`], under a [`Rule`] such as [`Owner`]).

use std::{marker::PhantomData, sync::Arc};

use axum::{
    extract::{FromRequestParts, Path, Query},
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::error::{blocking, ApiError, ApiResult};
use crate::{App, TenantId};

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
    pub(super) fn acting_user(&self, user_id: Option<&str>) -> ApiResult<Option<String>> {
        match self {
            Caller::User(u) => match user_id {
                Some(given) if given != u => Err(ApiError::forbidden("user_id does not match the authenticated user")),
                _ => Ok(Some(u.clone())),
            },
            Caller::Legacy => Ok(user_id.map(str::to_owned)),
        }
    }

    /// The token's user; `None` for a legacy client.
    pub fn user(&self) -> Option<&str> {
        match self {
            Caller::User(u) => Some(u),
            Caller::Legacy => None,
        }
    }
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Authenticates a request: a token is always checked; without one, only legacy mode lets it in.
pub fn authenticate(app: &App, token: Option<&str>) -> ApiResult<Caller> {
    authenticate_until(app, token).map(|(who, _)| who)
}

/// [`authenticate`], and until when (ms since the epoch) the token stays valid: `verify`
/// accepts it while the current whole second is at most `exp` + leeway. `None` without a token.
pub(super) fn authenticate_until(app: &App, token: Option<&str>) -> ApiResult<(Caller, Option<i64>)> {
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

/// The caller of a request, from its `Authorization: Bearer` header.
pub(super) fn caller(app: &App, headers: &HeaderMap) -> ApiResult<Caller> {
    authenticate(app, bearer(headers))
}

/// A tenant id as a client gives it: only the canonical form names a tenant (400 otherwise).
pub(super) fn tenant_id(s: &str) -> ApiResult<TenantId> {
    TenantId::parse(s)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "tenant id must be a canonical lowercase UUID"))
}

/// Requires that the caller may act on the tenant: a member (an owner if `owner`); a legacy
/// client only on a tenant legacy clients created or that came from 0.4, never on a tenant of
/// token users.
pub(super) async fn require_member(app: &Arc<App>, who: &Caller, tenant: &TenantId, owner: bool) -> ApiResult<()> {
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

#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct UserQuery {
    pub(super) user_id: Option<String>,
}

/// What a tenant route asks of its caller: the type parameter of [`TenantAccess`].
pub trait Rule: Send + Sync + 'static {
    /// Only an owner of the tenant may (else any member).
    const OWNER: bool;
    /// Only a caller with a token may: a legacy client gets 401 (else a legacy client may, on a
    /// tenant legacy clients may use).
    const TOKEN_ONLY: bool;
    /// The route reads 0.4's `user_id` query, which must name the token's user (403).
    const USER_QUERY: bool;
}

/// Declares the access rules: `name: owner, token only, reads user_id;`.
macro_rules! rules {
    ($($(#[$doc:meta])* $name:ident: $owner:expr, $token_only:expr, $user_query:expr;)*) => {$(
        $(#[$doc])*
        pub struct $name;
        impl Rule for $name {
            const OWNER: bool = $owner;
            const TOKEN_ONLY: bool = $token_only;
            const USER_QUERY: bool = $user_query;
        }
    )*};
}

rules! {
    /// A member; a legacy client on a legacy tenant; `user_id` must name the caller (0.4's tenant routes).
    Member: false, false, true;
    /// An owner; a legacy client on a legacy tenant; `user_id` must name the caller (0.4's tenant routes).
    Owner: true, false, true;
    /// A member with a token (the sharing routes).
    TokenMember: false, true, false;
    /// An owner with a token (the sharing routes).
    TokenOwner: true, true, false;
    /// A member; a legacy client on a legacy tenant; no `user_id` (the sync routes).
    SyncMember: false, false, false;
}

/// A caller allowed to act on the tenant the request's path names, under the rule `R`: as an
/// extractor it answers 400, 401 or 403 (see [`TenantRequest::authorize`]) before the handler
/// runs.
pub struct TenantAccess<R> {
    pub who: Caller,
    pub tenant: TenantId,
    /// The token's user; `None` for a legacy client.
    pub user: Option<String>,
    rule: PhantomData<R>,
}

impl<R: Rule> FromRequestParts<Arc<App>> for TenantAccess<R> {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let request = TenantRequest::<R>::from_request_parts(parts, app).await?;
        request.authorize().await.map_err(IntoResponse::into_response)
    }
}

/// A request's claim on a tenant, read but not checked yet: the tenant id as given (the first
/// path parameter), the bearer token and, if `R` reads it, 0.4's `user_id` query. Handlers that
/// take a body extract this instead of a [`TenantAccess`] and authorize after the body is read,
/// so a malformed body is still answered 422 before 401 or 403, as 0.4 did.
pub struct TenantRequest<R> {
    app: Arc<App>,
    token: Option<String>,
    id: String,
    user_id: Option<String>,
    rule: PhantomData<R>,
}

impl<R: Rule> FromRequestParts<Arc<App>> for TenantRequest<R> {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        // the rejections of `Path` and `Query`, unchanged (the handlers used to extract them)
        let Path(params) =
            Path::<Vec<(String, String)>>::from_request_parts(parts, app).await.map_err(IntoResponse::into_response)?;
        let id = params.into_iter().next().map(|(_, v)| v).unwrap_or_default();
        let user_id = match R::USER_QUERY {
            true => {
                let Query(q) =
                    Query::<UserQuery>::from_request_parts(parts, app).await.map_err(IntoResponse::into_response)?;
                q.user_id
            }
            false => None,
        };
        let token = bearer(&parts.headers).map(str::to_owned);
        Ok(TenantRequest { app: Arc::clone(app), token, id, user_id, rule: PhantomData })
    }
}

impl<R: Rule> TenantRequest<R> {
    /// Checks the claim in 0.4's order: who calls (401), the `user_id` it names (403), a token
    /// where `R` needs one (401), the tenant id (400), then membership: 403 for a non-member or
    /// a member where `R` needs an owner, 401 for a legacy client on a tenant of token users.
    pub async fn authorize(self) -> ApiResult<TenantAccess<R>> {
        self.authorize_with(|| Ok(())).await.map(|(access, ())| access)
    }

    /// [`Self::authorize`], with `check` (of the body, say) run after the checks that need no
    /// database and before membership is looked up; its error is answered in that place.
    pub async fn authorize_with<T>(self, check: impl FnOnce() -> ApiResult<T>) -> ApiResult<(TenantAccess<R>, T)> {
        let who = authenticate(&self.app, self.token.as_deref())?;
        if R::USER_QUERY {
            who.acting_user(self.user_id.as_deref())?;
        }
        if R::TOKEN_ONLY && matches!(who, Caller::Legacy) {
            return Err(ApiError::unauthorized("Not authenticated"));
        }
        let tenant = tenant_id(&self.id)?;
        let checked = check()?;
        require_member(&self.app, &who, &tenant, R::OWNER).await?;
        let user = who.user().map(str::to_owned);
        Ok((TenantAccess { who, tenant, user, rule: PhantomData }, checked))
    }
}
