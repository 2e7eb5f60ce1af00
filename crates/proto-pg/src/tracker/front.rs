//! The client side: prepared statements and portals as the client defined
//! them, every statement decided through the gate, and each message turned
//! into a [`Forward`] (a permit, or a stand-in) and the [`Pending`] entries
//! the server will answer.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_core::approvals::Approved;
use portcullis_pg_decide::gate::Definition;
use portcullis_pg_decide::{
    hold_key, Allowed, Denied, Forward, GateDecision, Hold, HoldSubject, Permit, StandIn,
    StatementGate,
};
use portcullis_pg_sql::Effect;
use portcullis_pg_wire::{FrontendMessage, Param, Target};

use super::encoding::{EncodingReports, EncodingWatch};
use super::names::{Change, Ledger};
use super::{Pending, Probe, Stmt};
use crate::error::SessionError;

/// Longest parameter value kept in the record; longer ones are cut.
pub(super) const PARAM_RECORD_LIMIT: usize = 1024;

/// What a portal name holds.
#[derive(Clone)]
enum PortalDef {
    /// A Bind of a decided statement.
    Bound(Arc<Portal>),
    /// A cursor DECLAREd in a query, decided as its own statement under
    /// this policy generation.
    Cursor(u64),
}

impl PartialEq for PortalDef {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PortalDef::Bound(a), PortalDef::Bound(b)) => Arc::ptr_eq(a, b),
            (PortalDef::Cursor(a), PortalDef::Cursor(b)) => a == b,
            _ => false,
        }
    }
}

struct Portal {
    text: Arc<str>,
    statement: Arc<str>,
    params: Arc<Vec<Option<String>>>,
    allowed: Allowed,
    /// The review whose approval let it be bound, if one did.
    review: Option<u64>,
    /// The policy generation (policies and grants) it was decided under.
    policy_generation: u64,
}

impl PortalDef {
    /// Whether it was decided under other policies or grants than those
    /// in force: a portal or cursor keeps what it was bound or declared to
    /// run, so a grant's end or a tightened policy must not leave it
    /// runnable.
    fn stale(&self, policy_generation: u64) -> bool {
        match self {
            PortalDef::Bound(p) => p.policy_generation != policy_generation,
            PortalDef::Cursor(g) => *g != policy_generation,
        }
    }
}

/// The refusal of a portal or cursor decided under other policies.
fn stale_portal(name: &str) -> Denied {
    Denied::new(
        format!("portcullis: the policies or grants changed since portal \"{name}\" was bound or declared; bind or declare it again"),
        Default::default(),
    )
}

/// The last decision of a Bind of one prepared statement name, kept while
/// the name's definition and the gate's generation stay the same.
struct BindCache {
    definition: Definition,
    generation: (u64, u64),
    allowed: Allowed,
}

/// Prepared statements and portals as the server confirmed them.
pub struct FrontendTracker {
    statements: Ledger<Definition>,
    portals: Ledger<PortalDef>,
    binds: HashMap<Arc<str>, BindCache>,
    /// Numbers the changes sent, so the server's answers can settle them.
    next_change: u64,
    /// Counts Syncs and Queries sent: an error makes the server skip
    /// messages only up to the next one.
    stretch: u64,
    /// Whether extended-protocol messages were sent since the last Sync.
    extended_in_stretch: bool,
    /// Whether an Execute was sent since the last Sync: a statement held
    /// for review after it would hold that statement's locks too.
    executed_in_stretch: bool,
    /// Whether a Query or Execute came earlier in the current read (it is
    /// sent before a statement after it is held).
    ran_in_read: bool,
    /// The encoding the server reads the client's messages in.
    encoding: EncodingWatch,
    max_statements: usize,
    /// How the review of the message decided next ended.
    verdict: Option<ReviewVerdict>,
    /// The review whose approval released the message just decided.
    released_by: Option<u64>,
    /// The requester's reason from `SET portcullis.reason`, for reviews.
    reason: Option<String>,
}

/// How a statement's review ended, for deciding its message again.
#[derive(Debug)]
pub enum ReviewVerdict {
    /// Approved: it runs, once.
    Approved(Approved),
    /// Denied, withdrawn or not decided in time: it is refused so.
    Refused(Denied),
}

