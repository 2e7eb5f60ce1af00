//! Live sessions across every protocol, so they can be listed and ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the registry knows of a live session.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// Session id.
    pub id: Uuid,
    /// Who it runs as, kept so a reload can decide again whether they
    /// may still be connected.
    pub identity: Arc<crate::Identity>,
    /// The protocol it speaks.
    pub protocol: &'static str,
    /// The client's IP address, as `connect` was decided with it.
    pub client_address: String,
    /// The connection it uses.
    pub connection: String,
    /// Cancelled to end the session.
    pub kill: CancellationToken,
}

/// The set of live sessions. Touched once per session start and end, never
/// per statement.
#[derive(Debug, Clone)]
pub struct SessionRegistry {
    inner: Arc<Mutex<HashMap<Uuid, LiveSession>>>,
    /// Counts starts and ends, so a watcher (the console's live list)
    /// wakes on a change instead of polling.
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

/// Removes its session from the registry when dropped, so a session that
/// ends by any path (error, panic, kill) is never left listed.
#[derive(Debug)]
pub struct SessionGuard {
    registry: SessionRegistry,
    id: Uuid,
}

impl SessionRegistry {
    /// Registers a live session.
    pub fn register(&self, session: LiveSession) -> SessionGuard {
        let id = session.id;
        self.lock().insert(id, session);
        self.changed.send_modify(|n| *n += 1);
        metrics::gauge!("portcullis_sessions_active").increment(1.0);
        SessionGuard {
            registry: self.clone(),
            id,
        }
    }

    /// Ends every live session of `user`, or in which `user` acts for
    /// someone; returns how many.
    pub fn kill_user(&self, user: &str) -> usize {
        self.kill_where(|s| s.identity.user == user || s.identity.actor.as_deref() == Some(user))
    }

    /// Ends every live session `pred` picks; returns how many.
    pub fn kill_where(&self, pred: impl Fn(&LiveSession) -> bool) -> usize {
        let map = self.lock();
        let hits: Vec<_> = map.values().filter(|s| pred(s)).collect();
        hits.iter().for_each(|s| s.kill.cancel());
        hits.len()
    }

    /// Ends one session; false if it is not live.
    pub fn kill(&self, id: Uuid) -> bool {
        self.lock().get(&id).map(|s| s.kill.cancel()).is_some()
    }

    /// The live sessions, oldest first.
    pub fn list(&self) -> Vec<LiveSession> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// Whether session `id` is live.
    pub fn is_live(&self, id: Uuid) -> bool {
        self.lock().contains_key(&id)
    }

    /// Wakes whenever a session starts or ends.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, LiveSession>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.registry.changed.send_modify(|n| *n += 1);
        metrics::gauge!("portcullis_sessions_active").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_unregisters_and_kill_reaches_the_token() {
        let reg = SessionRegistry::default();
        let kill = CancellationToken::new();
        let g = reg.register(LiveSession {
            id: Uuid::now_v7(),
            identity: Arc::new(crate::Identity {
                user: "alice".into(),
                ..Default::default()
            }),
            protocol: "test",
            client_address: "127.0.0.1".into(),
            connection: "app-db".into(),
            kill: kill.clone(),
        });
        let changes = reg.changes();
        assert_eq!(reg.list().len(), 1);
        assert_eq!(reg.kill_user("bob"), 0);
        assert_eq!(reg.kill_user("alice"), 1);
        assert!(kill.is_cancelled());
        drop(g);
        assert!(reg.is_empty());
        assert!(changes.has_changed().unwrap_or(false));
    }
}
