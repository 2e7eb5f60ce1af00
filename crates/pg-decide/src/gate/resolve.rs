//! Name resolution as the server does it: the schemas an unqualified
//! name may resolve to under the session's search_path, what a view reads
//! beneath it, and the calls only the catalog reveals (field selection,
//! built-ins shadowed by user functions).

use portcullis_core::audit::PolicyIds;
use portcullis_core::{Action, Resource};
use portcullis_pg_sql::{Access, Object, SqlAction, StatementFacts};

use super::state::SessionState;
use super::StatementGate;
use crate::permit::{Denied, GateDecision};
use crate::vocabulary as sql;

impl StatementGate {
    /// Adopts a newer shared catalog, if one appeared.
    pub(super) fn refresh_views(&mut self) {
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

    /// The pairs `(action, resource)` implies: itself; for a view the
    /// same action on every relation beneath it and `execute` on every
    /// function it calls; and for a table (beneath a view too) the same
    /// action on every inheritance or partition descendant, which reading
    /// or writing it reaches. Each comes with what it was reached through.
    pub(super) fn expand(
        &self,
        action: Action,
        resource: Resource,
    ) -> Vec<(Action, Resource, Option<String>)> {
        // Only data actions reach through a view or to children: dropping
        // or altering one touches nothing beneath it.
        let name = match &resource {
            r if sql::is_data_action(action) => sql::table_name(r).map(str::to_owned),
            _ => None,
        };
        let Some(name) = name else {
            return vec![(action, resource, None)];
        };
        let reads = self.views.reads(&name);
        let descendants = self.views.descendants(&name);
        if reads.is_none() && descendants.is_empty() {
            return vec![(action, resource, None)];
        }
        let conn = &self.connection;
        let mut out = vec![(action, resource.clone(), None)];
        let inherited = |out: &mut Vec<_>, parent: &str, via: &str| {
            for d in self.views.descendants(parent) {
                let child = sql::table(conn, d.clone());
                out.push((action, child, Some(via.to_owned())));
            }
        };
        inherited(
            &mut out,
            &name,
            &format!("parent table {}", resource.describe()),
        );
        let Some(reads) = reads else {
            return out;
        };
        let via = format!("view {}", resource.describe());
        for r in &reads.relations {
            // A view over pg_authid's passwords reads them as surely as a
            // select of pg_authid does.
            if portcullis_pg_sql::is_content_catalog(r) {
                let gateway = Resource::Connection(conn.clone());
                out.push((sql::action(SqlAction::Admin), gateway, Some(via.clone())));
            }
            let table = sql::table(conn, r.clone());
            out.push((action, table, Some(via.clone())));
            inherited(&mut out, r, &via);
        }
        for f in &reads.functions {
            // A built-in that only reads needs no grant beneath a view,
            // as it needs none in the statement itself.
            let pure = f.split_once('.').is_some_and(|(schema, name)| {
                portcullis_pg_sql::classify_builtin(Some(schema), name)
                    == portcullis_pg_sql::BuiltinClass::Pure
            });
            if pure {
                continue;
            }
            let func = sql::function(conn, f.clone());
            out.push((sql::action(SqlAction::Execute), func, Some(via.clone())));
        }
        out
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
    pub(super) fn catalog_calls(
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
        // A function created earlier in the same text is not in the
        // catalog yet: every built-in name may be shadowed by it.
        let stale = state.callables_stale.is_some();
        calls.extend(builtins.filter(|n| stale || self.views.shadows_builtin(n)));
        calls.sort();
        calls.dedup();
        let mut out: Vec<Access> = calls
            .into_iter()
            .map(|n| Access {
                action: SqlAction::Execute,
                object: Object::Function(portcullis_pg_sql::Name::new(None, n)),
            })
            .collect();
        // A user's operator runs its function: decided as a call to it.
        let operators = stmt.operator_names.iter().chain(
            prepared
                .map(|p| p.operator_names.iter())
                .into_iter()
                .flatten(),
        );
        let operator_functions: Vec<&str> = operators
            .flat_map(|op| self.views.operator_functions(op))
            .collect();
        // Whether a value of a user type may be in the statement: it names
        // the type, touches a relation with a column of it, or calls code
        // that could return one.
        let facts = [Some(stmt), prepared];
        let calls_user_code = !operator_functions.is_empty()
            || facts.iter().flatten().any(|f| {
                f.accesses
                    .iter()
                    .any(|a| matches!(a.object, Object::Function(_)))
            });
        let present = |ty: &str| {
            calls_user_code
                || facts.iter().flatten().any(|f| {
                    f.cast_targets.iter().any(|t| t == ty)
                        || f.accesses.iter().any(|a| match &a.object {
                            Object::Table(n) => self.views.relation_has_type(&n.name, ty),
                            _ => false,
                        })
                })
        };
        // So does a user's cast, to the type cast to explicitly, and one
        // the server applies unasked wherever a value of its user type may
        // meet the other type.
        let casts: Vec<&str> = facts
            .iter()
            .flatten()
            .flat_map(|f| f.cast_targets.iter())
            .flat_map(|t| self.views.cast_functions(t, present))
            .collect();
        let unasked = self.views.unasked_cast_functions(present);
        for f in operator_functions.into_iter().chain(casts).chain(unasked) {
            let Some((schema, name)) = f.split_once('.') else {
                continue;
            };
            if portcullis_pg_sql::classify_builtin(Some(schema), name)
                == portcullis_pg_sql::BuiltinClass::Pure
            {
                continue;
            }
            out.push(Access {
                action: SqlAction::Execute,
                object: Object::Function(portcullis_pg_sql::Name::new(Some(schema), name)),
            });
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The resources an object may be, given the session's search_path.
    pub(super) fn candidates(
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
