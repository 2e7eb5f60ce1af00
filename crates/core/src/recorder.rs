//! The background writer between sessions and the audit store, and the
//! evidence chain's only author.
//!
//! Sessions hand events to a bounded channel; one task (the writer) chains
//! them (see [`crate::evidence`]) and hands each batch to a second (the
//! committer, `recorder/commit.rs`), which appends it in one transaction
//! and signs checkpoints. A full channel makes sessions wait
//! (backpressure) rather than drop a record, and a store that fails flips
//! [`Recorder::healthy`] so adapters refuse new commands instead of running
//! them unrecorded; the failed batch is tried again until the store takes
//! it, which flips it back.
//!
//! Strict recording: before an adapter forwards commands it hands their
//! records over with [`Recorder::record_all`], which chains them and stages
//! them ([`AuditStore::stage`]: safe from a crash of this process, far
//! cheaper than a commit) on the caller's own thread, under the chain's
//! lock (`recorder/chain.rs`), and queues them for the committer. The
//! commit into the store follows off the statements' path.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, AuditStore, StoreError};
use crate::evidence::{ChainRecord, SignedCheckpoint, Signer};

/// Events waiting for the writer; bounds memory when the store is slow.
const QUEUE: usize = 8192;
/// Most events committed in one transaction.
const BATCH: usize = 1024;
const RETRIES: u32 = 5;
/// How long the writer lets a small batch gather more events before it
/// hands it on, checking every [`LINGER_STEP`], while no session waits on
/// the batch: a commit costs far more than a row, so a trickle of events
/// would otherwise pay a whole transaction each. With one `pgbench` client
/// (about 5,000 statements a second) 2 ms gathered about ten per commit.
/// In buffered mode this widens the window a killed process can lose by as
/// much; in strict mode no command runs before its record is staged.
const LINGER: Duration = Duration::from_millis(10);
/// How often a lingering batch looks for more events. The writer polls
/// rather than waits on the channel, so that a session's send never has to
/// wake it.
const LINGER_STEP: Duration = Duration::from_millis(2);
/// A batch at least this large is written at once.
const LINGER_BELOW: usize = 64;
/// Longest wait between attempts while the store keeps failing.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How the evidence is kept: the signing key and when to checkpoint.
#[derive(Debug, Clone)]
pub struct EvidenceSettings {
    /// Signs checkpoints.
    pub signer: Arc<Signer>,
    /// A checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or this long, whichever comes first; one is written each interval
    /// even when nothing happened.
    pub checkpoint_interval: Duration,
    /// A file every checkpoint is also appended to (JSON lines), ideally
    /// on storage the store's administrators do not control.
    pub checkpoint_file: Option<PathBuf>,
    /// Commands wait for their record to be committed before they are
    /// forwarded (the default); `false` is buffered recording.
    pub strict: bool,
    /// Where committed records and checkpoints are copied (files, syslog,
    /// HTTP collectors).
    pub sinks: Vec<Arc<dyn EvidenceSink>>,
}

/// A copy of the evidence outside the store. Handed every batch once it is
/// committed, and every checkpoint once it is stored; must not block (a
/// sink queues and writes on a task of its own, and drops what it cannot
/// keep up with, counting it: the store is the evidence, a sink a copy).
pub trait EvidenceSink: Send + Sync + std::fmt::Debug {
    /// Records just committed, in chain order.
    fn records(&self, records: &Arc<[ChainRecord]>);
    /// A checkpoint just stored.
    fn checkpoint(&self, checkpoint: &SignedCheckpoint);
    /// Lines of records committed at start-up from what a killed gateway
    /// had staged (they were never handed to the sinks).
    fn recovered(&self, lines: &[String]);
}

impl EvidenceSettings {
    /// Defaults around `signer`: strict, a checkpoint every 10,000 records
    /// or minute.
    pub fn new(signer: Arc<Signer>) -> Self {
        Self {
            signer,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_file: None,
            strict: true,
            sinks: Vec::new(),
        }
    }
}

/// What sessions put in the writer's queue. Events are most of it and
/// travel by value: boxing them to shrink the marker would allocate once
/// per event.
#[allow(clippy::large_enum_variant)]
enum Queued {
    Event(AuditEvent),
    /// Events handed over together, with the session waiting until they
    /// are safe (strict recording's command starts).
    Batch(Vec<AuditEvent>, Option<oneshot::Sender<bool>>),
    /// Answered `true` once everything queued before it is safe (staged
    /// or committed), `false` if the store failed to take it.
    Durable(oneshot::Sender<bool>),
    /// Answered once everything queued before it is committed.
    Flushed(oneshot::Sender<bool>),
}

