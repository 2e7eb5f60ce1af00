//! Static tokens from configuration: for local use, tests and break-glass
//! access. Only their SHA-256 digests are held.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Credential, Identity};

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
    /// A short, non-secret name for the token as configured: 8 bytes,
    /// hex, of a digest over the token's digest, its user and its groups.
    /// Changing the user or groups changes the id, so sessions (and
    /// gateway tokens) resting on the old entry end as if it were removed.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.sha256);
        h.update(b"\0");
        h.update(self.user.as_bytes());
        for g in &self.groups {
            h.update(b"\0");
            h.update(g.as_bytes());
        }
        format!("static:{}", hex::encode(&h.finalize()[..8]))
    }

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

    /// The ids of every configured token.
    pub fn ids(&self) -> Vec<String> {
        self.tokens.iter().map(StaticToken::id).collect()
    }

    /// Whether a token with id `id` is configured (as it was when the id
    /// was taken).
    pub fn contains(&self, id: &str) -> bool {
        self.tokens.iter().any(|t| t.id() == id)
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
            credential: Credential {
                id: Some(t.id()),
                ..Credential::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id names the entry as configured: same text with other groups
    /// or another user is another id, so what rests on the old one ends.
    #[test]
    fn the_id_changes_with_the_user_and_groups() {
        let a = StaticToken::from_clear("alice", vec!["eng".into()], "t-1");
        let more = StaticToken::from_clear("alice", vec!["eng".into(), "ops".into()], "t-1");
        let other = StaticToken::from_clear("bob", vec!["eng".into()], "t-1");
        assert_eq!(
            a.id(),
            StaticToken::from_clear("alice", vec!["eng".into()], "t-1").id()
        );
        assert_ne!(a.id(), more.id());
        assert_ne!(a.id(), other.id());
        let tokens = StaticTokens::new(vec![a.clone()]);
        assert!(tokens.contains(&a.id()) && !tokens.contains(&more.id()));
    }

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
            credential: Credential::default(),
        };
        assert_eq!(id.describe(), "agent X acting for alice");
    }
}
