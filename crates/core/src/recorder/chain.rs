//! The chain's head, shared by the writer task and by sessions that stage
//! their own commands (strict recording's fast path).
//!
//! Why on the session's thread: handing a statement's records to the
//! writer task and being woken back once they are staged cost two wakes of
//! a sleeping thread per statement (a futex call and a context switch on
//! each side): with one client, about half of the gateway's CPU per
//! statement. Under this lock a session chains its records, writes them to
//! the staging file and queues them for the committer, and forwards its
//! statement without any other thread running. The lock's order is the
//! chain's order, the staging file's and the committer's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, Notify};

use super::commit::Commit;
use crate::audit::{AuditEvent, AuditStore, StoreError};
use crate::evidence::{ChainHead, ChainRecord};

/// Records handed to the committer and not yet committed, at most, before
/// sessions wait for it: bounds memory when the store is slower than the
/// load.
const BACKLOG: usize = 65_536;

/// Where the chain stands.
struct Head {
    head: ChainHead,
    /// Records chained since the last checkpoint was asked for.
    since_checkpoint: u64,
    /// Set once the final checkpoint was asked for: nothing is chained
    /// after it.
    closed: bool,
}

/// The shared chain: its head, the store it stages into, and the
/// committer's queue.
pub(super) struct Chain {
    head: Mutex<Head>,
    store: Arc<dyn AuditStore>,
    commits: mpsc::UnboundedSender<Commit>,
    checkpoint_every: u64,
    /// Records queued for the committer and not yet committed.
    backlog: AtomicUsize,
    /// Told after each commit, for sessions waiting on the backlog.
    committed: Notify,
}

impl Chain {
    pub(super) fn new(
        head: ChainHead,
        store: Arc<dyn AuditStore>,
        commits: mpsc::UnboundedSender<Commit>,
        checkpoint_every: u64,
    ) -> Self {
        Self {
            head: Mutex::new(Head {
                head,
                since_checkpoint: 0,
                closed: false,
            }),
            store,
            commits,
            checkpoint_every,
            backlog: AtomicUsize::new(0),
            committed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Head> {
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits while the committer is far behind.
    pub(super) async fn room(&self) {
        while self.backlog.load(Ordering::Relaxed) > BACKLOG {
            let told = self.committed.notified();
            if self.backlog.load(Ordering::Relaxed) <= BACKLOG {
                break;
            }
            told.await;
        }
    }

    /// The committer committed `n` records.
    pub(super) fn did_commit(&self, n: usize) {
        self.backlog.fetch_sub(n, Ordering::Relaxed);
        self.committed.notify_waiters();
    }

    /// Chains `events`, stages them when `stage` (strict recording), and
    /// queues them for the committer with `waiting` (answered once they are
    /// committed). On a failed staging the head does not move and nothing
    /// is queued. Takes the lock for the time of one `write`.
    pub(super) fn append(
        &self,
        events: &[AuditEvent],
        stage: bool,
        waiting: Vec<oneshot::Sender<bool>>,
    ) -> Result<(), StoreError> {
        let mut head = self.lock();
        if head.closed {
            return Err(StoreError::Backend(
                "the audit recorder has shut down".into(),
            ));
        }
        if events.is_empty() {
            let _ = self.commits.send(Commit::Records(Arc::from([]), waiting));
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        let mut next = head.head;
        let records: Arc<[ChainRecord]> = events.iter().map(|e| next.append(e, now)).collect();
        if stage {
            self.store.stage(&records)?;
        }
        head.head = next;
        head.since_checkpoint += records.len() as u64;
        self.backlog.fetch_add(records.len(), Ordering::Relaxed);
        let _ = self.commits.send(Commit::Records(records, waiting));
        if head.since_checkpoint >= self.checkpoint_every {
            self.ask_checkpoint(&mut head, false);
        }
        Ok(())
    }

    /// Asks the committer for a checkpoint over the head as it is now; the
    /// final one closes the chain.
    pub(super) fn checkpoint(&self, is_final: bool) {
        let mut head = self.lock();
        if !head.closed {
            self.ask_checkpoint(&mut head, is_final);
        }
        if is_final {
            head.closed = true;
            let _ = self.commits.send(Commit::Stop);
        }
    }

    fn ask_checkpoint(&self, head: &mut Head, is_final: bool) {
        head.since_checkpoint = 0;
        let _ = self.commits.send(Commit::Checkpoint {
            head: head.head,
            is_final,
        });
    }
}
