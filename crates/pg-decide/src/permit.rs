//! Proof types: the only ways a client's message reaches the upstream and
//! a server's row reaches the client.
//!
//! - A [`GateDecision`] is [`Allowed`], [`Denied`] or [`Held`]; all have
//!   private fields and are made only by the gate in this crate. A
//!   [`Held`] statement needs review: it becomes [`Allowed`] only with the
//!   core's [`Approved`] token for its exact text and parameters.
//! - A client message is sent upstream only as [`Forward::AsIs`] with a
//!   [`Permit`], which comes from an [`Allowed`] decision or, for a
//!   message that runs nothing (Describe, Sync, …), from
//!   [`Permit::for_inert`]; or as [`Forward::Instead`] with a [`StandIn`]
//!   this crate wrote. There is no default.
//! - A result row is passed on only through a [`RowGate`], made from the
//!   statement's [`RowPolicy`] and, when that policy masks, the row
//!   description the rows come with. A row with no gate is refused.
//!
//! Outside code cannot forge any of them:
//!
//! ```compile_fail
//! let permit = portcullis_pg_decide::permit::Permit { _sealed: () };
//! ```
//!
//! ```compile_fail
//! let allowed = portcullis_pg_decide::permit::Allowed {
//!     policies: Default::default(),
//! };
//! ```
//!
//! ```compile_fail
//! let clear = portcullis_pg_decide::permit::ClearRows(());
//! ```
//!
//! ```compile_fail
//! let instead = portcullis_pg_decide::permit::StandIn(bytes::BytesMut::new());
//! ```

use std::sync::Arc;

use bytes::BytesMut;
use portcullis_core::approvals::{Approved, ReviewRule};
use portcullis_core::audit::{Decision, PolicyIds};
use portcullis_core::masking::{MaskCounts, Scratch};
use portcullis_pg_sql::EncodingChange;
use portcullis_pg_wire::rows::{self, FieldDescription};
use portcullis_pg_wire::{encode, FrontendMessage, WireError};
use sha2::{Digest, Sha256};

use crate::masker::{CopyMasker, MaskPlan, RowMasker};

/// Sent upstream in place of a denied statement: a guaranteed syntax error,
/// so the server fails it (and any open transaction) exactly as it would
/// fail a statement of its own, without running anything. The server's
/// error is then replaced by the gateway's on the way back.
const POISON: &str = "PORTCULLIS DENIED THIS STATEMENT";
/// A prepared statement name no client can have created: a Bind to it
/// fails on the server without running anything.
const POISON_STATEMENT: &str = "\u{1}portcullis denied";

/// The statement name of a syntax probe: no client can bind it, since the
/// probe closes it in the same breath (and a Bind of a name the gateway
/// never saw defined is refused anyway).
const SYNTAX_PROBE: &str = "\u{1}portcullis syntax probe";

/// The gate's answer for one statement.
#[derive(Debug, Clone)]
pub enum GateDecision {
    /// Every pair is permitted.
    Allow(Allowed),
    /// At least one is not; the statement must not reach the upstream.
    Deny(Denied),
    /// Every pair is permitted, some only once reviewers approve.
    Review(Box<Held>),
}

impl GateDecision {
    /// Whether the statement may run as it is.
    pub fn is_allowed(&self) -> bool {
        matches!(self, GateDecision::Allow(_))
    }

    /// The decision as the audit record keeps it (a held statement is
    /// not allowed until it is approved).
    pub fn record(&self) -> Decision {
        match self {
            GateDecision::Allow(a) => a.record(),
            GateDecision::Deny(d) => d.record(),
            GateDecision::Review(h) => Decision {
                allowed: false,
                policies: h.allowed.policies.clone(),
            },
        }
    }
}

/// What reviewers must approve before a statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewNeed {
    /// Who must approve (every rule must be met).
    pub rules: Vec<ReviewRule>,
    /// The (action, object) pairs under review, e.g. `delete on app-db/public.people`.
    pub actions: Vec<String>,
    /// The permits that ask for review.
    pub policies: Vec<String>,
}

