//! The one place where errors become gRPC statuses. Clients never see
//! internal error text: database and Redis failures are logged here and
//! reported as a plain "retry later".

use tonic::Status;

pub(crate) fn registry_status(e: mamori_registry::Error) -> Status {
    use mamori_registry::Error as E;
    match e {
        E::UnknownToken | E::TokenExpired | E::TokenRevoked | E::TokenUsedUp => {
            Status::permission_denied(e.to_string())
        }
        E::LicenceCap { .. } => Status::failed_precondition(e.to_string()),
        E::UnknownCredential => Status::unauthenticated(e.to_string()),
        E::DeviceRevoked => Status::permission_denied(e.to_string()),
        E::InvalidInput { .. } => Status::invalid_argument(e.to_string()),
        E::NotFound { .. } => Status::not_found(e.to_string()),
        E::EmailTaken => Status::already_exists(e.to_string()),
        E::Tenancy(inner) => {
            tracing::error!(error = %inner, "registry database error");
            Status::unavailable("device registry unavailable, retry later")
        }
    }
}

pub(crate) fn redis_status(e: &redis::RedisError) -> Status {
    if e.code() == Some("OOM") {
        tracing::warn!(error = %e, "redis is over its memory bound");
        return Status::resource_exhausted("event store is full, retry later");
    }
    tracing::error!(error = %e, "redis append failed");
    Status::unavailable("event store unavailable, retry later")
}
