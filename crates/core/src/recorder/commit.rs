//! The committer: commits what the writer chained, in order, merging
//! batches that queued up behind a commit into one transaction; then
//! copies them to the sinks and signs the checkpoints the writer asks for.
//! In strict recording the records are staged already, so a commit here
//! is off every statement's path.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{answer, with_retry, EvidenceSettings};
use crate::audit::{AuditStore, StoreError};
use crate::evidence::{ChainHead, ChainRecord, SignedCheckpoint};

/// What the writer hands the committer, in chain order.
pub(super) enum Commit {
    /// Records to commit, and the sessions to answer once they are (empty
    /// in strict recording: those were answered when they were staged).
    Records(Arc<[ChainRecord]>, Vec<oneshot::Sender<bool>>),
    /// The end: nothing follows the final checkpoint.
    Stop,
    /// A checkpoint over `head`, once everything before it is committed.
    Checkpoint {
        /// The chain's head when it was asked for.
        head: ChainHead,
        /// Written as the gateway stops.
        is_final: bool,
    },
}

/// Merged commits, at most this many records.
const MERGE_UP_TO: usize = 4096;
/// In strict recording, how long the committer gathers staged batches…
const COMMIT_LINGER: std::time::Duration = std::time::Duration::from_millis(10);
/// …unless it has this many records…
const COMMIT_AT_LEAST: usize = 256;
/// …looking this often.
const COMMIT_LINGER_STEP: std::time::Duration = std::time::Duration::from_millis(2);

pub(super) struct Committer {
    store: Arc<dyn AuditStore>,
    chain: Arc<super::Chain>,
    checkpoints: Checkpoints,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Committer {
    pub(super) fn resume(
        store: Arc<dyn AuditStore>,
        settings: EvidenceSettings,
        last: Option<SignedCheckpoint>,
        healthy: Arc<AtomicBool>,
        stop: CancellationToken,
        chain: Arc<super::Chain>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            store,
            chain,
            checkpoints: Checkpoints::resume(settings, last)?,
            healthy,
            stop,
        })
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Commit>) {
        let mut next = rx.recv().await;
        while let Some(item) = next.take() {
            match item {
                Commit::Stop => return,
                Commit::Checkpoint { head, is_final } => {
                    if let Err(e) = self
                        .checkpoints
                        .write(self.store.as_ref(), head, is_final)
                        .await
                    {
                        tracing::error!(error = %e, "the evidence checkpoint could not be stored; the next one will be tried");
                    }
                }
                Commit::Records(records, mut waiting) => {
                    // What queued up behind the last commit goes in one. In
                    // strict recording nobody waits on a commit (records are
                    // staged): gather for a while, as the buffered writer
                    // does, so a trickle pays one transaction per many.
                    // It polls rather than waits on the queue, so that the
                    // writer's hand-off never has to wake it.
                    let strict = self.checkpoints.settings.strict;
                    let mut lingered = std::time::Duration::ZERO;
                    let mut merged: Vec<ChainRecord> = Vec::new();
                    let mut batch = records;
                    loop {
                        let mut more = rx.try_recv().map_err(drop);
                        while more.is_err()
                            && strict
                            && lingered < COMMIT_LINGER
                            && merged.len() + batch.len() < COMMIT_AT_LEAST
                            && !self.stop.is_cancelled()
                        {
                            tokio::time::sleep(COMMIT_LINGER_STEP).await;
                            lingered += COMMIT_LINGER_STEP;
                            more = rx.try_recv().map_err(drop);
                        }
                        match more {
                            Ok(Commit::Records(more, more_waiting))
                                if merged.len() + batch.len() + more.len() <= MERGE_UP_TO =>
                            {
                                merged.extend(batch.iter().cloned());
                                batch = more;
                                waiting.extend(more_waiting);
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(()) => break,
                        }
                    }
                    let all: Arc<[ChainRecord]> = if merged.is_empty() {
                        batch
                    } else {
                        merged.extend(batch.iter().cloned());
                        merged.into()
                    };
                    self.commit(all, &mut waiting).await;
                }
            }
            if next.is_none() {
                next = rx.recv().await;
            }
        }
    }

    async fn commit(
        &mut self,
        records: Arc<[ChainRecord]>,
        waiting: &mut Vec<oneshot::Sender<bool>>,
    ) {
        if records.is_empty() {
            answer(waiting, true);
            return;
        }
        let store = self.store.clone();
        let committed = with_retry(
            || store.append(records.clone()),
            records.len(),
            &self.healthy,
            &self.stop,
            waiting,
        )
        .await;
        self.chain.did_commit(records.len());
        if committed {
            self.healthy
                .store(true, std::sync::atomic::Ordering::Relaxed);
            for sink in &self.checkpoints.settings.sinks {
                sink.records(&records);
            }
        }
    }
}

/// The checkpoint chain's state.
struct Checkpoints {
    settings: EvidenceSettings,
    last: Option<SignedCheckpoint>,
    number: u64,
}

impl Checkpoints {
    fn resume(
        settings: EvidenceSettings,
        last: Option<SignedCheckpoint>,
    ) -> Result<Self, StoreError> {
        let number = match &last {
            Some(c) => {
                c.checkpoint()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?
                    .number
            }
            None => 0,
        };
        Ok(Self {
            settings,
            last,
            number,
        })
    }

    async fn write(
        &mut self,
        store: &dyn AuditStore,
        head: ChainHead,
        is_final: bool,
    ) -> Result<(), StoreError> {
        let signed = self.settings.signer.checkpoint(
            self.last.as_ref(),
            self.number,
            head,
            OffsetDateTime::now_utc(),
            is_final,
        );
        store.save_checkpoint(&signed).await?;
        for sink in &self.settings.sinks {
            sink.checkpoint(&signed);
        }
        if let Some(path) = self.settings.checkpoint_file.clone() {
            let line = serde_json::to_string(&signed).unwrap_or_default();
            let exported = tokio::task::spawn_blocking(move || append_line(&path, &line)).await;
            if let Err(e) = exported.map_err(std::io::Error::other).and_then(|r| r) {
                metrics::counter!("portcullis_checkpoint_export_failures_total").increment(1);
                tracing::error!(error = %e, "the checkpoint could not be exported");
            }
        }
        self.number += 1;
        self.last = Some(signed);
        Ok(())
    }
}

/// Appends one line to `path` and flushes it to the disk, creating the
/// file private to the gateway's user.
fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}