impl FrontendTracker {
    /// A tracker allowing at most `max_statements` named prepared statements.
    pub fn new(max_statements: usize) -> Self {
        Self {
            statements: Ledger::default(),
            portals: Ledger::default(),
            binds: HashMap::new(),
            next_change: 0,
            stretch: 0,
            extended_in_stretch: false,
            executed_in_stretch: false,
            ran_in_read: false,
            encoding: EncodingWatch::new(),
            max_statements,
            verdict: None,
            released_by: None,
            reason: None,
        }
    }

    fn change_id(&mut self) -> u64 {
        self.next_change += 1;
        self.next_change
    }

    /// Decides the held message again with how its review ended: call
    /// before handing the same message to [`FrontendTracker::on_message`].
    pub fn review_ended(&mut self, verdict: ReviewVerdict) {
        self.verdict = Some(verdict);
    }

    /// The reason the client gave for its statements, if any.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// A decision with any review settled: `Err` asks to hold the message.
    fn settle_review(
        &mut self,
        decision: GateDecision,
        subject: HoldSubject<'_>,
        shown_params: &[Option<String>],
    ) -> Result<GateDecision, Box<Hold>> {
        self.released_by = None;
        let GateDecision::Review(held) = decision else {
            self.verdict = None;
            return Ok(decision);
        };
        let key = hold_key(held.need(), subject);
        match self.verdict.take() {
            Some(ReviewVerdict::Approved(approved)) => {
                let review = approved.review();
                Ok(match held.release(approved, &key) {
                    Some(allowed) => {
                        self.released_by = Some(review);
                        GateDecision::Allow(allowed)
                    }
                    None => GateDecision::Deny(Denied::new(
                        format!("portcullis: review {review} approved another statement than this one; it is refused"),
                        Default::default(),
                    )),
                })
            }
            Some(ReviewVerdict::Refused(denied)) => Ok(GateDecision::Deny(denied)),
            None => {
                let (HoldSubject::Query(text) | HoldSubject::Bind { text, .. }) = subject;
                Err(Box::new(Hold {
                    need: held.need().clone(),
                    statement: Arc::from(text),
                    params: shown_params.to_vec(),
                    key,
                    alone: !self.executed_in_stretch && !self.ran_in_read,
                }))
            }
        }
    }

    /// `decision`, or a refusal when it fetches from a cursor or portal
    /// decided under other policies or grants.
    fn refuse_stale_fetches(&self, decision: GateDecision, gate: &StatementGate) -> GateDecision {
        let GateDecision::Allow(a) = &decision else {
            return decision;
        };
        if a.fetches().is_empty() {
            return decision;
        }
        let policy_generation = gate.generation().1;
        let stale = a.fetches().iter().find(|name| {
            self.portals
                .candidates(name, self.stretch)
                .iter()
                .flatten()
                .any(|p| p.stale(policy_generation))
        });
        match stale {
            Some(name) => GateDecision::Deny(stale_portal(name)),
            None => decision,
        }
    }

    /// Starts deciding what one read from the client brought.
    pub fn new_read(&mut self) {
        self.ran_in_read = false;
    }

    /// The parameter types the Parse of `statement` declared, when the
    /// server can hold only one definition under the name.
    fn declared_types(&self, statement: &str) -> Arc<[u32]> {
        match self
            .statements
            .candidates(statement, self.stretch)
            .as_slice()
        {
            [Some(Definition::Text(_, types))] => types.clone(),
            _ => Arc::from([]),
        }
    }

    /// Settles changes the server answered: `(change, held)`.
    pub fn resolve(&mut self, answers: &[(u64, bool)], gate: &mut StatementGate) {
        for &(change, held) in answers {
            if change == super::TRANSACTION_ENDED {
                // Bound portals end with their transaction (cursors WITH
                // HOLD outlive it): forgetting them bounds the ledger.
                self.portals
                    .forget_confirmed(|p| matches!(p, PortalDef::Bound(_)));
                continue;
            }
            if let Some(touched) = self.statements.resolve(change, held) {
                self.sync_gate(touched, gate);
            } else {
                self.portals.resolve(change, held);
            }
        }
    }