impl ReviewNeed {
    /// Merges `other` into this one.
    pub(crate) fn absorb(&mut self, other: &ReviewNeed) {
        for (mine, theirs) in [
            (&mut self.actions, &other.actions),
            (&mut self.policies, &other.policies),
        ] {
            mine.extend(theirs.iter().cloned());
            mine.sort();
            mine.dedup();
        }
        self.rules.extend(other.rules.iter().cloned());
        self.rules.sort();
        self.rules.dedup();
    }
}

/// A statement that may run once reviewers approve it.
#[derive(Debug, Clone)]
pub struct Held {
    allowed: Allowed,
    need: ReviewNeed,
}

impl Held {
    pub(crate) fn new(allowed: Allowed, need: ReviewNeed) -> Self {
        Self { allowed, need }
    }

    /// What must be approved.
    pub fn need(&self) -> &ReviewNeed {
        &self.need
    }

    /// The allowance, given an approval of exactly this message (its
    /// [`hold_key`]; `None` when the approval is for another). The
    /// approval is used up either way.
    pub fn release(self, approved: Approved, key: &str) -> Option<Allowed> {
        (approved.hash() == key).then_some(self.allowed)
    }

    /// The allowance for a protocol Parse of the statement: preparing
    /// runs nothing, and every Bind of it is decided (and held) again.
    pub fn preparing(self) -> Allowed {
        self.allowed
    }

    /// The allowance and the need, for merging definitions.
    pub(crate) fn into_parts(self) -> (Allowed, ReviewNeed) {
        (self.allowed, self.need)
    }
}

/// A statement the gate allowed, and how its results are masked.
#[derive(Debug, Clone)]
pub struct Allowed {
    policies: PolicyIds,
    rows: RowPolicy,
    /// Prepared statements and portals its statements define or remove.
    names: Option<Arc<[crate::gate::NameChange]>>,
    /// The strongest way its statements may change `client_encoding`.
    encoding: Option<EncodingChange>,
    /// Cursors its `FETCH`/`MOVE` statements read.
    fetches: Option<Arc<[String]>>,
}

impl Allowed {
    /// Made by the gate only.
    pub(crate) fn new(policies: PolicyIds, mask: Option<Arc<MaskPlan>>) -> Self {
        let rows = match mask {
            Some(plan) => RowPolicy::Masked(plan),
            None => RowPolicy::Clear(ClearRows(())),
        };
        Self {
            policies,
            rows,
            names: None,
            encoding: None,
            fetches: None,
        }
    }

    /// With the strongest change to `client_encoding` its statements make.
    pub(crate) fn with_encoding(mut self, encoding: Option<EncodingChange>) -> Self {
        self.encoding = encoding;
        self
    }

    /// How its statements may change `client_encoding`, the encoding in
    /// which the server reads the client's next messages.
    pub fn encoding_change(&self) -> Option<EncodingChange> {
        self.encoding
    }

    /// With the cursors its statements fetch from.
    pub(crate) fn with_fetches(mut self, fetches: Vec<String>) -> Self {
        self.fetches = (!fetches.is_empty()).then(|| fetches.into());
        self
    }

    /// The cursors (portals) its `FETCH`/`MOVE` statements read: they run
    /// what was decided when each was declared or bound.
    pub fn fetches(&self) -> &[String] {
        self.fetches.as_deref().unwrap_or_default()
    }

    /// With the changes to names its statements make.
    pub(crate) fn with_names(mut self, names: Option<Arc<[crate::gate::NameChange]>>) -> Self {
        self.names = names;
        self
    }

    /// The prepared statements and portals its statements define or
    /// remove, each when its statement completes.
    pub fn name_changes(&self) -> &[crate::gate::NameChange] {
        self.names.as_deref().unwrap_or_default()
    }

    /// The permits that decided, sorted and deduplicated.
    pub fn policies(&self) -> &PolicyIds {
        &self.policies
    }

    /// The mask plan, when the results are masked.
    pub fn mask(&self) -> Option<&Arc<MaskPlan>> {
        match &self.rows {
            RowPolicy::Masked(plan) => Some(plan),
            RowPolicy::Clear(_) => None,
        }
    }

    /// How the statement's result rows reach the client.
    pub fn rows(&self) -> &RowPolicy {
        &self.rows
    }

