//! The WebSocket upgrade of the sync protocol (the connection itself runs in [`crate::ws`]).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ws::WebSocketUpgrade, ConnectInfo, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;

use super::{
    error::{ApiError, ApiResult, ErrorBody},
    extract::{authenticate_until, bearer, require_member, tenant_id, Caller},
    AppState,
};
use crate::ws;

/// Initial read buffer of a WebSocket connection.
const WS_READ_BUFFER: usize = 4 * 1024;

#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct WsQuery {
    token: Option<String>,
}

#[utoipa::path(get, path = "/ws_finwise/ws/{tenant_id}", tag = "sync", params(("tenant_id" = String, Path), WsQuery), security(("bearer" = [])), responses((status = 101, description = "WebSocket upgrade; the messages are described in docs/PROTOCOL.md"), (status = 401, description = "no or invalid access token", body = ErrorBody), (status = 403, description = "not a member (or not an owner) of the tenant", body = ErrorBody)))]
pub(super) async fn ws_upgrade(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    meter: Option<axum::Extension<Arc<crate::net::Meter>>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<WsQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let tenant = tenant_id(&tenant)?;
    let token = q.token.as_deref().or_else(|| bearer(&headers));
    // The socket lives as long as the token it was opened with (see `ws::run`).
    let (who, token_valid_until_ms) = authenticate_until(&app, token)?;
    if matches!(who, Caller::Legacy) && !crate::browser::websocket_origin_ok(&app.config, &headers) {
        // browsers apply no CORS to WebSockets: a tokenless socket from a foreign page is refused
        return Err(ApiError::forbidden("this origin may not open a socket without a token"));
    }
    require_member(&app, &who, &tenant, false).await?;
    let user = who.user().map(str::to_owned);
    // one user (a legacy client: one address) holds at most `max_connections_per_user` sockets
    let key = match &user {
        Some(u) => format!("user:{u}"),
        None => format!("address:{}", app.proxies.client_ip(addr.ip(), &headers)),
    };
    let Some(place) = app.user_conns.take(&key, app.config.max_connections_per_user) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many open connections for this user; close some first",
        )
        .retry_after(5));
    };
    // checked after who is calling: a request without a token learns 401 first
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("not a WebSocket upgrade request: {}", e.body_text()))
    })?;
    let meter = meter.map(|axum::Extension(m)| m);
    if let Some(m) = &meter {
        m.upgraded();
    }
    let max = app.config.max_batch_bytes.max(app.config.max_message_bytes);
    Ok(upgrade
        .max_message_size(max)
        .max_frame_size(max)
        // tungstenite's default 128 KiB read buffer per socket would dominate the memory of idle
        // connections; it grows when a large message arrives.
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            ws::run(app, socket, ws::Session { tenant, user, token_valid_until_ms, meter, _place: place })
        }))
}