    /// Tells the gate what `EXECUTE name` may run now (`None`: any name).
    fn sync_gate(&mut self, name: Option<Arc<str>>, gate: &mut StatementGate) {
        let names = match name {
            Some(n) => vec![n],
            None => {
                let mut all = self.statements.names();
                all.extend(gate.prepared_names().into_iter().map(Arc::from));
                all
            }
        };
        for n in names {
            let defs = self.statements.all_candidates(&n);
            if gate.knows_prepared(&n) || defs.iter().any(|d| matches!(d, Definition::Sql(_))) {
                gate.set_prepared(&n, &defs);
            }
        }
    }

    /// Notes a change to the statement namespace, sent as change `id`.
    fn statement_change(&mut self, id: u64, change: Change<Definition>, gate: &mut StatementGate) {
        let touched = match &change {
            Change::Define(n, _) | Change::Remove(n) => Some(n.clone()),
            Change::RemoveAll => None,
        };
        self.statements.sent(id, self.stretch, change);
        self.sync_gate(touched, gate);
    }

    /// The encoding to read the client's next message in, as far as the
    /// server has confirmed it (see `encoding.rs`).
    pub fn reading_encoding(
        &mut self,
        reports: &EncodingReports,
    ) -> Result<portcullis_pg_wire::ClientEncoding, SessionError> {
        self.encoding.for_next_message(reports)
    }

    /// Notes a client message, decides statements through `gate`, and
    /// appends what the server will answer to `out`. What it returns is the
    /// only leave to send the message upstream.
    pub fn on_message(
        &mut self,
        msg: &FrontendMessage<'_>,
        out: &mut Vec<Pending>,
        gate: &mut StatementGate,
    ) -> Result<Forward, SessionError> {
        let before = out.len();
        let forward = self.handle(msg, out, gate);
        self.encoding
            .sent(out.len() - before, matches!(msg, FrontendMessage::Sync));
        forward
    }