    /// Leave to send the statement's message upstream as the client sent it.
    pub fn permit(&self) -> Permit {
        Permit { _sealed: () }
    }

    /// The decision as the audit record keeps it.
    pub fn record(&self) -> Decision {
        Decision {
            allowed: true,
            policies: self.policies.clone(),
        }
    }
}

/// A statement the gate refused.
#[derive(Debug, Clone)]
pub struct Denied {
    message: String,
    policies: PolicyIds,
    sqlstate: &'static str,
    /// PostgreSQL's grammar rejects the text: the server's own syntax
    /// error is the answer the client should get.
    unparsable: bool,
}

impl Denied {
    /// A refusal. Anyone may make one: only an allowance proves anything,
    /// and a denial only ever stops a message.
    pub fn new(message: String, policies: PolicyIds) -> Self {
        Self {
            message,
            policies,
            sqlstate: "42501",
            unparsable: false,
        }
    }

    /// A refusal of a text PostgreSQL's grammar rejects.
    pub(crate) fn unparsable(message: String) -> Self {
        Self {
            unparsable: true,
            ..Self::new(message, PolicyIds::default())
        }
    }

    /// Whether the grammar rejected the text (see [`StandIn::syntax_probe`]).
    pub fn is_unparsable(&self) -> bool {
        self.unparsable
    }

    /// With the SQLSTATE the server itself would give (a statement that
    /// names a prepared statement the server does not hold: 26000), so
    /// drivers read it as they read the server's.
    pub fn with_sqlstate(mut self, sqlstate: &'static str) -> Self {
        self.sqlstate = sqlstate;
        self
    }

    /// The SQLSTATE the client gets: 42501 unless the refusal is one the
    /// server would make itself.
    pub fn sqlstate(&self) -> &'static str {
        self.sqlstate
    }

    /// One line for the client: what, on what, and which policy.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The policies that decided (empty when nothing permitted it).
    pub fn policies(&self) -> &PolicyIds {
        &self.policies
    }

    /// The decision as the audit record keeps it.
    pub fn record(&self) -> Decision {
        Decision {
            allowed: false,
            policies: self.policies.clone(),
        }
    }
}

/// Leave to send one client message upstream unchanged.
#[derive(Debug)]
#[must_use = "a permit is the only way a message reaches the upstream"]
pub struct Permit {
    _sealed: (),
}

impl Permit {
    /// Leave for a message that runs nothing and carries no statement:
    /// Describe, Close, Sync, Flush, Terminate, and COPY data a permitted
    /// `COPY … FROM STDIN` asked for. `None` for everything else (Query,
    /// Parse, Bind and Execute need a decision; a fast-path call or a
    /// password is never forwarded).
    pub fn for_inert(message: &FrontendMessage<'_>) -> Option<Permit> {
        match message {
            FrontendMessage::Describe { .. }
            | FrontendMessage::Close { .. }
            | FrontendMessage::Sync
            | FrontendMessage::Flush
            | FrontendMessage::Terminate
            | FrontendMessage::CopyData(_)
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail { .. } => Some(Permit { _sealed: () }),
            FrontendMessage::Query { .. }
            | FrontendMessage::Parse { .. }
            | FrontendMessage::Bind { .. }
            | FrontendMessage::Execute { .. }
            | FrontendMessage::FunctionCall { .. }
            | FrontendMessage::Password(_) => None,
        }
    }
}

/// Bytes sent upstream in place of what the client sent, written here.
#[derive(Debug)]
pub struct StandIn(BytesMut);

impl StandIn {
    /// A Query that fails on the server without running anything, in place
    /// of a denied one.
    pub fn denied_query(_denied: &Denied) -> StandIn {
        let mut out = BytesMut::new();
        encode::query(&mut out, POISON);
        StandIn(out)
    }

