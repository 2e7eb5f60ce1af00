//! Classifying one top-level statement.

use pg_query::protobuf::{DiscardMode, ObjectType, TransactionStmtKind, VariableSetKind};
use serde_json::Value;

use crate::facts::{
    Access, Effect, EncodingChange, Name, Object, SqlAction, StatementFacts, Unclassifiable,
};
use crate::settings;
use crate::walk::{is_set, name_parts, node, str_field, Walker};

/// `AccessShareLock` in PostgreSQL's lock modes (`LOCK … IN ACCESS SHARE MODE`).
const ACCESS_SHARE_LOCK: i64 = 1;

/// Statements that change the schema: `ddl` on the connection and on every
/// relation they name.
const DDL: &[&str] = &[
    "AlterCollationStmt",
    "AlterDomainStmt",
    "AlterEnumStmt",
    "AlterFunctionStmt",
    "AlterObjectSchemaStmt",
    "AlterOperatorStmt",
    "AlterPolicyStmt",
    "AlterSeqStmt",
    "AlterStatsStmt",
    "AlterTableMoveAllStmt",
    "AlterTableStmt",
    "AlterTSConfigurationStmt",
    "AlterTSDictionaryStmt",
    "AlterTypeStmt",
    "CommentStmt",
    "CompositeTypeStmt",
    "CreateAmStmt",
    "CreateCastStmt",
    "CreateConversionStmt",
    "CreateDomainStmt",
    "CreateEnumStmt",
    "CreateForeignTableStmt",
    "CreateFunctionStmt",
    "CreateOpClassStmt",
    "CreateOpFamilyStmt",
    "AlterOpFamilyStmt",
    "CreatePLangStmt",
    "CreatePolicyStmt",
    "CreateRangeStmt",
    "CreateSchemaStmt",
    "CreateSeqStmt",
    "CreateStatsStmt",
    "CreateStmt",
    "CreateTransformStmt",
    "CreateTrigStmt",
    "DefineStmt",
    "DropStmt",
    "IndexStmt",
    "RefreshMatViewStmt",
    "RenameStmt",
    "RuleStmt",
    "ViewStmt",
    "CreateTableAsStmt",
];

/// DDL that also needs `admin`: what makes the server call a function
/// implicitly later (triggers, casts, operators, aggregates, types,
/// operator classes, transforms, conversions), so that whoever may do it
/// can have any function run under another statement's name; and what
/// renames or moves objects, which rules name.
const IMPLICIT_CALLS: &[&str] = &[
    "CreateTrigStmt",
    "CreateCastStmt",
    "DefineStmt",
    "CreateOpClassStmt",
    "CreateOpFamilyStmt",
    "AlterOpFamilyStmt",
    "CreateTransformStmt",
    "CreateConversionStmt",
    // a domain's CHECK runs at every cast to it (`42::d`, `(42).d`); a
    // range names subtype_diff and canonical functions
    "CreateDomainStmt",
    "AlterDomainStmt",
    "CreateRangeStmt",
    // Policies and masking rules name objects by schema and name: renaming
    // or moving one would carry it out from under its rules (or another
    // under them), so only an administrator may.
    "RenameStmt",
    "AlterObjectSchemaStmt",
];

/// Whether `k` changes what an existing function does: `CREATE OR
/// REPLACE` of one, or `ALTER FUNCTION` (`SECURITY DEFINER`, `SET`, …).
/// Triggers, defaults, views and other users' statements call functions
/// by name, so whoever may change one can have any code run under their
/// names and rights: it needs `admin`, like creating a trigger.
fn changes_existing_function(k: &str, body: &Value) -> bool {
    match k {
        "CreateFunctionStmt" => body.get("replace").and_then(Value::as_bool) == Some(true),
        "AlterFunctionStmt" => true,
        _ => false,
    }
}

/// DDL after which a field selection `t.f` may call something the
/// caller's catalog does not list yet (a new or renamed function, a type or
/// domain whose name casts).
const REDEFINES_CALLABLES: &[&str] = &[
    "CreateFunctionStmt",
    "AlterFunctionStmt",
    "DefineStmt",
    "RenameStmt",
    "AlterObjectSchemaStmt",
    "CreateDomainStmt",
    "AlterDomainStmt",
    "CreateRangeStmt",
    "CompositeTypeStmt",
    "CreateEnumStmt",
];

