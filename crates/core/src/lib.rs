//! The protocol-neutral core of Portcullis.
//!
//! Protocol adapters turn wire messages into the neutral requests defined
//! here and ask the core to answer them: who is acting ([`identity`]), may
//! they ([`policy`], in the language of [`vocabulary`]), and what happened
//! ([`audit`], [`recorder`]). Every adapter runs its sessions through the
//! same seam ([`session`]): admission, registration, expiry, kill and
//! fail-closed recording live here once. Nothing in this crate knows a
//! wire protocol.

pub mod approvals;
pub mod audit;
pub mod evidence;
pub mod files;
pub mod grants;
pub mod identity;
pub mod masking;
pub mod policy;
pub mod preauth;
pub mod probe;
pub mod recorder;
pub mod refusal;
pub mod secret;
pub mod session;
pub mod session_stop;
pub mod session_threads;
pub mod sessions;
pub mod tls;
pub mod vocabulary;

pub use audit::{
    AuditEvent, AuditStore, CommandDetail, CommandRecord, Decision, SessionDetail, SessionEnd,
    SessionQuery, SessionRecord, SessionSummary, StoreError,
};
pub use identity::{
    AuthError, Authenticator, Credential, GatewayAuthenticator, Identity, StaticToken, StaticTokens,
};
pub use policy::{Action, ObjectRef, PolicyEngine, PolicyError, RequestFacts, Resource, Verdict};
pub use recorder::{EvidenceSettings, EvidenceSink, Recorder, RecorderClosed, RecorderTask};
pub use refusal::Refusal;
pub use secret::Secret;
pub use session::{
    Admission, ClientInfo, CommandJournal, FinishedCommand, Outcome, SessionHandle,
    SessionSettings, StartingCommand, StopSignal,
};
pub use session_stop::{SessionStop, StopReason, StopWatcher};
pub use session_threads::SessionThreads;
pub use sessions::{LiveSession, SessionGuard, SessionRegistry};

use std::sync::Arc;

/// The core services a protocol adapter asks: identity, policy, recording
/// and the live-session registry. Cloning is cheap (handles only).
/// Adapters start sessions through [`Core::admit`] (see [`session`]).
#[derive(Clone)]
pub struct Core {
    /// Verifies presented credentials.
    pub authenticator: Arc<dyn Authenticator>,
    /// Decides requests.
    pub policy: Arc<PolicyEngine>,
    /// Records sessions and statements.
    pub recorder: Recorder,
    /// Live sessions, for listing and ending them.
    pub sessions: SessionRegistry,
    /// Result masking (inactive when nothing is configured).
    pub masking: Arc<masking::Masking>,
    /// How sessions are run.
    pub settings: SessionSettings,
    /// Commands held for review.
    pub reviews: Arc<approvals::ReviewBoard>,
}
