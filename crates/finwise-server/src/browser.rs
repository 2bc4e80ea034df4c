//! What the server tells browsers: which other origins may call it (CORS), and the security
//! headers of every response (CSP, nosniff, referrer policy, no framing).
//!
//! Origins: the server's own origin never needs CORS. Others are allowed only when listed in
//! `cors_origins`; with an empty list, none in token mode, and loopback origins
//! (`http://localhost:*`, `127.0.0.1`, `[::1]`: where the FinWise 0.4 frontend's dev server runs)
//! in legacy mode. `null` (sandboxed frames, `file:` pages) is never allowed.

use std::sync::{Arc, OnceLock};

use axum::{
    extract::Request,
    http::{header, request::Parts, HeaderMap, HeaderValue, Method},
    middleware::Next,
    response::Response,
};
use base64::Engine;
use sha2::{Digest, Sha256};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;

/// Whether a cross-origin caller at `origin` may use the API (see the module docs).
pub fn origin_allowed(config: &Config, origin: &str) -> bool {
    if origin == "null" {
        return false;
    }
    if !config.cors_origins.is_empty() {
        return config.cors_origins.iter().any(|o| o.trim_end_matches('/') == origin);
    }
    config.allow_legacy_clients && loopback_origin(origin)
}

fn loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else { return false };
    let host = if rest.starts_with('[') {
        rest.split(']').next().map(|h| format!("{h}]")).unwrap_or_default()
    } else {
        rest.split(':').next().unwrap_or("").to_owned()
    };
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

/// Whether `Origin` names this server itself (the `Host` the request was sent to).
pub fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// For a tokenless (legacy) WebSocket upgrade: browsers do not apply CORS to WebSockets, so
/// the origin is checked here: none (a non-browser client), the server's own, or an allowed one.
pub fn websocket_origin_ok(config: &Config, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(o) => same_origin(headers, o) || origin_allowed(config, o),
    }
}

pub fn cors_layer(config: &Config) -> CorsLayer {
    let config = Arc::new(config.clone());
    let allow = AllowOrigin::predicate(move |origin: &HeaderValue, _parts: &Parts| {
        origin.to_str().is_ok_and(|o| origin_allowed(&config, o))
    });
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            "x-tenant-id".parse().expect("header name"),
            "x-user-id".parse().expect("header name"),
        ])
        .allow_credentials(true)
        .max_age(std::time::Duration::from_secs(600))
}

/// The app's policy: everything from this origin (its socket included), no inline script, no
/// plugins, never framed. Inline `style` attributes are not used by the app; `data:` images are
/// the empty favicon.
const APP_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// `/docs` is one self-contained page with an inline script and style: allowed by their hashes.
fn docs_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let page = crate::http::API_DOCS_PAGE;
        let hash = |tag: &str| {
            let open = format!("<{tag}>");
            let close = format!("</{tag}>");
            let body = page.split(&open).nth(1).and_then(|r| r.split(&close).next()).unwrap_or("");
            format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes())))
        };
        format!(
            "default-src 'self'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; object-src 'none'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash("script"),
            hash("style")
        )
    })
}

/// Adds the security headers to every response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let docs = req.uri().path() == "/docs";
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let csp = if docs { HeaderValue::from_str(docs_csp()).ok() } else { Some(HeaderValue::from_static(APP_CSP)) };
    if let Some(csp) = csp {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let token = Config::default();
        assert!(!origin_allowed(&token, "https://evil.example"));
        assert!(!origin_allowed(&token, "http://localhost:5173"), "token mode: none by default");
        let legacy = Config { allow_legacy_clients: true, ..Config::default() };
        assert!(origin_allowed(&legacy, "http://localhost:5173"));
        assert!(origin_allowed(&legacy, "http://127.0.0.1:5173"));
        assert!(origin_allowed(&legacy, "http://[::1]:5173"));
        assert!(!origin_allowed(&legacy, "https://evil.example"));
        assert!(!origin_allowed(&legacy, "http://localhost.evil.example"));
        assert!(!origin_allowed(&legacy, "null"));
        let listed = Config { cors_origins: vec!["https://app.example/".into()], ..Config::default() };
        assert!(origin_allowed(&listed, "https://app.example"));
        assert!(!origin_allowed(&listed, "https://app.example.evil"));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8000".parse().unwrap());
        assert!(same_origin(&h, "http://127.0.0.1:8000"));
        assert!(!same_origin(&h, "http://127.0.0.1:8001"));
    }

    #[test]
    fn the_docs_page_policy_names_its_inline_code_by_hash() {
        let csp = docs_csp();
        assert_eq!(csp.matches("'sha256-").count(), 2, "{csp}");
        assert!(!csp.contains("unsafe-inline"));
    }
}
