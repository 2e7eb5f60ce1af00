//! The background writer between sessions and the audit store.
//!
//! Sessions hand events to a bounded channel; one task batches them into a
//! transaction per write, which keeps the store cheap under many sessions.
//! A full channel makes sessions wait (backpressure) rather than drop a
//! record, and a store that fails flips [`Recorder::healthy`] so adapters
//! refuse new statements instead of running them unrecorded; the failed
//! batch is tried again until the store takes it, which flips it back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, AuditStore};

/// Events waiting for the writer; bounds memory when the store is slow.
const QUEUE: usize = 8192;
/// Most events committed in one transaction.
const BATCH: usize = 1024;
const RETRIES: u32 = 5;
/// How long the writer lets a small batch gather more events before it
/// commits, checking every [`LINGER_STEP`]: a commit (four round trips to
/// SQLite's thread, and the WAL frames of every page touched) costs far
/// more than a row, so a trickle of statements would otherwise pay a
/// whole transaction each. With one `pgbench` client (about 5,000
/// statements a second) 2 ms gathered about ten per commit, and recording
/// cost more CPU than relaying. Records are written after the statement is
/// answered either way; this widens the window a killed process can lose
/// by as much.
const LINGER: Duration = Duration::from_millis(10);
/// How often a lingering batch looks for more events. The writer polls
/// rather than waits on the channel, so that a session's send never has to
/// wake it.
const LINGER_STEP: Duration = Duration::from_millis(2);
/// A batch at least this large is written at once.
const LINGER_BELOW: usize = 64;
/// Longest wait between attempts while the store keeps failing.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The recorder stopped (shutdown) and takes no more events.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("the audit recorder has shut down")]
pub struct RecorderClosed;

/// A cheap handle sessions use to record events.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<AuditEvent>,
    healthy: Arc<AtomicBool>,
    /// Times a session found the queue full and waited for the writer.
    waits: metrics::Counter,
}

/// The running writer; [`RecorderTask::finish`] drains it.
pub struct RecorderTask {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Recorder {
    /// Starts the writer task over `store`.
    pub fn spawn(store: Arc<dyn AuditStore>) -> (Recorder, RecorderTask) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let stop = CancellationToken::new();
        let handle = tokio::spawn(write_loop(store, rx, healthy.clone(), stop.clone()));
        let waits = metrics::counter!("portcullis_audit_queue_waits_total");
        (
            Recorder { tx, healthy, waits },
            RecorderTask { stop, handle },
        )
    }

    /// Queues an event, waiting while the queue is full.
    pub async fn record(&self, event: AuditEvent) -> Result<(), RecorderClosed> {
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(event)) => {
                // Counted so that an operator can see the store holding
                // sessions back.
                self.waits.increment(1);
                self.tx.send(event).await.map_err(|_| RecorderClosed)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RecorderClosed),
        }
    }

    /// Queues an event without waiting; when the queue is full, a task on
    /// the current runtime waits for room. False when the event could not
    /// be queued at all (the recorder has shut down, or no runtime runs).
    pub fn record_without_waiting(&self, event: AuditEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.waits.increment(1);
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return false;
                };
                let tx = self.tx.clone();
                runtime.spawn(async move {
                    let _closed_at_shutdown = tx.send(event).await;
                });
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// False once the store has failed to take a batch; adapters must then
    /// refuse work that would go unrecorded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

impl RecorderTask {
    /// Stops taking events, writes everything queued, and waits for it.
    pub async fn finish(self) {
        self.stop.cancel();
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "audit writer task failed");
        }
    }
}

async fn write_loop(
    store: Arc<dyn AuditStore>,
    mut rx: mpsc::Receiver<AuditEvent>,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n,
            _ = stop.cancelled() => {
                // Refuse new events, keep the queued ones.
                rx.close();
                rx.recv_many(&mut batch, BATCH).await
            }
        };
        if n == 0 {
            break;
        }
        let mut lingered = Duration::ZERO;
        while batch.len() < LINGER_BELOW && lingered < LINGER && !stop.is_cancelled() {
            tokio::time::sleep(LINGER_STEP).await;
            lingered += LINGER_STEP;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
        }
        let events: Arc<[AuditEvent]> = batch.drain(..).collect();
        write_with_retry(store.as_ref(), &events, &healthy, &stop).await;
    }
}

async fn write_with_retry(
    store: &dyn AuditStore,
    batch: &Arc<[AuditEvent]>,
    healthy: &AtomicBool,
    stop: &CancellationToken,
) {
    // The batch is kept and tried again until the store takes it (a full
    // or read-only disk that comes back), so an outage loses nothing and
    // the gateway recovers by itself; only at shutdown is it given up.
    let mut delay = Duration::from_millis(50);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match store.write(batch.clone()).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::warn!(attempts = attempt, "the audit store takes writes again");
                }
                healthy.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                // Every failure at first, then one line a minute or so.
                if attempt <= RETRIES || attempt.is_multiple_of(60) {
                    tracing::error!(error = %e, attempt, events = batch.len(), "audit write failed; statements are refused until it succeeds");
                }
                healthy.store(false, Ordering::Relaxed);
                if stop.is_cancelled() && attempt >= RETRIES {
                    metrics::counter!("portcullis_audit_events_lost_total")
                        .increment(batch.len() as u64);
                    tracing::error!(
                        events = batch.len(),
                        "audit events could not be stored before shutdown and are lost"
                    );
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled(), if attempt < RETRIES => {}
                }
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}
