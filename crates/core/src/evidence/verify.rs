//! Checking a chain and its checkpoints, streaming: records and
//! checkpoints are fed in order and only the running state is kept.
//!
//! [`verify`] interleaves the two: a checkpoint is checked right after the
//! record it covers. Retention removes whole stretches of the chain behind
//! a checkpoint (the anchor) and says so in a `retention` record; a chain
//! that starts after record 1 without both is missing its beginning.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Checkpoint, PublicKey, SignedCheckpoint, GENESIS};

/// A record as read back from the store: its columns beside its line.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// The `seq` column.
    pub seq: u64,
    /// The `kind` column.
    pub kind: String,
    /// The `session_id` column.
    pub session_id: Option<String>,
    /// The `user` column.
    pub user: Option<String>,
    /// The `connection` column.
    pub connection: Option<String>,
    /// The canonical line.
    pub line: String,
    /// The `hash` column, hex.
    pub hash: String,
}

/// One thing wrong, naming the first record or checkpoint it shows at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The record's sequence number (0 when about a checkpoint alone).
    pub record: u64,
    /// What is wrong.
    pub what: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Records checked.
    pub records: u64,
    /// The first retained record (after retention pruned older ones).
    pub first_record: Option<u64>,
    /// The last record.
    pub last_record: Option<u64>,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The last checkpoint: its number, what it covers, when, and whether
    /// it was written at a clean stop.
    pub last_checkpoint: Option<Checkpoint>,
    /// Tampering and damage, first found first.
    pub problems: Vec<Problem>,
    /// Records after the last checkpoint (a running gateway's newest, or a
    /// stopped one's that crashed).
    pub unsealed: u64,
}

impl Report {
    /// Whether nothing was found wrong.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Deserialize)]
struct LineFields {
    seq: u64,
    kind: String,
    prev: String,
    body: serde_json::Value,
}

/// Checks records and checkpoints as they are fed.
pub struct Verifier {
    key: PublicKey,
    report: Report,
    /// The hash of the last record fed, hex.
    head: Option<(u64, String)>,
    /// The last checkpoint fed, with its number.
    previous: Option<(u64, SignedCheckpoint)>,
    /// The last checkpoint fed before any record: what the first retained
    /// record must follow when retention removed the ones before it.
    anchor: Option<Checkpoint>,
    /// A `retention` record that names the first retained record.
    retention_said: bool,
    /// The number of a final checkpoint that the next record follows.
    after_final: Option<u64>,
}

/// Problems kept in a report; past this the chain is plainly not intact.
const MAX_PROBLEMS: usize = 100;

impl Verifier {
    /// A verifier that trusts checkpoints signed by `key`.
    pub fn new(key: PublicKey) -> Self {
        Self {
            key,
            report: Report::default(),
            head: None,
            previous: None,
            anchor: None,
            retention_said: false,
            after_final: None,
        }
    }

    fn problem(&mut self, record: u64, what: String) {
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(Problem { record, what });
        }
    }

    /// Feeds the next record in sequence order.
    pub fn record(&mut self, stored: &StoredRecord) {
        self.report.records += 1;
        let seq = stored.seq;
        let hash = hex::encode(Sha256::digest(stored.line.as_bytes()));
        if hash != stored.hash {
            self.problem(seq, "its content does not match its hash (edited)".into());
        }
        let fields: LineFields = match serde_json::from_str(&stored.line) {
            Ok(f) => f,
            Err(e) => {
                self.problem(seq, format!("its line is not a record: {e}"));
                self.head = Some((seq, hash));
                return;
            }
        };
        if fields.seq != seq {
            self.problem(
                seq,
                format!("stored as record {seq} but its line says {}", fields.seq),
            );
        }
        self.check_columns(stored, &fields);
        match self.head.take() {
            None => self.first(seq, &fields),
            Some((last, last_hash)) => {
                if seq != last + 1 {
                    self.problem(
                        seq,
                        format!(
                            "records {}..{} are missing (deleted)",
                            last + 1,
                            seq.saturating_sub(1)
                        ),
                    );
                } else if fields.prev != last_hash {
                    self.problem(
                        seq,
                        format!("it does not follow record {last} (edited, inserted or reordered)"),
                    );
                }
            }
        }
        if fields.kind == "retention" {
            self.retention(&fields);
        }
        self.after_final(seq, &fields);
        self.report.last_record = Some(seq);
        self.head = Some((seq, hash));
    }

