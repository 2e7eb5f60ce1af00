//! A generic walk over the serialized parse tree.
//!
//! Typed nodes serialize as `{"node": {"RangeVar": {…}}}`, but some fields
//! hold a struct directly (`InsertStmt.relation`), untagged. So relations
//! and function calls are recognised by their shape (`relname`; `funcname`
//! with `agg_star`), which catches them wherever they sit.

use pg_query::protobuf::{CmdType, OnConflictAction};
use serde_json::{Map, Value};

use crate::builtins::{classify_builtin, BuiltinClass};
use crate::facts::{Access, Effect, Name, Object, SqlAction};
use crate::settings;

/// Catalog relations that expose other tables' contents (statistics hold
/// sampled column values), other sessions, secrets or the server's files:
/// reading them is administration. The service role may be a superuser,
/// so the server's own privilege checks are no guard. `None` as the schema:
/// `pg_catalog`, or unqualified (resolved there first); `Some("*")`: any
/// schema (extensions install where they are told).
const CONTENT_CATALOGS: &[(Option<&str>, &str)] = &[
    // password verifiers, user mappings' and subscriptions' connection
    // options, role and database settings, configuration files
    (None, "pg_authid"),
    (None, "pg_shadow"),
    (None, "pg_user_mapping"),
    (None, "pg_user_mappings"),
    // (pg_subscription, pg_db_role_setting, pg_roles and pg_user hold
    // secrets in one column each: see SECRET_COLUMNS)
    (None, "pg_hba_file_rules"),
    (None, "pg_ident_file_mappings"),
    (None, "pg_file_settings"),
    (Some("information_schema"), "user_mapping_options"),
    (Some("information_schema"), "_pg_user_mappings"),
    // pg_settings stays readable: pg_dump and admin tools read it. Its
    // secret values (primary_conninfo) show only to superusers and members
    // of pg_read_all_settings, which a service role should not be.
    // other sessions of the shared service role, with their query text
    (None, "pg_stat_activity"),
    (Some("*"), "pg_stat_statements"),
    (Some("*"), "pg_stat_statements_info"),
    (Some("*"), "pg_stat_monitor"),
    // sampled column values of every table
    (None, "pg_statistic"),
    (None, "pg_stats"),
    (None, "pg_stats_ext"),
    (None, "pg_stats_ext_exprs"),
    (None, "pg_statistic_ext_data"),
    (None, "pg_largeobject"),
];

/// The CTE names a part of a statement sees: the names of one WITH, by
/// position, and how many of them are visible here.
#[derive(Debug, Clone)]
struct CteScope {
    names: std::sync::Arc<std::collections::HashMap<String, usize>>,
    visible: usize,
}

#[derive(Default)]
pub(crate) struct Walker {
    pub(crate) accesses: Vec<Access>,
    pub(crate) unqualified_builtins: bool,
    /// The names of those built-ins.
    pub(crate) builtin_names: Vec<String>,
    /// Names written as field selections (`t.f`, `(expr).f`).
    pub(crate) attribute_names: Vec<String>,
    /// Operator symbols used (`schema.op` when qualified).
    pub(crate) operator_names: Vec<String>,
    /// Type names cast to explicitly.
    pub(crate) cast_targets: Vec<String>,
    /// Session changes made by calls (`set_config` of a constant path).
    pub(crate) effects: Vec<Effect>,
    /// The setting a `pg_settings` filter names (see
    /// [`setting_named_by_filter`]).
    pub(crate) setting_by_filter: Option<String>,
    /// Whether a decision read a literal's value (a setting's name or
    /// value), so the parse must not be shared with texts that differ
    /// only in literals.
    pub(crate) literal_sensitive: bool,
    /// How many times the statement reads `pg_settings`, which shows
    /// every setting (`pg_show_all_settings()`), secret ones included.
    pub(crate) settings_reads: usize,
    /// Whether the statement is one read of `pg_settings` filtered to a
    /// non-secret setting by name, as pg_dump and drivers ask.
    pub(crate) settings_filtered: bool,
    /// Whether the call it names is still to be met (only the first, in
    /// the top-level target list, may use it).
    pub(crate) filter_target: bool,
    /// Whether a locking clause (`FOR UPDATE`, `FOR SHARE`, …) appears.
    pub(crate) locks_rows: bool,
    /// CTE names visible at the current point, innermost last.
    scopes: Vec<CteScope>,
}

