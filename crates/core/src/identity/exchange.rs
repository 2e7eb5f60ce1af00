//! OAuth 2.0 Token Exchange (RFC 8693) rules: who may receive a gateway
//! token, and with which actor. The HTTP endpoint lives with the API; this
//! is the decision, with no I/O.

use super::{AuthError, Identity, IssuedToken, TokenIssuer};

/// `grant_type` for token exchange.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Token types accepted as `subject_token_type` / `actor_token_type`.
pub const ACCEPTED_TOKEN_TYPES: [&str; 3] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:access_token",
];
/// The type of every token issued.
pub const ISSUED_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Issues a gateway token for `subject`, acted for by `actor` if given.
///
/// Both identities are already verified (and checked against
/// revocations). A subject that is already delegated cannot be delegated
/// again, and an actor must act for itself: policy sees one actor, so a
/// chain could hide who is really acting.
pub fn exchange(
    issuer: &TokenIssuer,
    subject: &Identity,
    actor: Option<&Identity>,
) -> Result<IssuedToken, AuthError> {
    if let Some(actor) = actor {
        if subject.actor.is_some() {
            return Err(AuthError::Rejected(
                "the subject token is already delegated; it cannot be delegated again".into(),
            ));
        }
        if actor.actor.is_some() {
            return Err(AuthError::Rejected(
                "the actor token is itself delegated; an actor must present its own token".into(),
            ));
        }
    }
    issuer.issue(subject, actor)
}