/// Whether `v` holds a COPY, or a constant in an ORDER BY, GROUP BY or
/// DISTINCT ON list (where an integer names an output column).
fn has_copy_or_positions(v: &Value) -> bool {
    fn has_const(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.contains_key("AConst") || m.values().any(has_const),
            Value::Array(a) => a.iter().any(has_const),
            _ => false,
        }
    }
    match v {
        Value::Object(m) => m.iter().any(|(k, x)| match k.as_str() {
            "CopyStmt" => true,
            "sort_clause" | "group_clause" | "distinct_clause" if has_const(x) => true,
            _ => has_copy_or_positions(x),
        }),
        Value::Array(a) => a.iter().any(has_copy_or_positions),
        _ => false,
    }
}

/// Statements that administer the server, roles or privileges: `admin`.
const ADMIN: &[&str] = &[
    "AlterDatabaseRefreshCollStmt",
    "AlterDatabaseSetStmt",
    "AlterDatabaseStmt",
    "AlterDefaultPrivilegesStmt",
    "AlterEventTrigStmt",
    "AlterExtensionContentsStmt",
    "AlterExtensionStmt",
    "AlterFdwStmt",
    "AlterForeignServerStmt",
    "AlterOwnerStmt",
    "AlterPublicationStmt",
    "AlterRoleSetStmt",
    "AlterRoleStmt",
    "AlterSubscriptionStmt",
    "AlterSystemStmt",
    "AlterTableSpaceOptionsStmt",
    "AlterUserMappingStmt",
    "CheckPointStmt",
    "ClusterStmt",
    "CreateEventTrigStmt",
    "CreateExtensionStmt",
    "CreateFdwStmt",
    "CreateForeignServerStmt",
    "CreatePublicationStmt",
    "CreateRoleStmt",
    "CreateSubscriptionStmt",
    "CreateTableSpaceStmt",
    "CreateUserMappingStmt",
    "CreatedbStmt",
    "DropOwnedStmt",
    "DropRoleStmt",
    "DropSubscriptionStmt",
    "DropTableSpaceStmt",
    "DropUserMappingStmt",
    "DropdbStmt",
    "GrantRoleStmt",
    "GrantStmt",
    "ImportForeignSchemaStmt",
    "LoadStmt",
    "ReassignOwnedStmt",
    "ReindexStmt",
    "SecLabelStmt",
    "VacuumStmt",
];

/// Whether a client encoding keeps every byte below 0x80 meaning itself,
/// so the server reads quotes and backslashes where the gateway does.
/// Names are cleaned as PostgreSQL cleans them (`utf-8`, `UTF_8`,
/// `ISO-8859-15` and `Unicode` are the names of safe encodings).
pub fn is_safe_client_encoding(name: &str) -> bool {
    portcullis_pg_wire::ClientEncoding::by_name(name).is_some()
}

fn facts(kind: &'static str, w: Walker) -> StatementFacts {
    let mut accesses = w.accesses;
    if w.settings_reads > 0 && !(w.settings_reads == 1 && w.settings_filtered) {
        // Reading pg_settings is calling pg_show_all_settings(), unless
        // the one read is filtered to a non-secret setting by name.
        accesses.push(Access {
            action: SqlAction::Execute,
            object: Object::Function(Name::new(Some("pg_catalog"), "pg_show_all_settings")),
        });
    }
    if w.locks_rows {
        // FOR UPDATE/SHARE (any strength) locks the rows it reads, which
        // blocks writers as a write would: `update` on every relation read.
        let locked: Vec<Access> = accesses
            .iter()
            .filter(|a| a.action == SqlAction::Select && matches!(a.object, Object::Table(_)))
            .map(|a| Access {
                action: SqlAction::Update,
                object: a.object.clone(),
            })
            .collect();
        accesses.extend(locked);
    }
    StatementFacts {
        kind,
        accesses: sorted(accesses, Vec::new()),
        effects: w.effects,
        executes: None,
        fetches: None,
        unqualified_builtins: w.unqualified_builtins,
        builtin_names: sorted(w.builtin_names, Vec::new()),
        attribute_names: sorted(w.attribute_names, Vec::new()),
        operator_names: sorted(w.operator_names, Vec::new()),
        cast_targets: sorted(w.cast_targets, Vec::new()),
        literal_sensitive: w.literal_sensitive,
        redefines_callables: false,
        outputs: Default::default(),
    }
}