/// The `sval` strings of a list of `String` nodes (a qualified name).
pub(crate) fn name_parts(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| {
                    n.pointer("/node/String/sval")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The inner type name and body of a `{"node": {"Type": {...}}}` value.
pub(crate) fn node(v: &Value) -> Option<(&str, &Value)> {
    let inner = v.get("node")?.as_object()?;
    let (k, body) = inner.iter().next()?;
    Some((k.as_str(), body))
}

pub(crate) fn str_field<'a>(m: &'a Value, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn is_set(m: &Value, key: &str) -> bool {
    match m.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// Catalog relations whose other columns tools read (pg_dump counts
/// subscriptions; psql lists roles), with the one column that holds
/// connection passwords or applications' secret settings: reading that
/// column, or the whole row, is administration.
const SECRET_COLUMNS: &[(&str, &str)] = &[
    ("pg_subscription", "subconninfo"),
    ("pg_db_role_setting", "setconfig"),
    ("pg_roles", "rolconfig"),
    ("pg_user", "useconfig"),
];

/// Whether `tree` may read a secret column of a catalog it reads: by
/// name, by `*`, or as a whole row (`s`, `(s).subconninfo`, `row_to_json(s)`).
pub(crate) fn reads_secret_column(tree: &Value, accesses: &[Access]) -> bool {
    let read: Vec<&(&str, &str)> = SECRET_COLUMNS
        .iter()
        .filter(|(rel, _)| {
            accesses.iter().any(|a| {
                matches!(&a.object, Object::Table(n)
                    if n.name == *rel && n.schema.as_deref().is_none_or(|s| s == "pg_catalog"))
            })
        })
        .collect();
    if read.is_empty() {
        return false;
    }
    // The names a whole row goes by: the relation's and its aliases.
    let mut row_names: Vec<String> = read.iter().map(|(rel, _)| (*rel).to_owned()).collect();
    aliases_of(tree, &read, &mut row_names);
    let mut found = false;
    scan_for_secrets(tree, &read, &row_names, &mut found);
    found
}

/// The aliases the relations of `read` go by, anywhere in `v`.
fn aliases_of(v: &Value, read: &[&(&str, &str)], rows: &mut Vec<String>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| aliases_of(x, read, rows)),
        Value::Object(m) => {
            if let Some(rel) = m.get("relname").and_then(Value::as_str) {
                if read.iter().any(|(r, _)| *r == rel) {
                    if let Some(alias) = v.pointer("/alias/aliasname").and_then(Value::as_str) {
                        rows.push(alias.to_owned());
                    }
                }
            }
            m.values().for_each(|x| aliases_of(x, read, rows));
        }
        _ => {}
    }
}

/// Whether a relation of `read` appears anywhere in `v`.
fn mentions(v: &Value, read: &[&(&str, &str)]) -> bool {
    match v {
        Value::Array(a) => a.iter().any(|x| mentions(x, read)),
        Value::Object(m) => {
            m.get("relname")
                .and_then(Value::as_str)
                .is_some_and(|rel| read.iter().any(|(r, _)| *r == rel))
                || m.values().any(|x| mentions(x, read))
        }
        _ => false,
    }
}

fn scan_for_secrets(v: &Value, read: &[&(&str, &str)], rows: &[String], found: &mut bool) {
    match v {
        Value::Array(a) => a
            .iter()
            .for_each(|x| scan_for_secrets(x, read, rows, found)),
        Value::Object(m) => {
            if let Some(fields) = m.get("ColumnRef").and_then(|c| c.get("fields")) {
                let star = fields
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| node(x).is_some_and(|(k, _)| k == "AStar")));
                let parts = name_parts(fields);
                let secret = parts.iter().any(|p| read.iter().any(|(_, c)| p == c));
                let whole_row = matches!(parts.as_slice(), [one] if rows.contains(one));
                *found |= star || secret || whole_row;
            }
            if let Some(fields) = m.get("AIndirection").and_then(|i| i.get("indirection")) {
                *found |= name_parts(fields)
                    .iter()
                    .any(|p| read.iter().any(|(_, c)| p == c));
            }
            // A column list on the catalog's alias (`pg_roles AS r(a, …,
            // x)`) or on a join's over it renames columns by position: the
            // secret column may be read under any name. (Subqueries and
            // CTEs name their columns inside, where the checks above see
            // them.)
            let renames = v
                .pointer("/alias/colnames")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty());
            if renames {
                let is_catalog = m
                    .get("relname")
                    .and_then(Value::as_str)
                    .is_some_and(|rel| read.iter().any(|(r, _)| *r == rel));
                let is_join_over_catalog =
                    m.contains_key("larg") && m.contains_key("rarg") && mentions(v, read);
                *found |= is_catalog || is_join_over_catalog;
            }
            m.values()
                .for_each(|x| scan_for_secrets(x, read, rows, found));
        }
        _ => {}
    }
}

