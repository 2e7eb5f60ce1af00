//! Statement bookkeeping without I/O: which client message each server
//! response answers, so every statement is recorded with its outcome.
//!
//! The client side ([`FrontendTracker`]) turns client messages into
//! [`Pending`] entries in the order the server will answer them; the server
//! side ([`BackendTracker`]) pops them as responses arrive and hands back
//! finished statements.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use portcullis_core::audit::Decision;
use portcullis_pg_wire::encode::{self, Severity};
use portcullis_pg_wire::{
    rows_in_tag, ErrorFields, FrontendMessage, Param, Target, TransactionStatus,
};
use time::OffsetDateTime;

use crate::error::SessionError;
use portcullis_core::masking::{MaskCounts, Masking};
use portcullis_pg_decide::gate::{GateDecision, StatementGate};
use portcullis_pg_decide::masker::{CopyMasker, MaskPlan, RowMasker};

/// Sent upstream in place of a denied statement: a guaranteed syntax error,
/// so the server fails it (and any open transaction) exactly as it would
/// fail a statement of its own, without running anything. The server's
/// error is then replaced by the gateway's on the way back.
const POISON: &str = "PORTCULLIS DENIED THIS STATEMENT";
/// A prepared statement name no client can have created: a Bind to it
/// fails on the server without running anything.
const POISON_STATEMENT: &str = "\u{1}portcullis denied";
/// Texts remembered under one statement name before further reuse is refused.
const MAX_TEXTS_PER_NAME: usize = 16;

/// What to send upstream for a client message.
#[derive(Debug)]
pub enum Forward {
    /// The client's bytes, unchanged.
    AsIs,
    /// These bytes instead.
    Replace(BytesMut),
}

/// Longest parameter value kept in the record; longer ones are cut.
const PARAM_RECORD_LIMIT: usize = 1024;

/// A statement in flight.
#[derive(Debug, Clone)]
pub struct Stmt {
    /// `query`, `execute`, `parse` or `bind`.
    pub kind: &'static str,
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
    /// The statement's own decision (None: the session's connect decision).
    pub decision: Option<Decision>,
    /// Why the gateway refused it; replaces the upstream's error.
    pub denial: Option<String>,
    /// How its results are masked.
    pub mask: Option<Arc<MaskPlan>>,
    /// What was masked in its results.
    pub masked: MaskCounts,
}

impl Stmt {
    fn new(kind: &'static str, text: Arc<str>) -> Self {
        Self {
            kind,
            text,
            params: None,
            prepared_name: None,
            received: Instant::now(),
            received_at: OffsetDateTime::now_utc(),
            rows: 0,
            has_rows: false,
            error: None,
            decision: None,
            denial: None,
            mask: None,
            masked: MaskCounts::default(),
        }
    }

