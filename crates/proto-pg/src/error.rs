//! Session errors and the SQLSTATE each one reaches the client with.

use portcullis_pg_wire::WireError;
use thiserror::Error;

/// Why a session (or its setup) ended abnormally. Display texts go to the
/// client and the log, so they never carry credentials.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The gateway refused the client: bad token, unknown connection, denied.
    #[error("{message}")]
    Refused {
        /// SQLSTATE sent to the client.
        code: &'static str,
        /// One line saying why.
        message: String,
    },
    /// The client broke the protocol.
    #[error("portcullis: protocol violation: {0}")]
    Protocol(#[from] WireError),
    /// The client sent a message the gateway does not allow.
    #[error("portcullis: {0}")]
    Unsupported(String),
    /// The client took too long.
    #[error("portcullis: timed out waiting for {0}")]
    Timeout(&'static str),
    /// The upstream could not be reached or refused the gateway.
    #[error("portcullis: {0}")]
    Upstream(String),
    /// The audit recorder is unavailable, so nothing may run unrecorded.
    #[error("portcullis: the audit store is unavailable; refusing to run unrecorded")]
    AuditUnavailable,
    /// A socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

impl SessionError {
    /// A refusal with its SQLSTATE.
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        SessionError::Refused {
            code,
            message: message.into(),
        }
    }

    /// The SQLSTATE for the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SessionError::Refused { code, .. } => code,
            SessionError::Protocol(_) | SessionError::Unsupported(_) => "08P01",
            SessionError::Timeout(_) => "08006",
            SessionError::Upstream(_) => "08001",
            SessionError::AuditUnavailable => "58000",
            SessionError::Io(_) => "08006",
        }
    }
}
