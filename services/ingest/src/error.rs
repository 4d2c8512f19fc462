//! The one place where errors become gRPC statuses. Clients never see
//! internal error text: database and Redis failures are logged here. A
//! database that is away or busy is "unavailable, retry later"; anything
//! else the database refuses is an internal error (with the SQLSTATE
//! classification the gateway and the policy service use), which agents
//! also retry but which is logged as a bug, not as an outage.

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
        E::Tenancy(inner) => match mamori_tenancy::classify_error(&inner) {
            mamori_tenancy::Failure::Unavailable => {
                tracing::warn!(error = %inner, "device registry unavailable");
                Status::unavailable("device registry unavailable, retry later")
            }
            _ => {
                tracing::error!(error = %inner, "registry database error");
                Status::internal("internal error; see the ingest service's log")
            }
        },
    }
}

pub(crate) fn redis_status(e: &redis::RedisError) -> Status {
    // In a pipeline (XADD + WAIT) the server's error may come wrapped.
    if e.code() == Some("OOM") || e.to_string().contains("OOM") {
        tracing::warn!(error = %e, "redis is over its memory bound");
        return Status::resource_exhausted("event store is full, retry later");
    }
    tracing::error!(error = %e, "redis append failed");
    Status::unavailable("event store unavailable, retry later")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_retry_later_and_anything_else_is_internal() {
        let outage = mamori_registry::Error::Tenancy(sqlx::Error::PoolTimedOut.into());
        assert_eq!(registry_status(outage).code(), tonic::Code::Unavailable);
        let bug = mamori_registry::Error::Tenancy(sqlx::Error::RowNotFound.into());
        let status = registry_status(bug);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            !status.message().contains("RowNotFound"),
            "no internal text"
        );
    }
}
