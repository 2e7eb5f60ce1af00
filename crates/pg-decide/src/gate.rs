//! The statement gate: every statement is read with PostgreSQL's own
//! grammar and each (action, object) pair it implies is put to the policy
//! engine before the statement may reach the upstream.
//!
//! Parses are cached per distinct text (they depend on nothing else);
//! decisions never are (they depend on who asks, the policies and the time).
//! Unqualified names are resolved against every schema the session's
//! search_path may hold, and a statement is allowed only if the decision
//! holds for every candidate: the gateway cannot see which one the server
//! will pick, so it must not matter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::catalog::{SharedCatalog, ViewCatalog};
use crate::masker::{CopyPlan, MaskPlan};
pub use crate::permit::GateDecision;
use crate::permit::{Allowed, Denied};
use crate::vocabulary::{self as sql, action};
use portcullis_core::audit::PolicyIds;
use portcullis_core::masking::{Masking, OnDerived, OnPredicate, SensitiveColumn};
use portcullis_core::policy::{ContextValue, RequestFacts};
use portcullis_core::{Action, Identity, PolicyEngine, Resource};
use portcullis_pg_sql::{
    analyze, literal_free_key, quick_literal_free_key, Access, Analysis, Effect, Object, SqlAction,
    StatementFacts, Unclassifiable,
};

/// Distinct statement texts whose parses are kept.
const PARSE_CACHE_ENTRIES: usize = 10_000;
/// Longest statement text passed to policies as `context.statement`.
const CONTEXT_STATEMENT_LIMIT: usize = 4096;

type Parsed = Arc<Result<Analysis, Unclassifiable>>;

/// Parses shared by every session of a listener.
#[derive(Default)]
pub struct ParseCache {
    map: Mutex<HashMap<Arc<str>, Parsed>>,
}

impl ParseCache {
    /// The analysis of `sql`, parsing it on a miss.
    pub fn get(&self, sql: &str) -> Parsed {
        self.get_keyed(sql).0
    }

    /// The analysis of `sql` and the key it is cached under: the text
    /// itself, or its [`literal_free_key`] when the analysis holds for
    /// every literal value (so `… where id = 1` and `… = 2` share one
    /// parse, and one decision).
    pub fn get_keyed(&self, sql: &str) -> (Parsed, Arc<str>) {
        self.get_with_quick_key(sql, quick_literal_free_key(sql))
    }

