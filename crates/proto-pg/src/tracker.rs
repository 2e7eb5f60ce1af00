//! Statement bookkeeping without I/O: which client message each server
//! response answers, so every statement is recorded with its outcome.
//!
//! The client side ([`FrontendTracker`]) turns client messages into
//! [`Pending`] entries in the order the server will answer them; the server
//! side ([`BackendTracker`]) pops them as responses arrive and hands back
//! finished statements.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use portcullis_core::audit::Decision;
use portcullis_core::masking::{MaskCounts, Masking};
use portcullis_pg_decide::{Allowed, GateDecision, RowGate, RowPolicy};
use portcullis_pg_wire::encode::{self, Severity};
use portcullis_pg_wire::{command_complete_rows, ClientEncoding, ErrorFields, TransactionStatus};
use time::OffsetDateTime;

use crate::error::SessionError;

mod encoding;
mod front;
mod names;
mod results;
pub use encoding::EncodingReports;
pub use front::{FrontendTracker, ReviewVerdict};
pub use portcullis_pg_decide::Forward;

/// A statement in flight.
#[derive(Debug, Clone)]
pub struct Stmt {
    /// `query`, `execute`, `parse` or `bind`.
    pub kind: &'static str,
    /// Its number in the session, once journaled before it was forwarded.
    pub seq: Option<u64>,
    /// The statement text.
    pub text: Arc<str>,
    /// Bind parameters as recorded.
    pub params: Option<Arc<Vec<Option<String>>>>,
    /// Prepared statement name, for extended protocol.
    pub prepared_name: Option<Arc<str>>,
    /// When the gateway received it.
    pub received: Instant,
    /// Wall-clock time of receipt.
    pub received_at: OffsetDateTime,
    /// Rows returned or affected so far.
    pub rows: u64,
    /// Whether the server reported a row count.
    pub has_rows: bool,
    /// `SQLSTATE: message` of the first error.
    pub error: Option<String>,
    /// The decision that let it run or stopped it.
    pub decision: Decision,
    /// The review whose approval let it run, if one did.
    pub review: Option<u64>,
    /// Why the gateway refused it, with its SQLSTATE; replaces the
    /// upstream's error.
    pub denial: Option<(String, &'static str)>,
    /// How its result rows reach the client (`None`: it was refused, and
    /// no row of it may pass).
    pub rows_policy: Option<RowPolicy>,
    /// What was masked in its results.
    pub masked: MaskCounts,
    /// Changes to prepared statement and portal names it makes, by the
    /// statement of its text that makes each (a Parse or Bind: 0).
    pub changes: Vec<(usize, u64)>,
    /// Statements of its text the server completed.
    pub completed: usize,
}

impl Stmt {
    /// A statement as the gate decided it.
    fn decided(kind: &'static str, text: Arc<str>, decision: &GateDecision) -> Self {
        let (denial, rows_policy) = match decision {
            GateDecision::Allow(a) => (None, Some(a.rows().clone())),
            GateDecision::Deny(d) => (Some((d.message().to_owned(), d.sqlstate())), None),
            // Never sent as it is: a hold ends approved (an Allow) or not
            // (a Deny) before the statement is forwarded.
            GateDecision::Review(_) => (
                Some(("portcullis: statement held for review".to_owned(), "42501")),
                None,
            ),
        };
        Self {
            kind,
            seq: None,
            text,
            params: None,
            prepared_name: None,
            received: Instant::now(),
            received_at: OffsetDateTime::now_utc(),
            rows: 0,
            has_rows: false,
            error: None,
            decision: decision.record(),
            review: None,
            denial,
            rows_policy,
            masked: MaskCounts::default(),
            changes: Vec::new(),
            completed: 0,
        }
    }

    /// A statement the gate allowed.
    fn allowed(kind: &'static str, text: Arc<str>, allowed: &Allowed) -> Self {
        Self::decided(kind, text, &GateDecision::Allow(allowed.clone()))
    }

