//! Start-up and the router: routes, tower layers (request ids, tracing
//! spans, timeouts, body limits, per-address rate limits, metrics), the
//! ops endpoint and the key reloader.

use crate::config::Config;
use crate::error::ApiError;
use crate::keys::{Kek, KeyRing};
use crate::limits::{Limits, Rule};
use crate::state::{AppState, Shared};
use crate::{
    accounts, alarms, devices, events, files, groups, openapi, policies, recipients, templates,
    tenants, users,
};
use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use mamori_mail::Mailer;
use mamori_tenancy::Db;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A started gateway.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, finishes requests in flight and waits.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }

    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }

    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }
}

pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/signup", post(accounts::signup))
        .route("/auth/login", post(accounts::login))
        .route("/auth/refresh", post(accounts::refresh))
        .route("/auth/logout", post(accounts::logout))
        .route("/auth/logout-everywhere", post(accounts::logout_everywhere))
        .route("/me/password", post(accounts::change_password))
        .route(
            "/auth/password-reset",
            post(accounts::request_password_reset),
        )
        .route(
            "/auth/password-reset/confirm",
            post(accounts::confirm_password_reset),
        )
        .route(
            "/auth/verify",
            get(accounts::verify_link).post(accounts::verify_post),
        )
        .route("/me", get(accounts::me))
        .route("/tenants", get(tenants::list).post(tenants::create))
        .route("/tenants/claim", post(tenants::claim))
        .route("/tenants/{id}/release", post(tenants::release))
        .route("/tenant", get(tenants::get).patch(tenants::update))
        .route("/tenant/handover", post(tenants::handover))
        .route("/tenant/uninstall-code", post(tenants::uninstall_code))
        .route("/users", get(users::list))
        .route("/users/{id}", patch(users::update))
        .route(
            "/invitations",
            get(users::list_invitations).post(users::invite),
        )
        .route("/invitations/{id}/revoke", post(users::revoke_invitation))
        .route("/invitations/accept", post(users::accept))
        .route("/org/users", get(users::list_org))
        .route("/org/users/{id}", patch(users::update_org))
        .route("/org/users/{id}/tenants", put(users::set_access))
        .route(
            "/org/invitations",
            get(users::list_org_invitations).post(users::invite_org),
        )
        .route(
            "/org/invitations/{id}/revoke",
            post(users::revoke_org_invitation),
        )
        .route(
            "/enrollment-tokens",
            get(devices::list_tokens).post(devices::create_token),
        )
        .route(
            "/enrollment-tokens/{id}/revoke",
            post(devices::revoke_token),
        )
        .route("/devices", get(devices::list))
        .route(
            "/devices/{id}",
            get(devices::get)
                .delete(devices::delete)
                .patch(policies::move_device),
        )
        .route("/devices/{id}/policy", get(policies::effective))
        .route("/policies", get(policies::list))
        .route(
            "/policies/tenant",
            get(policies::get_tenant)
                .put(policies::put_tenant)
                .delete(policies::clear_tenant),
        )
        .route("/policies/tenant/versions", get(policies::tenant_versions))
        .route(
            "/policies/{kind}/{id}",
            get(policies::get_target)
                .put(policies::put_target)
                .delete(policies::clear_target),
        )
        .route(
            "/policies/{kind}/{id}/versions",
            get(policies::target_versions),
        )
        .route(
            "/webhooks",
            get(policies::list_webhooks).post(policies::create_webhook),
        )
        .route("/webhooks/{id}", delete(policies::delete_webhook))
        .route("/webhooks/{id}/test", post(policies::test_webhook))
        .route("/notification-recipients", get(recipients::list))
        .route(
            "/notification-recipients/confirm",
            get(recipients::confirm_page).post(recipients::confirm),
        )
        .route(
            "/org/policy-templates",
            get(templates::list).post(templates::create),
        )
        .route("/org/policy-templates/{id}", put(templates::update))
        .route("/org/policy-templates/{id}/apply", post(templates::apply))
        .route("/org/policy-templates/{id}/drift", get(templates::drift))
        .route("/devices/{id}/revoke", post(devices::revoke))
        .route("/groups", get(groups::list).post(groups::create))
        .route("/groups/{id}", patch(groups::update).delete(groups::delete))
        .route("/events", get(events::search))
        .route("/events/export", get(events::export))
        .route("/audit", get(events::audit_log))
        .route("/files/trace", get(files::trace))
        .route("/alarms", get(alarms::list))
        .route("/alarms/calendar", get(alarms::calendar))
        .route("/alarms/acknowledge", post(alarms::acknowledge_many))
        .route("/alarms/{id}/acknowledge", post(alarms::acknowledge))
        .route("/alarms/{id}/context", get(alarms::context))
        .route("/openapi.json", get(openapi::document))
        .fallback(|| async { ApiError::not_found("endpoint") });
    let timeout = Duration::from_millis(state.cfg.api_request_timeout_ms);
    let body_limit = state.cfg.api_max_body_bytes;
    let router = Router::new()
        .nest("/api/v1", api)
        .route("/.well-known/jwks.json", get(accounts::jwks));
    let router = match crate::console::files(&state.cfg.console_dir) {
        Some(files) => router.fallback_service(files),
        None => router.fallback(|| async { ApiError::not_found("page") }),
    };
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::browser::layer,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    axum::http::header::AUTHORIZATION,
                ]))
                // A bug must cost one request a 500, not the connection.
                .layer(CatchPanicLayer::new())
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let rid = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!(
                        "http",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = rid,
                        tenant_id = tracing::field::Empty,
                        user_id = tracing::field::Empty,
                    )
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    timeout,
                )),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::console::headers,
        ))
        .with_state(state)
}