/// Classifies one top-level statement node.
pub(crate) fn classify(tree: &Value) -> Result<StatementFacts, Unclassifiable> {
    settings::refuse_unsafe_set_config(tree)?;
    let mut f = classify_actions(tree)?;
    if crate::walk::reads_secret_column(tree, &f.accesses) {
        f.accesses.push(Access {
            action: SqlAction::Admin,
            object: Object::Connection,
        });
        f.accesses.sort();
        f.accesses.dedup();
    }
    f.literal_sensitive |= has_copy_or_positions(tree);
    if let Some((kind, body)) = node(tree) {
        f.redefines_callables |= REDEFINES_CALLABLES.contains(&kind);
        match kind {
            // The inner statement's own facts stand (EXECUTE, PREPARE).
            "PrepareStmt" | "ExecuteStmt" => {}
            // A plan is text, not the query's columns; its conditions and
            // references still count (EXPLAIN ANALYZE runs them).
            "ExplainStmt" => f.outputs.columns = None,
            _ => f.outputs = crate::outputs::analyze(kind, body),
        }
    }
    Ok(f)
}

fn classify_actions(tree: &Value) -> Result<StatementFacts, Unclassifiable> {
    let (kind, body) = node(tree).ok_or_else(|| Unclassifiable::Unsupported("empty".into()))?;
    let mut w = Walker::default();
    let f = match kind {
        "SelectStmt" => {
            if let Some(into) = body.get("into_clause").filter(|v| !v.is_null()) {
                ddl_target(&mut w, into.get("rel"));
                w.visit_object(
                    body.as_object().unwrap_or(&Default::default()),
                    &["into_clause"],
                );
                facts("ddl", w)
            } else {
                w.setting_by_filter = crate::walk::setting_named_by_filter(body);
                w.filter_target = w.setting_by_filter.is_some();
                let filter = crate::walk::pg_settings_filter(body);
                w.literal_sensitive |= filter.is_some();
                w.settings_filtered = filter.is_some_and(|n| !settings::is_secret_setting(&n));
                w.visit(body);
                facts("select", w)
            }
        }
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
            w.dml(kind, body);
            facts(dml_kind(kind), w)
        }
        "ExplainStmt" => {
            // Without ANALYZE nothing runs, but the plan still reveals the
            // objects: decide as if it ran, with the inner statement's own
            // classification (CREATE TABLE AS, EXECUTE, … included).
            let mut f = inner(body.get("query"))?;
            f.kind = "explain";
            f.effects.clear();
            f
        }
        "CopyStmt" => copy(body, w)?,
        "CreateTableAsStmt" => {
            ddl_target(&mut w, body.pointer("/into/rel"));
            w.push(SqlAction::Ddl, Object::Connection);
            // The query may be an EXECUTE: classify it as a statement.
            let q = inner(body.get("query"))?;
            let mut f = facts("ddl", w);
            merge(&mut f, q);
            f
        }
        "PrepareStmt" => {
            let inner = body
                .get("query")
                .ok_or_else(|| Unclassifiable::Unsupported("PREPARE without a query".into()))
                .and_then(classify)?;
            let mut f = inner.clone();
            f.kind = "prepare";
            // A search_path change inside takes hold when it is executed;
            // the gate's path only grows, so counting it now is safe.
            f.effects
                .retain(|e| matches!(e, Effect::SearchPath(Some(_))));
            f.effects.push(Effect::Prepare {
                name: str_field(body, "name").to_owned(),
                facts: Box::new(inner),
            });
            f
        }
        "ExecuteStmt" => {
            if let Some(p) = body.get("params") {
                w.visit(p);
            }
            let mut f = facts("execute", w);
            f.executes = Some(str_field(body, "name").to_owned());
            f
        }
        "DeallocateStmt" => {
            let mut f = facts("deallocate", w);
            let all = body.get("isall").and_then(Value::as_bool).unwrap_or(false)
                || str_field(body, "name").is_empty();
            f.effects = vec![Effect::Deallocate(
                (!all).then(|| str_field(body, "name").to_owned()),
            )];
            f
        }
        "TransactionStmt" => {
            // COMMIT/ROLLBACK PREPARED reach two-phase transactions that
            // other sessions of the shared service role left behind.
            // Decided by the kind, not the name: an empty name ('') reads
            // back as no name at all.
            // PREPARE TRANSACTION leaves a transaction, with its locks,
            // that outlives the session.
            let kind = int_field(body, "kind");
            let admin = kind == TransactionStmtKind::TransStmtCommitPrepared as i64
                || kind == TransactionStmtKind::TransStmtRollbackPrepared as i64
                || kind == TransactionStmtKind::TransStmtPrepare as i64
                || read_write_requested(body.get("options").unwrap_or(&Value::Null));
            if admin {
                w.push(SqlAction::Admin, Object::Connection);
            }
            let mut f = facts(if admin { "admin" } else { "transaction" }, w);
            if [
                TransactionStmtKind::TransStmtCommit,
                TransactionStmtKind::TransStmtRollback,
                TransactionStmtKind::TransStmtRollbackTo,
                TransactionStmtKind::TransStmtPrepare,
            ]
            .iter()
            .any(|k| kind == *k as i64)
            {
                f.effects
                    .push(Effect::ClientEncoding(EncodingChange::TransactionEnd));
            }
            f
        }
        "VariableSetStmt" => return set(body),
        "VariableShowStmt" => {
            // SHOW reads what current_setting reads.
            if settings::is_secret_setting(str_field(body, "name")) {
                w.push(
                    SqlAction::Execute,
                    Object::Function(Name::new(Some("pg_catalog"), "current_setting")),
                );
            }
            facts("show", w)
        }
        "DiscardStmt" => {
            let mut f = facts("discard", w);
            if int_field(body, "target") == DiscardMode::DiscardAll as i64 {
                f.effects = vec![
                    Effect::Deallocate(None),
                    Effect::ClosePortal(None),
                    Effect::ClientEncoding(EncodingChange::ResetAll),
                ];
            }
            f
        }
        // Notifications may come from any session of the shared service
        // role: receiving them is reading.
        "ListenStmt" => {
            w.push(SqlAction::Select, Object::Connection);
            facts("listen", w)
        }
        "UnlistenStmt" => facts("listen", w),
        "NotifyStmt" => {
            w.push(
                SqlAction::Execute,
                Object::Function(Name::new(Some("pg_catalog"), "pg_notify")),
            );
            facts("notify", w)
        }
        "DoStmt" => {
            w.push(SqlAction::Execute, Object::Connection);
            facts("do", w)
        }
        "CallStmt" => {
            let call = body.get("funccall").cloned().unwrap_or(Value::Null);
            let parts = name_parts(call.get("funcname").unwrap_or(&Value::Null));
            let name = match parts.as_slice() {
                [n] => Name::new(None, n),
                [.., s, n] => Name::new(Some(s), n),
                [] => Name::new(None, "?"),
            };
            // Procedures are never built-in-safe: CALL always needs execute.
            w.push(SqlAction::Execute, Object::Function(name));
            if let Some(args) = call.get("args") {
                w.visit(args);
            }
            facts("call", w)
        }
        "DeclareCursorStmt" => {
            if let Some(q) = body.get("query") {
                w.visit(q);
            }
            let mut f = facts("declare", w);
            f.effects
                .push(Effect::Declare(str_field(body, "portalname").to_owned()));
            f
        }
        "FetchStmt" => {
            let mut f = facts("fetch", w);
            f.fetches = Some(str_field(body, "portalname").to_owned());
            f
        }
        "ClosePortalStmt" => {
            let mut f = facts("close", w);
            let name = str_field(body, "portalname");
            f.effects = vec![Effect::ClosePortal(
                (!name.is_empty()).then(|| name.to_owned()),
            )];
            f
        }
        "ConstraintsSetStmt" => facts("transaction", w),
        "TruncateStmt" => {
            listed_relations(&mut w, body, SqlAction::Truncate);
            facts("truncate", w)
        }
        "LockStmt" => {
            // ACCESS SHARE conflicts only with ACCESS EXCLUSIVE, as any
            // read does (pg_dump takes it); every stronger mode blocks
            // writers, as a write would.
            let action = if int_field(body, "mode") == ACCESS_SHARE_LOCK {
                SqlAction::Select
            } else {
                SqlAction::Update
            };
            listed_relations(&mut w, body, action);
            facts("lock", w)
        }
        k if DDL.contains(&k) => {
            w.push(SqlAction::Ddl, Object::Connection);
            if IMPLICIT_CALLS.contains(&k) || changes_existing_function(k, body) {
                w.push(SqlAction::Admin, Object::Connection);
            }
            if k == "DropStmt" {
                drop_targets(&mut w, body);
            }
            w.visit(body);
            // Every relation a DDL statement names is changed or depended on.
            let named: Vec<Access> = w
                .accesses
                .iter()
                .filter(|a| matches!(a.object, Object::Table(_)))
                .map(|a| Access {
                    action: SqlAction::Ddl,
                    object: a.object.clone(),
                })
                .collect();
            w.accesses.extend(named);
            facts("ddl", w)
        }
        k if ADMIN.contains(&k) => {
            w.push(SqlAction::Admin, Object::Connection);
            w.visit(body);
            facts("admin", w)
        }
        other => {
            return Err(Unclassifiable::Unsupported(
                other.trim_end_matches("Stmt").to_owned(),
            ))
        }
    };
    Ok(f)
}

