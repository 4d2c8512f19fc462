//! API errors: JSON `{"error": {"code", "message"}}` with a stable code and
//! a message a person can act on. Internal failures are logged here and
//! answered with a plain message; their detail never reaches the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait, for 429 answers.
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_input`.
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!("{field}: {reason}"),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// The same answer whether the object does not exist or belongs to
    /// another tenant.
    pub fn not_found(kind: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} not found"),
        )
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn rate_limited(retry_after: u64, message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// A fault of ours: logged in full (with the request id of the span),
    /// answered with a 500 whose `X-Request-Id` the user can quote.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it is logged under this answer's X-Request-Id",
        )
    }

    /// Something we depend on is away or timed out: worth a retry.
    pub fn unavailable(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "{context}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is unavailable, retry later",
        )
    }

    /// A database failure, classified once (see `mamori_tenancy::Failure`).
    fn database(failure: mamori_tenancy::Failure, e: impl std::fmt::Display) -> Self {
        use mamori_tenancy::Failure;
        match failure {
            Failure::Duplicate { constraint } => {
                let (code, message) = duplicate(constraint.as_deref());
                Self::conflict(code, message)
            }
            Failure::Refused { constraint } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                format!(
                    "a value breaks the rule {}",
                    constraint.as_deref().unwrap_or("of the database")
                ),
            ),
            Failure::Rule { message } => Self::conflict("conflict", message),
            Failure::Unavailable => Self::unavailable("database unavailable", e),
            Failure::Internal => Self::internal("database error", e),
        }
    }
}

/// The stable code and message of a duplicate, by the unique constraint
/// that refused it.
fn duplicate(constraint: Option<&str>) -> (&'static str, &'static str) {
    match constraint {
        Some("users_email_key") => ("email_taken", "an account with this e-mail address exists"),
        Some("groups_name") => ("group_exists", "a group of this name exists there"),
        Some("policy_templates_name") => (
            "template_exists",
            "the organisation has a template of this name",
        ),
        _ => ("conflict", "this would duplicate something that exists"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::database(mamori_tenancy::classify(&e), e)
    }
}

impl From<mamori_tenancy::Error> for ApiError {
    fn from(e: mamori_tenancy::Error) -> Self {
        Self::database(mamori_tenancy::classify_error(&e), e)
    }
}

impl From<mamori_registry::Error> for ApiError {
    fn from(e: mamori_registry::Error) -> Self {
        use mamori_registry::Error as E;
        match e {
            E::InvalidInput { field, reason } => Self::invalid(field, reason),
            E::NotFound { kind, .. } => Self::not_found(kind),
            E::LicenceCap { .. } => Self::conflict("licence_cap", e.to_string()),
            E::EmailTaken => Self::conflict("email_taken", e.to_string()),
            E::Tenancy(inner) => inner.into(),
            other => Self::bad_request(other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// An answer of the policy service. Its messages are written for the
/// caller (they name the bad field); its internal failures are logged
/// there and here.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let message = s.message().to_owned();
        match s.code() {
            Code::InvalidArgument => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
            }
            Code::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            Code::PermissionDenied => Self::forbidden(message),
            Code::AlreadyExists | Code::FailedPrecondition => {
                let code = match s
                    .metadata()
                    .get(mamori_policy::CODE_METADATA)
                    .and_then(|v| v.to_str().ok())
                {
                    Some("group_exists") => "group_exists",
                    Some("group_not_empty") => "group_not_empty",
                    Some("template_exists") => "template_exists",
                    Some("too_many_unconfirmed") => "too_many_unconfirmed",
                    _ => "conflict",
                };
                Self::conflict(code, message)
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                tracing::warn!(error = %s, "the policy service did not answer");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the policy service is unavailable; try again shortly",
                )
            }
            _ => Self::internal("policy service", s),
        }
    }
}