    /// The mask plan of its results, if they are masked.
    fn mask_plan(&self) -> Option<&Arc<portcullis_pg_decide::masker::MaskPlan>> {
        match &self.rows_policy {
            Some(RowPolicy::Masked(plan)) => Some(plan),
            _ => None,
        }
    }
}

/// What the server will answer next, in order.
#[derive(Debug)]
pub enum Pending {
    /// A simple Query, answered up to ReadyForQuery.
    Query(Stmt),
    /// Parse; recorded only if it fails.
    Parse(Stmt),
    /// Bind; recorded only if it fails.
    Bind(Stmt),
    /// Describe, answered by RowDescription or NoData.
    Describe,
    /// A Describe the gateway added before an Execute so it knows the
    /// result's columns and formats; its answer is not forwarded.
    MaskDescribe,
    /// Close, answered by CloseComplete; its change to the names.
    Close(Option<u64>),
    /// Execute, answered by CommandComplete, PortalSuspended, EmptyQuery or an error.
    Execute(Stmt),
    /// Sync, answered by ReadyForQuery; its change to the names.
    Sync(Option<u64>),
    /// A text the grammar rejects, put to the server's parser instead
    /// (see `StandIn::syntax_probe`): answered by the server's syntax
    /// error, or, should it accept the text, by ParseComplete,
    /// CloseComplete and the poison's error, which the gateway's refusal
    /// replaces. In place of a simple Query, a ReadyForQuery follows.
    SyntaxProbe(Stmt, Probe),
}

/// An answer that is no change's: the server reported no transaction
/// open (ReadyForQuery `I`), so every portal a Bind made is gone.
pub(crate) const TRANSACTION_ENDED: u64 = u64::MAX;

/// How far a syntax probe's answer has come.
#[derive(Debug, Default)]
pub struct Probe {
    /// The server accepted the text (ParseComplete came first).
    accepted: bool,
    /// The error arrived.
    failed: bool,
}

/// Pairs server responses with pending client messages.
pub struct BackendTracker {
    queue: VecDeque<Pending>,
    /// After an extended-protocol error the server ignores everything up
    /// to the next Sync, including messages the client sends later.
    skipping: bool,
    command_rows: u64,
    status: Option<TransactionStatus>,
    /// Masking in force, for messages no statement plan covers.
    masking: Option<Arc<Masking>>,
    /// The current result set's gate: the only way its rows pass.
    rows: Option<RowGate>,
    /// The current COPY's gate: the only way its lines pass.
    copy: Option<RowGate>,
    /// What was masked outside any statement (notifications).
    loose_counts: MaskCounts,
    /// The session's masking scratch space, made at first use (an idle
    /// session holds none).
    scratch: Option<portcullis_core::masking::Scratch>,
    /// Changes to names the server answered: `(change, held)`.
    answered: Vec<(u64, bool)>,
    /// Entries pushed so far; those no longer queued are answered.
    pushed: u64,
    /// The client's encoding, as the server last reported it: the
    /// gateway's own texts are written in it.
    encoding: ClientEncoding,
}

impl BackendTracker {
    /// The gateway's notices (`portcullis: review 42 is waiting …`), as
    /// NoticeResponses in the client's encoding.
    pub fn notices(&self, texts: &[String]) -> BytesMut {
        let mut out = BytesMut::new();
        for text in texts {
            encode::notice_response_bytes(&mut out, "01000", &self.encoding.encode(text));
        }
        out
    }
}

/// The gateway's refusal of a statement, as an ErrorResponse in the
/// client's encoding (its texts name objects as the client wrote them).
fn refusal(encoding: ClientEncoding, code: &str, denial: &str) -> BytesMut {
    let mut out = BytesMut::new();
    encode::error_response_bytes(&mut out, Severity::Error, code, &encoding.encode(denial));
    out
}

impl Default for BackendTracker {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            skipping: false,
            command_rows: 0,
            status: None,
            masking: None,
            rows: None,
            copy: None,
            loose_counts: MaskCounts::default(),
            scratch: None,
            answered: Vec::new(),
            pushed: 0,
            encoding: ClientEncoding::UTF8,
        }
    }
}