/// The relations of a `relations` list (TRUNCATE, LOCK), each with `action`.
fn listed_relations(w: &mut Walker, body: &Value, action: SqlAction) {
    let list = body.get("relations").and_then(Value::as_array);
    for rv in list
        .into_iter()
        .flatten()
        .filter_map(node)
        .map(|(_, rv)| rv)
    {
        w.relation(rv, action);
    }
}

fn int_field(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(-1)
}

/// Classifies a nested statement node (under EXPLAIN or CREATE TABLE AS).
fn inner(node: Option<&Value>) -> Result<StatementFacts, Unclassifiable> {
    let node = node.ok_or_else(|| Unclassifiable::Unsupported("missing inner statement".into()))?;
    classify(node)
}

/// Adds `other`'s pairs and prepared-statement reference to `f`.
/// `a` and `b` together, sorted, without duplicates.
fn sorted<T: Ord>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    a.extend(b);
    a.sort();
    a.dedup();
    a
}

fn merge(f: &mut StatementFacts, other: StatementFacts) {
    f.accesses = sorted(std::mem::take(&mut f.accesses), other.accesses);
    f.unqualified_builtins |= other.unqualified_builtins;
    f.builtin_names = sorted(std::mem::take(&mut f.builtin_names), other.builtin_names);
    f.attribute_names = sorted(
        std::mem::take(&mut f.attribute_names),
        other.attribute_names,
    );
    f.operator_names = sorted(std::mem::take(&mut f.operator_names), other.operator_names);
    f.cast_targets = sorted(std::mem::take(&mut f.cast_targets), other.cast_targets);
    f.literal_sensitive |= other.literal_sensitive;
    f.redefines_callables |= other.redefines_callables;
    if f.executes.is_none() {
        f.executes = other.executes;
    }
}

