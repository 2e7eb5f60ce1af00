//! Who is acting: turning a presented credential into an [`Identity`].

use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// A verified principal, with the groups policy sees it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The user the action is attributed to.
    pub user: String,
    /// Groups the user is in, for policy.
    pub groups: Vec<String>,
    /// The agent acting on the user's behalf, if any.
    pub actor: Option<String>,
    /// How the identity was established, e.g. `static-token`.
    pub method: &'static str,
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
    /// The credential matched nothing.
    #[error("the token is not valid")]
    Invalid,
}

/// Verifies a credential a client presented (as a password or bearer token).
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The identity the credential proves, or why it proves none.
    async fn authenticate(&self, credential: &str) -> Result<Identity, AuthError>;
}

/// A configured static token, kept only as its SHA-256 digest.
#[derive(Debug, Clone)]
pub struct StaticToken {
    /// User the token authenticates.
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

impl StaticToken {
    /// A token entry from the token's clear text.
    pub fn from_clear(user: &str, groups: Vec<String>, token: &str) -> Self {
        Self {
            user: user.to_owned(),
            groups,
            sha256: Sha256::digest(token.as_bytes()).into(),
        }
    }
}

/// Static tokens from configuration, for local use and tests.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    tokens: Vec<StaticToken>,
}

impl StaticTokens {
    /// Builds the verifier from configured tokens.
    pub fn new(tokens: Vec<StaticToken>) -> Self {
        Self { tokens }
    }

    /// Verifies synchronously; see [`Authenticator::authenticate`].
    pub fn verify(&self, credential: &str) -> Result<Identity, AuthError> {
        if credential.is_empty() {
            return Err(AuthError::Missing);
        }
        let digest: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        // Compare digests in constant time and visit every entry, so timing
        // reveals neither a prefix nor which entry matched.
        let mut found: Option<&StaticToken> = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        let t = found.ok_or(AuthError::Invalid)?;
        Ok(Identity {
            user: t.user.clone(),
            groups: t.groups.clone(),
            actor: None,
            method: "static-token",
        })
    }
}

#[async_trait]
impl Authenticator for StaticTokens {
    async fn authenticate(&self, credential: &str) -> Result<Identity, AuthError> {
        self.verify(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_tokens() {
        let t = StaticTokens::new(vec![StaticToken::from_clear(
            "alice",
            vec!["engineering".into()],
            "alice-dev-token",
        )]);
        let id = t.verify("alice-dev-token").unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, vec!["engineering"]);
        assert_eq!(t.verify("alice-dev-tokeN"), Err(AuthError::Invalid));
        assert_eq!(t.verify(""), Err(AuthError::Missing));
    }

    #[test]
    fn describe_names_the_actor() {
        let id = Identity {
            user: "alice".into(),
            groups: vec![],
            actor: Some("agent X".into()),
            method: "test",
        };
        assert_eq!(id.describe(), "agent X acting for alice");
    }
}
