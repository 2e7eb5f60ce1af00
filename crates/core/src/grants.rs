//! Grants in force: elevated roles approved for a bounded time, as
//! policies see them (`context.grants`).
//!
//! The review board keeps the grants (they are reviews with terms, see
//! [`crate::approvals`]) and hands this table every approved one. A grant
//! counts from its approval to its end and not a second longer: a grant
//! past its end is dropped here the first time anyone asks, whether or not
//! the board has swept it yet, and the table's generation moves so that
//! no decision made under it is reused.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::identity::{Clock, SystemClock};
use crate::Identity;

/// A grant in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveGrant {
    /// The grant's (review's) number.
    pub id: u64,
    /// Who it was granted to, and through which agent: it applies to
    /// exactly that pair.
    pub user: String,
    /// See `user`.
    pub actor: Option<String>,
    /// The connection.
    pub connection: String,
    /// The elevated role.
    pub role: String,
    /// When it ends, seconds since the epoch.
    pub expires_at: i64,
}

/// The grants in force, for policy decisions.
pub struct GrantTable {
    grants: Mutex<Vec<ActiveGrant>>,
    /// Moves whenever the set of grants in force changes.
    generation: AtomicU64,
    /// The earliest end among them (`i64::MAX` when none).
    next_end: AtomicI64,
    clock: Arc<dyn Clock>,
}

impl Default for GrantTable {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl GrantTable {
    /// An empty table reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            grants: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            next_end: AtomicI64::new(i64::MAX),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ActiveGrant>> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the grants in force.
    pub fn set(&self, grants: Vec<ActiveGrant>) {
        let mut held = self.lock();
        if *held == grants {
            return;
        }
        let next = grants
            .iter()
            .map(|g| g.expires_at)
            .min()
            .unwrap_or(i64::MAX);
        *held = grants;
        self.next_end.store(next, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops what has ended; moves the generation if anything did.
    fn expire(&self) {
        // Asked on every decision: with no grant in force, no clock read.
        let next = self.next_end.load(Ordering::Acquire);
        if next == i64::MAX || next > self.clock.now_secs() {
            return;
        }
        let now = self.clock.now_secs();
        let mut held = self.lock();
        held.retain(|g| g.expires_at > now);
        let next = held.iter().map(|g| g.expires_at).min().unwrap_or(i64::MAX);
        self.next_end.store(next, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes whenever the grants in force do, ends included: decisions
    /// made under one generation hold only for it.
    pub fn generation(&self) -> u64 {
        self.expire();
        self.generation.load(Ordering::Acquire)
    }

    /// The roles granted to `identity` on `connection` now, sorted.
    pub fn roles(&self, identity: &Identity, connection: &str) -> Vec<String> {
        self.expire();
        let mut roles: Vec<String> = self
            .lock()
            .iter()
            .filter(|g| {
                g.user == identity.user && g.actor == identity.actor && g.connection == connection
            })
            .map(|g| g.role.clone())
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// Every grant in force.
    pub fn all(&self) -> Vec<ActiveGrant> {
        self.expire();
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ManualClock;

    #[test]
    fn a_grant_counts_until_its_end_and_not_after() {
        let clock = Arc::new(ManualClock::at(1000));
        let table = GrantTable::with_clock(clock.clone());
        let alice = Identity {
            user: "alice".into(),
            groups: vec![],
            actor: None,
            method: "test",
            credential: Default::default(),
        };
        let before = table.generation();
        table.set(vec![ActiveGrant {
            id: 1,
            user: "alice".into(),
            actor: None,
            connection: "app-db".into(),
            role: "dba".into(),
            expires_at: 1010,
        }]);
        let granted = table.generation();
        assert_ne!(before, granted);
        assert_eq!(table.roles(&alice, "app-db"), ["dba"]);
        assert!(table.roles(&alice, "other").is_empty());
        let agent = Identity {
            actor: Some("bot".into()),
            ..alice.clone()
        };
        assert!(table.roles(&agent, "app-db").is_empty());
        clock.set(1010);
        assert!(table.roles(&alice, "app-db").is_empty());
        assert_ne!(table.generation(), granted);
    }
}