/// Whether the relation `schema.name` (or an unqualified name, resolved in
/// pg_catalog first) is a catalog whose reading is administration. Every
/// TOAST relation is: its chunks are the raw, compressed values of a table
/// whose own rules and masks they would bypass.
pub fn is_content_catalog(qualified: &str) -> bool {
    let (schema, name) = qualified.rsplit_once('.').unwrap_or(("", qualified));
    if schema == "pg_toast" || schema.starts_with("pg_toast_temp_") {
        return true;
    }
    CONTENT_CATALOGS.iter().any(|(s, n)| {
        *n == name
            && match s {
                None => schema.is_empty() || schema == "pg_catalog",
                Some("*") => true,
                Some(s) => schema == *s,
            }
    })
}

impl Walker {
    pub(crate) fn push(&mut self, action: SqlAction, object: Object) {
        self.accesses.push(Access { action, object });
    }

    fn in_cte_scope(&self, name: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s.names.get(name).is_some_and(|&at| at < s.visible))
    }

    /// A relation (RangeVar-shaped object) read or written.
    pub(crate) fn relation(&mut self, rv: &Value, action: SqlAction) {
        let schema = str_field(rv, "schemaname");
        let name = str_field(rv, "relname");
        if schema.is_empty() && action == SqlAction::Select && self.in_cte_scope(name) {
            return;
        }
        if is_content_catalog(&format!("{schema}.{name}")) {
            self.push(SqlAction::Admin, Object::Connection);
        }
        self.system_view(schema, name);
        self.push(action, Object::Table(Name::new(Some(schema), name)));
    }

    /// A system view is decided by what it calls: `execute` on each
    /// built-in beneath it that is not pure (`pg_locks` is the call
    /// `pg_lock_status()`). `pg_settings` is counted for the statement to
    /// decide (see [`Walker::settings_reads`]).
    fn system_view(&mut self, schema: &str, name: &str) {
        let schema = Some(schema).filter(|s| !s.is_empty());
        if name == "pg_settings" && schema.is_none_or(|s| s == "pg_catalog") {
            self.settings_reads += 1;
            return;
        }
        for call in crate::builtins::system_view_calls(schema, name) {
            let (fschema, fname) = call.split_once('.').unwrap_or(("pg_catalog", call));
            if crate::classify_builtin(Some(fschema), fname) != crate::BuiltinClass::Pure {
                self.push(
                    SqlAction::Execute,
                    Object::Function(Name::new(Some(fschema), fname)),
                );
            }
        }
    }

    pub(crate) fn visit(&mut self, v: &Value) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| self.visit(i)),
            Value::Object(m) if m.contains_key("relname") => self.relation(v, SqlAction::Select),
            Value::Object(m) => self.visit_object(m, &[]),
            _ => {}
        }
    }

    /// Visits an object's fields, except those named in `skip`.
    pub(crate) fn visit_object(&mut self, m: &Map<String, Value>, skip: &[&str]) {
        if m.contains_key("funcname") && m.contains_key("agg_star") {
            self.function_call(m);
        }
        if m.get("locking_clause").is_some_and(is_set_value) {
            self.locks_rows = true;
        }
        if let Some(cast) = m.get("TypeCast") {
            let names = name_parts(cast.pointer("/type_name/names").unwrap_or(&Value::Null));
            self.cast_targets.extend(names.last().cloned());
        }
        // `a OPERATOR(app.+) b`, `x OPERATOR(app.=) ANY (…)`, `ORDER BY x
        // USING OPERATOR(app.<)`: a schema-qualified operator runs whatever
        // function its creator attached. Built-in ones live in pg_catalog.
        let operator = if m.contains_key("lexpr") && m.contains_key("rexpr") {
            m.get("name")
        } else {
            m.get("oper_name").or_else(|| m.get("use_op"))
        };
        if let Some(op) = operator {
            let parts = name_parts(op);
            match parts.as_slice() {
                [symbol] => self.operator_names.push(symbol.clone()),
                [.., schema, symbol] if schema != "pg_catalog" => {
                    self.operator_names.push(format!("{schema}.{symbol}"))
                }
                _ => {}
            }
            if parts.len() >= 2 {
                let schema = &parts[parts.len() - 2];
                if schema != "pg_catalog" || parts.len() > 3 {
                    let name = Name::new(Some(schema), &parts[parts.len() - 1]);
                    self.push(SqlAction::Execute, Object::Function(name));
                }
            }
        }
        let with = m.get("with_clause").filter(|w| !w.is_null());
        if let Some(with) = with {
            self.enter_with(with);
        }
        for (k, v) in m {
            if skip.contains(&k.as_str())
                || (with.is_some() && k == "with_clause")
                || k == "funcname"
                // `FOR UPDATE OF a` names relations of the FROM list (by
                // alias, even), which are visited there.
                || k == "locking_clause"
            {
                continue;
            }
            match k.as_str() {
                "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => self.dml(k, v),
                "ColumnRef" => {
                    self.field_selection(v.get("fields"), true);
                    self.visit(v);
                }
                "AIndirection" => {
                    self.field_selection(v.get("indirection"), false);
                    self.visit(v);
                }
                _ => self.visit(v),
            }
        }
        if with.is_some() {
            self.scopes.pop();
        }
    }

    /// Visits a WITH clause's CTE bodies with the right names in scope and
    /// leaves all its names in scope for the rest of the statement (the
    /// caller pops them). A non-recursive CTE cannot see itself or later
    /// CTEs, so inside its body those names still mean real tables.
    fn enter_with(&mut self, with: &Value) {
        let recursive = with
            .get("recursive")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let ctes: Vec<(&str, &Value)> = with
            .get("ctes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(node)
                    .filter(|(k, _)| *k == "CommonTableExpr")
                    .map(|(_, c)| (str_field(c, "ctename"), c))
                    .collect()
            })
            .unwrap_or_default();
        // Each CTE sees the ones before it (all of them, under RECURSIVE):
        // one shared map of names to positions, and a count, so that a
        // WITH of thousands of CTEs is not thousands of copies of it.
        let mut names = std::collections::HashMap::with_capacity(ctes.len());
        for (i, (n, _)) in ctes.iter().enumerate() {
            names.entry((*n).to_owned()).or_insert(i);
        }
        let names = std::sync::Arc::new(names);
        for (i, (_, cte)) in ctes.iter().enumerate() {
            self.scopes.push(CteScope {
                names: names.clone(),
                visible: if recursive { ctes.len() } else { i },
            });
            if let Some(q) = cte.get("ctequery") {
                self.visit(q);
            }
            self.scopes.pop();
        }
        self.scopes.push(CteScope {
            names,
            visible: ctes.len(),
        });
    }

    /// INSERT, UPDATE, DELETE or MERGE, wherever it appears (top level,
    /// inside a CTE, under EXPLAIN ANALYZE).
    pub(crate) fn dml(&mut self, kind: &str, stmt: &Value) {
        let Some(m) = stmt.as_object() else { return };
        let action = match kind {
            "InsertStmt" => SqlAction::Insert,
            "UpdateStmt" => SqlAction::Update,
            "DeleteStmt" => SqlAction::Delete,
            _ => SqlAction::Merge,
        };
        if let Some(rel) = m.get("relation").filter(|r| !r.is_null()) {
            // The target is written, never a CTE.
            let schema = str_field(rel, "schemaname");
            let name = Name::new(Some(schema), str_field(rel, "relname"));
            self.push(action, Object::Table(name.clone()));
            // Conditions and RETURNING read the target (PostgreSQL asks for
            // SELECT privilege there too); so does an upsert.
            // UPDATE's SET expressions may read any column of the target.
            let reads = [
                "where_clause",
                "returning_list",
                "from_clause",
                "using_clause",
                "join_condition",
            ]
            .iter()
            .any(|k| is_set(stmt, k))
                || kind == "MergeStmt"
                || kind == "UpdateStmt";
            if reads {
                self.push(SqlAction::Select, Object::Table(name.clone()));
            }
            // Each MERGE branch is the write it performs.
            for clause in stmt
                .get("merge_when_clauses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let cmd = clause
                    .pointer("/node/MergeWhenClause/command_type")
                    .and_then(Value::as_i64);
                let write = match cmd {
                    Some(c) if c == CmdType::CmdUpdate as i64 => Some(SqlAction::Update),
                    Some(c) if c == CmdType::CmdDelete as i64 => Some(SqlAction::Delete),
                    Some(c) if c == CmdType::CmdInsert as i64 => Some(SqlAction::Insert),
                    Some(c) if c == CmdType::CmdNothing as i64 => None,
                    // An unknown branch could do anything: demand every write.
                    _ => {
                        for a in [SqlAction::Update, SqlAction::Delete, SqlAction::Insert] {
                            self.push(a, Object::Table(name.clone()));
                        }
                        None
                    }
                };
                if let Some(a) = write {
                    self.push(a, Object::Table(name.clone()));
                }
            }
            if let Some(oc) = stmt.get("on_conflict_clause").filter(|o| !o.is_null()) {
                if oc.get("action").and_then(Value::as_i64)
                    == Some(OnConflictAction::OnconflictUpdate as i64)
                {
                    self.push(SqlAction::Update, Object::Table(name.clone()));
                    self.push(SqlAction::Select, Object::Table(name));
                }
            }
        }
        self.visit_object(m, &["relation"]);
    }

    /// Records the names a field selection may call. PostgreSQL reads
    /// `t.f` (`s.t.f`, …) as the column `f` of `t`, and failing that as the
    /// call `f(t)`; `(expr).f` as the field `f` of `expr`, and failing that
    /// as `f(expr)`, whatever `expr`'s type (`(t.id).pg_terminate_backend`
    /// signals a backend). Which one it is depends on the catalog, so the
    /// names are left to the caller. `last_only`: in a column reference only
    /// the last name can be a call (the others name the relation).
    fn field_selection(&mut self, names: Option<&Value>, last_only: bool) {
        let Some(items) = names.and_then(Value::as_array) else {
            return;
        };
        let field = |n: &Value| {
            n.pointer("/node/String/sval")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if last_only {
            if items.len() >= 2 {
                self.attribute_names.extend(items.last().and_then(field));
            }
        } else {
            self.attribute_names.extend(items.iter().filter_map(field));
        }
    }

    fn function_call(&mut self, call: &Map<String, Value>) {
        let parts = name_parts(call.get("funcname").unwrap_or(&Value::Null));
        let (schema, name) = match parts.as_slice() {
            [name] => (None, name.as_str()),
            [.., schema, name] => (Some(schema.as_str()), name.as_str()),
            [] => {
                // A call we cannot name is a call we cannot allow.
                self.push(SqlAction::Execute, Object::Function(Name::new(None, "?")));
                return;
            }
        };
        let builtin_schema = matches!(schema, None | Some("pg_catalog"));
        let pure = match classify_builtin(schema, name) {
            BuiltinClass::Pure => true,
            BuiltinClass::Effects(_) if builtin_schema => self.decided_by_arguments(name, call),
            _ => false,
        };
        if pure {
            if schema.is_none() {
                self.unqualified_builtins = true;
                self.builtin_names.push(name.to_owned());
            }
            return;
        }
        self.push(
            SqlAction::Execute,
            Object::Function(Name::new(schema, name)),
        );
    }

    /// Built-ins whose effect is known from constant arguments:
    /// `set_config('name', 'value', local)` is decided as the `SET` it is,
    /// and `current_setting('name')` of a setting that is not secret is
    /// pure. Returns whether the call needs no `execute` of its own.
    fn decided_by_arguments(&mut self, name: &str, call: &Map<String, Value>) -> bool {
        let Some(args) = argument_constants(call) else {
            return false;
        };
        self.literal_sensitive = true;
        match (name, args.as_slice()) {
            ("current_setting", [Some(setting), ..]) => !settings::is_secret_setting(setting),
            ("set_config", [setting, Some(value), Some(_)]) => {
                // pg_dump's `SELECT set_config(name, 'v', false) FROM
                // pg_settings WHERE name = 'x'` names its setting by filter.
                let by_filter = || {
                    // Only `set_config(name, …)` itself, where the filter
                    // leaves one value in `name`.
                    let first = call.get("args")?.as_array()?.first()?;
                    let column = first.pointer("/node/ColumnRef/fields")?;
                    (name_parts(column) == ["name"] && std::mem::take(&mut self.filter_target))
                        .then(|| self.setting_by_filter.clone())
                        .flatten()
                };
                let Some(setting) = setting.clone().or_else(by_filter) else {
                    return false;
                };
                let setting = setting.to_ascii_lowercase();
                // Refusals were raised before the walk.
                match settings::change(self, &setting, Some(std::slice::from_ref(value)), true) {
                    Ok(effect) => {
                        self.effects.extend(effect);
                        true
                    }
                    Err(_) => false,
                }
            }
            _ => false,
        }
    }
}

