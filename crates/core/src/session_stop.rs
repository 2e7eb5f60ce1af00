//! Ending a live session from outside its relay: an operator's kill, or
//! the expiry of the token it started with.
//!
//! A relay polls whatever may end it each time it wakes, twice a
//! statement. A `CancellationToken` takes a lock on every poll, and a
//! deadline polls a timer entry, so one small watcher task per session
//! waits on both and trips a flag with a waker: the relay's poll of it is
//! one atomic load and a waker registration.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a session was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The gateway (an operator, or shutdown) ended it.
    Killed,
    /// The token it started with expired (plus the grace period).
    Expired,
}

// The flag starts at 0: running.
const KILLED: u8 = 1;
const EXPIRED: u8 = 2;

/// The flag a session's relay polls; see the module docs.
#[derive(Default)]
pub struct SessionStop {
    reason: AtomicU8,
    waker: AtomicWaker,
}

/// Stops the watcher task when the session ends.
pub struct StopWatcher(JoinHandle<()>);

impl Drop for StopWatcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SessionStop {
    /// Starts a watcher on the current runtime that trips the returned
    /// flag when `kill` is cancelled or `deadline` passes. The watcher
    /// lives as long as the returned guard.
    pub fn watch(
        kill: CancellationToken,
        deadline: Option<Instant>,
    ) -> (Arc<SessionStop>, StopWatcher) {
        let stop = Arc::new(SessionStop::default());
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let reason = tokio::select! {
                _ = kill.cancelled() => KILLED,
                _ = expiry => EXPIRED,
            };
            flag.trip(reason);
        });
        (stop, StopWatcher(task))
    }

    fn trip(&self, reason: u8) {
        self.reason.store(reason, Ordering::Release);
        self.waker.wake();
    }

    /// Why the session was stopped, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        match self.reason.load(Ordering::Acquire) {
            KILLED => Some(StopReason::Killed),
            EXPIRED => Some(StopReason::Expired),
            _ => None,
        }
    }

    /// Resolves when the session is stopped.
    pub fn stopped(&self) -> impl Future<Output = StopReason> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(r) = self.reason() {
                return Poll::Ready(r);
            }
            self.waker.register(cx.waker());
            // Tripped between the check and the registration: its wake
            // may have found no waker.
            match self.reason() {
                Some(r) => Poll::Ready(r),
                None => Poll::Pending,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_kill_stops_the_session() {
        let kill = CancellationToken::new();
        let (stop, _watcher) = SessionStop::watch(kill.clone(), None);
        let quiet = tokio::time::timeout(Duration::from_millis(50), stop.stopped()).await;
        assert!(quiet.is_err(), "nothing stops a session nobody ended");
        assert_eq!(stop.reason(), None);
        kill.cancel();
        let reason = tokio::time::timeout(Duration::from_secs(5), stop.stopped())
            .await
            .expect("the kill reaches the session");
        assert_eq!(reason, StopReason::Killed);
    }

    #[tokio::test]
    async fn the_deadline_stops_the_session() {
        let deadline = Instant::now() + Duration::from_millis(100);
        let (stop, _watcher) = SessionStop::watch(CancellationToken::new(), Some(deadline));
        let reason = tokio::time::timeout(Duration::from_secs(5), stop.stopped())
            .await
            .expect("the deadline reaches the session");
        assert_eq!(reason, StopReason::Expired);
        assert!(Instant::now() >= deadline, "stopped before the deadline");
    }

    #[tokio::test]
    async fn dropping_the_guard_ends_the_watcher() {
        let kill = CancellationToken::new();
        let (stop, watcher) = SessionStop::watch(kill.clone(), None);
        drop(watcher);
        // Let the abort land before the kill could be seen.
        tokio::task::yield_now().await;
        kill.cancel();
        let quiet = tokio::time::timeout(Duration::from_millis(50), stop.stopped()).await;
        assert!(quiet.is_err(), "an ended watcher still tripped the flag");
        assert_eq!(
            Arc::strong_count(&stop),
            1,
            "the watcher still holds the flag"
        );
    }
}