fn dml_kind(kind: &str) -> &'static str {
    match kind {
        "InsertStmt" => "insert",
        "UpdateStmt" => "update",
        "DeleteStmt" => "delete",
        _ => "merge",
    }
}

fn ddl_target(w: &mut Walker, rel: Option<&Value>) {
    if let Some(rel) = rel.filter(|r| !r.is_null()) {
        let name = Name::new(
            Some(str_field(rel, "schemaname")),
            str_field(rel, "relname"),
        );
        w.push(SqlAction::Ddl, Object::Table(name));
    }
}

/// DROP TABLE/VIEW/… name their objects as lists of strings, not relations.
fn drop_targets(w: &mut Walker, body: &Value) {
    let relation_kinds = [
        ObjectType::ObjectTable,
        ObjectType::ObjectView,
        ObjectType::ObjectMatview,
        ObjectType::ObjectIndex,
        ObjectType::ObjectSequence,
        ObjectType::ObjectForeignTable,
    ];
    let kind = int_field(body, "remove_type");
    if !relation_kinds.iter().any(|k| *k as i64 == kind) {
        return;
    }
    for obj in body
        .get("objects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let parts = obj
            .pointer("/node/List/items")
            .map(name_parts)
            .unwrap_or_default();
        let name = match parts.as_slice() {
            [n] => Name::new(None, n),
            [.., s, n] => Name::new(Some(s), n),
            [] => continue,
        };
        w.push(SqlAction::Ddl, Object::Table(name));
    }
}