    /// Applies a gate decision; returns the denial message, if any.
    fn decide(&mut self, decision: GateDecision) -> Option<&str> {
        match decision {
            GateDecision::Allow { policies, mask } => {
                self.decision = Some(Decision {
                    allowed: true,
                    policies,
                });
                self.mask = mask.map(|m| m.0);
                None
            }
            GateDecision::Deny { message, policies } => {
                self.decision = Some(Decision {
                    allowed: false,
                    policies,
                });
                self.denial = Some(message);
                self.denial.as_deref()
            }
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
    /// Close, answered by CloseComplete.
    Close,
    /// Execute, answered by CommandComplete, PortalSuspended, EmptyQuery or an error.
    Execute(Stmt),
    /// Sync, answered by ReadyForQuery.
    Sync,
}

struct Portal {
    text: Arc<str>,
    statement: Arc<str>,
    params: Arc<Vec<Option<String>>>,
    decision: Option<Decision>,
    mask: Option<Arc<MaskPlan>>,
}

#[derive(Clone)]
struct Prepared {
    text: Arc<str>,
    decision: Option<Decision>,
    mask: Option<Arc<MaskPlan>>,
    /// Earlier texts parsed under the same name: the server rejects a
    /// second Parse of a taken name, but the gateway cannot see whether the
    /// first one succeeded, so it keeps deciding for all of them.
    older: Vec<Arc<str>>,
    /// The gate generation the decision was made under.
    generation: (u64, u64),
}

/// Prepared statements and portals as the client defined them.
pub struct FrontendTracker {
    statements: HashMap<Arc<str>, Prepared>,
    portals: HashMap<Arc<str>, Portal>,
    max_statements: usize,
}

impl FrontendTracker {
    /// A tracker allowing at most `max_statements` named prepared statements.
    pub fn new(max_statements: usize) -> Self {
        Self {
            statements: HashMap::new(),
            portals: HashMap::new(),
            max_statements,
        }
    }

    /// Notes a client message, decides statements through `gate`, and
    /// appends what the server will answer to `out`.
    pub fn on_message(
        &mut self,
        msg: &FrontendMessage<'_>,
        out: &mut Vec<Pending>,
        gate: &mut StatementGate,
    ) -> Result<Forward, SessionError> {
        let mut forward = Forward::AsIs;
        match msg {
            FrontendMessage::Query { sql } => {
                let mut s = Stmt::new("query", Arc::from(*sql));
                if s.decide(gate.check(sql)).is_some() {
                    let mut poison = BytesMut::new();
                    encode::query(&mut poison, POISON);
                    forward = Forward::Replace(poison);
                }
                out.push(Pending::Query(s));
            }
            FrontendMessage::Parse { name, sql, .. } => {
                if !name.is_empty() && !self.statements.contains_key(*name) && self.statements.len() >= self.max_statements {
                    return Err(SessionError::not_allowed(format!(
                        "too many prepared statements (limit {})",
                        self.max_statements
                    )));
                }
                let text: Arc<str> = Arc::from(*sql);
                let key: Arc<str> = Arc::from(*name);
                let mut s = Stmt::new("parse", text.clone());
                s.prepared_name = Some(key.clone());
                let older: Vec<Arc<str>> = match self.statements.get(*name).filter(|_| !name.is_empty()) {
                    Some(p) => p.older.iter().cloned().chain([p.text.clone()]).collect(),
                    None => Vec::new(),
                };
                let reused_too_often = older.len() >= MAX_TEXTS_PER_NAME;
                let decision = if reused_too_often {
                    GateDecision::Deny {
                        message: format!("portcullis: statement denied: prepared statement name \"{name}\" reused too often"),
                        policies: Default::default(),
                    }
                } else {
                    gate.check(sql)
                };
                if s.decide(decision).is_some() {
                    // The server never gets the statement, so it can never
                    // be bound or executed under this name.
                    let mut poison = BytesMut::new();
                    encode::parse(&mut poison, name, POISON);
                    forward = Forward::Replace(poison);
                } else {
                    self.statements.insert(
                        key,
                        Prepared {
                            text,
                            decision: s.decision.clone(),
                            mask: s.mask.clone(),
                            older,
                            generation: gate.generation(),
                        },
                    );
                }
                out.push(Pending::Parse(s));
            }
            FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                ..
            } => {
                let (stmt_name, prepared, verdict) = self.bind_decision(statement, gate);
                let rendered = Arc::new(render_params(param_formats, params));
                let mut s = Stmt::new("bind", prepared.text.clone());
                s.prepared_name = Some(stmt_name.clone());
                s.params = Some(rendered.clone());
                s.decision = prepared.decision.clone();
                s.mask = prepared.mask.clone();
                if let Some(GateDecision::Deny { message, policies }) = verdict {
                    s.decide(GateDecision::Deny { message, policies });
                    let mut poison = BytesMut::new();
                    encode::bind(&mut poison, portal, POISON_STATEMENT);
                    forward = Forward::Replace(poison);
                    self.portals.remove(*portal);
                    out.push(Pending::Bind(s));
                    return Ok(forward);
                }
                self.portals.insert(
                    Arc::from(*portal),
                    Portal {
                        text: prepared.text,
                        statement: stmt_name,
                        params: rendered,
                        decision: prepared.decision,
                        mask: prepared.mask,
                    },
                );
                out.push(Pending::Bind(s));
            }
            FrontendMessage::Execute { portal, max_rows } => {
                let s = match self.portals.get(*portal) {
                    Some(p) => {
                        let mut s = Stmt::new("execute", p.text.clone());
                        s.prepared_name = Some(p.statement.clone());
                        s.params = Some(p.params.clone());
                        s.decision = p.decision.clone();
                        s.mask = p.mask.clone();
                        s
                    }
                    None => Stmt::new("execute", Arc::from("")),
                };
                let mut s = s;
                if s.mask.is_none() {
                    // A portal the tracker never bound (a DECLAREd cursor's
                    // name): its query was decided as its own statement.
                    s.mask = gate.conservative_plan();
                }
                if gate.masks_results() {
                    // Rows of an Execute carry no description; ask for the
                    // portal's (with its result formats) right before it.
                    let mut both = BytesMut::new();
                    encode::describe_portal(&mut both, portal);
                    encode::execute(&mut both, portal, *max_rows);
                    forward = Forward::Replace(both);
                    out.push(Pending::MaskDescribe);
                }
                out.push(Pending::Execute(s));
            }
            FrontendMessage::Describe { .. } => out.push(Pending::Describe),
            FrontendMessage::Close { target, name } => {
                match target {
                    Target::Statement => {
                        self.statements.remove(*name);
                    }
                    Target::Portal => {
                        self.portals.remove(*name);
                    }
                }
                out.push(Pending::Close);
            }
            FrontendMessage::Sync => {
                // The unnamed portal does not survive the transaction's end;
                // forgetting it here is harmless and bounds the map.
                self.portals.remove("");
                out.push(Pending::Sync);
            }
            FrontendMessage::Flush
            | FrontendMessage::CopyData(_)
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail { .. }
            | FrontendMessage::Terminate => {}
            FrontendMessage::FunctionCall { oid } => {
                return Err(SessionError::not_allowed(format!(
                    "fast-path function calls (function {oid}) bypass statement policy and are not allowed"
                )))
            }
            FrontendMessage::Password(_) => {
                return Err(SessionError::not_allowed("unexpected password message after login".into()))
            }
        }
        Ok(forward)
    }
}

impl FrontendTracker {
    /// What a Bind of `statement` would run, re-deciding it when the
    /// session or the policies changed since it was decided: PostgreSQL
    /// re-resolves a prepared statement's names when the search_path
    /// changes. A name the tracker never parsed may be a SQL PREPARE.
    fn bind_decision(
        &mut self,
        statement: &str,
        gate: &mut StatementGate,
    ) -> (Arc<str>, Prepared, Option<GateDecision>) {
        let generation = gate.generation();
        let Some((key, prepared)) = self
            .statements
            .get_key_value(statement)
            .map(|(k, v)| (k.clone(), v.clone()))
        else {
            let verdict = gate.check_sql_prepared(statement);
            let (decision, mask) = match &verdict {
                Some(GateDecision::Allow { policies, mask }) => (
                    Some(Decision {
                        allowed: true,
                        policies: policies.clone(),
                    }),
                    mask.as_ref().map(|m| m.0.clone()),
                ),
                _ => (None, None),
            };
            let text: Arc<str> = Arc::from(if verdict.is_some() {
                format!("EXECUTE {statement}")
            } else {
                String::new()
            });
            let prepared = Prepared {
                text,
                decision,
                mask,
                older: Vec::new(),
                generation,
            };
            let verdict = verdict.filter(|v| matches!(v, GateDecision::Deny { .. }));
            return (Arc::from(statement), prepared, verdict);
        };
        if prepared.generation == generation {
            return (key, prepared, None);
        }
        let mut policies = Vec::new();
        let texts: Vec<Arc<str>> = prepared
            .older
            .iter()
            .cloned()
            .chain([prepared.text.clone()])
            .collect();
        let mut mask = None;
        for text in texts {
            match gate.check(&text) {
                GateDecision::Allow {
                    policies: p,
                    mask: m,
                } => {
                    policies.extend(p.iter().cloned());
                    // The last text is the current one.
                    mask = m.map(|m| m.0);
                }
                deny @ GateDecision::Deny { .. } => return (key, prepared, Some(deny)),
            }
        }
        policies.sort();
        policies.dedup();
        let mut updated = prepared;
        updated.mask = mask;
        updated.decision = Some(Decision {
            allowed: true,
            policies: policies.into(),
        });
        updated.generation = gate.generation();
        self.statements.insert(key.clone(), updated.clone());
        (key, updated, None)
    }
}

fn render_params(formats: &[i16], params: &[Param<'_>]) -> Vec<Option<String>> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let binary = match formats.len() {
                0 => false,
                1 => formats[0] == 1,
                _ => formats.get(i) == Some(&1),
            };
            match p {
                Param::Null => None,
                Param::Value(v) => Some(render_value(v, binary)),
            }
        })
        .collect()
}

