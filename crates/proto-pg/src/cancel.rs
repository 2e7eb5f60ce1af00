//! Cancel keys: the gateway hands each client the upstream backend's real
//! process id (drivers compare it with `pg_backend_pid()` and notification
//! senders, and pools pass it to `pg_terminate_backend`) with a secret of
//! its own, and maps the pair to the upstream's key, so the upstream's
//! secret never leaves the gateway. Two upstream servers may share a
//! process id; the pair is what is looked up.
//!
//! Process ids are no secret (`pg_locks`, `pg_stat_activity`, the
//! server's own messages show them), so a session's 32-bit secret is all
//! that stands between a stranger and its statements. Wrong guesses are
//! budgeted: past [`WRONG_GUESSES_PER_SECOND`] in one second, cancels are
//! dropped unlooked-at for the rest of it, which puts guessing one key
//! out of reach (2^32 / 64 per second is two years) at the price of
//! cancels failing while someone guesses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use portcullis_core::identity::{Clock, SystemClock};

use crate::upstream::Upstream;

/// Cancel requests with an unknown key allowed per second, over all
/// sessions of a listener.
pub const WRONG_GUESSES_PER_SECOND: u32 = 64;

#[derive(Clone)]
struct Entry {
    /// Whether the session has something in flight upstream.
    busy: Arc<AtomicBool>,
    /// Wakes the session's wait for a review, which a cancel withdraws.
    withdraw: Arc<tokio::sync::Notify>,
    upstream: Arc<Upstream>,
    upstream_key: (i32, i32),
}

/// Live cancel keys of every session of one listener.
#[derive(Clone)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<(i32, i32), Entry>>>,
    /// Wrong guesses in the current second: (second, count).
    guesses: Arc<Mutex<(i64, u32)>>,
    clock: Arc<dyn Clock>,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

/// What a live cancel key leads to.
pub enum CancelTarget {
    /// The session has nothing in flight upstream: delivered late, the
    /// cancel would hit its next statement, so it is not forwarded. A
    /// statement the session holds for review is withdrawn through this.
    Idle(Arc<tokio::sync::Notify>),
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
    /// A registry whose guess budget follows `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::default(),
            guesses: Arc::default(),
            clock,
        }
    }

    /// Issues the client-facing key for a session on `upstream`: the
    /// backend's process id and a fresh secret.
    /// `busy` says whether the session has something in flight: a cancel
    /// that arrives while it has not is not forwarded, since delivered late
    /// it would cancel the session's next statement; it wakes `withdraw`
    /// instead (a statement held for review is not in flight upstream).
    pub fn issue(
        &self,
        upstream: Arc<Upstream>,
        upstream_key: (i32, i32),
        busy: Arc<AtomicBool>,
        withdraw: Arc<tokio::sync::Notify>,
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
                    withdraw: withdraw.clone(),
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
    /// Secrets are random per session; a wrong one is a guess, and once
    /// this second's guesses are spent nothing is looked up.
    pub fn resolve(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        let now = self.clock.now_secs();
        let mut guesses = self.guesses.lock().unwrap_or_else(|p| p.into_inner());
        if guesses.0 != now {
            *guesses = (now, 0);
        }
        if guesses.1 >= WRONG_GUESSES_PER_SECOND {
            return None;
        }
        let map = self.lock();
        let Some(e) = map.get(&(pid, secret)) else {
            guesses.1 += 1;
            if guesses.1 == WRONG_GUESSES_PER_SECOND {
                tracing::warn!(
                    "{WRONG_GUESSES_PER_SECOND} cancel requests with unknown keys this second: cancels are dropped until the next"
                );
            }
            return None;
        };
        if !e.busy.load(Ordering::Acquire) {
            return Some(CancelTarget::Idle(e.withdraw.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::identity::ManualClock;
    use std::time::Duration;

    /// Past the budget of wrong guesses, even the right key is not looked
    /// up until the next second.
    #[test]
    fn wrong_guesses_are_budgeted_per_second() {
        let clock = Arc::new(ManualClock::at(1_000));
        let registry = CancelRegistry::with_clock(clock.clone());
        let busy = Arc::new(AtomicBool::new(false));
        let target = crate::target::PgTarget {
            name: "db".into(),
            upstream: "127.0.0.1:1".into(),
            database: "db".into(),
            user: "u".into(),
            password: None,
            tls: Default::default(),
            auth: Default::default(),
            ca_file: None,
        };
        let upstream = Arc::new(Upstream::new(target, None, Duration::from_secs(1)));
        let (key, _guard) = registry.issue(upstream, (7, 9), busy, Default::default());
        assert!(matches!(
            registry.resolve(key.0, key.1),
            Some(CancelTarget::Idle(_))
        ));
        for guess in 0..WRONG_GUESSES_PER_SECOND as i32 {
            let wrong = if guess == key.1 { -1 } else { guess };
            assert!(registry.resolve(key.0, wrong).is_none());
        }
        assert!(registry.resolve(key.0, key.1).is_none());
        clock.advance(1);
        assert!(matches!(
            registry.resolve(key.0, key.1),
            Some(CancelTarget::Idle(_))
        ));
    }
}