/// Whether a JSON value holds something (a non-empty list, a true flag).
fn is_set_value(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Bool(b) => *b,
        _ => true,
    }
}

/// The arguments of a call, each as text when it is a constant (a
/// string, a number or a boolean); `None` when the call has none.
pub(crate) fn argument_constants(call: &Map<String, Value>) -> Option<Vec<Option<String>>> {
    let args = call.get("args")?.as_array()?;
    Some(args.iter().map(constant).collect())
}

/// The arguments of a call when every one is a constant, or `None`.
pub(crate) fn constant_arguments(call: &Map<String, Value>) -> Option<Vec<String>> {
    argument_constants(call)?.into_iter().collect()
}

/// A constant node's value as text.
pub(crate) fn constant(v: &Value) -> Option<String> {
    let (mut kind, mut body) = node(v)?;
    // `'name'::varchar`, as SQLAlchemy writes it: the text is the same.
    if kind == "TypeCast" {
        (kind, body) = node(body.get("arg")?)?;
    }
    if kind != "AConst" || body.get("isnull").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let val = body.get("val")?;
    let (_, inner) = val.as_object()?.iter().next()?;
    let (_, scalar) = inner.as_object()?.iter().next()?;
    Some(match scalar {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    })
}

/// The setting a `SELECT … FROM pg_settings WHERE name = 'x'` is about:
/// its `name` column holds only `x` there.
pub(crate) fn setting_named_by_filter(select: &Value) -> Option<String> {
    // One output: the call itself, not a subquery holding another.
    let targets = select.get("target_list")?.as_array()?;
    let [target] = targets.as_slice() else {
        return None;
    };
    let call = target.pointer("/node/ResTarget/val/node/FuncCall")?;
    if name_parts(call.get("funcname")?).last().map(String::as_str) != Some("set_config") {
        return None;
    }
    pg_settings_filter(select)
}

/// The setting a `SELECT … FROM pg_settings WHERE name = 'x'` reads: its
/// only source is `pg_settings`, filtered to one name by a constant.
pub(crate) fn pg_settings_filter(select: &Value) -> Option<String> {
    let from = select.get("from_clause")?.as_array()?;
    let [only] = from.as_slice() else { return None };
    let (_, rv) = node(only)?;
    let schema = str_field(rv, "schemaname");
    if str_field(rv, "relname") != "pg_settings" || !(schema.is_empty() || schema == "pg_catalog") {
        return None;
    }
    let (kind, cond) = node(select.get("where_clause")?)?;
    if kind != "AExpr" || name_parts(cond.get("name")?) != ["="] {
        return None;
    }
    let column = cond.pointer("/lexpr/node/ColumnRef/fields")?;
    if name_parts(column).last().map(String::as_str) != Some("name") {
        return None;
    }
    constant(cond.get("rexpr")?)
}
