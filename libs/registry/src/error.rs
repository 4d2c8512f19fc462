//! The registry's error type. Variants are what a caller acts on; their text
//! is safe to show to the agent or operator (no internals).

/// What the registry refuses, or fails at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("enrollment token is not valid")]
    UnknownToken,
    #[error("enrollment token has been revoked")]
    TokenRevoked,
    #[error("enrollment token has expired")]
    TokenExpired,
    #[error("enrollment token has been used the maximum number of times")]
    TokenUsedUp,
    #[error(
        "the tenant's device licence cap of {limit} is reached: revoke a device or raise the cap"
    )]
    LicenceCap { limit: i32 },
    #[error("device credential is not valid")]
    UnknownCredential,
    #[error("device has been revoked")]
    DeviceRevoked,
    #[error("an account with this e-mail address exists")]
    EmailTaken,
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    #[error(transparent)]
    Tenancy(#[from] mamori_tenancy::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Tenancy(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
