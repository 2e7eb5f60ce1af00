//! Prepared statements by name, as the adapter's ledger of what the server
//! confirmed tells the gate. Protocol-level (Parse) and SQL-level
//! (`PREPARE`) names share one namespace, as on the server. When the
//! server may hold more than one definition under a name, a statement that
//! runs it is decided for every one of them; what it returns is masked as
//! if it read every masked column.

use std::sync::Arc;

use portcullis_core::audit::PolicyIds;
use portcullis_pg_sql::{Effect, StatementFacts};

use super::state::{encoding_change, merge_prepared};
use super::{Findings, StatementGate};
use crate::permit::{Allowed, Denied, GateDecision, Held, ReviewNeed};

/// What the server may hold under a prepared statement name.
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    /// A protocol-level Parse of this text, with the parameter types it
    /// declared.
    Text(Arc<str>, Arc<[u32]>),
    /// A SQL `PREPARE` of a statement with these facts.
    Sql(Arc<StatementFacts>),
}

/// A change to the names the server holds, made by statement `statement`
/// (counted from zero) of a text when it completes.
#[derive(Debug, Clone, PartialEq)]
pub struct NameChange {
    /// Which statement of the text makes it.
    pub statement: usize,
    /// `Prepare`, `Deallocate`, `Declare` or `ClosePortal`.
    pub effect: Effect,
}

/// The name a change defines, when it starts with \x01: the gateway's
/// stand-ins parse and bind under such names, so no client may define one.
pub(super) fn reserved(change: &NameChange) -> Option<&str> {
    let name = match &change.effect {
        Effect::Prepare { name, .. } | Effect::Declare(name) => name.as_str(),
        _ => return None,
    };
    name.starts_with('\u{1}').then_some(name)
}

/// The changes to names that the statements of a text make.
pub(super) fn name_changes<'a>(
    statements: impl IntoIterator<Item = &'a StatementFacts>,
) -> Option<Arc<[NameChange]>> {
    let changes: Vec<NameChange> = statements
        .into_iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.effects
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Effect::Prepare { .. }
                            | Effect::Deallocate(_)
                            | Effect::Declare(_)
                            | Effect::ClosePortal(_)
                    )
                })
                .map(move |e| NameChange {
                    statement: i,
                    effect: e.clone(),
                })
        })
        .collect();
    (!changes.is_empty()).then(|| changes.into())
}

impl StatementGate {
    /// Sets what `EXECUTE name` in a statement text may run: every
    /// definition the server may hold under `name` (none: it holds none).
    /// A protocol-level definition among them makes `EXECUTE name` refused
    /// (the gateway keeps SQL facts only for SQL-level ones).
    pub fn set_prepared(&mut self, name: &str, definitions: &[Definition]) {
        let mut merged: Option<StatementFacts> = None;
        let mut protocol = false;
        for d in definitions {
            match d {
                Definition::Text(..) => protocol = true,
                Definition::Sql(facts) => match &mut merged {
                    None => merged = Some((**facts).clone()),
                    Some(m) => merge_prepared(m, facts),
                },
            }
        }
        let new = merged.filter(|_| !protocol);
        if self.state.prepared.get(name) == new.as_ref() {
            return;
        }
        match new {
            Some(facts) => self.state.prepared.insert(name.to_owned(), facts),
            None => self.state.prepared.remove(name),
        };
        // Decisions of `EXECUTE name` made before no longer hold.
        self.generation += 1;
    }

    /// Whether `EXECUTE name` has SQL facts to be decided by.
    pub fn knows_prepared(&self, name: &str) -> bool {
        self.state.prepared.contains_key(name)
    }

    /// The names `EXECUTE` has SQL facts for.
    pub fn prepared_names(&self) -> Vec<String> {
        self.state.prepared.keys().cloned().collect()
    }

    /// Decides running whichever of `definitions` the server holds under
    /// a prepared statement's name (a protocol Bind of it): allowed only
    /// if each is; with more than one, rows are masked as if they read
    /// every masked column.
    pub fn check_definitions(&mut self, definitions: &[Definition]) -> GateDecision {
        let mut policies: Vec<String> = Vec::new();
        let mut last = None;
        let mut encoding = None;
        let mut need: Option<ReviewNeed> = None;
        for d in definitions {
            let decision = match d {
                Definition::Text(text, _) => self.check(text),
                Definition::Sql(facts) => self.check_facts(facts),
            };
            let allowed = match decision {
                GateDecision::Allow(a) => a,
                GateDecision::Review(held) => {
                    let (a, n) = held.into_parts();
                    match &mut need {
                        Some(mine) => mine.absorb(&n),
                        None => need = Some(n),
                    }
                    a
                }
                deny @ GateDecision::Deny(_) => return deny,
            };
            policies.extend(allowed.policies().iter().cloned());
            encoding = encoding.max(allowed.encoding_change());
            last = Some(allowed);
        }
        let Some(only) = last else {
            return GateDecision::Deny(Denied::new(
                "portcullis: statement denied: no prepared statement of that name is known".into(),
                PolicyIds::default(),
            ));
        };
        if let Some(need) = need.as_ref().filter(|_| definitions.len() > 1) {
            return GateDecision::Deny(super::unreviewable(
                need,
                "the server may hold more than one definition under the prepared statement's name",
            ));
        }
        let allowed = if definitions.len() == 1 {
            only
        } else {
            policies.sort();
            policies.dedup();
            let mask = self.conservative_plan();
            Allowed::new(policies.into(), mask).with_encoding(encoding)
        };
        match need {
            None => GateDecision::Allow(allowed),
            Some(need) => GateDecision::Review(Box::new(Held::new(allowed, need))),
        }
    }

    /// Decides executing a SQL-prepared statement with `facts`.
    fn check_facts(&mut self, facts: &StatementFacts) -> GateDecision {
        self.refresh_views();
        let mut found = Findings::default();
        let state = self.state.clone();
        if let Err(deny) = self.check_statement(&state, facts, "EXECUTE", &mut found) {
            return deny;
        }
        if let Some(need) = &found.review {
            return GateDecision::Deny(super::unreviewable(
                need,
                "it runs a statement prepared with SQL PREPARE",
            ));
        }
        match self.mask_plan(&state, &[facts]) {
            Ok(mask) => found.decision(|policies| {
                Allowed::new(policies, mask).with_encoding(encoding_change([facts]))
            }),
            Err(deny) => deny,
        }
    }
}