    fn first(&mut self, seq: u64, fields: &LineFields) {
        self.report.first_record = Some(seq);
        if seq == 1 {
            if fields.prev != hex::encode(GENESIS) {
                self.problem(1, "the first record does not start the chain".into());
            }
            return;
        }
        match &self.anchor {
            Some(anchor) if anchor.upto + 1 == seq && anchor.head == fields.prev => {}
            Some(anchor) if anchor.upto + 1 == seq => self.problem(
                seq,
                format!(
                    "the first kept record does not follow checkpoint {} (edited)",
                    anchor.number
                ),
            ),
            _ => self.problem(
                seq,
                format!(
                    "records 1..{} are missing and no checkpoint anchors the rest (deleted)",
                    seq - 1
                ),
            ),
        }
    }

    /// Notes a `retention` record that names where kept history starts.
    fn retention(&mut self, fields: &LineFields) {
        let through = fields.body.get("through").and_then(|v| v.as_u64());
        let anchor = fields
            .body
            .get("anchor_checkpoint")
            .and_then(|v| v.as_u64());
        let (Some(through), Some(first), Some(kept)) =
            (through, self.report.first_record, self.anchor.as_ref())
        else {
            return;
        };
        // Retention removes a checkpoint's stretch at a time after saying
        // how far it goes, so the first kept record may be short of it,
        // and the checkpoint that anchors it may precede the one it named.
        if through + 1 >= first && anchor.is_some_and(|a| kept.number <= a) {
            self.retention_said = true;
        }
    }

    /// What may follow a final checkpoint: only the next run's start. A
    /// gateway that found records past its predecessor's final checkpoint
    /// says so in its start record.
    fn after_final(&mut self, seq: u64, fields: &LineFields) {
        let Some(number) = self.after_final.take() else {
            if fields.kind == "gateway_started" {
                self.started_after_crash(seq, fields);
            }
            return;
        };
        if fields.kind != "gateway_started" {
            self.problem(
                seq,
                format!(
                    "it follows the final checkpoint {number}, where only a gateway's start may (added to a stopped store)"
                ),
            );
        } else {
            self.started_after_crash(seq, fields);
        }
    }

    fn started_after_crash(&mut self, seq: u64, fields: &LineFields) {
        let previous = fields.body.get("previous_stop").and_then(|v| v.as_str());
        if previous == Some("tampered") {
            self.problem(
                seq,
                "the gateway that wrote it found records added after its predecessor's final checkpoint".into(),
            );
        }
    }

    /// The columns the store lists by must say what the line says, or a
    /// listing could show what the evidence does not.
    fn check_columns(&mut self, stored: &StoredRecord, fields: &LineFields) {
        if stored.kind != fields.kind {
            self.problem(stored.seq, "its kind column disagrees with its line".into());
        }
        let body_str = |key: &str| fields.body.get(key).and_then(|v| v.as_str());
        let session = match fields.kind.as_str() {
            "session_started" => body_str("id"),
            "session_ended" => body_str("id"),
            _ => body_str("session_id"),
        };
        if stored.session_id.as_deref() != session {
            self.problem(
                stored.seq,
                "its session column disagrees with its line".into(),
            );
        }
        let (user, connection) = if fields.kind == "session_started" {
            (body_str("user"), body_str("connection"))
        } else {
            (None, None)
        };
        if stored.user.as_deref() != user || stored.connection.as_deref() != connection {
            self.problem(
                stored.seq,
                "its user or connection column disagrees with its line".into(),
            );
        }
    }

