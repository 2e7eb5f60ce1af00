//! Cancel keys: the gateway hands each client its own key and maps it to the
//! upstream backend's, so the upstream key never leaves the gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::upstream::Upstream;

#[derive(Clone)]
struct Entry {
    secret: i32,
    upstream: Arc<Upstream>,
    upstream_key: (i32, i32),
}

/// Live cancel keys of every session of one listener.
#[derive(Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<i32, Entry>>>,
}

/// Removes its key when the session ends.
pub struct CancelKeyGuard {
    registry: CancelRegistry,
    pid: i32,
}

impl CancelRegistry {
    /// Issues a fresh client-facing key for a session on `upstream`.
    pub fn issue(
        &self,
        upstream: Arc<Upstream>,
        upstream_key: (i32, i32),
    ) -> ((i32, i32), CancelKeyGuard) {
        let mut map = self.lock();
        loop {
            let pid = rand::random::<i32>() & i32::MAX;
            if pid == 0 || map.contains_key(&pid) {
                continue;
            }
            let secret = rand::random::<i32>();
            map.insert(
                pid,
                Entry {
                    secret,
                    upstream,
                    upstream_key,
                },
            );
            return (
                (pid, secret),
                CancelKeyGuard {
                    registry: self.clone(),
                    pid,
                },
            );
        }
    }

    /// The upstream and its key for a client's cancel key, if it is live.
    pub fn resolve(&self, pid: i32, secret: i32) -> Option<(Arc<Upstream>, (i32, i32))> {
        let map = self.lock();
        let e = map.get(&pid)?;
        // Secrets are random per session; a mismatch is a guess.
        (e.secret == secret).then(|| (e.upstream.clone(), e.upstream_key))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for CancelKeyGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}
