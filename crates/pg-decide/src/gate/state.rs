//! What the gate knows of the session's state on the server: the schemas
//! its search_path may hold, SQL-level prepared statements, and whether
//! callables changed. Statements change it only as the server would.

use std::collections::HashMap;

use portcullis_pg_sql::{Effect, EncodingChange, StatementFacts};

/// What the gate knows of the session's state on the server.
#[derive(Clone, Default)]
pub(super) struct SessionState {
    /// Every schema the search_path may contain, in first-seen order.
    pub(super) schemas: Vec<String>,
    /// False once a search_path put another schema before pg_catalog.
    pub(super) catalog_first: bool,
    /// SQL-level prepared statements (PREPARE … AS …) the server holds or
    /// may hold, as the adapter's ledger says (several possible
    /// definitions merged into one).
    pub(super) prepared: HashMap<String, StatementFacts>,
    /// Set by a statement that created or renamed something a field
    /// selection can call, with the catalog generation of that moment:
    /// until a newer catalog arrives, every field-selection name is decided
    /// as a call.
    pub(super) callables_stale: Option<u64>,
}

/// Applies a statement's session effects to `state`. Prepared names
/// change here only within one text (the server runs its statements in
/// order); across texts they change when the server confirms them (see
/// `names.rs`).
pub(super) fn apply(state: &mut SessionState, stmt: &StatementFacts, service_user: &str) {
    for effect in &stmt.effects {
        match effect {
            Effect::SearchPath(Some(list)) => apply_search_path(state, list, service_user),
            // Back to the default: a path the state already holds.
            Effect::SearchPath(None) => {}
            Effect::Prepare { name, facts } => match state.prepared.get_mut(name) {
                // PREPARE of a taken name fails on the server: the text
                // stops there, so later statements never see this one.
                Some(_) => {}
                None => {
                    state.prepared.insert(name.clone(), (**facts).clone());
                }
            },
            Effect::Deallocate(Some(name)) => {
                state.prepared.remove(name);
            }
            Effect::Deallocate(None) => state.prepared.clear(),
            Effect::Declare(_) | Effect::ClosePortal(_) | Effect::ClientEncoding(_) => {}
        }
    }
}

/// The strongest way `statements` may change `client_encoding`.
pub(super) fn encoding_change<'a>(
    statements: impl IntoIterator<Item = &'a StatementFacts>,
) -> Option<EncodingChange> {
    statements
        .into_iter()
        .flat_map(|s| s.effects.iter())
        .filter_map(|e| match e {
            Effect::ClientEncoding(change) => Some(*change),
            _ => None,
        })
        .max()
}

/// Widens `old` to cover `other` too: either may be the one the server
/// holds, so what the outputs read can no longer be told by name.
pub(super) fn merge_prepared(old: &mut StatementFacts, other: &StatementFacts) {
    old.accesses.extend(other.accesses.iter().cloned());
    old.accesses.sort();
    old.accesses.dedup();
    old.unqualified_builtins |= other.unqualified_builtins;
    old.builtin_names
        .extend(other.builtin_names.iter().cloned());
    old.attribute_names
        .extend(other.attribute_names.iter().cloned());
    old.operator_names
        .extend(other.operator_names.iter().cloned());
    old.cast_targets.extend(other.cast_targets.iter().cloned());
    // Either may change client_encoding when executed.
    old.effects.extend(
        other
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::ClientEncoding(_)))
            .cloned(),
    );
    old.outputs.columns = None;
    old.outputs.only_plain_outputs = false;
    old.outputs.conditions_opaque = true;
    old.outputs.has_conditions = true;
    old.outputs.references_opaque = true;
    if old.outputs.copy_out.is_none() {
        old.outputs.copy_out = other.outputs.copy_out.clone();
    }
}

/// Adds a search_path list's schemas to the candidates.
pub(super) fn apply_search_path(state: &mut SessionState, list: &[String], service_user: &str) {
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

pub(super) use portcullis_pg_sql::split_search_path;