    fn handle(
        &mut self,
        msg: &FrontendMessage<'_>,
        out: &mut Vec<Pending>,
        gate: &mut StatementGate,
    ) -> Result<Forward, SessionError> {
        if let Some(name) = reserved_name(msg) {
            return Err(SessionError::not_allowed(format!(
                "the name {name:?} starts with \\x01, which the gateway reserves for its own statements"
            )));
        }
        if matches!(
            msg,
            FrontendMessage::Parse { .. }
                | FrontendMessage::Bind { .. }
                | FrontendMessage::Describe { .. }
                | FrontendMessage::Execute { .. }
                | FrontendMessage::Close { .. }
                | FrontendMessage::Flush
        ) {
            self.extended_in_stretch = true;
        }
        match msg {
            FrontendMessage::Query { sql } => Ok(self.on_query(sql, out, gate)),
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => self.on_parse(name, sql, param_types, out, gate),
            FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                ..
            } => {
                let (text, decision) = self.bind_decision(statement, gate);
                let rendered = render_params(param_formats, params);
                let types = self.declared_types(statement);
                let subject = HoldSubject::Bind {
                    text: &text,
                    types: &types,
                    formats: param_formats,
                    params,
                };
                let decision = match self.settle_review(decision, subject, &rendered) {
                    Ok(d) => d,
                    Err(hold) => return Ok(Forward::Hold(hold)),
                };
                let name: Arc<str> = Arc::from(&**statement);
                let rendered = Arc::new(rendered);
                let mut s = Stmt::decided("bind", text.clone(), &decision);
                s.prepared_name = Some(name.clone());
                s.params = Some(rendered.clone());
                Ok(match decision {
                    GateDecision::Allow(allowed) => {
                        let permit = allowed.permit();
                        let id = self.change_id();
                        let bound = Portal {
                            text,
                            statement: name,
                            params: rendered,
                            allowed,
                            review: self.released_by.take(),
                            policy_generation: gate.generation().1,
                        };
                        let def = PortalDef::Bound(Arc::new(bound));
                        self.portals
                            .sent(id, self.stretch, Change::Define(Arc::from(&**portal), def));
                        s.changes.push((0, id));
                        out.push(Pending::Bind(s));
                        Forward::AsIs(permit)
                    }
                    GateDecision::Deny(d) => {
                        out.push(Pending::Bind(s));
                        Forward::Instead(StandIn::denied_bind(&d, portal))
                    }
                    GateDecision::Review(_) => {
                        return Err(SessionError::not_allowed(
                            "a Bind held for review arrived undecided".into(),
                        ))
                    }
                })
            }
            FrontendMessage::Execute { portal, max_rows } => {
                Ok(self.on_execute(portal, *max_rows, out, gate))
            }
            FrontendMessage::Describe { .. } => {
                out.push(Pending::Describe);
                inert(msg)
            }
            FrontendMessage::Close { target, name } => {
                let id = self.change_id();
                let name: Arc<str> = Arc::from(&**name);
                match target {
                    Target::Statement => self.statement_change(id, Change::Remove(name), gate),
                    Target::Portal => self.portals.sent(id, self.stretch, Change::Remove(name)),
                }
                out.push(Pending::Close(Some(id)));
                inert(msg)
            }
            FrontendMessage::Sync => {
                // The unnamed portal does not outlive the transaction; the
                // gateway forgets it at every Sync (an Execute of a portal
                // it does not know is decided as a cursor's, conservatively).
                let id = self.change_id();
                self.portals
                    .sent(id, self.stretch, Change::Remove(Arc::from("")));
                self.stretch += 1;
                self.extended_in_stretch = false;
                self.executed_in_stretch = false;
                out.push(Pending::Sync(Some(id)));
                inert(msg)
            }
            FrontendMessage::Flush
            | FrontendMessage::CopyData(_)
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail { .. }
            | FrontendMessage::Terminate => inert(msg),
            FrontendMessage::FunctionCall { oid } => Err(SessionError::not_allowed(format!(
                "fast-path function calls (function {oid}) bypass statement policy and are not allowed"
            ))),
            FrontendMessage::Password(_) => Err(SessionError::not_allowed(
                "unexpected password message after login".into(),
            )),
        }
    }

    fn on_query(&mut self, sql: &str, out: &mut Vec<Pending>, gate: &mut StatementGate) -> Forward {
        let decision = match self.settle_review(gate.check(sql), HoldSubject::Query(sql), &[]) {
            Ok(d) => d,
            Err(mut hold) => {
                // Unsynced extended messages run in the same transaction.
                hold.alone &= !self.extended_in_stretch;
                return Forward::Hold(hold);
            }
        };
        self.ran_in_read = true;
        let decision = self.refuse_stale_fetches(decision, gate);
        let mut s = Stmt::decided("query", Arc::from(sql), &decision);
        s.review = self.released_by.take();
        let forward = match &decision {
            GateDecision::Allow(a) => {
                if let Some(reason) = crate::hold::reason_setting(sql) {
                    self.reason = Some(reason);
                }
                self.encoding.allowed(a.encoding_change(), true);
                for change in a.name_changes() {
                    let id = self.change_id();
                    self.sql_name_change(id, &change.effect, gate);
                    s.changes.push((change.statement, id));
                }
                Forward::AsIs(a.permit())
            }
            // The probe ends with a Sync of its own: only where the server
            // cannot be skipping after an error in extended messages the
            // client sent since its last Sync (a query there is skipped).
            GateDecision::Deny(d) => {
                match StandIn::syntax_probe(d, sql, true).filter(|_| !self.extended_in_stretch) {
                    Some(probe) => {
                        out.push(Pending::SyntaxProbe(s, Probe::default()));
                        self.stretch += 1;
                        return Forward::Instead(probe);
                    }
                    None => Forward::Instead(StandIn::denied_query(d)),
                }
            }
            GateDecision::Review(_) => Forward::Instead(StandIn::denied_query(&Denied::new(
                "portcullis: a statement held for review arrived undecided".into(),
                Default::default(),
            ))),
        };
        out.push(Pending::Query(s));
        // A query ends at its own ReadyForQuery: an error in it makes the
        // server skip nothing after it.
        self.stretch += 1;
        forward
    }

    /// Notes a SQL statement's change to the names, sent as change `id`.
    fn sql_name_change(&mut self, id: u64, effect: &Effect, gate: &mut StatementGate) {
        match effect {
            Effect::Prepare { name, facts } => {
                let def = Definition::Sql(Arc::new((**facts).clone()));
                self.statement_change(id, Change::Define(Arc::from(name.as_str()), def), gate);
            }
            Effect::Deallocate(Some(name)) => {
                self.statement_change(id, Change::Remove(Arc::from(name.as_str())), gate)
            }
            Effect::Deallocate(None) => self.statement_change(id, Change::RemoveAll, gate),
            Effect::Declare(name) => self.portals.sent(
                id,
                self.stretch,
                Change::Define(
                    Arc::from(name.as_str()),
                    PortalDef::Cursor(gate.generation().1),
                ),
            ),
            Effect::ClosePortal(Some(name)) => {
                self.portals
                    .sent(id, self.stretch, Change::Remove(Arc::from(name.as_str())))
            }
            Effect::ClosePortal(None) => self.portals.sent(id, self.stretch, Change::RemoveAll),
            Effect::SearchPath(_) | Effect::ClientEncoding(_) => {}
        }
    }

    fn on_execute(
        &mut self,
        portal: &str,
        max_rows: i32,
        out: &mut Vec<Pending>,
        gate: &mut StatementGate,
    ) -> Forward {
        self.executed_in_stretch = true;
        self.ran_in_read = true;
        let candidates = self.portals.candidates(portal, self.stretch);
        if candidates.iter().all(Option::is_none) {
            // Not bound, not declared: no decided query stands behind it.
            let denied = Denied::new(
                format!("portal \"{portal}\" does not exist"),
                Default::default(),
            )
            .with_sqlstate("34000");
            let s = Stmt::decided(
                "execute",
                Arc::from(""),
                &GateDecision::Deny(denied.clone()),
            );
            out.push(Pending::Execute(s));
            return Forward::Instead(StandIn::denied_execute(&denied));
        }
        let policy_generation = gate.generation().1;
        if candidates
            .iter()
            .flatten()
            .any(|p| p.stale(policy_generation))
        {
            let denied = stale_portal(portal);
            let s = Stmt::decided(
                "execute",
                Arc::from(""),
                &GateDecision::Deny(denied.clone()),
            );
            out.push(Pending::Execute(s));
            return Forward::Instead(StandIn::denied_execute(&denied));
        }
        let (s, allowed) = match candidates.as_slice() {
            [Some(PortalDef::Bound(p))] => {
                // It runs (again, if resumed) now: what it may change in
                // client_encoding is unsettled until the next Sync.
                self.encoding.allowed(p.allowed.encoding_change(), false);
                let mut s = Stmt::allowed("execute", p.text.clone(), &p.allowed);
                s.review = p.review;
                s.prepared_name = Some(p.statement.clone());
                s.params = Some(p.params.clone());
                (s, p.allowed.clone())
            }
            // A cursor DECLAREd in a query (its query was decided as its own
            // statement), a portal the gateway does not know, or one the
            // server may hold in more than one form: its rows are masked as
            // if they read every masked column.
            _ => {
                // Its query is not known here: it may change anything.
                self.encoding
                    .allowed(Some(portcullis_pg_sql::EncodingChange::Set), false);
                let allowed = gate.check_unbound_portal();
                (Stmt::allowed("execute", Arc::from(""), &allowed), allowed)
            }
        };
        let forward = if allowed.mask().is_some() {
            // Rows of an Execute carry no description; ask for the
            // portal's (with its result formats) right before it.
            out.push(Pending::MaskDescribe);
            Forward::Instead(StandIn::described_execute(
                allowed.permit(),
                portal,
                max_rows,
            ))
        } else {
            Forward::AsIs(allowed.permit())
        };
        out.push(Pending::Execute(s));
        forward
    }

    fn on_parse(
        &mut self,
        name: &str,
        sql: &str,
        param_types: &[u32],
        out: &mut Vec<Pending>,
        gate: &mut StatementGate,
    ) -> Result<Forward, SessionError> {
        if !name.is_empty()
            && !self.statements.may_hold(name)
            && self.statements.len_bound() >= self.max_statements
        {
            return Err(SessionError::not_allowed(format!(
                "too many prepared statements (limit {})",
                self.max_statements
            )));
        }
        let text: Arc<str> = Arc::from(sql);
        let key: Arc<str> = Arc::from(name);
        let decision = match gate.check(sql) {
            // Preparing runs nothing; every Bind of it is held again.
            GateDecision::Review(held) => GateDecision::Allow(held.preparing()),
            decision => decision,
        };
        let mut s = Stmt::decided("parse", text.clone(), &decision);
        s.prepared_name = Some(key.clone());
        Ok(match decision {
            GateDecision::Allow(allowed) => {
                let permit = allowed.permit();
                let id = self.change_id();
                let def = Definition::Text(text, Arc::from(param_types));
                self.statement_change(id, Change::Define(key, def), gate);
                s.changes.push((0, id));
                out.push(Pending::Parse(s));
                Forward::AsIs(permit)
            }
            // The server never gets the statement, so it can never be
            // bound or executed under this name.
            GateDecision::Deny(d) => match StandIn::syntax_probe(&d, sql, false) {
                Some(probe) => {
                    out.push(Pending::SyntaxProbe(s, Probe::default()));
                    Forward::Instead(probe)
                }
                None => {
                    out.push(Pending::Parse(s));
                    Forward::Instead(StandIn::denied_parse(&d, name))
                }
            },
            GateDecision::Review(_) => {
                return Err(SessionError::not_allowed(
                    "a Parse held for review arrived undecided".into(),
                ))
            }
        })
    }

    /// What a Bind of `statement` would run: the text it runs (for the
    /// record) and the decision, made for every definition the server
    /// may hold under the name, and again whenever the session or the
    /// policies changed since (PostgreSQL re-resolves a prepared
    /// statement's names when the search_path changes).
    fn bind_decision(
        &mut self,
        statement: &str,
        gate: &mut StatementGate,
    ) -> (Arc<str>, GateDecision) {
        let candidates: Vec<Definition> = self
            .statements
            .candidates(statement, self.stretch)
            .into_iter()
            .flatten()
            .collect();
        let text = match candidates.as_slice() {
            [Definition::Text(t, _)] => t.clone(),
            _ => Arc::from(format!("EXECUTE {statement}")),
        };
        if let [only] = candidates.as_slice() {
            if let Some(c) = self.binds.get(statement) {
                if c.definition == *only && c.generation == gate.generation() {
                    return (text, GateDecision::Allow(c.allowed.clone()));
                }
            }
        }
        if candidates.is_empty() {
            let denied = Denied::new(
                format!("prepared statement \"{statement}\" does not exist"),
                Default::default(),
            )
            .with_sqlstate("26000");
            return (text, GateDecision::Deny(denied));
        }
        let decision = gate.check_definitions(&candidates);
        match (&decision, candidates.as_slice()) {
            (GateDecision::Allow(allowed), [only]) => {
                if self.binds.len() >= self.max_statements.max(16) {
                    self.binds.clear();
                }
                self.binds.insert(
                    Arc::from(statement),
                    BindCache {
                        definition: only.clone(),
                        generation: gate.generation(),
                        allowed: allowed.clone(),
                    },
                );
            }
            _ => {
                self.binds.remove(statement);
            }
        }
        (text, decision)
    }
}

/// A statement or portal name the message uses that starts with \x01:
/// such names are the gateway's (its stand-ins bind and parse under them).
fn reserved_name<'m>(msg: &'m FrontendMessage<'_>) -> Option<&'m str> {
    let names: [&str; 2] = match msg {
        FrontendMessage::Parse { name, .. } => [name, ""],
        FrontendMessage::Bind {
            portal, statement, ..
        } => [portal, statement],
        FrontendMessage::Execute { portal, .. } => [portal, ""],
        FrontendMessage::Describe { name, .. } | FrontendMessage::Close { name, .. } => [name, ""],
        _ => return None,
    };
    names.into_iter().find(|n| n.starts_with('\u{1}'))
}

/// Leave for a message that runs nothing.
fn inert(msg: &FrontendMessage<'_>) -> Result<Forward, SessionError> {
    Permit::for_inert(msg)
        .map(Forward::AsIs)
        .ok_or_else(|| SessionError::not_allowed("a client message arrived undecided".into()))
}

pub(super) fn render_params(formats: &[i16], params: &[Param<'_>]) -> Vec<Option<String>> {
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
