//! Every way the gateway says no, each with the SQLSTATE it reaches a SQL
//! client with and one line that names the problem.
//!
//! One type for every protocol: a PostgreSQL adapter sends the SQLSTATE in
//! an ErrorResponse, another protocol maps it to its own error form (SSH
//! prints the message on stderr). Messages never carry a credential.

use thiserror::Error;

use crate::identity::AuthError;

/// Why the gateway refused a client, a command or a result.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Refusal {
    /// A token was offered over plaintext where TLS is required.
    #[error("portcullis: TLS is required to present a token here ({hint})")]
    TlsRequired {
        /// How the client gets TLS.
        hint: &'static str,
    },
    /// The credential was refused or could not be checked.
    #[error("portcullis: token authentication failed: {0}")]
    Authentication(AuthError),
    /// The client named a connection that is not configured.
    #[error("portcullis: connection \"{0}\" does not exist")]
    UnknownConnection(String),
    /// Policy does not permit `connect`.
    #[error("portcullis: connect to {connection} denied for {who} ({reason})")]
    ConnectDenied {
        /// The connection.
        connection: String,
        /// Who asked (`alice`, `agent acting for alice`).
        who: String,
        /// Which policy, or that none permits it.
        reason: String,
    },
    /// Policy (or the gateway's own rules) does not let a command run. The
    /// message is built by the decision code and names what, on what and
    /// why.
    #[error("{0}")]
    CommandDenied(String),
    /// A result could not be masked faithfully, so it is not sent.
    #[error("portcullis: result withheld: {0}")]
    MaskingFailed(String),
    /// The audit store cannot take records, so nothing runs unrecorded.
    #[error("portcullis: the audit store is unavailable; refusing to run unrecorded")]
    AuditUnavailable,
    /// An operator, a revocation or shutdown ended the session.
    #[error("portcullis: the session was ended by the gateway")]
    Killed,
    /// The token the session started with expired.
    #[error("portcullis: the token for {who} expired; reconnect with a fresh token")]
    Expired {
        /// Whose token.
        who: String,
    },
    /// The client broke its protocol (malformed or oversized message).
    #[error("portcullis: protocol violation: {0}")]
    ProtocolViolation(String),
    /// The client sent something the gateway never forwards (a message
    /// type, a setting, a second password).
    #[error("portcullis: {0}")]
    NotAllowed(String),
    /// A feature the gateway does not offer (replication connections).
    #[error("portcullis: {0}")]
    Unsupported(String),
    /// A parameter value the gateway cannot enforce policy under.
    #[error("portcullis: {0}")]
    InvalidParameter(String),
    /// The client stalled.
    #[error("portcullis: timed out waiting for {0}")]
    Timeout(&'static str),
    /// The upstream could not be reached, refused the gateway, or broke
    /// its protocol.
    #[error("portcullis: {0}")]
    Upstream(String),
    /// The session holds more than a limit allows.
    #[error("portcullis: {0}")]
    LimitExceeded(String),
}

impl Refusal {
    /// The SQLSTATE a SQL client receives.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Refusal::TlsRequired { .. } => "28000",
            // 28000 when the gateway could not check at all; 28P01 when
            // the token itself was refused.
            Refusal::Authentication(AuthError::Unavailable(_)) => "28000",
            Refusal::Authentication(_) => "28P01",
            Refusal::UnknownConnection(_) => "3D000",
            Refusal::ConnectDenied { .. }
            | Refusal::CommandDenied(_)
            | Refusal::MaskingFailed(_) => "42501",
            Refusal::AuditUnavailable => "58000",
            Refusal::Killed | Refusal::Expired { .. } => "57P01",
            Refusal::ProtocolViolation(_) | Refusal::NotAllowed(_) => "08P01",
            Refusal::Unsupported(_) => "0A000",
            Refusal::InvalidParameter(_) => "22023",
            Refusal::Timeout(_) => "08006",
            Refusal::Upstream(_) => "08001",
            Refusal::LimitExceeded(_) => "53400",
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::TlsRequired { .. } => "tls_required",
            Refusal::Authentication(e) => e.label(),
            Refusal::UnknownConnection(_) => "unknown_connection",
            Refusal::ConnectDenied { .. } => "connect_denied",
            Refusal::CommandDenied(_) => "command_denied",
            Refusal::MaskingFailed(_) => "masking_failed",
            Refusal::AuditUnavailable => "audit_unavailable",
            Refusal::Killed => "killed",
            Refusal::Expired { .. } => "expired",
            Refusal::ProtocolViolation(_) => "protocol_violation",
            Refusal::NotAllowed(_) => "not_allowed",
            Refusal::Unsupported(_) => "unsupported",
            Refusal::InvalidParameter(_) => "invalid_parameter",
            Refusal::Timeout(_) => "timeout",
            Refusal::Upstream(_) => "upstream",
            Refusal::LimitExceeded(_) => "limit_exceeded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_its_sqlstate_and_problem() {
        let cases = [
            (
                Refusal::Authentication(AuthError::Invalid),
                "28P01",
                "portcullis: token authentication failed: the token is not valid",
            ),
            (
                Refusal::Authentication(AuthError::Unavailable("keys".into())),
                "28000",
                "portcullis: token authentication failed: keys",
            ),
            (
                Refusal::UnknownConnection("x".into()),
                "3D000",
                "portcullis: connection \"x\" does not exist",
            ),
            (
                Refusal::MaskingFailed("a COPY line could not be split".into()),
                "42501",
                "portcullis: result withheld: a COPY line could not be split",
            ),
            (
                Refusal::Killed,
                "57P01",
                "portcullis: the session was ended by the gateway",
            ),
        ];
        for (refusal, code, message) in cases {
            assert_eq!(refusal.sqlstate(), code, "{refusal:?}");
            assert_eq!(refusal.to_string(), message);
        }
    }
}