    /// In place of a query the grammar rejects: a Parse of its text under
    /// a statement name of the gateway's, closed at once, then Sync. Parse
    /// runs nothing, so the server answers with its own syntax error (code,
    /// message and position) and nothing else happens; should it accept
    /// the text after all, the statement is closed unused and the client
    /// gets the gateway's refusal. Only for a [`Denied::is_unparsable`].
    ///
    /// A Parse of the poison text follows, so the exchange fails either
    /// way and the server skips what the client sends next up to its Sync,
    /// as the client expects after an error. `sync`: end with a Sync (in
    /// place of a simple Query, which has its own ReadyForQuery).
    pub fn syntax_probe(denied: &Denied, sql: &str, sync: bool) -> Option<StandIn> {
        if !denied.unparsable {
            return None;
        }
        let mut out = BytesMut::new();
        encode::parse(&mut out, SYNTAX_PROBE, sql);
        encode::close(&mut out, b'S', SYNTAX_PROBE);
        encode::parse(&mut out, SYNTAX_PROBE, POISON);
        if sync {
            encode::sync(&mut out);
        }
        Some(StandIn(out))
    }

    /// A Parse of `name` that fails on the server, so nothing can ever be
    /// bound under it.
    pub fn denied_parse(_denied: &Denied, name: &str) -> StandIn {
        let mut out = BytesMut::new();
        encode::parse(&mut out, name, POISON);
        StandIn(out)
    }

    /// In place of an Execute of a portal no decided query stands behind:
    /// a Parse the server's grammar rejects, under the gateway's own name,
    /// so the exchange fails (and the server skips to Sync) with nothing
    /// run and no name of the client's changed.
    pub fn denied_execute(_denied: &Denied) -> StandIn {
        let mut out = BytesMut::new();
        encode::parse(&mut out, SYNTAX_PROBE, POISON);
        StandIn(out)
    }

    /// A Bind of `portal` to a statement no client can have made, so it
    /// fails without running anything.
    pub fn denied_bind(_denied: &Denied, portal: &str) -> StandIn {
        let mut out = BytesMut::new();
        encode::bind(&mut out, portal, POISON_STATEMENT);
        StandIn(out)
    }

    /// A permitted Execute with a Describe of its portal in front, so the
    /// gateway learns the columns and formats of rows that come with no
    /// description of their own.
    pub fn described_execute(permit: Permit, portal: &str, max_rows: i32) -> StandIn {
        let Permit { _sealed: () } = permit;
        let mut out = BytesMut::new();
        encode::describe_portal(&mut out, portal);
        encode::execute(&mut out, portal, max_rows);
        StandIn(out)
    }

    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for StandIn {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// What to send upstream for one client message.
#[derive(Debug)]
pub enum Forward {
    /// The client's bytes, unchanged, under a permit.
    AsIs(Permit),
    /// Bytes written by the decision code instead.
    Instead(StandIn),
    /// Nothing yet: the statement waits for review. The message is
    /// decided again once the review ends, with its outcome.
    Hold(Box<Hold>),
}

/// What a held message runs, exactly as the server gets it.
#[derive(Debug, Clone, Copy)]
pub enum HoldSubject<'a> {
    /// A simple Query's text.
    Query(&'a str),
    /// A Bind of a Parse'd text.
    Bind {
        /// The statement text.
        text: &'a str,
        /// The parameter types its Parse declared.
        types: &'a [u32],
        /// The Bind's parameter format codes.
        formats: &'a [i16],
        /// The parameters, byte for byte.
        params: &'a [portcullis_pg_wire::Param<'a>],
    },
}

/// SHA-256 (hex) of a held message and of what its review is for: an
/// approval names it, and releases only a message with the same. Every
/// byte the server would read counts (the whole parameters, their
/// formats and declared types), and so do the pairs under review, the
/// reviewing rules and the policies: the same text resolved to another
/// schema, or judged by changed policies, is another request.
pub fn hold_key(need: &ReviewNeed, subject: HoldSubject<'_>) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    match subject {
        HoldSubject::Query(text) => {
            field(b"query");
            field(text.as_bytes());
        }
        HoldSubject::Bind {
            text,
            types,
            formats,
            params,
        } => {
            field(b"bind");
            field(text.as_bytes());
            let types: Vec<u8> = types.iter().flat_map(|t| t.to_be_bytes()).collect();
            field(&types);
            let formats: Vec<u8> = formats.iter().flat_map(|f| f.to_be_bytes()).collect();
            field(&formats);
            for p in params {
                match p {
                    portcullis_pg_wire::Param::Null => field(b"null"),
                    portcullis_pg_wire::Param::Value(v) => {
                        field(b"value");
                        field(v);
                    }
                }
            }
        }
    }
    for part in need.actions.iter().chain(&need.policies) {
        field(part.as_bytes());
    }
    for rule in &need.rules {
        field(rule.describe().as_bytes());
        field(rule.policy.as_bytes());
        field(&rule.wait_secs.unwrap_or(0).to_be_bytes());
    }
    hex::encode(h.finalize())
}