fn render_value(v: &[u8], binary: bool) -> String {
    let cut = &v[..v.len().min(PARAM_RECORD_LIMIT)];
    let mut s = match (binary, std::str::from_utf8(cut)) {
        (false, Ok(t)) => t.to_owned(),
        _ => {
            let mut h = String::with_capacity(2 + cut.len() * 2);
            h.push_str("\\x");
            for b in cut {
                h.push_str(&format!("{b:02x}"));
            }
            h
        }
    };
    if v.len() > PARAM_RECORD_LIMIT {
        s.push_str(&format!("…({} bytes)", v.len()));
    }
    s
}

/// Pairs server responses with pending client messages.
#[derive(Default)]
pub struct BackendTracker {
    queue: VecDeque<Pending>,
    /// After an extended-protocol error the server ignores everything up
    /// to the next Sync, including messages the client sends later.
    skipping: bool,
    command_rows: u64,
    status: Option<TransactionStatus>,
    /// Masking in force, for messages no statement plan covers.
    masking: Option<Arc<Masking>>,
    /// The current result set's masker.
    rows: Option<RowMasker>,
    /// The current COPY's masker.
    copy: Option<CopyMasker>,
    /// What was masked outside any statement (notifications).
    loose_counts: MaskCounts,
    /// The session's masking scratch space, made at first use (an idle
    /// session holds none).
    scratch: Option<portcullis_core::masking::Scratch>,
}

