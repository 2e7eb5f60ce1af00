//! Cancel keys: the gateway hands each client the upstream backend's real
//! process id (drivers compare it with `pg_backend_pid()` and notification
//! senders, and pools pass it to `pg_terminate_backend`) with a secret of
//! its own, and maps the pair to the upstream's key, so the upstream's
//! secret never leaves the gateway. Two upstream servers may share a
//! process id; the pair is what is looked up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::upstream::Upstream;

#[derive(Clone)]
struct Entry {
    /// Whether the session has something in flight upstream.
    busy: Arc<AtomicBool>,
    upstream: Arc<Upstream>,
    upstream_key: (i32, i32),
}

/// Live cancel keys of every session of one listener.
#[derive(Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<(i32, i32), Entry>>>,
}

/// What a live cancel key leads to.
pub enum CancelTarget {
    /// The session has nothing in flight: delivered late, the cancel would
    /// hit its next statement, so it is dropped.
    Idle,
    /// The upstream and the upstream's own key of a session with
    /// something in flight.
    Running(Arc<Upstream>, (i32, i32)),
}

/// Removes its key when the session ends.
pub struct CancelKeyGuard {
    registry: CancelRegistry,
    key: (i32, i32),
}

impl CancelRegistry {
    /// Issues the client-facing key for a session on `upstream`: the
    /// backend's process id and a fresh secret.
    /// `busy` says whether the session has something in flight: a cancel
    /// that arrives while it has not is dropped, since delivered late it
    /// would cancel the session's next statement.
    pub fn issue(
        &self,
        upstream: Arc<Upstream>,
        upstream_key: (i32, i32),
        busy: Arc<AtomicBool>,
    ) -> ((i32, i32), CancelKeyGuard) {
        let mut map = self.lock();
        let pid = upstream_key.0;
        loop {
            let key = (pid, rand::random::<i32>());
            // Never the upstream's own secret, and never a key in use.
            if key.1 == upstream_key.1 || map.contains_key(&key) {
                continue;
            }
            map.insert(
                key,
                Entry {
                    busy,
                    upstream,
                    upstream_key,
                },
            );
            return (
                key,
                CancelKeyGuard {
                    registry: self.clone(),
                    key,
                },
            );
        }
    }

    /// The upstream and its key for a client's cancel key, if it is live.
    /// Secrets are random per session; a wrong one is a guess.
    pub fn resolve(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        let map = self.lock();
        let e = map.get(&(pid, secret))?;
        if !e.busy.load(Ordering::Acquire) {
            return Some(CancelTarget::Idle);
        }
        Some(CancelTarget::Running(e.upstream.clone(), e.upstream_key))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, i32), Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for CancelKeyGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}
