//! The hand-off between a session's two relay halves: what the client
//! side sent and the server will answer, the server's answers to name
//! changes, its transaction status, and the gateway's own notices.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use crate::tracker::{BackendTracker, EncodingReports, Pending};

/// What the client side has sent and the server will answer, handed to
/// the upstream side in order.
///
/// Both sides run in one task, so a queue under a lock that is never
/// contended replaces a channel: a channel's send woke the task for
/// another poll of both sides on every statement. The upstream side takes
/// the entries right before it reads the responses that answer them, and
/// also whenever the queue passes [`HANDOFF_WAKE`] entries: after an
/// extended-protocol error the server answers nothing up to the next Sync,
/// and the tracker must drop what a client sends meanwhile rather than let
/// it pile up here.
///
/// That second case needs no waker: the client side yields after passing
/// the threshold, and the task's next poll polls the upstream side too,
/// which finds the flag. (A `Notify` cost a lock on every poll of the
/// task, that is twice a statement, for a signal that almost never fires.)
///
/// Answers to name changes travel back the same way: the upstream side
/// leaves them here before it forwards the responses, and the client side
/// takes them before it decides the client's next messages.
pub struct Handoff {
    queue: std::sync::Mutex<Vec<Pending>>,
    grown: std::sync::atomic::AtomicBool,
    answers: std::sync::Mutex<Vec<(u64, bool)>>,
    /// Whether something sent is still unanswered, for cancel requests.
    busy: Arc<std::sync::atomic::AtomicBool>,
    /// The encoding the server reads the client's messages in, as it
    /// reported it.
    pub(super) encoding: EncodingReports,
    /// Whether the server's last ReadyForQuery said "idle" (no
    /// transaction open), and whether it said "failed".
    idle: std::sync::atomic::AtomicBool,
    failed: std::sync::atomic::AtomicBool,
    /// Notices for the client from outside the upstream side (a review's
    /// progress, a grant's end), which only the upstream side writes.
    pub(super) notices: Arc<Notices>,
}

/// The gateway's own notices waiting for a session's client. Other tasks
/// (a grant ending) queue them too, so a waker is registered; it costs
/// one atomic exchange per wait of the upstream side.
#[derive(Default)]
pub struct Notices {
    texts: std::sync::Mutex<Vec<String>>,
    waiting: std::sync::atomic::AtomicBool,
    waker: atomic_waker::AtomicWaker,
}

impl Notices {
    /// Queues `text` for the client and wakes the session.
    pub fn push(&self, text: String) {
        self.texts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(text);
        self.waiting.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Resolves with the notices queued, once there are any.
    pub(super) async fn next(&self) -> Vec<String> {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.waiting.swap(false, Ordering::AcqRel) {
                let mut held = self.texts.lock().unwrap_or_else(|p| p.into_inner());
                Poll::Ready(std::mem::take(&mut *held))
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

impl Default for Handoff {
    fn default() -> Self {
        Self {
            queue: Default::default(),
            grown: Default::default(),
            answers: Default::default(),
            busy: Default::default(),
            encoding: EncodingReports::new(portcullis_pg_wire::ClientEncoding::UTF8),
            idle: std::sync::atomic::AtomicBool::new(true),
            failed: Default::default(),
            notices: Default::default(),
        }
    }
}

/// Entries waiting in a [`Handoff`] that make the upstream side take them
/// without waiting for a response.
pub(super) const HANDOFF_WAKE: usize = 256;

impl Handoff {
    /// A handoff that keeps `busy` true while something sent is
    /// unanswered (set when entries are put, cleared when the upstream
    /// side has answered everything, under the queue's lock).
    pub fn with_busy(busy: Arc<std::sync::atomic::AtomicBool>) -> Self {
        Self {
            busy,
            ..Self::default()
        }
    }

    /// Starting from the `client_encoding` the server reported at login
    /// (UTF-8 if it reported none it knows).
    pub fn with_encoding(mut self, at_login: Option<&str>) -> Self {
        let encoding = at_login.and_then(portcullis_pg_wire::ClientEncoding::by_name);
        self.encoding =
            EncodingReports::new(encoding.unwrap_or(portcullis_pg_wire::ClientEncoding::UTF8));
        self
    }

    /// Notes whether `tracker` still waits for answers; busy stays set
    /// while entries not yet taken wait too.
    pub(super) fn settle_busy(&self, tracker: &BackendTracker) {
        let queue = self.lock();
        self.busy
            .store(tracker.in_flight() || !queue.is_empty(), Ordering::Release);
        if let Some(status) = tracker.status() {
            use portcullis_pg_wire::TransactionStatus;
            self.idle
                .store(status == TransactionStatus::Idle, Ordering::Release);
            self.failed
                .store(status == TransactionStatus::Failed, Ordering::Release);
        }
    }

    /// Whether the server has answered everything and its transaction has
    /// failed: whatever is sent now fails without running.
    pub fn failed_transaction(&self) -> bool {
        !self.busy.load(Ordering::Acquire) && self.failed.load(Ordering::Acquire)
    }

    /// Whether the server has answered everything sent and has no
    /// transaction open: a statement held now holds no locks.
    pub fn quiet(&self) -> bool {
        !self.busy.load(Ordering::Acquire) && self.idle.load(Ordering::Acquire)
    }

    /// Queues a notice for the client.
    pub fn notice(&self, text: String) {
        self.notices.push(text);
    }

    /// Where others queue notices for this session's client.
    pub fn notices(&self) -> &Arc<Notices> {
        &self.notices
    }

    /// Appends `batch`, leaving it empty; returns how many entries wait.
    pub(super) fn put(&self, batch: &mut Vec<Pending>) -> usize {
        let mut queue = self.lock();
        self.busy.store(true, Ordering::Release);
        let before = queue.len();
        queue.append(batch);
        if before < HANDOFF_WAKE && queue.len() >= HANDOFF_WAKE {
            self.grown.store(true, Ordering::Relaxed);
        }
        queue.len()
    }

    /// Resolves once the queue has passed [`HANDOFF_WAKE`] entries (or
    /// had, since the last time this resolved). It registers no waker:
    /// it relies on being polled in the same task as [`Handoff::put`]'s
    /// caller, which yields after passing the threshold.
    pub(super) async fn grown(&self) {
        std::future::poll_fn(|_| {
            if self.grown.swap(false, Ordering::Relaxed) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Moves everything handed over so far into `tracker`.
    pub fn drain_into(&self, tracker: &mut BackendTracker) {
        let mut queue = self.lock();
        if !queue.is_empty() {
            tracker.push(queue.drain(..));
            // One burst of small messages must not keep its size for the
            // rest of the session.
            queue.shrink_to(HANDOFF_WAKE);
        }
    }

    /// Leaves the server's answers to name changes for the client side.
    pub(super) fn answered(&self, answers: Vec<(u64, bool)>) {
        if !answers.is_empty() {
            let mut held = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            held.extend(answers);
        }
    }

    /// Takes the answers left so far.
    pub(super) fn take_answered(&self) -> Vec<(u64, bool)> {
        let mut held = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *held)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // Poisoned only by a panic, which ends the session anyway; the
        // queue has no invariant a half-done call could break.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}
