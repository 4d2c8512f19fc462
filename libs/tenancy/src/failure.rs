//! What a database error means for the caller, classified once by SQLSTATE
//! so that every service answers alike: a refused write of the caller's
//! (a duplicate, a reference to nothing, a value a constraint refuses) is
//! theirs to fix, a lost connection or a timeout is worth a retry, and
//! anything else is a fault of ours, never dressed up as a passing outage.

/// The kind of a database failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A unique constraint (named) refused a duplicate: 409.
    Duplicate { constraint: Option<String> },
    /// A foreign key, check, not-null or format rule refused a value
    /// (the constraint, when named): 422.
    Refused { constraint: Option<String> },
    /// A rule of ours (`RAISE EXCEPTION` in a trigger or function) refused
    /// the change; its message is written for the caller: 409.
    Rule { message: String },
    /// The database cannot be reached or did not answer in time, or asked
    /// for a retry (serialization failure, deadlock): 503.
    Unavailable,
    /// Anything else: 500, and a bug to look into.
    Internal,
}

/// Classifies a sqlx error.
pub fn classify(e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code();
            let constraint = d.constraint().map(str::to_owned);
            match code.as_deref().unwrap_or_default() {
                "23505" => Failure::Duplicate { constraint },
                "23503" | "23514" | "23502" | "22001" | "22P02" | "22003" | "22007" | "22008" => {
                    Failure::Refused { constraint }
                }
                "P0001" => Failure::Rule {
                    message: d.message().to_owned(),
                },
                // serialization_failure, deadlock_detected, query_canceled
                // (statement_timeout), lock_not_available, and the
                // connection, resource and operator-intervention classes.
                c if matches!(c, "40001" | "40P01" | "57014" | "55P03")
                    || c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57") =>
                {
                    Failure::Unavailable
                }
                _ => Failure::Internal,
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => Failure::Unavailable,
        _ => Failure::Internal,
    }
}

/// [`classify`] for the tenancy crate's error.
pub fn classify_error(e: &crate::Error) -> Failure {
    match e {
        crate::Error::Database(d) => classify(d),
        _ => Failure::Internal,
    }
}
