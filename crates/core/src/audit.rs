//! The audit model: what is recorded about sessions and the commands run in
//! them, and the store interface that persists it outside the target.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::evidence::{ChainHead, ChainRecord, SignedCheckpoint};

/// A session as it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    /// Whether the statement was allowed to run.
    pub allowed: bool,
    /// The determining policies.
    #[schema(value_type = Vec<String>)]
    pub policies: PolicyIds,
}

/// Ids of the policies behind a decision: shared, because a cached
/// decision is handed to every statement it decides.
pub type PolicyIds = std::sync::Arc<[String]>;

/// One command a client ran, with its outcome: a SQL statement, a shell
/// command, an HTTP request. What only one protocol knows (a statement's
/// parameters, a row count) goes in [`CommandRecord::detail`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommandRecord {
    /// The session.
    pub session_id: Uuid,
    /// Position within the session, from 1.
    pub seq: u64,
    /// What sort of command, in the protocol's words: `query` (simple
    /// protocol), `execute` (extended protocol), `parse` (a Parse that
    /// failed), `exec` (an SSH command), …
    pub kind: String,
    /// The command as the client sent it.
    pub text: String,
    /// When the gateway received it.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Time from receipt to completion, in microseconds.
    pub duration_us: u64,
    /// `SQLSTATE: message` (or the protocol's own form) when it failed.
    pub error: Option<String>,
    /// The decision that let it run (or stopped it).
    pub decision: Decision,
    /// How many values of its results were masked, when any were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<crate::masking::MaskCounts>,
    /// The protocol's own facts about the command, as its adapter typed
    /// them (for SQL: `params`, `prepared_name`, `rows`). Flattened into
    /// the record when serialised, so each protocol's fields read as the
    /// record's own.
    #[serde(flatten)]
    #[schema(ignore)]
    pub detail: CommandDetail,
}

/// Protocol-specific facts of a command. Each adapter serialises a typed
/// struct of its own with [`CommandDetail::of`]; the core and the store
/// keep the JSON object's text, so a new protocol changes neither. Kept as
/// text because it is written once per command on the hot path and read
/// only by the API: one serialisation, no tree of values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandDetail(String);

impl CommandDetail {
    /// The detail of an adapter's typed facts. A value that does not
    /// serialise as an object (a bug in the adapter) is kept under `detail`.
    pub fn of<T: Serialize + ?Sized>(facts: &T) -> Self {
        match serde_json::to_string(facts) {
            Ok(text) if text.starts_with('{') => CommandDetail(text),
            Ok(other) => CommandDetail(format!("{{\"detail\":{other}}}")),
            Err(e) => {
                CommandDetail(serde_json::json!({ "detail_error": e.to_string() }).to_string())
            }
        }
    }

    /// A detail from its stored JSON text; `None` unless it is an object.
    pub fn from_json(text: String) -> Option<Self> {
        let is_object =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text).is_ok();
        is_object.then_some(CommandDetail(text))
    }

    /// The JSON text, for stores.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// Whether the adapter recorded nothing of its own.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty() || self.0 == "{}"
    }

    /// One field, untyped (parsed on demand: the API's path, not the
    /// relay's).
    pub fn field(&self, name: &str) -> Option<serde_json::Value> {
        self.map().remove(name)
    }

    fn map(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl Serialize for CommandDetail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.map().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CommandDetail {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        Ok(CommandDetail(serde_json::Value::Object(map).to_string()))
    }
}

/// A command about to be forwarded: who (its session), what, and the
/// decision. In strict recording it is durable before the upstream sees
/// the command; its [`CommandOutcome`] follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandStart {
    /// The session.
    pub session_id: Uuid,
    /// Position within the session, from 1.
    pub seq: u64,
    /// As in [`CommandRecord::kind`].
    pub kind: String,
    /// The command as the client sent it.
    pub text: String,
    /// When the gateway received it.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The decision that lets it run (or stops it).
    pub decision: Decision,
    /// The protocol's own facts known before it runs (SQL: `params`,
    /// `prepared_name`).
    #[serde(flatten)]
    pub detail: CommandDetail,
}

/// How a started command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// The session.
    pub session_id: Uuid,
    /// The command's position within the session.
    pub seq: u64,
    /// Time from receipt to completion, in microseconds.
    pub duration_us: u64,
    /// `SQLSTATE: message` (or the protocol's own form) when it failed.
    pub error: Option<String>,
    /// How many values of its results were masked, when any were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<crate::masking::MaskCounts>,
    /// The protocol's facts known once it ran (SQL: `rows`, `review`).
    #[serde(flatten)]
    pub detail: CommandDetail,
}