impl BackendTracker {
    /// A tracker that masks results with `masking`, when it is active.
    pub fn with_masking(masking: Arc<Masking>) -> Self {
        Self {
            masking: masking.is_active().then_some(masking),
            ..Self::default()
        }
    }

    /// Writing the gateway's texts in the `client_encoding` the server
    /// reported at login.
    pub fn with_encoding(mut self, at_login: Option<&str>) -> Self {
        self.encoding = at_login
            .and_then(ClientEncoding::by_name)
            .unwrap_or(ClientEncoding::UTF8);
        self
    }

    /// The plan and counts of the statement whose results are arriving.
    fn current(&mut self) -> Option<&mut Stmt> {
        match self.queue.front_mut() {
            Some(Pending::Query(s) | Pending::Execute(s)) => Some(s),
            _ => None,
        }
    }

    /// Adds what the client sent, in order.
    pub fn push(&mut self, items: impl IntoIterator<Item = Pending>) {
        for item in items {
            self.pushed += 1;
            if self.skipping {
                if !matches!(item, Pending::Sync(_)) {
                    // The server skips it: whatever it would change, it
                    // changes nothing.
                    self.answer(&item, false);
                    continue;
                }
                self.skipping = false;
            }
            self.queue.push_back(item);
        }
    }

    /// Notes the server's answer to every name change of `item`.
    fn answer(&mut self, item: &Pending, held: bool) {
        match item {
            Pending::Query(s) | Pending::Parse(s) | Pending::Bind(s) | Pending::Execute(s) => {
                self.answered
                    .extend(s.changes.iter().map(|&(_, id)| (id, held)));
            }
            Pending::Close(Some(id)) | Pending::Sync(Some(id)) => self.answered.push((*id, held)),
            _ => {}
        }
    }

    /// The name changes the server answered since the last call.
    pub fn take_answered(&mut self) -> Vec<(u64, bool)> {
        std::mem::take(&mut self.answered)
    }

    /// How many entries pushed so far the server has answered (or
    /// skipped): they are answered in order.
    pub fn answered_entries(&self) -> u64 {
        self.pushed - self.queue.len() as u64
    }

    /// Whether something sent is still unanswered.
    pub fn in_flight(&self) -> bool {
        !self.queue.is_empty()
    }

    /// How many messages sent are still unanswered.
    pub fn unanswered(&self) -> usize {
        self.queue.len()
    }

    /// The last transaction status the server reported.
    pub fn status(&self) -> Option<TransactionStatus> {
        self.status
    }

    /// Statements still unanswered, for recording when the session ends.
    pub fn drain_unfinished(&mut self) -> Vec<Stmt> {
        self.queue
            .drain(..)
            .filter_map(|p| match p {
                Pending::Query(s) | Pending::Execute(s) | Pending::SyntaxProbe(s, _) => Some(s),
                Pending::Bind(s) if s.seq.is_some() => Some(s),
                _ => None,
            })
            .collect()
    }

    /// Notes one server message; finished statements go to `done`. Returns
    /// the bytes to send the client instead, when the message must change
    /// (empty bytes: send nothing). Fails when a message that must be
    /// masked cannot be read: nothing unmasked is ever passed on.
    pub fn on_message(
        &mut self,
        tag: u8,
        body: &[u8],
        done: &mut Vec<Stmt>,
    ) -> Result<Option<BytesMut>, SessionError> {
        if tag == b'Z' && (self.queue.is_empty() || self.skipping) {
            // A Sync the gateway never passed on: the server and the
            // gateway no longer agree on what answers what.
            return Err(SessionError::upstream(
                "the server answered a Sync the gateway did not send; the session is ended".into(),
            ));
        }
        if matches!(tag, b'1' | b'3' | b'E' | b'Z')
            && matches!(self.queue.front(), Some(Pending::SyntaxProbe(..)))
        {
            return Ok(self.on_probe_answer(tag, body, done));
        }
        if tag == b'E' {
            self.rows = None;
            self.copy = None;
            let masked = self.mask_fields(tag, body);
            let replaced = self.on_error(ErrorFields::new(body), done);
            return Ok(replaced.or(masked));
        }
        let out = self.gate_message(tag, body)?;
        self.track(tag, body, done);
        Ok(out)
    }