/// The recorder stopped (shutdown) and takes no more events.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("the audit recorder has shut down")]
pub struct RecorderClosed;

/// A cheap handle sessions use to record events.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Queued>,
    /// The chain, for strict recording's fast path.
    chain: Arc<Chain>,
    healthy: Arc<AtomicBool>,
    strict: bool,
    /// Times a session found the queue full and waited for the writer.
    waits: metrics::Counter,
}

/// The running writer; [`RecorderTask::finish`] drains it.
pub struct RecorderTask {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Recorder {
    /// Starts the writer task over `store`, continuing its chain.
    pub async fn spawn(
        store: Arc<dyn AuditStore>,
        settings: EvidenceSettings,
    ) -> Result<(Recorder, RecorderTask), StoreError> {
        let head = store.chain_head().await?;
        let last = store.last_checkpoint().await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let stop = CancellationToken::new();
        let (commits, to_commit) = mpsc::unbounded_channel();
        let chain = Arc::new(Chain::new(
            head,
            store.clone(),
            commits,
            settings.checkpoint_every,
        ));
        let committer = Committer::resume(
            store,
            settings.clone(),
            last,
            healthy.clone(),
            stop.clone(),
            chain.clone(),
        )?;
        let committer = tokio::spawn(committer.run(to_commit));
        let writer = Writer {
            chain: chain.clone(),
            healthy: healthy.clone(),
            stop: stop.clone(),
            strict: settings.strict,
        };
        let handle = tokio::spawn(writer.run(rx, settings.checkpoint_interval, committer));
        let waits = metrics::counter!("portcullis_audit_queue_waits_total");
        Ok((
            Recorder {
                tx,
                chain,
                healthy,
                strict: settings.strict,
                waits,
            },
            RecorderTask { stop, handle },
        ))
    }

    /// Queues an event, waiting while the queue is full.
    pub async fn record(&self, event: AuditEvent) -> Result<(), RecorderClosed> {
        match self.tx.try_send(Queued::Event(event)) {
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
        match self.tx.try_send(Queued::Event(event)) {
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

    /// Waits until every event this handle's caller queued before is safe
    /// (staged in strict recording, committed in buffered). False when the store failed to take them (they are
    /// still being retried) or the recorder has shut down: the caller must
    /// not act as if they were recorded.
    pub async fn durable(&self) -> bool {
        let (done, committed) = oneshot::channel();
        if self.tx.send(Queued::Durable(done)).await.is_err() {
            return false;
        }
        committed.await.unwrap_or(false)
    }

    /// Waits until every event queued before is committed to the store
    /// (readable through it), not only staged. False as for
    /// [`Recorder::durable`].
    pub async fn flushed(&self) -> bool {
        let (done, committed) = oneshot::channel();
        if self.tx.send(Queued::Flushed(done)).await.is_err() {
            return false;
        }
        committed.await.unwrap_or(false)
    }

    /// Queues `events` in one hand-off. With `wait`, waits until they are
    /// safe (staged or committed): false when the store failed to take
    /// them or the recorder has shut down. Without, false only when they
    /// could not be queued.
    pub async fn record_all(&self, events: Vec<AuditEvent>, wait: bool) -> bool {
        if wait && self.strict {
            // On this thread: see `recorder/chain.rs`.
            self.chain.room().await;
            return match self.chain.append(&events, true, Vec::new()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "audit staging failed; commands are refused until it succeeds");
                    self.healthy.store(false, Ordering::Relaxed);
                    false
                }
            };
        }
        if !wait {
            return self.tx.send(Queued::Batch(events, None)).await.is_ok();
        }
        let (done, safe) = oneshot::channel();
        if self
            .tx
            .send(Queued::Batch(events, Some(done)))
            .await
            .is_err()
        {
            return false;
        }
        safe.await.unwrap_or(false)
    }

    /// Whether commands wait for their records ([`Recorder::record_all`])
    /// before they are forwarded.
    pub fn strict(&self) -> bool {
        self.strict
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

/// The task that chains what sessions queue (outcomes, session starts and
/// ends, the gateway's notes) and asks for checkpoints on time.
struct Writer {
    chain: Arc<Chain>,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
    strict: bool,
}

impl Writer {
    async fn run(
        self,
        mut rx: mpsc::Receiver<Queued>,
        interval: Duration,
        committer: JoinHandle<()>,
    ) {
        let mut queued = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut queued, BATCH) => n,
                _ = self.stop.cancelled() => {
                    // Refuse new events, keep the queued ones.
                    rx.close();
                    rx.recv_many(&mut queued, BATCH).await
                }
                _ = tick.tick() => {
                    self.chain.checkpoint(false);
                    continue;
                }
            };
            if n == 0 {
                break;
            }
            linger(&mut rx, &mut queued, &self.stop).await;
            let mut events = Vec::with_capacity(queued.len());
            let mut waiting = Vec::new();
            let mut flushed = Vec::new();
            for item in queued.drain(..) {
                match item {
                    Queued::Event(e) => events.push(e),
                    Queued::Batch(batch, done) => {
                        events.extend(batch);
                        waiting.extend(done);
                    }
                    Queued::Durable(done) => waiting.push(done),
                    Queued::Flushed(done) => flushed.push(done),
                }
            }
            self.write(&events, waiting).await;
            if !flushed.is_empty() {
                // Answered by the committer, behind what it commits.
                let _ = self.chain.append(&[], false, flushed);
            }
        }
        self.chain.checkpoint(true);
        if let Err(e) = committer.await {
            tracing::error!(error = %e, "the audit committer failed");
        }
    }

