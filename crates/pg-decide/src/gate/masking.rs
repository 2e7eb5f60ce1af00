//! Mask planning: which classified columns the principal may not see,
//! and for each allowed statement how its outputs are traced, which uses
//! of masked columns refuse it (conditions, writes, derived outputs,
//! COPY), and how a COPY's fields are masked.

use std::sync::Arc;

use portcullis_core::audit::PolicyIds;
use portcullis_core::masking::{OnDerived, OnPredicate, SensitiveColumn};
use portcullis_core::Resource;
use portcullis_pg_sql::{Object, SqlAction, StatementFacts};

use super::state::SessionState;
use super::StatementGate;
use crate::masker::{CopyPlan, MaskPlan};
use crate::permit::{Denied, GateDecision};
use crate::vocabulary::{self as sql, action};

impl StatementGate {
    /// A plan for rows the gateway did not decide the query of (a cursor
    /// opened by DECLARE and read by a protocol Execute of its name):
    /// every masked column counts as read. `None` without masking.
    pub(super) fn conservative_plan(&mut self) -> Option<Arc<MaskPlan>> {
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
    pub(super) fn refresh_hidden(&mut self) {
        let Some(masking) = &self.masking else {
            return;
        };
        let g = (self.policy.generation(), self.views_generation);
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
        let hidden = self.with_ancestors(hidden);
        let connection = Resource::Connection(self.connection.clone());
        self.scan = masking.scans()
            && !self
                .policy
                .decide(&self.identity, sql::UNMASK, &connection, &facts)
                .allowed;
        self.hidden = Arc::new(hidden);
        self.hidden_at = Some(g);
    }

    /// `hidden` and, for each, the same column of every table it inherits
    /// from or is a partition of: reading the parent reads the child's rows,
    /// and the server describes them as the parent's columns.
    fn with_ancestors(&self, hidden: Vec<Arc<SensitiveColumn>>) -> Vec<Arc<SensitiveColumn>> {
        let mut out = hidden.clone();
        for c in &hidden {
            for a in self.views.ancestors(&c.table_name()) {
                let Some((schema, table)) = a.split_once('.') else {
                    continue;
                };
                let has_column = self
                    .views
                    .column_list(a)
                    .is_some_and(|cols| cols.iter().any(|n| *n == c.column));
                let known = out
                    .iter()
                    .any(|h| h.schema == schema && h.table == table && h.column == c.column);
                if has_column && !known {
                    out.push(Arc::new(SensitiveColumn::new(
                        &c.connection,
                        schema,
                        table,
                        &c.column,
                        &c.class,
                        c.strategy,
                    )));
                }
            }
        }
        out
    }

    /// `outputs` with every name the catalog does not list for the
    /// relations in `touched` made opaque: such a name is not a column
    /// (attribute notation `t.f` calls `f(t)`; an output alias; a column
    /// newer than the catalog), so what it stands for cannot be told.
    pub(super) fn checked_outputs(
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
    pub(super) fn mask_plan(
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
            let Reach {
                touched,
                writes,
                ddl_on,
                calls,
            } = self.reach(state, accesses);
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
            self.check_uses(&masking.rules, stmt, outputs, &exposed, writes)?;
            if let Some(c) = &outputs.copy_out {
                copy = Some(self.copy_plan(state, c, exposed[0])?);
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

    /// What a statement's accesses reach: the tables it touches (views
    /// resolved), whether it writes, the tables it alters, and the first
    /// function it calls.
    fn reach<'a>(
        &self,
        state: &SessionState,
        accesses: impl Iterator<Item = &'a portcullis_pg_sql::Access>,
    ) -> Reach {
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
        Reach {
            touched,
            writes,
            ddl_on,
            calls,
        }
    }

    /// Refuses a statement that uses masked columns `exposed` where
    /// masking cannot follow them: in a condition (`on_predicate =
    /// "deny"`), copied into a table, or in a computed output (`on_derived
    /// = "deny"`).
    fn check_uses(
        &self,
        rules: &portcullis_core::masking::MaskingRules,
        stmt: &StatementFacts,
        outputs: &portcullis_pg_sql::OutputFacts,
        exposed: &[&Arc<SensitiveColumn>],
        writes: bool,
    ) -> Result<(), GateDecision> {
        let deny = |message: String| GateDecision::Deny(Denied::new(message, PolicyIds::default()));
        let describe = |c: &SensitiveColumn| format!("{}/{}", self.connection, c.qualified());
        let named = |names: &[String]| {
            exposed
                .iter()
                .find(|c| names.contains(&c.column))
                .map(|c| describe(c))
        };
        if rules.on_predicate == OnPredicate::Deny && outputs.has_conditions {
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
        if rules.on_derived == OnDerived::Deny && !outputs.only_plain_outputs {
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
        Ok(())
    }

    /// How the fields of `COPY … TO STDOUT` are masked, when masked column
    /// `first` (and maybe others) is copied; or why the COPY may not run.
    fn copy_plan(
        &self,
        state: &SessionState,
        c: &portcullis_pg_sql::CopyOut,
        first: &SensitiveColumn,
    ) -> Result<CopyPlan, GateDecision> {
        let deny = |message: String| GateDecision::Deny(Denied::new(message, PolicyIds::default()));
        let describe = |c: &SensitiveColumn| format!("{}/{}", self.connection, c.qualified());
        if c.other_options {
            return Err(deny(format!("portcullis: statement denied: COPY options other than FORMAT, DELIMITER, NULL and HEADER change how fields are written, and masked column {} is copied", describe(first))));
        }
        let Some((schema, table)) = &c.table else {
            return Err(deny(format!("portcullis: statement denied: COPY of a query over masked column {} cannot be traced; COPY the table or use SELECT", describe(first))));
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
            return Err(deny(format!("portcullis: statement denied: cannot tell which table COPY reads, and it may hold masked column {}", describe(first))));
        };
        let list: Vec<String> = if c.columns.is_empty() {
            self.views.column_list(name).unwrap_or_default().to_vec()
        } else {
            c.columns.clone()
        };
        let delimiter = match (&c.delimiter, c.csv) {
            (Some(d), _) if d.len() == 1 => d.as_bytes()[0],
            (Some(_), _) => return Err(deny(
                "portcullis: statement denied: COPY with a multi-byte delimiter cannot be masked"
                    .into(),
            )),
            (None, true) => b',',
            (None, false) => b'\t',
        };
        Ok(CopyPlan {
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
        })
    }
}

/// What a statement's accesses reach; see [`StatementGate::reach`].
struct Reach {
    touched: Vec<String>,
    writes: bool,
    ddl_on: Vec<String>,
    calls: Option<String>,
}

/// Whether a statement sends rows back (so its outputs can be derived).
fn stmt_returns_rows(stmt: &StatementFacts) -> bool {
    matches!(
        stmt.kind,
        "select" | "insert" | "update" | "delete" | "merge" | "execute"
    )
}