/// Said in place of an error field that may quote masked values.
const DETAIL_WITHHELD: &str =
    "(withheld by portcullis: it may quote masked values; the SQLSTATE is the server's)";

impl BackendTracker {
    /// A tracker that masks results with `masking`, when it is active.
    pub fn with_masking(masking: Arc<Masking>) -> Self {
        Self {
            masking: masking.is_active().then_some(masking),
            ..Self::default()
        }
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
            if self.skipping {
                if !matches!(item, Pending::Sync) {
                    continue;
                }
                self.skipping = false;
            }
            self.queue.push_back(item);
        }
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
                Pending::Query(s) | Pending::Execute(s) => Some(s),
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
        if tag == b'E' {
            self.rows = None;
            self.copy = None;
            let masked = self.mask_fields(tag, body);
            let replaced = self.on_error(ErrorFields::new(body), done);
            return Ok(replaced.or(masked));
        }
        let out = if self.masking.is_some() {
            self.mask_message(tag, body)?
        } else {
            None
        };
        self.track(tag, body, done);
        Ok(out)
    }

    /// Masking's part: row descriptions set up the masker, rows and copy
    /// data go through it, notices and notifications are scanned.
    fn mask_message(&mut self, tag: u8, body: &[u8]) -> Result<Option<BytesMut>, SessionError> {
        match tag {
            b'T' => {
                let fields = portcullis_pg_wire::rows::row_description(body).map_err(|e| {
                    SessionError::masking_failed(format!(
                        "a row description could not be read ({e}), so its rows cannot be masked; the session is ended"
                    ))
                })?;
                if matches!(self.queue.front(), Some(Pending::MaskDescribe)) {
                    self.queue.pop_front();
                    self.rows = self
                        .current()
                        .and_then(|s| s.mask.clone())
                        .and_then(|p| RowMasker::new(&p, &fields));
                    // Asked by the gateway: the client never sees it.
                    return Ok(Some(BytesMut::new()));
                }
                if matches!(self.queue.front(), Some(Pending::Query(_))) {
                    self.rows = self
                        .current()
                        .and_then(|s| s.mask.clone())
                        .and_then(|p| RowMasker::new(&p, &fields));
                }
                Ok(None)
            }
            b'n' if matches!(self.queue.front(), Some(Pending::MaskDescribe)) => {
                self.queue.pop_front();
                self.rows = None;
                Ok(Some(BytesMut::new()))
            }
            b'D' => {
                let Some(masker) = self.rows.as_mut() else {
                    return Ok(None);
                };
                let Some((counts, scratch)) = sinks(
                    &mut self.queue,
                    &mut self.loose_counts,
                    &mut self.scratch,
                    &self.masking,
                ) else {
                    return Ok(None);
                };
                masker.mask_row(body, counts, scratch).map_err(|e| {
                    SessionError::masking_failed(format!(
                        "a result row could not be masked ({e}); the session is ended"
                    ))
                })
            }
            b'H' => {
                self.copy = self
                    .current()
                    .and_then(|s| s.mask.clone())
                    .map(|p| CopyMasker::new(&p));
                Ok(None)
            }
            b'd' => {
                let Some(masker) = self.copy.as_mut() else {
                    return Ok(None);
                };
                let Some((counts, scratch)) = sinks(
                    &mut self.queue,
                    &mut self.loose_counts,
                    &mut self.scratch,
                    &self.masking,
                ) else {
                    return Ok(None);
                };
                let out = masker.mask_line(body, counts, scratch).map_err(|e| {
                    SessionError::masking_failed(format!(
                        "{e}; masking cannot follow it, so the session is ended"
                    ))
                })?;
                Ok(out.map(|line| framed(b'd', &line)))
            }
            b'A' => {
                let Some(masking) = self.masking.clone() else {
                    return Ok(None);
                };
                let portcullis_pg_wire::BackendMessage::Notification {
                    pid,
                    channel,
                    payload,
                } = portcullis_pg_wire::BackendMessage::decode(tag, body)?
                else {
                    return Ok(None);
                };
                // Notifications answer no statement: scanned unless the
                // last statement's principal is exempt.
                let mut counts = MaskCounts::default();
                let masked = masking.mask_text(payload, &mut counts);
                self.loose_counts.merge(&counts);
                Ok(masked.map(|p| {
                    let mut out = BytesMut::new();
                    encode::notification(&mut out, pid, channel, &p);
                    out
                }))
            }
            b'N' => Ok(self.mask_fields(tag, body)),
            _ => Ok(None),
        }
    }

    fn count(&mut self, counts: &MaskCounts) {
        if counts.is_empty() {
            return;
        }
        match self.current() {
            Some(s) => s.masked.merge(counts),
            None => self.loose_counts.merge(counts),
        }
    }

    /// An error or notice with values masked: DETAIL withheld when the
    /// statement touches masked columns, every field scanned.
    fn mask_fields(&mut self, tag: u8, body: &[u8]) -> Option<BytesMut> {
        let masking = self.masking.clone()?;
        let plan = self.current().and_then(|s| s.mask.clone());
        let withhold = plan.as_ref().is_some_and(|p| p.withholds_details());
        let scan = plan.as_ref().is_none_or(|p| p.scan) && masking.scans();
        let mut counts = MaskCounts::default();
        let mut changed = false;
        let fields: Vec<(u8, String)> = ErrorFields::new(body)
            .iter()
            .map(|(code, value)| {
                // DETAIL, CONTEXT and HINT quote values (a duplicate key, a
                // COPY line); a message quotes a value in double quotes
                // (`invalid input syntax for type integer: "…"`).
                let quotes =
                    matches!(code, b'D' | b'W' | b'H') || (code == b'M' && value.contains('"'));
                if withhold && quotes {
                    changed = true;
                    return (code, DETAIL_WITHHELD.to_owned());
                }
                // Severity, code and position fields hold no data.
                if matches!(code, b'S' | b'V' | b'C' | b'P' | b'p' | b'F' | b'L' | b'R') {
                    return (code, value.to_owned());
                }
                if !scan {
                    return (code, value.to_owned());
                }
                match masking.mask_text(value, &mut counts) {
                    Some(m) => {
                        changed = true;
                        (code, m)
                    }
                    None => (code, value.to_owned()),
                }
            })
            .collect();
        self.count(&counts);
        changed.then(|| {
            let mut out = BytesMut::new();
            encode::error_fields(&mut out, tag, fields.iter().map(|(c, v)| (*c, v.as_str())));
            out
        })
    }

    fn track(&mut self, tag: u8, body: &[u8], done: &mut Vec<Stmt>) {
        match tag {
            b'D' => self.command_rows += 1,
            b'C' => {
                self.rows = None;
                let tag_rows = std::str::from_utf8(body.strip_suffix(b"\0").unwrap_or(body))
                    .ok()
                    .and_then(rows_in_tag);
                let rows = tag_rows.unwrap_or(self.command_rows);
                let counted = tag_rows.is_some() || self.command_rows > 0;
                self.command_rows = 0;
                match self.queue.front_mut() {
                    Some(Pending::Query(s)) => {
                        s.rows += rows;
                        s.has_rows |= counted;
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
                self.status = body.first().and_then(|b| match b {
                    b'I' => Some(TransactionStatus::Idle),
                    b'T' => Some(TransactionStatus::InTransaction),
                    b'E' => Some(TransactionStatus::Failed),
                    _ => None,
                });
                match self.queue.pop_front() {
                    Some(Pending::Query(s)) => done.push(s),
                    Some(Pending::Execute(s)) => done.push(s),
                    _ => {}
                }
            }
            b'1' => self.pop_if(|p| matches!(p, Pending::Parse(_))),
            b'2' => self.pop_if(|p| matches!(p, Pending::Bind(_))),
            b'3' => self.pop_if(|p| matches!(p, Pending::Close)),
            b'T' | b'n' => self.pop_if(|p| matches!(p, Pending::Describe)),
            b'c' => self.copy = None,
            _ => {}
        }
    }

    fn pop_if(&mut self, pred: impl Fn(&Pending) -> bool) {
        if self.queue.front().is_some_and(pred) {
            self.queue.pop_front();
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
        if let Some(Pending::Query(s) | Pending::Parse(s) | Pending::Bind(s)) = self.queue.front() {
            if let Some(denial) = &s.denial {
                // The upstream failed our stand-in; the client hears why.
                let mut out = BytesMut::new();
                encode::error_response(&mut out, Severity::Error, "42501", denial);
                text = format!("42501: {denial}");
                replacement = Some(out);
            }
        }
        match self.queue.front_mut() {
            // A simple query runs until ReadyForQuery; keep the first error.
            Some(Pending::Query(s)) => {
                s.error.get_or_insert(text);
            }
            // An error at Sync (say, a failed commit) answers no statement.
            Some(Pending::Sync) | None => {}
            Some(_) => {
                if let Some(
                    Pending::Parse(mut s) | Pending::Bind(mut s) | Pending::Execute(mut s),
                ) = self.queue.pop_front()
                {
                    s.error = Some(text);
                    done.push(s);
                }
                // The server now skips everything up to Sync, including what
                // the client has not sent yet.
                while let Some(p) = self.queue.front() {
                    if matches!(p, Pending::Sync) {
                        break;
                    }
                    self.queue.pop_front();
                }
                self.skipping = self.queue.is_empty();
            }
        }
        replacement
    }
}

/// Where masking counts go (straight into the statement whose results
/// these are: no map per row) and the session's scratch space, made at
/// first use. Free-standing so the caller can hold its masker, another
/// field, at the same time.
fn sinks<'a>(
    queue: &'a mut VecDeque<Pending>,
    loose: &'a mut MaskCounts,
    scratch: &'a mut Option<portcullis_core::masking::Scratch>,
    masking: &Option<Arc<Masking>>,
) -> Option<(
    &'a mut MaskCounts,
    &'a mut portcullis_core::masking::Scratch,
)> {
    let counts = match queue.front_mut() {
        Some(Pending::Query(s) | Pending::Execute(s)) => &mut s.masked,
        _ => loose,
    };
    let scratch = match (scratch, masking) {
        (Some(s), _) => s,
        (slot, Some(m)) => slot.insert(m.scratch()),
        (_, None) => return None,
    };
    Some((counts, scratch))
}

/// A whole message with `tag` and `body`.
fn framed(tag: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(
        &u32::try_from(body.len() + 4)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests;
