//! The agent library's one error type.
//!
//! Library code returns [`Error`]; the binary wraps it in `anyhow` only to
//! print the chain. Variants carry enough context (which file, which call) for
//! the message alone to tell an operator what to fix.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the agent library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("invalid server url {url:?}: {reason}")]
    InvalidServerUrl { url: String, reason: String },

    #[error("cannot connect to the server: {0}")]
    Connect(#[source] tonic::transport::Error),

    /// The server answered with a gRPC status. Boxed: a `Status` is large and
    /// would bloat every `Result` of the crate.
    #[error("the server refused the request: {} ({:?})", .0.message(), .0.code())]
    Server(Box<tonic::Status>),

    #[error("not enrolled: {0} is missing (run `mamori-agent enroll` first)")]
    NotEnrolled(PathBuf),

    #[error("no machine id: {0}")]
    NoMachineId(&'static str),

    #[error("corrupt state file {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid option: {0}")]
    InvalidOption(String),

    #[error("an event of {0} bytes cannot be spooled")]
    EventSize(usize),

    #[error("another agent is already running with the state directory {0}")]
    Locked(PathBuf),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what the agent was doing, for `map_err`.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Server(Box::new(status))
    }
}