/// Per-address rate limit, JSON answers for the framework's own refusals
/// (body too large, bad JSON), and request metrics.
async fn edge(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| state.proxies.client(c.0.ip(), req.headers()));
    if let Some(ip) = ip {
        // What the handlers see as the client (`ctx::client_ip`).
        req.extensions_mut().insert(crate::ctx::ClientIp(ip));
    }
    if let Some(ip) = ip
        && let Err(e) = state.limits.ip(ip).await
    {
        return e.into_response();
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    metrics::histogram!("mamori_gateway_request_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("mamori_gateway_requests_total", "route" => route, "method" => method,
        "status" => status.as_u16().to_string())
    .increment(1);
    json_rejection(response).await
}

/// axum answers a bad body (malformed JSON, wrong content type, too large)
/// with plain text; turn those into the API's JSON error shape.
async fn json_rejection(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json")
                || v.starts_with("text/csv")
                || v.starts_with("text/html")
        });
    if is_json || !(status.is_client_error()) {
        return response;
    }
    let (code, fallback) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send Content-Type: application/json",
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take that method",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => (
            "invalid_input",
            "request body does not match the expected shape",
        ),
        _ => ("bad_request", "the request is malformed"),
    };
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let message = if text.trim().is_empty() {
        fallback.to_owned()
    } else {
        text.trim().chars().take(500).collect()
    };
    ApiError::new(status, code, message).into_response()
}

/// Binds and starts the gateway.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid gateway config: {e}"))?;
    let addr: SocketAddr = config.gateway_addr.parse().with_context(|| {
        format!(
            "MAMORI_GATEWAY_ADDR {:?} is not an address like 127.0.0.1:8080",
            config.gateway_addr
        )
    })?;
    let kek = Kek::load(
        &config.kek.key_encryption_key,
        &config.kek.key_encryption_key_file,
    )?;
    // A request given up on (503 after api_request_timeout_ms) must not
    // leave its query running.
    let db = Db::connect_with(
        &config.stores.database_url,
        config.stores.db_max_connections,
        "mamori-gateway",
        Some(Duration::from_millis(config.api_request_timeout_ms)),
    )
    .await
    .context("cannot connect to PostgreSQL (MAMORI_DATABASE_URL)")?;
    let kek = Arc::new(kek);
    let keys = KeyRing::open(&db, Arc::clone(&kek)).await?;
    let policy = mamori_policy::PolicyClient::new(&config.policy_url, &config.policy_tls_ca, &kek)?;
    let mailer = Mailer::new(&config.smtp_url, &config.mail_dir, &config.mail_from)?;
    let redis =
        mamori_streams::RedisTarget::parse(&config.stores.redis_url).map_err(anyhow::Error::msg)?;
    let shared = if config.shared_rate_limits {
        let conn = redis
            .connect(Duration::from_secs(2))
            .await
            .map_err(|e| anyhow::anyhow!("{e} (the gateway's shared rate limits; MAMORI_SHARED_RATE_LIMITS=false runs without)"))?;
        Some(mamori_ratelimit::Shared::new(
            conn,
            "gateway",
            Duration::from_millis(250),
        ))
    } else {
        None
    };
    let limits = Limits {
        shared,
        ip: Rule::new(config.api_ip_rate, config.api_ip_burst),
        tenant: Rule::new(config.api_tenant_rate, config.api_tenant_burst),
        auth: Rule::new(config.api_auth_rate, config.api_auth_burst),
    };
    let webhook_resolver = mamori_policy::webhook::Resolver::new(
        config.webhook_allow_private,
        &config.webhook_dns_server,
    )
    .map_err(anyhow::Error::msg)?;
    let webhook_http =
        mamori_policy::webhook::client(webhook_resolver.clone(), Duration::from_secs(10))?;
    let state: Shared = Arc::new(AppState {
        db: db.clone(),
        keys,
        cfg: config.clone(),
        mailer,
        limits,
        sessions: crate::sessions::Sessions::new(Duration::from_millis(config.session_cache_ms)),
        webhook_resolver,
        webhook_http,
        policy,
        kek,
        proxies: crate::proxies::TrustedProxies::parse(&config.trusted_proxies)
            .map_err(anyhow::Error::msg)?,
        redis,
    });
    let ready_db = db.clone();
    let ops_addr = mamori_telemetry::serve_ops(
        &config.gateway_ops_addr,
        Arc::new(move || {
            let db = ready_db.clone();
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(db.pool())
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("database: {e}"))
            })
        }),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind MAMORI_GATEWAY_ADDR {addr}"))?;
    let local = listener.local_addr()?;
    let stop = CancellationToken::new();
    let reload_state = state.clone();
    let reload_stop = stop.clone();
    let reload_every = Duration::from_secs(config.key_reload_s);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = reload_stop.cancelled() => return,
                _ = tokio::time::sleep(reload_every) => {}
            }
            if let Err(e) = reload_state.keys.reload(&reload_state.db).await {
                tracing::warn!(error = %e, "cannot re-read signing keys");
            }
        }
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = stop.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("gateway server failed")?;
        db.close().await;
        Ok(())
    });
    tracing::info!(addr = %local, "gateway listening");
    Ok(Running {
        addr: local,
        ops_addr,
        stop,
        task,
    })
}
