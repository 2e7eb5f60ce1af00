//! Revocations: a revoked user (or agent) is refused for every credential
//! issued at or before the revocation, until those credentials expire.
//! Static tokens carry no issue time, so they stay refused until the
//! revocation is lifted.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;

use super::{AuthError, Identity};

/// Persists revocations so they survive restarts.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Records that `user` was revoked at `at` (seconds since the epoch).
    async fn save_revocation(&self, user: &str, at: i64, by: &str)
        -> Result<(), crate::StoreError>;
    /// Lifts a revocation; false if there was none.
    async fn delete_revocation(&self, user: &str) -> Result<bool, crate::StoreError>;
    /// Every revocation in force.
    async fn revocations(&self) -> Result<Vec<(String, i64)>, crate::StoreError>;
}

/// Revocations in force, checked on every authentication.
#[derive(Debug, Default)]
pub struct Revocations {
    by_user: RwLock<HashMap<String, i64>>,
}

impl Revocations {
    /// Revokes `user` as of `at`.
    pub fn revoke(&self, user: &str, at: i64) {
        self.write().insert(user.to_owned(), at);
    }

    /// Lifts `user`'s revocation; false if there was none.
    pub fn lift(&self, user: &str) -> bool {
        self.write().remove(user).is_some()
    }

    /// Replaces every revocation (at startup, from the store).
    pub fn load(&self, list: Vec<(String, i64)>) {
        *self.write() = list.into_iter().collect();
    }

    /// Refuses `id` if its user or its actor was revoked after its credential
    /// was issued.
    pub fn check(&self, id: &Identity) -> Result<(), AuthError> {
        let map = self.by_user.read().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return Ok(());
        }
        for who in std::iter::once(&id.user).chain(id.actor.as_ref()) {
            if let Some(&at) = map.get(who) {
                if id.credential.issued_at.is_none_or(|iat| iat <= at) {
                    return Err(AuthError::Revoked(who.clone()));
                }
            }
        }
        Ok(())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, i64>> {
        self.by_user.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Credential;

    #[test]
    fn revocation_refuses_older_credentials_and_agents() {
        let r = Revocations::default();
        let with_iat = |user: &str, actor: Option<&str>, iat: Option<i64>| Identity {
            user: user.into(),
            actor: actor.map(str::to_owned),
            credential: Credential {
                issued_at: iat,
                ..Default::default()
            },
            ..Default::default()
        };
        r.revoke("alice", 100);
        r.revoke("agent-x", 100);
        assert!(r.check(&with_iat("alice", None, Some(100))).is_err());
        assert!(
            r.check(&with_iat("alice", None, None)).is_err(),
            "static tokens"
        );
        assert!(
            r.check(&with_iat("alice", None, Some(101))).is_ok(),
            "a later login"
        );
        assert!(r
            .check(&with_iat("bob", Some("agent-x"), Some(50)))
            .is_err());
        assert!(r.check(&with_iat("bob", None, Some(50))).is_ok());
        assert!(r.lift("alice"));
        assert!(r.check(&with_iat("alice", None, None)).is_ok());
    }
}
