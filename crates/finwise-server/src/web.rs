//! The web client at `/`: the app built into the binary (see `build.rs`), or a directory given
//! as `web_dir` (development). Paths that name no file get `index.html`, so the app's own routes
//! survive a reload; a missing file under `/assets/` is a plain 404.

use std::path::Path;

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use tracing::warn;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Whether this binary carries a built web client.
pub fn embedded() -> bool {
    WEB_ASSETS.iter().any(|(p, _, _)| *p == "/index.html")
}

/// Adds the web client as the router's fallback; says so in the log when there is none.
pub fn mount<S: Clone + Send + Sync + 'static>(r: Router<S>, web_dir: Option<&Path>) -> Router<S> {
    if let Some(dir) = web_dir {
        if dir.join("index.html").is_file() {
            let index = dir.join("index.html");
            return r.fallback_service(
                tower_http::services::ServeDir::new(dir).fallback(tower_http::services::ServeFile::new(index)),
            );
        }
        warn!(web_dir = %dir.display(), "web_dir has no index.html; serving the web app built into this binary instead");
    }
    if !embedded() {
        warn!("this binary was built without the web app and no web_dir is set: GET / answers 404 (build web/dist, then cargo build; or pass --web-dir)");
        return r;
    }
    r.fallback(serve_embedded)
}

fn find(path: &str) -> Option<&'static (&'static str, &'static [u8], &'static str)> {
    WEB_ASSETS.binary_search_by(|(p, _, _)| (*p).cmp(path)).ok().map(|i| &WEB_ASSETS[i])
}

async fn serve_embedded(uri: Uri, headers: HeaderMap) -> Response {
    let path = match uri.path() {
        "/" => "/index.html",
        p => p,
    };
    let asset = match find(path) {
        Some(a) => a,
        // the app's routes (`/tenants/…` style links, deep links): the shell
        None if !path.starts_with("/assets/") && !path.contains('.') => {
            find("/index.html").expect("embedded index.html")
        }
        None => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    let (name, bytes, etag) = *asset;
    // hashed build outputs never change under their name; the shell and the worker must be
    // revalidated so that a new build is picked up at once
    let cache = if name.starts_with("/assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, HeaderValue::from_static(etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    (StatusCode::OK, h, bytes).into_response()
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