    /// Feeds the next checkpoint in number order, once the records it
    /// covers have been fed.
    pub fn checkpoint(&mut self, signed: &SignedCheckpoint) {
        self.report.checkpoints += 1;
        let checkpoint = match signed.checkpoint() {
            Ok(c) => c,
            Err(e) => {
                self.problem(0, e.to_string());
                return;
            }
        };
        let at = checkpoint.upto;
        if !self.key.signed(signed) {
            self.problem(
                at,
                format!(
                    "checkpoint {} is not signed by key {} (forged or re-signed)",
                    checkpoint.number,
                    self.key.id()
                ),
            );
        }
        if self.head.is_none() {
            // Before any record: the last of these anchors the first kept
            // record (see `first`).
            self.anchor = Some(checkpoint.clone());
        } else {
            self.check_link(&checkpoint);
            self.check_head(&checkpoint);
        }
        self.after_final = checkpoint.is_final.then_some(checkpoint.number);
        self.previous = Some((checkpoint.number, signed.clone()));
        self.report.last_checkpoint = Some(checkpoint);
    }

    fn check_link(&mut self, checkpoint: &Checkpoint) {
        let Some((number, previous)) = self.previous.clone() else {
            if checkpoint.number != 1 && self.report.first_record == Some(1) {
                self.problem(
                    checkpoint.upto,
                    format!(
                        "checkpoints 1..{} are missing (deleted)",
                        checkpoint.number - 1
                    ),
                );
            }
            return;
        };
        if checkpoint.number != number + 1 {
            self.problem(
                checkpoint.upto,
                format!(
                    "checkpoints {}..{} are missing (deleted)",
                    number + 1,
                    checkpoint.number.saturating_sub(1)
                ),
            );
        } else if checkpoint.prev_signature != previous.signature {
            self.problem(
                checkpoint.upto,
                format!(
                    "checkpoint {} does not follow checkpoint {number}",
                    checkpoint.number
                ),
            );
        }
        if let Ok(earlier) = previous.checkpoint() {
            if checkpoint.upto < earlier.upto {
                self.problem(
                    checkpoint.upto,
                    format!("checkpoint {} goes back in the chain", checkpoint.number),
                );
            }
        }
    }

    /// The head a checkpoint signed must be the chain's at that record.
    fn check_head(&mut self, checkpoint: &Checkpoint) {
        match &self.head {
            Some((seq, hash)) if *seq == checkpoint.upto => {
                if *hash != checkpoint.head {
                    self.problem(
                        checkpoint.upto,
                        format!(
                            "the chain up to record {} is not what checkpoint {} signed (rewritten)",
                            checkpoint.upto, checkpoint.number
                        ),
                    );
                }
            }
            _ => self.problem(
                checkpoint.upto,
                format!(
                    "checkpoint {} covers records up to {}, which the store does not hold (truncated or deleted)",
                    checkpoint.number, checkpoint.upto
                ),
            ),
        }
    }

    /// The report, once everything was fed.
    pub fn finish(mut self) -> Report {
        if self.report.records == 0 {
            // A gateway records its own start before anything else: a
            // store with a key and no record was emptied.
            self.problem(0, "the store holds no records (emptied?)".into());
        }
        let first = self.report.first_record;
        if first.is_some_and(|f| f > 1) && !self.retention_said {
            let f = first.unwrap_or(1);
            self.problem(
                f,
                format!("records before {f} are gone and no retention record says so (deleted)"),
            );
        }
        let covered = self.report.last_checkpoint.as_ref().map_or(0, |c| c.upto);
        self.report.unsealed = self.report.last_record.unwrap_or(0).saturating_sub(covered);
        self.report
    }
}

/// Checks `records` (in sequence order) and `checkpoints` (in number
/// order), each checkpoint right after the record it covers.
pub fn verify<R, C, E>(key: PublicKey, records: R, checkpoints: C) -> Result<Report, E>
where
    R: IntoIterator<Item = Result<StoredRecord, E>>,
    C: IntoIterator<Item = SignedCheckpoint>,
{
    let mut verifier = Verifier::new(key);
    let mut checkpoints = checkpoints.into_iter().peekable();
    let covers = |c: &SignedCheckpoint| c.checkpoint().map_or(0, |c| c.upto);
    for record in records {
        let record = record?;
        while let Some(c) = checkpoints.next_if(|c| covers(c) < record.seq) {
            verifier.checkpoint(&c);
        }
        verifier.record(&record);
    }
    for c in checkpoints {
        verifier.checkpoint(&c);
    }
    Ok(verifier.finish())
}