    /// [`ParseCache::get_keyed`] for a caller that already has the text's
    /// [`quick_literal_free_key`].
    fn get_with_quick_key(&self, sql: &str, quick: Option<String>) -> (Parsed, Arc<str>) {
        // Shape keys are built with \u{1} and \u{2}: a text holding them
        // could equal another text's key, so it is neither looked up nor
        // kept, and its key cannot match any (NUL never occurs in a text).
        if sql.contains(['\u{1}', '\u{2}']) {
            return (Arc::new(analyze(sql)), Arc::from(format!("\0\0{sql}")));
        }
        // A text with literals is looked up by its shape first: that is
        // where its parse is when the parse holds for every value. A text
        // without literals is its own key.
        let quick_declined = quick.is_none();
        let shape = quick.filter(|k| k.contains('\u{1}'));
        if let Some(n) = &shape {
            if let Some((k, hit)) = self.lock().get_key_value(n.as_str()) {
                return (hit.clone(), k.clone());
            }
        }
        if let Some((k, hit)) = self.lock().get_key_value(sql) {
            return (hit.clone(), k.clone());
        }
        // Texts the quick walk declined get their shape from the scanner,
        // which costs more than the rest of a cached decision.
        let norm = match shape {
            Some(n) => Some(n),
            None if quick_declined => {
                let n = literal_free_key(sql).filter(|n| n.contains('\u{1}'));
                if let Some(n) = &n {
                    if let Some((k, hit)) = self.lock().get_key_value(n.as_str()) {
                        return (hit.clone(), k.clone());
                    }
                }
                n
            }
            None => None,
        };
        // Parse outside the lock: other sessions keep hitting the cache.
        let parsed: Parsed = Arc::new(analyze(sql));
        let literal_free = parsed.as_ref().as_ref().is_ok_and(|a| {
            a.statements
                .iter()
                .all(|s| s.effects.is_empty() && !s.literal_sensitive)
        });
        let key: Arc<str> = match norm {
            Some(n) if literal_free => Arc::from(n),
            _ => Arc::from(sql),
        };
        let mut map = self.lock();
        if map.len() >= PARSE_CACHE_ENTRIES {
            // Crude but bounded; a workload with more distinct texts than
            // this is dominated by parsing anyway.
            map.clear();
        }
        map.insert(key.clone(), parsed.clone());
        (parsed, key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Parsed>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the gate knows of the session's state on the server.
#[derive(Clone, Default)]
struct SessionState {
    /// Every schema the search_path may contain, in first-seen order.
    schemas: Vec<String>,
    /// False once a search_path put another schema before pg_catalog.
    catalog_first: bool,
    /// SQL-level prepared statements (PREPARE … AS …). A name prepared
    /// twice keeps the union of both: the gateway cannot see which one the
    /// server accepted.
    prepared: HashMap<String, StatementFacts>,
    /// Set by a statement that created or renamed something a field
    /// selection can call, with the catalog generation of that moment:
    /// until a newer catalog arrives, every field-selection name is decided
    /// as a call.
    callables_stale: Option<u64>,
}

/// Per-session gate state.
pub struct StatementGate {
    policy: Arc<PolicyEngine>,
    cache: Arc<ParseCache>,
    identity: Identity,
    connection: String,
    service_user: String,
    client_address: String,
    state: SessionState,
    /// Bumped whenever the state changes how names resolve.
    generation: u64,
    /// Views and what they read, from the upstream's catalog.
    views: Arc<ViewCatalog>,
    /// Where newer catalogs appear, and the generation `views` is from.
    shared_views: Option<Arc<SharedCatalog>>,
    views_generation: u64,
    /// Decisions by cache key, valid for `decided_at` generations.
    decided: HashMap<Arc<str>, GateDecision>,
    decided_at: (u64, u64),
    /// Result masking, when configured.
    masking: Option<Arc<Masking>>,
    /// Classified columns the principal may not unmask, and the policy
    /// generation that decided it.
    hidden: Arc<Vec<Arc<SensitiveColumn>>>,
    hidden_at: Option<u64>,
    /// Whether content detectors apply to this principal (they do unless
    /// it may `unmask` the whole connection).
    scan: bool,
}

/// Decisions a session keeps; cleared when full (it is a cache for the
/// handful of statement shapes an application repeats).
const DECISION_CACHE_ENTRIES: usize = 1024;

impl StatementGate {
    /// A gate for one session; `schemas` is the upstream's effective
    /// search_path at login (`current_schemas(false)`). Add the raw
    /// setting with [`StatementGate::with_search_path_setting`].
    pub fn new(
        policy: Arc<PolicyEngine>,
        cache: Arc<ParseCache>,
        identity: Identity,
        connection: String,
        service_user: String,
        client_address: String,
        schemas: Vec<String>,
    ) -> Self {
        Self {
            policy,
            cache,
            identity,
            connection,
            service_user,
            client_address,
            state: SessionState {
                schemas,
                catalog_first: true,
                prepared: HashMap::new(),
                callables_stale: None,
            },
            generation: 0,
            views: Arc::new(ViewCatalog::default()),
            shared_views: None,
            views_generation: 0,
            decided: HashMap::new(),
            decided_at: (0, 0),
            masking: None,
            hidden: Arc::default(),
            hidden_at: None,
            scan: true,
        }
    }

    /// The facts every decision of this session starts from.
    fn base_facts(&self) -> RequestFacts {
        RequestFacts {
            protocol: "postgres",
            client_address: self.client_address.clone(),
            extra: Vec::new(),
        }
    }

    /// The facts for deciding `stmt` of the text `text`.
    fn statement_facts(&self, stmt: &StatementFacts, text: &str) -> RequestFacts {
        self.base_facts()
            .with(sql::STATEMENT_KIND, ContextValue::Str(stmt.kind.to_owned()))
            .with(
                sql::STATEMENT,
                ContextValue::Str(text.chars().take(CONTEXT_STATEMENT_LIMIT).collect()),
            )
    }

    /// Masks results with `masking` (when it is active at all).
    pub fn with_masking(mut self, masking: Arc<Masking>) -> Self {
        self.masking = masking.is_active().then_some(masking);
        self
    }

    /// Whether results may need masking, so every result set must be
    /// described to the gateway.
    pub fn masks_results(&self) -> bool {
        self.masking.is_some()
    }

    /// Decides an Execute of a portal the gateway never bound: a cursor
    /// opened by DECLARE, whose query was decided as its own statement.
    /// Its rows are masked as if they read every masked column; the
    /// decision names no policy of its own.
    pub fn check_unbound_portal(&mut self) -> Allowed {
        Allowed::new(PolicyIds::default(), self.conservative_plan())
    }

    /// Decides every text that may stand under one prepared statement name
    /// (the server holds one of them; the gateway cannot always tell
    /// which): allowed only if each is, with the policies of all and the
    /// mask plan of the last, the current one.
    pub fn check_texts<'t>(&mut self, texts: impl IntoIterator<Item = &'t str>) -> GateDecision {
        let mut policies: Vec<String> = Vec::new();
        let mut mask = None;
        for text in texts {
            match self.check(text) {
                GateDecision::Allow(a) => {
                    policies.extend(a.policies().iter().cloned());
                    mask = a.mask().cloned();
                }
                deny @ GateDecision::Deny(_) => return deny,
            }
        }
        policies.sort();
        policies.dedup();
        GateDecision::Allow(Allowed::new(policies.into(), mask))
    }

    /// Decides a Bind of the prepared statement `name` that the adapter
    /// did not see parsed: a SQL `PREPARE`, or a name the gateway cannot
    /// place, which is refused rather than forwarded undecided.
    pub fn check_unparsed_statement(&mut self, name: &str) -> GateDecision {
        self.check_sql_prepared(name).unwrap_or_else(|| {
            GateDecision::Deny(Denied::new(
                format!("portcullis: statement denied: unknown prepared statement \"{name}\""),
                PolicyIds::default(),
            ))
        })
    }

    /// A plan for rows the gateway did not decide the query of (a cursor
    /// opened by DECLARE and read by a protocol Execute of its name):
    /// every masked column counts as read. `None` without masking.
    fn conservative_plan(&mut self) -> Option<Arc<MaskPlan>> {
        let masking = self.masking.clone()?;
        self.refresh_hidden();
        let mut exposed_names: Vec<String> = self.hidden.iter().map(|c| c.column.clone()).collect();
        exposed_names.sort();
        exposed_names.dedup();
        Some(Arc::new(MaskPlan {
            masking,
            hidden: self.hidden.clone(),
            scan: self.scan,
            catalog: self.views.clone(),
            exposed_names,
            columns: None,
            copy: None,
        }))
    }

    /// Decides, per classified column of the connection, whether the
    /// principal may see it in clear (Cedar `unmask`).
    fn refresh_hidden(&mut self) {
        let Some(masking) = &self.masking else {
            return;
        };
        let g = self.policy.generation();
        if self.hidden_at == Some(g) && !self.policy.reads_per_request_context() {
            return;
        }
        let facts = self.base_facts();
        let hidden: Vec<Arc<SensitiveColumn>> = masking
            .columns_of(&self.connection)
            .filter(|c| {
                let column = sql::column(&self.connection, c.qualified());
                !self
                    .policy
                    .decide(&self.identity, sql::UNMASK, &column, &facts)
                    .allowed
            })
            .cloned()
            .collect();
        let connection = Resource::Connection(self.connection.clone());
        self.scan = masking.scans()
            && !self
                .policy
                .decide(&self.identity, sql::UNMASK, &connection, &facts)
                .allowed;
        self.hidden = Arc::new(hidden);
        self.hidden_at = Some(g);
    }

    /// `outputs` with every name the catalog does not list for the
    /// relations in `touched` made opaque: such a name is not a column
    /// (attribute notation `t.f` calls `f(t)`; an output alias; a column
    /// newer than the catalog), so what it stands for cannot be told.
    fn checked_outputs(
        &self,
        outputs: &portcullis_pg_sql::OutputFacts,
        touched: &[String],
    ) -> portcullis_pg_sql::OutputFacts {
        use portcullis_pg_sql::OutputColumn;
        // Candidates that do not exist (other schemas on the search_path)
        // list nothing; a relation the catalog does not list (a system
        // one, or one newer than the read) leaves its names unknown.
        let known: std::collections::HashSet<&str> = touched
            .iter()
            .filter_map(|t| self.views.column_list(t))
            .flatten()
            .map(String::as_str)
            .collect();
        let is_known = |n: &str| known.contains(n);
        let mut out = outputs.clone();
        if let Some(cols) = out.columns.as_mut() {
            for c in cols.iter_mut() {
                let unknown = match c {
                    OutputColumn::Column(n) => !is_known(n),
                    OutputColumn::Reads(names) => names.iter().any(|n| !is_known(n)),
                    OutputColumn::Opaque => false,
                };
                if unknown {
                    *c = OutputColumn::Opaque;
                    out.only_plain_outputs = false;
                }
            }
        }
        if out.condition_names.iter().any(|n| !is_known(n)) {
            out.conditions_opaque = true;
        }
        if out.referenced.iter().any(|n| !is_known(n)) {
            out.references_opaque = true;
        }
        out
    }

    /// How the results of `statements` are masked, or why they may not run.
    fn mask_plan(
        &mut self,
        state: &SessionState,
        statements: &[&StatementFacts],
    ) -> Result<Option<Arc<MaskPlan>>, GateDecision> {
        let Some(masking) = self.masking.clone() else {
            return Ok(None);
        };
        self.refresh_hidden();
        let deny = |message: String| GateDecision::Deny(Denied::new(message, PolicyIds::default()));
        let describe = |c: &SensitiveColumn| format!("{}/{}", self.connection, c.qualified());
        let mut exposed_names: Vec<String> = Vec::new();
        let mut copy = None;
        let mut columns = None;
        for stmt in statements {
            let prepared = stmt.executes.as_ref().and_then(|n| state.prepared.get(n));
            let outputs = prepared.map_or(&stmt.outputs, |p| &p.outputs);
            // Calls only the catalog reveals (`t.f` as `f(t)`) read what
            // their bodies read, like any other.
            let implied = self.catalog_calls(state, stmt)?;
            let accesses = stmt
                .accesses
                .iter()
                .chain(prepared.into_iter().flat_map(|p| p.accesses.iter()))
                .chain(implied.iter());
            let mut touched: Vec<String> = Vec::new();
            let mut writes = false;
            let mut ddl_on: Vec<String> = Vec::new();
            let mut calls: Option<String> = None;
            for a in accesses {
                if a.action == SqlAction::Execute {
                    calls.get_or_insert_with(|| match &a.object {
                        Object::Function(n) => n.to_string(),
                        _ => "a code block".to_owned(),
                    });
                }
                if !matches!(a.object, Object::Table(_)) {
                    continue;
                }
                if a.action == SqlAction::Ddl {
                    for r in self.candidates(state, &a.object).unwrap_or_default() {
                        if let Some(name) = sql::table_name(&r) {
                            ddl_on.push(name.to_owned());
                        }
                    }
                }
                writes |= matches!(
                    a.action,
                    SqlAction::Insert
                        | SqlAction::Update
                        | SqlAction::Merge
                        | SqlAction::Ddl
                        | SqlAction::CopyIn
                );
                for r in self.candidates(state, &a.object).unwrap_or_default() {
                    for (_, res, _) in self.expand(action(SqlAction::Select), r) {
                        if let Some(name) = sql::table_name(&res) {
                            touched.push(name.to_owned());
                        }
                    }
                }
            }
            // Columns masking hides from this principal in what the
            // statement reads itself.
            let direct: Vec<&Arc<SensitiveColumn>> = self
                .hidden
                .iter()
                .filter(|c| touched.iter().any(|t| *t == c.table_name()))
                .collect();
            if let Some(c) = self
                .hidden
                .iter()
                .find(|c| ddl_on.iter().any(|t| *t == c.table_name()))
            {
                return Err(deny(format!("portcullis: statement denied: DDL on a table with masked column {} (it could rename or copy it out of its masking rule)", describe(c))));
            }
            if let (Some(f), Some(c)) = (&calls, direct.first()) {
                return Err(deny(format!("portcullis: statement denied: it reads masked column {} and calls {f}, which could carry the value where masking does not follow it", describe(c))));
            }
            // A cursor's rows come from a query decided earlier, and a
            // function's body may read anything: treat every masked column
            // as read.
            let everything = stmt.kind == "fetch" || calls.is_some();
            let exposed: Vec<&Arc<SensitiveColumn>> = if everything {
                self.hidden.iter().collect()
            } else {
                direct
            };
            if let Some(c) = &outputs.copy_out {
                if c.binary && (self.scan || !exposed.is_empty()) {
                    return Err(deny("portcullis: statement denied: binary COPY output cannot be masked; use text or CSV format".into()));
                }
            }
            if exposed.is_empty() {
                continue;
            }
            if statements.len() > 1 && statements.iter().any(|s| s.outputs.copy_out.is_some()) {
                return Err(deny(format!("portcullis: statement denied: COPY in a text of several statements over masked column {}; send it alone", describe(exposed[0]))));
            }
            let outputs = &self.checked_outputs(outputs, &touched);
            let named = |names: &[String]| {
                exposed
                    .iter()
                    .find(|c| names.contains(&c.column))
                    .map(|c| describe(c))
            };
            if masking.rules.on_predicate == OnPredicate::Deny && outputs.has_conditions {
                let hit = if outputs.conditions_opaque {
                    Some(describe(exposed[0]))
                } else {
                    named(&outputs.condition_names)
                };
                if let Some(col) = hit {
                    return Err(deny(format!("portcullis: statement denied: a condition may use masked column {col} (masking on_predicate = \"deny\")")));
                }
            }
            if writes {
                let hit = if outputs.references_opaque {
                    Some(describe(exposed[0]))
                } else {
                    named(&outputs.referenced)
                };
                if let Some(col) = hit {
                    return Err(deny(format!("portcullis: statement denied: it would copy masked column {col} where masking does not follow it")));
                }
            }
            if masking.rules.on_derived == OnDerived::Deny && !outputs.only_plain_outputs {
                let hit = match &outputs.columns {
                    Some(cols) => cols.iter().find_map(|c| match c {
                        portcullis_pg_sql::OutputColumn::Column(_) => None,
                        portcullis_pg_sql::OutputColumn::Reads(n) => named(n),
                        portcullis_pg_sql::OutputColumn::Opaque => Some(describe(exposed[0])),
                    }),
                    None => Some(describe(exposed[0])),
                };
                if let (Some(col), true) = (hit, stmt_returns_rows(stmt)) {
                    return Err(deny(format!("portcullis: statement denied: an output is computed from masked column {col} (masking on_derived = \"deny\")")));
                }
            }
            if let Some(c) = &outputs.copy_out {
                if c.other_options {
                    return Err(deny(format!("portcullis: statement denied: COPY options other than FORMAT, DELIMITER, NULL and HEADER change how fields are written, and masked column {} is copied", describe(exposed[0]))));
                }
                let Some((schema, table)) = &c.table else {
                    return Err(deny(format!("portcullis: statement denied: COPY of a query over masked column {} cannot be traced; COPY the table or use SELECT", describe(exposed[0]))));
                };
                let object = Object::Table(portcullis_pg_sql::Name::new(Some(schema), table));
                let resolved: Vec<String> = self
                    .candidates(state, &object)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| sql::table_name(&r).map(str::to_owned))
                    .filter(|n| self.views.column_list(n).is_some())
                    .collect();
                let [name] = resolved.as_slice() else {
                    return Err(deny(format!("portcullis: statement denied: cannot tell which table COPY reads, and it may hold masked column {}", describe(exposed[0]))));
                };
                let list: Vec<String> = if c.columns.is_empty() {
                    self.views.column_list(name).unwrap_or_default().to_vec()
                } else {
                    c.columns.clone()
                };
                let delimiter = match (&c.delimiter, c.csv) {
                    (Some(d), _) if d.len() == 1 => d.as_bytes()[0],
                    (Some(_), _) => {
                        return Err(deny("portcullis: statement denied: COPY with a multi-byte delimiter cannot be masked".into()))
                    }
                    (None, true) => b',',
                    (None, false) => b'\t',
                };
                copy = Some(CopyPlan {
                    columns: list
                        .iter()
                        .map(|col| {
                            self.hidden
                                .iter()
                                .find(|h| h.column == *col && h.table_name() == *name)
                                .cloned()
                        })
                        .collect(),
                    csv: c.csv,
                    delimiter,
                });
            }
            exposed_names.extend(exposed.iter().map(|c| c.column.clone()));
            if statements.len() == 1 && !everything {
                // With a function call, an output may return anything its
                // body read, whatever names it mentions.
                columns = outputs.columns.clone();
            }
        }
        exposed_names.sort();
        exposed_names.dedup();
        Ok(Some(Arc::new(MaskPlan {
            masking,
            hidden: self.hidden.clone(),
            scan: self.scan,
            catalog: self.views.clone(),
            exposed_names,
            columns,
            copy,
        })))
    }

    /// Resolves views through `views`: a statement that touches a view is
    /// also decided on every relation and function beneath it.
    pub fn with_views(mut self, views: Arc<ViewCatalog>) -> Self {
        self.views = views;
        self
    }

    /// Resolves views through the connection's shared catalog, adopting
    /// each newer one at the next statement.
    pub fn with_shared_views(mut self, shared: Arc<SharedCatalog>) -> Self {
        self.views_generation = shared.generation();
        self.views = shared.latest();
        self.shared_views = Some(shared);
        self
    }

    /// Adopts a newer shared catalog, if one appeared.
    fn refresh_views(&mut self) {
        if let Some(shared) = &self.shared_views {
            let g = shared.generation();
            if g != self.views_generation {
                self.views = shared.latest();
                self.views_generation = g;
                if self.state.callables_stale.is_some_and(|at| g > at) {
                    self.state.callables_stale = None;
                }
            }
        }
    }

    /// The pairs `(action, resource)` implies: itself, and for a view the
    /// same action on every relation beneath it and `execute` on every
    /// function it calls, each with the view it was reached through.
    fn expand(
        &self,
        action: Action,
        resource: Resource,
    ) -> Vec<(Action, Resource, Option<String>)> {
        // Only data actions reach through a view: dropping or altering one
        // touches nothing beneath it.
        let data = sql::is_data_action(action);
        let reads = match &resource {
            r if data => sql::table_name(r).and_then(|name| self.views.reads(name)),
            _ => None,
        };
        let Some(reads) = reads else {
            return vec![(action, resource, None)];
        };
        let via = resource.describe();
        let conn = &self.connection;
        let mut out = Vec::with_capacity(1 + reads.relations.len() + reads.functions.len());
        for r in &reads.relations {
            let table = sql::table(conn, r.clone());
            out.push((action, table, Some(via.clone())));
        }
        for f in &reads.functions {
            let func = sql::function(conn, f.clone());
            out.push((sql::action(SqlAction::Execute), func, Some(via.clone())));
        }
        out.insert(0, (action, resource, None));
        out
    }

    /// Adds the raw `search_path` setting (`"$user", public`): schemas that
    /// do not exist yet still count, since the server uses them as soon as
    /// they are created, and pg_catalog's place is taken from it.
    pub fn with_search_path_setting(mut self, setting: &str) -> Self {
        let list = split_search_path(setting);
        let service_user = self.service_user.clone();
        apply_search_path(&mut self.state, &list, &service_user);
        self
    }

    /// Changes whenever a decision made earlier in the session may no
    /// longer hold: the search_path grew, the views changed, or the
    /// policies were reloaded.
    pub fn generation(&self) -> (u64, u64) {
        let views = self
            .shared_views
            .as_ref()
            .map_or(self.views_generation, |s| s.generation());
        // Both counters only grow, so their sum changes when either does.
        (self.generation + views, self.policy.generation())
    }

    /// Decides executing the SQL-prepared statement `name` (a protocol Bind
    /// may name one); `None` if the gate never saw it prepared.
    pub fn check_sql_prepared(&mut self, name: &str) -> Option<GateDecision> {
        let facts = self.state.prepared.get(name)?.clone();
        let mut policies = Vec::new();
        let text = format!("EXECUTE {name}");
        if let Err(deny) = self.check_statement(&self.state, &facts, &text, &mut policies) {
            return Some(deny);
        }
        let state = self.state.clone();
        Some(match self.mask_plan(&state, &[&facts]) {
            Ok(mask) => GateDecision::Allow(Allowed::new(policies.into(), mask)),
            Err(deny) => deny,
        })
    }

    /// Decides a statement text (a simple Query or an extended-protocol Parse).
    pub fn check(&mut self, sql: &str) -> GateDecision {
        // A decision holds for every text under the same key while neither
        // the session's name resolution, the views nor the policies change,
        // unless a policy reads the exact text or the time.
        self.refresh_views();
        let generation = self.generation();
        if generation != self.decided_at {
            self.decided.clear();
            self.decided_at = generation;
        }
        // A text without literals is decided by itself; one with literals
        // by its shape, which the quick walk builds without the scanner.
        // No text holding \u{1} or \u{2} is kept under itself, so one
        // starting with \u{2} could only match a shape key: skip it.
        if let Some(d) = self.decided.get(sql).filter(|_| !sql.starts_with('\u{2}')) {
            return d.clone();
        }
        let quick = quick_literal_free_key(sql);
        let shape = quick.as_deref().filter(|k| k.contains('\u{1}'));
        if let Some(d) = shape.and_then(|k| self.decided.get(k)) {
            return d.clone();
        }
        let by_shape = shape.is_some();
        let (parsed, key) = self.cache.get_with_quick_key(sql, quick);
        if let Some(d) = self.decided.get(&key) {
            let d = d.clone();
            self.remember(sql, &key, by_shape, &d);
            return d;
        }
        let decision = self.decide(sql, &parsed);
        let reusable = self.generation() == generation
            && parsed.as_ref().as_ref().is_ok()
            && !self.policy.reads_per_request_context();
        if reusable {
            self.remember(sql, &key, by_shape, &decision);
        }
        decision
    }

    /// Keeps `decision` under its cache key, and under the exact text when
    /// that differs and the text is not looked up by its quick shape, so
    /// the same text again is answered without the scanner.
    fn remember(&mut self, sql: &str, key: &Arc<str>, by_shape: bool, decision: &GateDecision) {
        if self.decided.len() + 2 > DECISION_CACHE_ENTRIES {
            self.decided.clear();
        }
        self.decided.insert(key.clone(), decision.clone());
        // A text holding \u{1} or \u{2} could equal a shape key.
        if &**key != sql && !by_shape && !sql.contains(['\u{1}', '\u{2}']) {
            self.decided.insert(Arc::from(sql), decision.clone());
        }
    }

    fn decide(&mut self, sql: &str, parsed: &Parsed) -> GateDecision {
        let analysis = match parsed.as_ref() {
            Ok(a) => a,
            Err(e) => {
                return GateDecision::Deny(Denied::new(
                    format!("portcullis: statement denied: {e}"),
                    PolicyIds::default(),
                ))
            }
        };
        let mut policies = Vec::new();
        let has_effects = analysis
            .statements
            .iter()
            .any(|s| !s.effects.is_empty() || s.redefines_callables);
        let before = self.state.clone();
        if !has_effects {
            for stmt in &analysis.statements {
                if let Err(deny) = self.check_statement(&self.state, stmt, sql, &mut policies) {
                    return deny;
                }
            }
        } else {
            // The server applies each statement's effects before running the
            // next one in the same text, so decide in order on a scratch
            // copy, and keep it only if the whole text may run.
            let mut scratch = self.state.clone();
            for stmt in &analysis.statements {
                if let Err(deny) = self.check_statement(&scratch, stmt, sql, &mut policies) {
                    return deny;
                }
                apply(&mut scratch, stmt, &self.service_user);
                if stmt.redefines_callables {
                    scratch.callables_stale = Some(self.views_generation);
                }
            }
            self.state = scratch;
            self.generation += 1;
        }
        policies.sort();
        policies.dedup();
        let statements: Vec<&StatementFacts> = analysis.statements.iter().collect();
        // Names resolve as the last statement sees them (PREPAREs in the
        // same text included).
        let after = self.state.clone();
        match self.mask_plan(&after, &statements) {
            Ok(mask) => GateDecision::Allow(Allowed::new(policies.into(), mask)),
            Err(deny) => {
                // Nothing runs, so no session effect takes hold.
                if has_effects {
                    self.state = before;
                    self.generation += 1;
                }
                deny
            }
        }
    }

    /// The calls a statement makes that only the catalog reveals, as
    /// `execute` pairs on unqualified functions.
    ///
    /// - A built-in called by unqualified name is trusted only while no
    ///   function of that name exists outside the initial catalog: one in a
    ///   schema on the search_path with a closer argument type would be
    ///   chosen instead, so such a call is decided as `execute` on every
    ///   function it could resolve to.
    /// - A field selection `t.f` or `(expr).f` is the call `f(t)` when no
    ///   column or field `f` exists there. Whether one does would take the
    ///   type of every expression, so a name that is a one-argument
    ///   function's anywhere is decided as a call to it: a built-in safe
    ///   one as an unqualified built-in, any other as `execute`. A real
    ///   column of such a name is over-decided, never under-decided.
    fn catalog_calls(
        &self,
        state: &SessionState,
        stmt: &StatementFacts,
    ) -> Result<Vec<Access>, GateDecision> {
        let prepared = stmt.executes.as_ref().and_then(|n| state.prepared.get(n));
        let builtins = stmt.builtin_names.iter().chain(
            prepared
                .map(|p| p.builtin_names.iter())
                .into_iter()
                .flatten(),
        );
        let attributes = stmt
            .attribute_names
            .iter()
            .chain(
                prepared
                    .map(|p| p.attribute_names.iter())
                    .into_iter()
                    .flatten(),
            )
            .filter(|n| state.callables_stale.is_some() || self.views.callable_by_attribute(n));
        let mut calls = Vec::new();
        for name in attributes {
            if !portcullis_pg_sql::is_builtin_safe(name) || self.views.shadows_builtin(name) {
                calls.push(name);
            } else if !state.catalog_first {
                return Err(GateDecision::Deny(Denied::new(format!("portcullis: statement denied: field selection .{name} may call a function by unqualified name while search_path puts another schema before pg_catalog"), PolicyIds::default())));
            }
        }
        calls.extend(builtins.filter(|n| self.views.shadows_builtin(n)));
        calls.sort();
        calls.dedup();
        Ok(calls
            .into_iter()
            .map(|n| Access {
                action: SqlAction::Execute,
                object: Object::Function(portcullis_pg_sql::Name::new(None, n)),
            })
            .collect())
    }

    /// The field-selection names of `sql` (`t.f`, `(expr).f`) that would
    /// be calls if no column or field of that name exists, safe built-ins
    /// aside: without the upstream's catalog (`portcullis policy check`)
    /// they cannot be decided, so they are shown instead.
    pub fn undecided_field_calls(&self, sql: &str) -> Vec<String> {
        let parsed = self.cache.get(sql);
        let Ok(analysis) = parsed.as_ref().as_ref() else {
            return Vec::new();
        };
        let mut names: Vec<String> = analysis
            .statements
            .iter()
            .flat_map(|s| s.attribute_names.iter())
            .filter(|n| !portcullis_pg_sql::is_builtin_safe(n))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every (action, resource) pair of `sql` with its verdict, for
    /// `portcullis policy check`; `Err` when the text cannot be classified.
    pub fn explain(
        &self,
        sql: &str,
    ) -> Result<Vec<(Action, Resource, portcullis_core::Verdict)>, String> {
        let parsed = self.cache.get(sql);
        let analysis = parsed.as_ref().as_ref().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for stmt in &analysis.statements {
            let facts = self.statement_facts(stmt, sql);
            let mut accesses: Vec<&Access> = stmt.accesses.iter().collect();
            if let Some(p) = stmt
                .executes
                .as_ref()
                .and_then(|n| self.state.prepared.get(n))
            {
                accesses.extend(p.accesses.iter());
            }
            let implied = self.catalog_calls(&self.state, stmt).map_err(|d| match d {
                GateDecision::Deny(d) => d.message().to_owned(),
                GateDecision::Allow(_) => String::new(),
            })?;
            accesses.extend(implied.iter());
            for access in accesses {
                let action = action(access.action);
                let resources =
                    self.candidates(&self.state, &access.object)
                        .map_err(|d| match d {
                            GateDecision::Deny(d) => d.message().to_owned(),
                            GateDecision::Allow(_) => String::new(),
                        })?;
                for (action, resource, _) in
                    resources.into_iter().flat_map(|r| self.expand(action, r))
                {
                    let v = self
                        .policy
                        .decide(&self.identity, action, &resource, &facts);
                    out.push((action, resource, v));
                }
            }
        }
        Ok(out)
    }

    fn check_statement(
        &self,
        state: &SessionState,
        stmt: &StatementFacts,
        sql: &str,
        policies: &mut Vec<String>,
    ) -> Result<(), GateDecision> {
        let deny = |message: String| GateDecision::Deny(Denied::new(message, PolicyIds::default()));
        if stmt.unqualified_builtins && !state.catalog_first {
            return Err(deny(
                "portcullis: statement denied: functions called by unqualified name while search_path puts another schema before pg_catalog".into(),
            ));
        }
        let mut accesses: Vec<&Access> = stmt.accesses.iter().collect();
        if let Some(name) = &stmt.executes {
            let prepared = state.prepared.get(name).ok_or_else(|| {
                deny(format!(
                    "portcullis: statement denied: unknown prepared statement \"{name}\""
                ))
            })?;
            if prepared.unqualified_builtins && !state.catalog_first {
                return Err(deny("portcullis: statement denied: prepared statement calls functions by unqualified name while pg_catalog is not searched first".into()));
            }
            accesses.extend(prepared.accesses.iter());
        }
        let implied = self.catalog_calls(state, stmt)?;
        accesses.extend(implied.iter());
        let facts = self.statement_facts(stmt, sql);
        for access in accesses {
            let action = action(access.action);
            let pairs = self
                .candidates(state, &access.object)?
                .into_iter()
                .flat_map(|r| self.expand(action, r));
            for (action, resource, via) in pairs {
                let v = self
                    .policy
                    .decide(&self.identity, action, &resource, &facts);
                let through = via
                    .map(|v| format!(" (read through view {v})"))
                    .unwrap_or_default();
                if !v.allowed {
                    let message = format!(
                        "portcullis: {} on {}{through} denied ({})",
                        action.as_str(),
                        resource.describe(),
                        v.reason()
                    );
                    return Err(GateDecision::Deny(Denied::new(message, v.policies.into())));
                }
                if !v.reviews.is_empty() {
                    let message = format!(
                        "portcullis: {} on {}{through} needs approval by {} (policy {}); approvals are not available yet, so it is refused",
                        action.as_str(),
                        resource.describe(),
                        v.reviews.join(", "),
                        v.policies.join(", ")
                    );
                    return Err(GateDecision::Deny(Denied::new(message, v.policies.into())));
                }
                policies.extend(v.policies);
            }
        }
        Ok(())
    }

    /// The resources an object may be, given the session's search_path.
    fn candidates(
        &self,
        state: &SessionState,
        object: &Object,
    ) -> Result<Vec<Resource>, GateDecision> {
        let conn = &self.connection;
        let (name, is_function) = match object {
            Object::Connection => return Ok(vec![Resource::Connection(conn.clone())]),
            Object::Table(n) => (n, false),
            Object::Function(n) => (n, true),
        };
        let make = |schema: &str| {
            let name = format!("{schema}.{}", name.name);
            if is_function {
                sql::function(conn, name)
            } else {
                sql::table(conn, name)
            }
        };
        if let Some(schema) = &name.schema {
            return Ok(vec![make(schema)]);
        }
        let mut schemas: Vec<&str> = Vec::new();
        // pg_catalog is searched first unless listed later; functions can be
        // found there under any name, relations only under pg_* names.
        if is_function || name.name.starts_with("pg_") {
            schemas.push("pg_catalog");
        }
        schemas.extend(state.schemas.iter().map(String::as_str));
        if schemas.is_empty() {
            return Err(GateDecision::Deny(Denied::new(
                format!(
                    "portcullis: statement denied: {} cannot be resolved: the session's search_path is empty",
                    name.name
                ),
                PolicyIds::default(),
            )));
        }
        schemas.dedup();
        Ok(schemas.into_iter().map(make).collect())
    }
}

/// Whether a statement sends rows back (so its outputs can be derived).
fn stmt_returns_rows(stmt: &StatementFacts) -> bool {
    matches!(
        stmt.kind,
        "select" | "insert" | "update" | "delete" | "merge" | "execute"
    )
}

/// Applies a statement's session effects to `state`.
fn apply(state: &mut SessionState, stmt: &StatementFacts, service_user: &str) {
    for effect in &stmt.effects {
        match effect {
            Effect::SearchPath(Some(list)) => apply_search_path(state, list, service_user),
            // Back to the default: a path the state already holds.
            Effect::SearchPath(None) => {}
            Effect::Prepare { name, facts } => match state.prepared.get_mut(name) {
                // PREPARE of a taken name fails on the server, unless the
                // old one was deallocated in a way we could not see: keep both.
                Some(old) => {
                    old.accesses.extend(facts.accesses.iter().cloned());
                    old.accesses.sort();
                    old.accesses.dedup();
                    old.unqualified_builtins |= facts.unqualified_builtins;
                    old.builtin_names
                        .extend(facts.builtin_names.iter().cloned());
                    old.attribute_names
                        .extend(facts.attribute_names.iter().cloned());
                    // Either text may be the one the server holds: what its
                    // outputs read can no longer be told by name.
                    old.outputs.columns = None;
                    old.outputs.only_plain_outputs = false;
                    old.outputs.conditions_opaque = true;
                    old.outputs.has_conditions = true;
                    old.outputs.references_opaque = true;
                    if old.outputs.copy_out.is_none() {
                        old.outputs.copy_out = facts.outputs.copy_out.clone();
                    }
                }
                None => {
                    state.prepared.insert(name.clone(), (**facts).clone());
                }
            },
            Effect::Deallocate(Some(name)) => {
                state.prepared.remove(name);
            }
            Effect::Deallocate(None) => state.prepared.clear(),
        }
    }
}

/// Adds a search_path list's schemas to the candidates.
fn apply_search_path(state: &mut SessionState, list: &[String], service_user: &str) {
    for (i, schema) in list.iter().enumerate() {
        let schema = if schema == "$user" {
            service_user
        } else {
            schema.as_str()
        };
        if schema == "pg_catalog" && i > 0 {
            state.catalog_first = false;
        }
        // pg_temp holds only what this session created itself.
        if schema != "pg_catalog"
            && schema != "pg_temp"
            && !state.schemas.iter().any(|s| s == schema)
        {
            state.schemas.push(schema.to_owned());
        }
    }
}

/// Splits a search_path setting such as `"$user", public, "My Schema"`.
fn split_search_path(setting: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = setting.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_owned()),
            c if quoted => cur.push(c),
            c => cur.push(c.to_ascii_lowercase()),
        }
    }
    let last = cur.trim().to_owned();
    if !last.is_empty() {
        out.push(last);
    }
    out.retain(|s| !s.is_empty());
    out
}

/// A gate for user `t` on connection `db` under `policies`, for the
/// tests of the crates that drive a gate. Panics on invalid policies.
#[doc(hidden)]
#[allow(clippy::unwrap_used)]
pub fn test_gate(policies: &str, schemas: &[&str]) -> StatementGate {
    StatementGate::new(
        Arc::new(PolicyEngine::from_text(policies, &[&sql::SQL]).unwrap()),
        Arc::new(ParseCache::default()),
        Identity {
            user: "t".into(),
            groups: vec![],
            actor: None,
            method: "test",
            credential: Default::default(),
        },
        "db".into(),
        "svc".into(),
        "127.0.0.1".into(),
        schemas.iter().map(|s| s.to_string()).collect(),
    )
}

#[cfg(test)]
mod tests;