/// An event of the gateway rather than of a session: start and stop,
/// reloads, review and grant decisions, revocations, admin API calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// What happened, in snake case (`gateway_started`, `admin_call`).
    pub kind: &'static str,
    /// Its facts, as a JSON object.
    pub body: serde_json::Value,
}

/// One thing to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// A session began.
    SessionStarted(SessionRecord),
    /// A command, whole: decided and finished (one not recorded before
    /// it ran: refused, or failed before it could run).
    Command(CommandRecord),
    /// A command about to run.
    CommandStarted(CommandStart),
    /// The end of a command recorded as started.
    CommandFinished(CommandOutcome),
    /// A session ended.
    SessionEnded(SessionEnd),
    /// Something the gateway did or was told.
    Note(Note),
}

impl AuditEvent {
    /// The session the event belongs to, if any.
    pub fn session_id(&self) -> Option<Uuid> {
        match self {
            AuditEvent::SessionStarted(s) => Some(s.id),
            AuditEvent::Command(c) => Some(c.session_id),
            AuditEvent::CommandStarted(c) => Some(c.session_id),
            AuditEvent::CommandFinished(c) => Some(c.session_id),
            AuditEvent::SessionEnded(e) => Some(e.id),
            AuditEvent::Note(_) => None,
        }
    }

    /// A note of the gateway's.
    pub fn note(kind: &'static str, body: serde_json::Value) -> Self {
        AuditEvent::Note(Note { kind, body })
    }
}

/// A session as listed by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionSummary {
    /// How it started.
    #[serde(flatten)]
    pub session: SessionRecord,
    /// When it ended, if it has.
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Why it ended, if it has.
    pub end_reason: Option<String>,
    /// Commands recorded so far (`statement_count` in the API, as it was
    /// named before the second protocol).
    #[serde(rename = "statement_count")]
    pub command_count: u64,
}

/// A session with its commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionDetail {
    /// The session.
    #[serde(flatten)]
    pub summary: SessionSummary,
    /// Its commands in order (`statements` in the API, as it was named
    /// before the second protocol).
    #[serde(rename = "statements")]
    pub commands: Vec<CommandRecord>,
}

/// Filters for listing sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// Only this user's sessions.
    pub user: Option<String>,
    /// Only sessions on this connection.
    pub connection: Option<String>,
    /// Only sessions in which this agent acted.
    #[serde(default)]
    pub actor: Option<String>,
    /// Only sessions with a command `denied` by policy, or with none
    /// (`allowed`).
    #[serde(default)]
    pub decision: Option<DecisionFilter>,
    /// Only sessions still open.
    #[serde(default)]
    pub active: bool,
    /// At most this many, newest first (default 100).
    pub limit: Option<u32>,
    /// Only sessions started at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Only sessions started before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
}

/// Sessions by the decisions on their commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionFilter {
    /// At least one command was refused.
    Denied,
    /// No command was refused.
    Allowed,
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

/// Where audit records live: the evidence chain and its checkpoints.
/// The recorder is the chain's only writer; the store keeps what it is
/// given and reads it back.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends chained records in one transaction: all of them or none.
    /// Appending records it already holds (a retry of a batch whose commit
    /// did land) changes nothing. Shared rather than borrowed so that a
    /// store may hand the batch to a thread of its own without copying it.
    async fn append(&self, records: Arc<[ChainRecord]>) -> Result<(), StoreError>;
    /// Makes records safe from a crash of the gateway process ahead of
    /// [`AuditStore::append`], cheaply and at once (strict recording calls
    /// it on a session's thread, under the chain's lock, before the
    /// statement is forwarded). A store opened again must hold every
    /// staged record.
    fn stage(&self, records: &[ChainRecord]) -> Result<(), StoreError>;
    /// The chain's last record.
    async fn chain_head(&self) -> Result<ChainHead, StoreError>;
    /// Keeps a signed checkpoint.
    async fn save_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError>;
    /// The newest checkpoint, if any.
    async fn last_checkpoint(&self) -> Result<Option<SignedCheckpoint>, StoreError>;
    /// The kind of record `seq`, if the store holds it.
    async fn kind_of(&self, seq: u64) -> Result<Option<String>, StoreError>;
    /// Sessions matching the query, newest first.
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Vec<SessionSummary>, StoreError>;
    /// One session with its commands.
    async fn session(&self, id: Uuid) -> Result<Option<SessionDetail>, StoreError>;
    /// Sessions with no recorded end: left open by an earlier process that
    /// crashed (at start-up, before any session of this one).
    async fn dangling_sessions(&self) -> Result<Vec<Uuid>, StoreError>;
}
