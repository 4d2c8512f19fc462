//! The error type of the tenancy crate.

/// What can go wrong when parsing ids or reaching the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {kind} id {value:?}: expected a UUID")]
    InvalidId { kind: &'static str, value: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the database is not migrated ({missing} migration(s) missing, first: {first}); run `mamori migrate`"
    )]
    NotMigrated { missing: usize, first: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