    /// An answer to a syntax probe: the server's own syntax error passes
    /// as it is; its acceptance is hidden and its poison's error becomes
    /// the gateway's refusal.
    fn on_probe_answer(&mut self, tag: u8, body: &[u8], done: &mut Vec<Stmt>) -> Option<BytesMut> {
        let encoding = self.encoding;
        let Some(Pending::SyntaxProbe(stmt, probe)) = self.queue.front_mut() else {
            return None;
        };
        let with_sync = stmt.kind == "query";
        match tag {
            b'1' | b'3' => {
                probe.accepted = true;
                Some(BytesMut::new())
            }
            b'E' if !probe.failed => {
                probe.failed = true;
                let fields = ErrorFields::new(body);
                let mut replaced = None;
                let text = if probe.accepted {
                    let (denial, code) = stmt.denial.clone().unwrap_or_default();
                    replaced = Some(refusal(encoding, code, &denial));
                    format!("{code}: {denial}")
                } else {
                    format!(
                        "{}: {}",
                        fields.code().unwrap_or("?"),
                        fields.message().unwrap_or("")
                    )
                };
                stmt.error = Some(text);
                if !with_sync {
                    // Like a failed Parse: the server now skips to Sync.
                    if let Some(Pending::SyntaxProbe(s, _)) = self.queue.pop_front() {
                        done.push(s);
                    }
                    self.skip_to_sync(done);
                }
                replaced
            }
            b'Z' if with_sync => {
                self.status = TransactionStatus::of_ready_for_query(body);
                if let Some(Pending::SyntaxProbe(s, _)) = self.queue.pop_front() {
                    done.push(s);
                }
                None
            }
            _ => None,
        }
    }

    /// The server skips everything up to Sync after an error, including
    /// what the client has not sent yet.
    /// Drops what the server skips after an error, up to Sync; a skipped
    /// statement that was journaled before it was forwarded gets its
    /// outcome: it did not run.
    fn skip_to_sync(&mut self, done: &mut Vec<Stmt>) {
        while let Some(p) = self.queue.front() {
            if matches!(p, Pending::Sync(_)) {
                break;
            }
            if let Some(item) = self.queue.pop_front() {
                self.answer(&item, false);
                if let Pending::Bind(mut s) | Pending::Execute(mut s) = item {
                    if s.seq.is_some() {
                        s.error = Some("not run: an earlier message of its pipeline failed".into());
                        done.push(s);
                    }
                }
            }
        }
        self.skipping = self.queue.is_empty();
    }

