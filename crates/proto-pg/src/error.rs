//! How a PostgreSQL session ends abnormally: a [`Refusal`] (which carries
//! its SQLSTATE and message) or a broken socket.

use portcullis_core::Refusal;
use portcullis_pg_wire::WireError;
use thiserror::Error;

/// Why a session (or its setup) ended abnormally. Display texts go to the
/// client and the log, so they never carry credentials.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The gateway refused something; the client is told why.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A socket failed; there is nobody left to tell.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<WireError> for SessionError {
    fn from(e: WireError) -> Self {
        SessionError::Refused(Refusal::ProtocolViolation(e.to_string()))
    }
}

impl SessionError {
    /// The upstream could not be reached, refused the gateway or broke its
    /// protocol.
    pub fn upstream(message: String) -> Self {
        SessionError::Refused(Refusal::Upstream(message))
    }

    /// The client sent something the gateway never forwards.
    pub fn not_allowed(message: String) -> Self {
        SessionError::Refused(Refusal::NotAllowed(message))
    }

    /// A result could not be masked faithfully.
    pub fn masking_failed(message: String) -> Self {
        SessionError::Refused(Refusal::MaskingFailed(message))
    }

    /// The SQLSTATE for the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SessionError::Refused(r) => r.sqlstate(),
            SessionError::Io(_) => "08006",
        }
    }
}
