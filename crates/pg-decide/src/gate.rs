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
use std::sync::Arc;

use crate::catalog::{SharedCatalog, ViewCatalog};
pub use crate::permit::GateDecision;
use crate::permit::{Allowed, Denied, Held, ReviewNeed};
use crate::vocabulary::{self as sql, action};
use portcullis_core::audit::PolicyIds;
use portcullis_core::masking::{Masking, SensitiveColumn};
use portcullis_core::policy::{ContextValue, RequestFacts};
use portcullis_core::{Action, Identity, PolicyEngine, Resource};
use portcullis_pg_sql::{quick_literal_free_key, Access, Effect, StatementFacts};

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
    hidden_at: Option<(u64, u64)>,
    /// Whether content detectors apply to this principal (they do unless
    /// it may `unmask` the whole connection).
    scan: bool,
}

/// Longest statement text passed to policies as `context.statement`.
const CONTEXT_STATEMENT_LIMIT: usize = 4096;

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
            protocol: sql::PROTOCOL,
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

    /// Decides an Execute of a portal the gateway never bound: a cursor
    /// opened by DECLARE, whose query was decided as its own statement.
    /// Its rows are masked as if they read every masked column; the
    /// decision names no policy of its own.
    pub fn check_unbound_portal(&mut self) -> Allowed {
        Allowed::new(PolicyIds::default(), self.conservative_plan())
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
            Err(e @ portcullis_pg_sql::Unclassifiable::Parse(_)) => {
                return GateDecision::Deny(Denied::unparsable(format!(
                    "portcullis: statement denied: {e}"
                )))
            }
            Err(e) => {
                return GateDecision::Deny(Denied::new(
                    format!("portcullis: statement denied: {e}"),
                    PolicyIds::default(),
                ))
            }
        };
        let mut found = Findings::default();
        // Prepared names change the gate's state only when the server
        // confirms them; within this text they count in order.
        let has_effects = analysis.statements.iter().any(|s| {
            s.redefines_callables
                || s.effects.iter().any(|e| {
                    matches!(
                        e,
                        Effect::SearchPath(_) | Effect::Prepare { .. } | Effect::Deallocate(_)
                    )
                })
        });
        let statements: Vec<&StatementFacts> = analysis.statements.iter().collect();
        let mask = if !has_effects {
            for stmt in &analysis.statements {
                if let Err(deny) = self.check_statement(&self.state, stmt, sql, &mut found) {
                    return deny;
                }
            }
            let state = self.state.clone();
            self.mask_plan(&state, &statements)
        } else {
            // The server applies each statement's effects before running the
            // next one in the same text, so decide in order on a scratch
            // copy, and keep it only if the whole text may run.
            let mut scratch = self.state.clone();
            for stmt in &analysis.statements {
                if let Err(deny) = self.check_statement(&scratch, stmt, sql, &mut found) {
                    return deny;
                }
                apply(&mut scratch, stmt, &self.service_user);
                if stmt.redefines_callables {
                    scratch.callables_stale = Some(self.views_generation);
                }
            }
            // Names resolve as the last statement sees them (PREPAREs in
            // the same text included).
            let mask = self.mask_plan(&scratch, &statements);
            if mask.is_ok() {
                scratch.prepared = std::mem::take(&mut self.state.prepared);
                self.state = scratch;
                self.generation += 1;
            }
            mask
        };
        if let Some(need) = &found.review {
            if statements.iter().any(|s| s.executes.is_some()) {
                return GateDecision::Deny(unreviewable(
                    need,
                    "it runs a prepared statement through EXECUTE",
                ));
            }
        }
        let names = names::name_changes(statements.iter().copied());
        if let Some(reserved) = names
            .iter()
            .flat_map(|n| n.iter())
            .find_map(names::reserved)
        {
            return GateDecision::Deny(Denied::new(
                format!("portcullis: statement denied: the name {reserved:?} starts with \\x01, which the gateway reserves for its own statements"),
                PolicyIds::default(),
            ));
        }
        match mask {
            Ok(mask) => found.decision(|policies| {
                Allowed::new(policies, mask)
                    .with_names(names)
                    .with_fetches(
                        statements
                            .iter()
                            .filter_map(|s| s.fetches.clone())
                            .collect(),
                    )
                    .with_encoding(state::encoding_change(
                        // What an EXECUTE runs is the prepared statement's.
                        statements.iter().copied().chain(
                            statements
                                .iter()
                                .filter_map(|s| s.executes.as_ref())
                                .filter_map(|name| self.state.prepared.get(name)),
                        ),
                    ))
            }),
            Err(deny) => deny,
        }
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
                GateDecision::Allow(_) | GateDecision::Review(_) => String::new(),
            })?;
            accesses.extend(implied.iter());
            for access in accesses {
                let action = action(access.action);
                let resources =
                    self.candidates(&self.state, &access.object)
                        .map_err(|d| match d {
                            GateDecision::Deny(d) => d.message().to_owned(),
                            GateDecision::Allow(_) | GateDecision::Review(_) => String::new(),
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
        found: &mut Findings,
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
                GateDecision::Deny(
                    Denied::new(
                        format!("prepared statement \"{name}\" does not exist"),
                        PolicyIds::default(),
                    )
                    .with_sqlstate("26000"),
                )
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
                    .map(|v| format!(" (read through {v})"))
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
                    found.review(ReviewNeed {
                        rules: v.reviews,
                        actions: vec![format!(
                            "{} on {}{through}",
                            action.as_str(),
                            resource.describe()
                        )],
                        policies: v.policies.clone(),
                    });
                }
                found.policies.extend(v.policies);
            }
        }
        Ok(())
    }
}

/// The refusal of a statement that needs review but cannot be shown to a
/// reviewer as exactly what will run.
fn unreviewable(need: &ReviewNeed, why: &str) -> Denied {
    Denied::new(
        format!(
            "portcullis: {} needs approval, and {why}: reviewers approve the exact text that runs, so send the statement itself",
            need.actions.join("; ")
        ),
        need.policies.clone().into(),
    )
}

/// What deciding a statement's pairs found: the permits that allowed
/// them, and the review some of them need.
#[derive(Default)]
struct Findings {
    policies: Vec<String>,
    review: Option<ReviewNeed>,
}

impl Findings {
    fn review(&mut self, need: ReviewNeed) {
        match &mut self.review {
            Some(mine) => mine.absorb(&need),
            None => self.review = Some(need),
        }
    }

    /// The allowance `allow` makes of the sorted policies, as it stands
    /// or held for the review it needs.
    fn decision(mut self, allow: impl FnOnce(PolicyIds) -> Allowed) -> GateDecision {
        self.policies.sort();
        self.policies.dedup();
        let allowed = allow(std::mem::take(&mut self.policies).into());
        match self.review {
            None => GateDecision::Allow(allowed),
            Some(need) => GateDecision::Review(Box::new(Held::new(allowed, need))),
        }
    }
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

mod masking;
mod names;
mod parse_cache;
mod resolve;
mod state;

pub use names::{Definition, NameChange};
pub use parse_cache::ParseCache;
use parse_cache::Parsed;
use state::{apply, apply_search_path, split_search_path, SessionState};

#[cfg(test)]
mod tests;
