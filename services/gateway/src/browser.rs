//! Browser sessions: the refresh token never reaches JavaScript. A request
//! that says `X-Mamori-Session: cookie` (the console's) gets the refresh
//! token of a login, signup, invitation or refresh answer as an `HttpOnly`,
//! `SameSite=Strict` cookie limited to `/api/v1/auth`, not in the JSON; and
//! its `POST /auth/refresh` and `/auth/logout` take the token from that
//! cookie. API clients, which do not send the header, keep the JSON flow.
//!
//! Cross-site request forgery: only those two endpoints act on the cookie,
//! and only with the header, which a page of another origin cannot send
//! without a CORS preflight the gateway never grants; a cross-site
//! `Origin` is refused besides, and the cookie is not sent cross-site at
//! all (`SameSite=Strict`). The access token lives in the page's memory.

use crate::error::ApiError;
use crate::state::Shared;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The header a browser session sends.
pub const SESSION_HEADER: &str = "x-mamori-session";
const COOKIE: &str = "mamori_refresh";
const COOKIE_PATH: &str = "/api/v1/auth";
/// Largest body this layer reads (token answers and requests are small).
const MAX_BODY: usize = 64 * 1024;

fn cookie_mode(req: &Request) -> bool {
    req.headers()
        .get(SESSION_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cookie"))
}

/// The refresh token in the request's cookie.
fn cookie_token(req: &Request) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// `Set-Cookie` for `token` (None: clear it). `Secure` unless the console
/// is served over plain HTTP on a loopback address (a local setup).
fn set_cookie(state: &Shared, token: Option<&str>) -> Option<HeaderValue> {
    let url = url::Url::parse(&state.cfg.public_url).ok();
    let plain_loopback = url.as_ref().is_some_and(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                None => false,
            }
    });
    let secure = if plain_loopback { "" } else { "; Secure" };
    let value = match token {
        Some(t) => format!(
            "{COOKIE}={t}; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            state.cfg.refresh_token_ttl_s
        ),
        None => {
            format!("{COOKIE}=; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
        }
    };
    HeaderValue::from_str(&value).ok()
}

/// Whether the request's `Origin` (when it names one) is the gateway's own.
fn same_origin(state: &Shared, req: &Request) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let public = state.cfg.public_url.trim_end_matches('/');
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin == public || origin == format!("http://{host}") || origin == format!("https://{host}")
}

pub async fn layer(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if !cookie_mode(&req) || !req.uri().path().starts_with("/api/v1/") {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let uses_cookie = path == "/api/v1/auth/refresh" || path == "/api/v1/auth/logout";
    let req = if uses_cookie {
        if !same_origin(&state, &req) {
            return ApiError::forbidden("a browser session is used from its own origin only")
                .into_response();
        }
        let token = cookie_token(&req);
        let (mut parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
            return ApiError::bad_request("request body is too large").into_response();
        };
        let mut value: serde_json::Value = if bytes.is_empty() {
            serde_json::json!({})
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    return ApiError::bad_request(format!("malformed JSON: {e}")).into_response();
                }
            }
        };
        if let Some(obj) = value.as_object_mut()
            && !obj.contains_key("refresh_token")
        {
            // No cookie: an empty token, which the handler refuses (401).
            obj.insert(
                "refresh_token".into(),
                serde_json::Value::String(token.unwrap_or_default()),
            );
        }
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        Request::from_parts(parts, Body::from(value.to_string()))
    } else {
        req
    };
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if path == "/api/v1/auth/logout" || (uses_cookie && status.as_u16() == 401) {
        let mut response = response;
        if let Some(v) = set_cookie(&state, None) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        return response;
    }
    if !status.is_success() || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::internal("browser session", "answer too large").into_response();
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    let token = value
        .as_object_mut()
        .and_then(|o| o.remove("refresh_token"))
        .and_then(|t| t.as_str().map(str::to_owned));
    let Some(token) = token else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if let Some(v) = set_cookie(&state, Some(&token)) {
        parts.headers.append(header::SET_COOKIE, v);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(value.to_string()))
}
