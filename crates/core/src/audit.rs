//! The audit model: what is recorded about sessions and statements, and the
//! store interface that persists it outside the target.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;
use uuid::Uuid;

/// A session as it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id (UUIDv7, so ids sort by start time).
    pub id: Uuid,
    /// `postgres`, …
    pub protocol: String,
    /// The connection (target) name.
    pub connection: String,
    /// The user the session is attributed to.
    pub user: String,
    /// The user's groups at login.
    pub groups: Vec<String>,
    /// The agent acting for the user, if any.
    pub actor: Option<String>,
    /// How the identity was established.
    pub auth_method: String,
    /// The user name the client claimed at startup (recorded, never trusted).
    pub client_user: Option<String>,
    /// The client's address.
    pub client_address: String,
    /// The client's application_name, if sent.
    pub application_name: Option<String>,
    /// Whether the client connection used TLS.
    pub client_tls: bool,
    /// Ids of the policies that permitted the connection.
    pub connect_policies: Vec<String>,
    /// When the session started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnd {
    /// The session.
    pub id: Uuid,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339")]
    pub ended_at: OffsetDateTime,
    /// Why, in one line (`client terminated`, `upstream closed`, …).
    pub reason: String,
}

/// The decision recorded with a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the statement was allowed to run.
    pub allowed: bool,
    /// The determining policies.
    pub policies: PolicyIds,
}

/// Ids of the policies behind a decision: shared, because a cached
/// decision is handed to every statement it decides.
pub type PolicyIds = std::sync::Arc<[String]>;

/// One statement a client ran, with its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRecord {
    /// The session.
    pub session_id: Uuid,
    /// Position within the session, from 1.
    pub seq: u64,
    /// `query` (simple protocol), `execute` (extended protocol), `parse`
    /// (an extended-protocol Parse that failed), `copy`, …
    pub kind: String,
    /// The statement text.
    pub text: String,
    /// Extended-protocol parameters from Bind, text-format values as text,
    /// binary ones as `\x…` hex; `None` inside for NULL.
    pub params: Option<Vec<Option<String>>>,
    /// The prepared statement's name, for extended-protocol statements.
    pub prepared_name: Option<String>,
    /// When the gateway received it.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Time from receipt to completion, in microseconds.
    pub duration_us: u64,
    /// Rows returned or affected, when the server reported them.
    pub rows: Option<u64>,
    /// `SQLSTATE: message` when it failed.
    pub error: Option<String>,
    /// The decision that let it run (or stopped it).
    pub decision: Decision,
    /// How many values of its results were masked, when any were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<crate::masking::MaskCounts>,
}

/// One thing to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// A session began.
    SessionStarted(SessionRecord),
    /// A statement finished.
    Statement(StatementRecord),
    /// A session ended.
    SessionEnded(SessionEnd),
}

/// A session as listed by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// How it started.
    #[serde(flatten)]
    pub session: SessionRecord,
    /// When it ended, if it has.
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Why it ended, if it has.
    pub end_reason: Option<String>,
    /// Statements recorded so far.
    pub statement_count: u64,
}

/// A session with its statements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDetail {
    /// The session.
    #[serde(flatten)]
    pub summary: SessionSummary,
    /// Its statements in order.
    pub statements: Vec<StatementRecord>,
}

/// Filters for listing sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionQuery {
    /// Only this user's sessions.
    pub user: Option<String>,
    /// Only sessions on this connection.
    pub connection: Option<String>,
    /// Only sessions still open.
    #[serde(default)]
    pub active: bool,
    /// At most this many, newest first (default 100).
    pub limit: Option<u32>,
}

/// A store failure, described without secrets.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The backend failed.
    #[error("audit store: {0}")]
    Backend(String),
    /// Stored data could not be read back.
    #[error("audit store holds unreadable data: {0}")]
    Corrupt(String),
}

/// Where audit records live. Implementations must commit each batch
/// atomically: all of it or none.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Persists a batch in one transaction. The batch is shared rather
    /// than borrowed so that a store may hand it to a thread of its own
    /// without copying it.
    async fn write(&self, batch: Arc<[AuditEvent]>) -> Result<(), StoreError>;
    /// Sessions matching the query, newest first.
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Vec<SessionSummary>, StoreError>;
    /// One session with its statements.
    async fn session(&self, id: Uuid) -> Result<Option<SessionDetail>, StoreError>;
    /// Marks sessions left open by an earlier process (crash) as ended.
    async fn close_dangling(&self, reason: &str) -> Result<u64, StoreError>;
}