    /// Chains `events`. In strict recording they are staged (made safe
    /// from a crash of this process) before the sessions waiting on them
    /// are answered, and committed behind; in buffered recording the
    /// committer answers once they are committed.
    async fn write(&self, events: &[AuditEvent], mut waiting: Vec<oneshot::Sender<bool>>) {
        if !self.strict {
            if let Err(e) = self.chain.append(events, false, waiting) {
                tracing::error!(error = %e, events = events.len(), "audit events are lost");
            }
            return;
        }
        if events.is_empty() {
            answer(&mut waiting, true);
            return;
        }
        // Kept and tried again until staged: a retry chains them anew
        // after whatever sessions staged meanwhile.
        let chain = self.chain.clone();
        with_retry(
            || std::future::ready(chain.append(events, true, Vec::new())),
            events.len(),
            &self.healthy,
            &self.stop,
            &mut waiting,
        )
        .await;
    }
}

/// Lets a small batch gather more events, unless a session is waiting on
/// it or the recorder is stopping. Strict recording's command starts do
/// not come this way (sessions stage them themselves), so nothing here is
/// on a statement's path but the rare marker.
async fn linger(
    rx: &mut mpsc::Receiver<Queued>,
    queued: &mut Vec<Queued>,
    stop: &CancellationToken,
) {
    let waited_on = |q: &[Queued]| {
        q.iter().any(|i| {
            matches!(
                i,
                Queued::Durable(_) | Queued::Flushed(_) | Queued::Batch(_, Some(_))
            )
        })
    };
    let mut lingered = Duration::ZERO;
    while queued.len() < LINGER_BELOW
        && lingered < LINGER
        && !stop.is_cancelled()
        && !waited_on(queued)
    {
        tokio::time::sleep(LINGER_STEP).await;
        lingered += LINGER_STEP;
        while queued.len() < BATCH {
            match rx.try_recv() {
                Ok(item) => queued.push(item),
                Err(_) => break,
            }
        }
    }
}

fn answer(waiting: &mut Vec<oneshot::Sender<bool>>, committed: bool) {
    for done in waiting.drain(..) {
        let _gone = done.send(committed);
    }
}

/// Runs `attempt` until it succeeds; true once it has. Sessions in
/// `waiting` hear the first outcome: on a failure their commands are
/// refused at once rather than held for as long as the outage lasts.
async fn with_retry<'a, F, Fut>(
    mut attempt_once: F,
    events: usize,
    healthy: &AtomicBool,
    stop: &CancellationToken,
    waiting: &mut Vec<oneshot::Sender<bool>>,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>> + 'a,
{
    // The batch is kept and tried again until the store takes it (a full
    // or read-only disk that comes back), so an outage loses nothing and
    // the gateway recovers by itself; only at shutdown is it given up.
    let mut delay = Duration::from_millis(50);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match attempt_once().await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::warn!(attempts = attempt, "the audit store takes writes again");
                    healthy.store(true, Ordering::Relaxed);
                }
                answer(waiting, true);
                return true;
            }
            Err(e) => {
                // Every failure at first, then one line a minute or so.
                if attempt <= RETRIES || attempt.is_multiple_of(60) {
                    tracing::error!(error = %e, attempt, events, "audit write failed; commands are refused until it succeeds");
                }
                healthy.store(false, Ordering::Relaxed);
                answer(waiting, false);
                if stop.is_cancelled() && attempt >= RETRIES {
                    metrics::counter!("portcullis_audit_events_lost_total")
                        .increment(events as u64);
                    tracing::error!(
                        events,
                        "audit events could not be stored before shutdown and are lost"
                    );
                    return false;
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

mod chain;
mod commit;
use chain::Chain;
use commit::Committer;