fn copy(body: &Value, mut w: Walker) -> Result<StatementFacts, Unclassifiable> {
    let from = body
        .get("is_from")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let action = if from {
        SqlAction::CopyIn
    } else {
        SqlAction::CopyOut
    };
    // A server-side file or program runs on the database host.
    if is_set(body, "is_program") || is_set(body, "filename") {
        w.push(SqlAction::Admin, Object::Connection);
    }
    if let Some(rel) = body.get("relation").filter(|r| !r.is_null()) {
        w.relation(rel, action);
        if from {
            w.relation(rel, SqlAction::Insert);
        } else {
            w.relation(rel, SqlAction::Select);
        }
    }
    if let Some(q) = body.get("query").filter(|q| !q.is_null()) {
        w.push(action, Object::Connection);
        w.visit(q);
    }
    if let Some(wh) = body.get("where_clause") {
        w.visit(wh);
    }
    Ok(facts("copy", w))
}

/// All string constants under `v` (the values of a SET).
pub(crate) fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "sval" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_owned());
                        continue;
                    }
                }
                // `SET search_path = 123` names a schema "123".
                if k == "ival" {
                    if let Some(n) = x.as_i64() {
                        out.push(n.to_string());
                        continue;
                    }
                }
                strings(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn set(body: &Value) -> Result<StatementFacts, Unclassifiable> {
    let mut w = Walker::default();
    let name = str_field(body, "name").to_ascii_lowercase();
    let kind = int_field(body, "kind");
    if kind == VariableSetKind::VarSetMulti as i64 {
        // SET TRANSACTION …, SET SESSION CHARACTERISTICS AS TRANSACTION …:
        // READ WRITE switches off a read-only guard.
        if read_write_requested(body.get("args").unwrap_or(&Value::Null)) {
            w.push(SqlAction::Admin, Object::Connection);
        }
        return Ok(facts("set", w));
    }
    let mut values = Vec::new();
    strings(body.get("args").unwrap_or(&Value::Null), &mut values);
    let to_value = kind == VariableSetKind::VarSetValue as i64;
    // What a SET needs depends on its value (`… = off`).
    w.literal_sensitive = true;
    let effect = settings::change(&mut w, &name, to_value.then_some(&values[..]), false)?;
    let admin = w.accesses.iter().any(|a| a.action == SqlAction::Admin);
    let mut f = facts(if admin { "admin" } else { "set" }, w);
    // RESET ALL returns search_path to its default, which the caller
    // already counts; prepared statements survive it.
    f.effects.extend(effect);
    if kind == VariableSetKind::VarResetAll as i64 {
        f.effects
            .push(Effect::ClientEncoding(EncodingChange::ResetAll));
    }
    Ok(f)
}

/// Whether transaction options (`READ WRITE`, as `transaction_read_only`
/// 0) ask for writes.
fn read_write_requested(options: &Value) -> bool {
    options.as_array().into_iter().flatten().any(|o| {
        let Some(("DefElem", d)) = node(o) else {
            return false;
        };
        if str_field(d, "defname") != "transaction_read_only" {
            return false;
        }
        let mut v = Vec::new();
        strings(d.get("arg").unwrap_or(&Value::Null), &mut v);
        v.iter().any(|x| x == "0")
    })
}