/// A statement waiting for review, as the adapter asks for it.
#[derive(Debug, Clone)]
pub struct Hold {
    /// What must be approved.
    pub need: ReviewNeed,
    /// The exact text and parameters.
    pub statement: Arc<str>,
    /// See `statement`.
    pub params: Vec<Option<String>>,
    /// Its [`hold_key`], which an approval must name.
    pub key: String,
    /// Whether nothing else of the client's runs in the server's current
    /// stretch (no Execute since the last Sync, nothing run earlier in the
    /// same read): holding then holds no statement's locks.
    pub alone: bool,
}

/// How a statement's result rows reach the client.
#[derive(Debug, Clone)]
pub enum RowPolicy {
    /// Unchanged: no masking is configured.
    Clear(ClearRows),
    /// Through the plan, with the row description of each result set.
    Masked(Arc<MaskPlan>),
}

/// The gate's word that a statement's rows need no masking. Made only when
/// masking is off.
#[derive(Debug, Clone, Copy)]
pub struct ClearRows(());

/// The only way a result row or COPY line reaches the client.
pub struct RowGate(Gate);

enum Gate {
    Clear,
    Rows(RowMasker),
    Copy(CopyMasker),
}

impl RowGate {
    /// The gate for the rows a RowDescription (`body`) announces. The
    /// description is read only when the policy masks.
    pub fn for_description(policy: &RowPolicy, body: &[u8]) -> Result<RowGate, WireError> {
        match policy {
            RowPolicy::Clear(_) => Ok(RowGate(Gate::Clear)),
            RowPolicy::Masked(plan) => {
                let fields: Vec<FieldDescription> = rows::row_description(body)?;
                Ok(RowGate(
                    RowMasker::new(plan, &fields).map_or(Gate::Clear, Gate::Rows),
                ))
            }
        }
    }

    /// The gate for rows that come with no description (an Execute's):
    /// only clear rows may.
    pub fn without_description(policy: &RowPolicy) -> Option<RowGate> {
        match policy {
            RowPolicy::Clear(_) => Some(RowGate(Gate::Clear)),
            RowPolicy::Masked(_) => None,
        }
    }

    /// The gate for the lines of a `COPY … TO STDOUT`.
    pub fn for_copy(policy: &RowPolicy) -> RowGate {
        match policy {
            RowPolicy::Clear(_) => RowGate(Gate::Clear),
            RowPolicy::Masked(plan) => RowGate(Gate::Copy(CopyMasker::new(plan))),
        }
    }

    /// Whether nothing passing here can change (no work per row).
    pub fn is_clear(&self) -> bool {
        matches!(self.0, Gate::Clear)
    }

    /// The DataRow body to send instead of `body`, if a value changed.
    pub fn pass_row(
        &mut self,
        body: &[u8],
        counts: &mut MaskCounts,
        scratch: &mut Scratch,
    ) -> Result<Option<BytesMut>, String> {
        match &mut self.0 {
            Gate::Clear => Ok(None),
            Gate::Rows(masker) => masker
                .mask_row(body, counts, scratch)
                .map_err(|e| format!("a result row could not be masked ({e})")),
            Gate::Copy(_) => Err("a result row arrived during COPY".into()),
        }
    }

    /// The CopyData payload to send instead of `line`, if it changed.
    pub fn pass_copy_line(
        &mut self,
        line: &[u8],
        counts: &mut MaskCounts,
        scratch: &mut Scratch,
    ) -> Result<Option<Vec<u8>>, String> {
        match &mut self.0 {
            Gate::Clear => Ok(None),
            Gate::Copy(masker) => masker.mask_line(line, counts, scratch),
            Gate::Rows(_) => Err("COPY data arrived for a result set".into()),
        }
    }
}
