//! The protocol-neutral core of Portcullis.
//!
//! Protocol adapters turn wire messages into the neutral requests defined
//! here and ask the core to answer them: who is acting ([`identity`]), may
//! they ([`policy`]), and what happened ([`audit`], [`recorder`]). Nothing in
//! this crate knows a wire protocol.

pub mod audit;
pub mod identity;
pub mod masking;
pub mod policy;
pub mod recorder;
pub mod secret;
pub mod session_stop;
pub mod session_threads;
pub mod sessions;

pub use audit::{
    AuditEvent, AuditStore, Decision, SessionDetail, SessionEnd, SessionQuery, SessionRecord,
    SessionSummary, StatementRecord, StoreError,
};
pub use identity::{
    AuthError, Authenticator, Credential, GatewayAuthenticator, Identity, StaticToken, StaticTokens,
};
pub use policy::{Action, PolicyEngine, PolicyError, RequestFacts, Resource, Verdict};
pub use recorder::{Recorder, RecorderClosed, RecorderTask};
pub use secret::Secret;
pub use session_stop::{SessionStop, StopReason, StopWatcher};
pub use session_threads::SessionThreads;
pub use sessions::{LiveSession, SessionGuard, SessionRegistry};

use std::sync::Arc;

/// The core services a protocol adapter asks: identity, policy, recording
/// and the live-session registry. Cloning is cheap (handles only).
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
}