    fn track(&mut self, tag: u8, body: &[u8], done: &mut Vec<Stmt>) {
        match tag {
            b'D' => self.command_rows += 1,
            b'S' => {
                if let Ok(portcullis_pg_wire::BackendMessage::ParameterStatus { name, value }) =
                    portcullis_pg_wire::BackendMessage::decode(tag, body)
                {
                    if name == "client_encoding" {
                        if let Some(encoding) = ClientEncoding::by_name(value) {
                            self.encoding = encoding;
                        }
                    }
                }
            }
            b'C' => {
                self.rows = None;
                let tag_rows = command_complete_rows(body);
                let rows = tag_rows.unwrap_or(self.command_rows);
                let counted = tag_rows.is_some() || self.command_rows > 0;
                self.command_rows = 0;
                match self.queue.front_mut() {
                    Some(Pending::Query(s)) => {
                        s.rows += rows;
                        s.has_rows |= counted;
                        // This statement of the text completed: its name
                        // changes hold.
                        let finished = s.completed;
                        s.completed += 1;
                        for &(statement, id) in &s.changes {
                            if statement == finished {
                                self.answered.push((id, true));
                            }
                        }
                    }
                    Some(Pending::Execute(_)) => {
                        if let Some(Pending::Execute(mut s)) = self.queue.pop_front() {
                            s.rows += rows;
                            s.has_rows |= counted;
                            done.push(s);
                        }
                    }
                    _ => {}
                }
            }
            b's' | b'I' => {
                self.rows = None;
                let rows = std::mem::take(&mut self.command_rows);
                if let Some(Pending::Execute(_)) = self.queue.front() {
                    if let Some(Pending::Execute(mut s)) = self.queue.pop_front() {
                        s.rows += rows;
                        s.has_rows |= tag == b's';
                        done.push(s);
                    }
                }
            }
            b'Z' => {
                self.command_rows = 0;
                self.status = TransactionStatus::of_ready_for_query(body);
                if self.status == Some(TransactionStatus::Idle) {
                    self.answered.push((TRANSACTION_ENDED, true));
                }
                match self.queue.pop_front() {
                    Some(Pending::Query(s)) => {
                        // Statements after an error never ran.
                        for &(statement, id) in &s.changes {
                            if statement >= s.completed {
                                self.answered.push((id, false));
                            }
                        }
                        done.push(s)
                    }
                    Some(Pending::Execute(s)) => done.push(s),
                    Some(sync @ Pending::Sync(_)) => self.answer(&sync, true),
                    _ => {}
                }
            }
            b'1' => self.pop_if(|p| matches!(p, Pending::Parse(_))),
            // A Bind journaled on its own (no Execute followed it) gets its
            // outcome recorded; others are recorded only when they fail.
            b'2' if self
                .queue
                .front()
                .is_some_and(|p| matches!(p, Pending::Bind(_))) =>
            {
                if let Some(item) = self.queue.pop_front() {
                    self.answer(&item, true);
                    if let Pending::Bind(s) = item {
                        if s.seq.is_some() {
                            done.push(s);
                        }
                    }
                }
            }
            b'3' => self.pop_if(|p| matches!(p, Pending::Close(_))),
            b'T' | b'n' => self.pop_if(|p| matches!(p, Pending::Describe)),
            b'c' => self.copy = None,
            _ => {}
        }
    }

    /// Pops the front entry if it is what a response answers: its name
    /// changes hold.
    fn pop_if(&mut self, pred: impl Fn(&Pending) -> bool) {
        if self.queue.front().is_some_and(pred) {
            if let Some(item) = self.queue.pop_front() {
                self.answer(&item, true);
            }
        }
    }

    fn on_error(&mut self, e: ErrorFields<'_>, done: &mut Vec<Stmt>) -> Option<BytesMut> {
        self.command_rows = 0;
        // The gateway's own Describe failed (say, no such portal): the
        // error belongs to the Execute it was sent for.
        if matches!(self.queue.front(), Some(Pending::MaskDescribe)) {
            self.queue.pop_front();
        }
        let mut text = format!("{}: {}", e.code().unwrap_or("?"), e.message().unwrap_or(""));
        let mut replacement = None;
        if let Some(
            Pending::Query(s) | Pending::Parse(s) | Pending::Bind(s) | Pending::Execute(s),
        ) = self.queue.front()
        {
            if let Some((denial, code)) = &s.denial {
                // The upstream failed our stand-in; the client hears why.
                replacement = Some(refusal(self.encoding, code, denial));
                text = format!("{code}: {denial}");
            }
        }
        match self.queue.front_mut() {
            // A simple query runs until ReadyForQuery; keep the first error.
            Some(Pending::Query(s)) => {
                s.error.get_or_insert(text);
            }
            // An error at Sync (say, a failed commit) answers no statement.
            Some(Pending::Sync(_)) | None => {}
            Some(_) => {
                if let Some(item) = self.queue.pop_front() {
                    self.answer(&item, false);
                    if let Pending::Parse(mut s) | Pending::Bind(mut s) | Pending::Execute(mut s) =
                        item
                    {
                        s.error = Some(text);
                        done.push(s);
                    }
                }
                self.skip_to_sync(done);
            }
        }
        replacement
    }
}

#[cfg(test)]
mod tests;
