//! Who is acting: turning a presented credential into an [`Identity`].
//!
//! A credential is a static token from configuration, an OpenID Connect
//! token from a trusted issuer (people and CI jobs), or a token the gateway
//! signed itself after a token exchange (an agent acting for a user). The
//! [`GatewayAuthenticator`] routes each to its verifier and then applies
//! revocations.

mod authenticator;
pub mod clock;
pub mod exchange;
pub mod gateway_token;
pub mod jwks;
pub mod jwt;
pub mod oidc;
pub mod revocation;
mod static_tokens;

use async_trait::async_trait;
use serde::Serialize;
use thiserror::Error;

pub use authenticator::GatewayAuthenticator;
pub use clock::{Clock, ManualClock, SystemClock};
pub use gateway_token::{IssuedToken, TokenIssuer};
pub use oidc::{ClaimRule, OidcIssuer};
pub use revocation::{RevocationStore, Revocations};
pub use static_tokens::{StaticToken, StaticTokens};

/// A verified principal, with the groups policy sees it in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The user the action is attributed to.
    pub user: String,
    /// Groups the user is in, for policy.
    pub groups: Vec<String>,
    /// The agent acting on the user's behalf, if any.
    pub actor: Option<String>,
    /// How the identity was established, e.g. `static-token`, `oidc`.
    pub method: &'static str,
    /// Facts about the credential itself, for expiry and revocation.
    #[serde(skip)]
    pub credential: Credential,
}

/// When a credential was issued and ends, and a non-secret id for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    /// `iat`, seconds since the epoch (`None` for static tokens).
    pub issued_at: Option<i64>,
    /// `exp`, seconds since the epoch (`None`: never expires).
    pub expires_at: Option<i64>,
    /// `jti`, or a static token's id.
    pub id: Option<String>,
    /// The static tokens (their ids) this credential was exchanged from:
    /// removing or changing one ends what was derived from it.
    pub sources: Vec<String>,
}

impl Identity {
    /// "alice", or "agent X acting for alice".
    pub fn describe(&self) -> String {
        match &self.actor {
            Some(actor) => format!("{actor} acting for {}", self.user),
            None => self.user.clone(),
        }
    }
}

/// Why a credential was refused. Messages never include the credential.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credential was presented.
    #[error("no token was presented")]
    Missing,
    /// An opaque token matched nothing.
    #[error("the token is not valid")]
    Invalid,
    /// A JWT failed a check; the message says which.
    #[error("{0}")]
    Rejected(String),
    /// The principal (or the agent acting for it) was revoked.
    #[error("access for {0} has been revoked")]
    Revoked(String),
    /// The issuer's keys could not be fetched, so nothing can be verified.
    #[error("{0}")]
    Unavailable(String),
}

impl AuthError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid => "invalid",
            AuthError::Rejected(_) => "rejected",
            AuthError::Revoked(_) => "revoked",
            AuthError::Unavailable(_) => "unavailable",
        }
    }
}

/// Verifies a credential a client presented (as a password or bearer token).
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The identity the credential proves, or why it proves none.
    async fn authenticate(&self, credential: &str) -> Result<Identity, AuthError>;

    /// Whether an identity proved earlier still holds now: not revoked
    /// since, and every static token it rests on still configured as it
    /// was. Asked after a session registers (so a revocation during its
    /// login is not missed) and for every live session after a reload.
    fn still_valid(&self, identity: &Identity) -> Result<(), AuthError>;
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
