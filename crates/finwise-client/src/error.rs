//! The client's error type: every variant says what went wrong and, where there is one, what to do.

use finwise_protocol::{EntityType, ValidationError};

/// Result with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The entity does not exist locally (or is deleted).
    #[error("{entity_type} {id} not found")]
    NotFound { entity_type: EntityType, id: String },
    /// The payload does not fit the entity's definition (checked locally before queueing).
    #[error("invalid {entity_type}: {error}")]
    Validation { entity_type: EntityType, error: ValidationError },
    /// The refresh token was refused: the user must log in again.
    #[error("session expired or revoked: log in again ({0})")]
    SessionExpired(String),
    /// The server answered an HTTP request with an error status.
    #[error("server answered {status}: {message}")]
    Http { status: u16, message: String },
    /// The user is not a member of the tenant (WebSocket upgrade refused with 403).
    #[error("access to tenant {0} denied: the user is not a member")]
    Forbidden(String),
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the server: {0}")]
    Connect(String),
    /// The server sent something this client does not understand, or an `error` message.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("local store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Whether the operation may succeed later without user action (network, server busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Connect(_) | Error::Timeout(_))
            || matches!(self, Error::Http { status, .. } if *status >= 500 || *status == 429)
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::Connect(e.to_string())
    }
}
