//! The web console (`console/`, built to `console_dir`): its files at `/`,
//! next to the API, and the security headers of every answer.
//!
//! Hashed assets (`/assets/…`) are cached for good; everything else,
//! `index.html` above all, is revalidated, so a new build shows at the
//! next load. A path that is no file is the app's own route (a deep link):
//! it gets `index.html`, and the app's router takes it from there.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use std::path::Path;
use tower_http::services::{ServeDir, ServeFile};

use crate::state::Shared;

/// The service that answers what the API does not: the console's files, or
/// (with no console configured) a JSON 404.
pub fn files(dir: &str) -> Option<ServeDir<ServeFile>> {
    if dir.is_empty() {
        return None;
    }
    let index = Path::new(dir).join("index.html");
    Some(ServeDir::new(dir).fallback(ServeFile::new(index)))
}

/// The console's Content-Security-Policy: scripts and styles from the
/// gateway only (no inline script; style attributes are allowed, which the
/// component library sets), no frames, no plugins.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every answer (a handler's own CSP wins), and the
/// console's caching.
pub async fn headers(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    if state.cfg.public_url.starts_with("https://") {
        set(
            h,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    if !path.starts_with("/api/") && !path.starts_with("/.well-known/") {
        let cache = if path.starts_with("/assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    response
}
