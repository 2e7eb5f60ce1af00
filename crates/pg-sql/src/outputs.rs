//! What a statement's result columns and conditions read, by column name,
//! for masking.
//!
//! The server reports where a plain output column comes from (table and
//! attribute, in RowDescription), but not what a computed one was computed
//! from. This reads that from the parse tree, conservatively: an output is
//! described by the column names it references only when nothing else could
//! bring a value into it (no star, whole-row reference or subquery, and the
//! FROM list holds tables only, so no alias can rename a column). Anything
//! else is opaque, and the masking layer treats opaque as "may be derived
//! from anything the statement reads".

use serde_json::Value;

use crate::walk::{name_parts, node, str_field};

/// What one output column's value is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputColumn {
    /// A plain column reference (the server reports its origin).
    Column(String),
    /// Only the columns with these names (the last part of each reference).
    Reads(Vec<String>),
    /// Cannot tell from names alone.
    Opaque,
}

/// The result-and-condition facts masking needs about one statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputFacts {
    /// The output columns in order, when the statement's outputs map one to
    /// one onto its target list (a SELECT or RETURNING without `*`, over
    /// tables only); `None` otherwise.
    pub columns: Option<Vec<OutputColumn>>,
    /// Whether the statement has conditions: WHERE, JOIN … ON/USING,
    /// GROUP BY, HAVING, ORDER BY, DISTINCT ON, window clauses, ON CONFLICT.
    pub has_conditions: bool,
    /// Column names those conditions reference, anywhere in the statement.
    pub condition_names: Vec<String>,
    /// Whether a condition may reach a column under another name (an
    /// alias from a subquery or CTE, an output position, a star).
    pub conditions_opaque: bool,
    /// For `COPY … TO STDOUT`: what leaves.
    pub copy_out: Option<CopyOut>,
    /// Whether every output is a plain column or a `*` over tables: no
    /// output is computed.
    pub only_plain_outputs: bool,
    /// Column names the values a write stores are computed from (SET
    /// expressions, INSERT's query, CREATE TABLE AS's query, …); for other
    /// statements every column name referenced.
    pub referenced: Vec<String>,
    /// Whether those values may come from columns not named there (a star,
    /// a whole-row reference, a renaming subquery or CTE).
    pub references_opaque: bool,
}

/// A `COPY … TO STDOUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOut {
    /// Binary format (values cannot be masked in place).
    pub binary: bool,
    /// CSV format (else text).
    pub csv: bool,
    /// The table copied, `(schema or "", name)`, or `None` for `COPY (query)`.
    pub table: Option<(String, String)>,
    /// The column list, empty for all columns.
    pub columns: Vec<String>,
    /// The delimiter, when one was given.
    pub delimiter: Option<String>,
    /// Options besides FORMAT, DELIMITER, NULL and HEADER (QUOTE, ESCAPE,
    /// FORCE_QUOTE, ENCODING, …), which change how fields are written.
    pub other_options: bool,
}

/// Condition clauses: their column references are conditions.
const CONDITION_KEYS: &[&str] = &[
    "where_clause",
    "having_clause",
    "group_clause",
    "sort_clause",
    "quals",
    "using_clause",
    "distinct_clause",
    "window_clause",
    "join_condition",
    // how many rows come back
    "limit_count",
    "limit_offset",
    // window partitions and orderings, aggregate orderings and filters
    "partition_clause",
    "order_clause",
    "agg_order",
    "agg_filter",
];

/// Built-ins that return for every input, never raising an error a
/// masked value could steer (whether an error happens is itself an
/// answer): computing outputs with them is masked, not refused.
const TOTAL_FUNCTIONS: &[&str] = &[
    "upper",
    "lower",
    "initcap",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "md5",
    "concat",
    "concat_ws",
    "coalesce",
    "greatest",
    "least",
    "btrim",
    "ltrim",
    "rtrim",
    "reverse",
    "left",
    "right",
    "strpos",
    "position",
    "replace",
    "translate",
    "starts_with",
    "quote_literal",
    "quote_ident",
    "quote_nullable",
    "to_json",
    "to_jsonb",
    "row_to_json",
    "json_build_array",
    "jsonb_build_array",
    "count",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
];

/// Operators that return for every input of the types they take.
const TOTAL_OPERATORS: &[&str] = &["||", "=", "<>", "!=", "<", ">", "<=", ">="];

/// Reads the output facts of one top-level statement node.
pub(crate) fn analyze(kind: &str, body: &Value) -> OutputFacts {
    let mut out = OutputFacts::default();
    let mut scan = ConditionScan::default();
    scan.visit(body, false, false);
    out.has_conditions = scan.found;
    out.conditions_opaque = scan.opaque;
    let structure_opaque = has_renaming(body);
    let targets = match kind {
        "SelectStmt" if simple_select(body) => body.get("target_list"),
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt"
            if body.get("with_clause").is_none_or(Value::is_null) =>
        {
            body.get("returning_list")
        }
        _ => None,
    };
    let relations = relation_names(body);
    let mut aliases: Vec<(String, OutputColumn)> = Vec::new();
    if let Some(list) = targets.and_then(Value::as_array) {
        let mut cols = Vec::with_capacity(list.len());
        let mut star = false;
        let mut plain = true;
        for t in list {
            let Some(("ResTarget", rt)) = node(t) else {
                star = true;
                plain = false;
                break;
            };
            let val = rt.get("val").unwrap_or(&Value::Null);
            if is_star_ref(val) {
                star = true;
                continue;
            }
            let col = match output_of(val, &relations) {
                OutputColumn::Reads(mut n)
                    if n.len() == 1 && matches!(node(val), Some(("ColumnRef", _))) =>
                {
                    OutputColumn::Column(n.remove(0))
                }
                other => other,
            };
            let alias = str_field(rt, "name");
            if !alias.is_empty() {
                aliases.push((alias.to_owned(), col.clone()));
            }
            plain &= matches!(col, OutputColumn::Column(_));
            cols.push(col);
        }
        out.only_plain_outputs = plain;
        if !star {
            out.columns = Some(cols);
        }
    }
    // ORDER BY / GROUP BY may name an output by alias or position.
    let mut names = scan.names;
    for n in std::mem::take(&mut scan.output_refs) {
        match n {
            OutputRef::Alias(a) => match aliases.iter().find(|(n, _)| *n == a) {
                Some((_, OutputColumn::Reads(r))) => names.extend(r.iter().cloned()),
                Some((_, OutputColumn::Column(c))) => names.push(c.clone()),
                Some((_, OutputColumn::Opaque)) => out.conditions_opaque = true,
                None => names.push(a),
            },
            OutputRef::Position(p) => {
                match out
                    .columns
                    .as_ref()
                    .and_then(|c| c.get(p.saturating_sub(1)))
                {
                    Some(OutputColumn::Reads(r)) => names.extend(r.iter().cloned()),
                    Some(OutputColumn::Column(c)) => names.push(c.clone()),
                    _ => out.conditions_opaque = true,
                }
            }
        }
    }
    names.sort();
    names.dedup();
    out.condition_names = names;
    if structure_opaque && out.has_conditions {
        out.conditions_opaque = true;
    }
    if kind == "CopyStmt" {
        out.copy_out = copy_out(body);
    }
    let source: Vec<&Value> = match kind {
        "InsertStmt" => body.get("select_stmt").into_iter().collect(),
        "UpdateStmt" => body.get("target_list").into_iter().collect(),
        "MergeStmt" => body.get("merge_when_clauses").into_iter().collect(),
        "CreateTableAsStmt" => body.get("query").into_iter().collect(),
        "SelectStmt" if body.get("into_clause").is_some_and(|i| !i.is_null()) => {
            body.get("target_list").into_iter().collect()
        }
        _ => vec![body],
    };
    let mut all = Vec::new();
    let mut named_only = true;
    for s in &source {
        // Every part is visited, so every name is collected.
        named_only &= refs_through_subqueries(s, &relations, &mut all);
    }
    // A subquery or CTE can rename a column before a write stores it.
    let written_part = source.first().is_some_and(|s| !std::ptr::eq(*s, body));
    out.references_opaque =
        !named_only || (structure_opaque && (written_part || kind != "SelectStmt"));
    all.sort();
    all.dedup();
    out.referenced = all;
    out
}

/// Like [`refs`], but looks inside subqueries too: every column reference
/// in the statement.
fn refs_through_subqueries(v: &Value, relations: &[String], names: &mut Vec<String>) -> bool {
    match v {
        Value::Array(a) => {
            let mut ok = true;
            for i in a {
                ok &= refs_through_subqueries(i, relations, names);
            }
            ok
        }
        Value::Object(m) => {
            if m.contains_key("ColumnRef") {
                return refs(v, relations, names);
            }
            let mut ok = true;
            for i in m.values() {
                ok &= refs_through_subqueries(i, relations, names);
            }
            ok
        }
        _ => true,
    }
}

/// A SELECT whose outputs are its target list over tables only.
fn simple_select(body: &Value) -> bool {
    body.get("op").and_then(Value::as_i64) == Some(1)
        && body.get("with_clause").is_none_or(Value::is_null)
        && body
            .get("values_lists")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && body
            .get("from_clause")
            .and_then(Value::as_array)
            .is_none_or(|items| items.iter().all(tables_only))
}

fn tables_only(item: &Value) -> bool {
    match node(item) {
        Some(("RangeVar", r)) => !renames_columns(r),
        Some(("JoinExpr", j)) => {
            !renames_columns(j)
                && j.get("larg").is_some_and(tables_only)
                && j.get("rarg").is_some_and(tables_only)
        }
        _ => false,
    }
}

/// `FROM users AS u(i, m)`, `(a JOIN b) AS j(x, y)`, `JOIN … USING (k) AS
/// j`: an alias with a column list (or a join alias) gives columns new
/// names.
fn renames_columns(v: &Value) -> bool {
    let listed = |a: Option<&Value>| {
        a.and_then(|a| a.get("colnames"))
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty())
    };
    let join_alias = v.get("jointype").is_some()
        && (v.get("alias").is_some_and(|a| !a.is_null())
            || v.get("join_using_alias").is_some_and(|a| !a.is_null()));
    listed(v.get("alias")) || join_alias
}

/// Whether anything in the statement can give a column a new name that
/// conditions could then use: a WITH clause, a subquery or function in
/// FROM, a set operation.
fn has_renaming(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(has_renaming),
        Value::Object(m) => {
            if m.contains_key("RangeSubselect")
                || m.contains_key("RangeFunction")
                || m.contains_key("RangeTableFunc")
                || m.contains_key("CommonTableExpr")
            {
                return true;
            }
            if m.contains_key("larg")
                && m.contains_key("op")
                && m.get("op").and_then(Value::as_i64) != Some(1)
            {
                return true;
            }
            if (m.contains_key("relname") || m.contains_key("jointype")) && renames_columns(v) {
                return true;
            }
            m.values().any(has_renaming)
        }
        _ => false,
    }
}

/// Names and aliases of the relations in FROM (and DML targets), which a
/// single-name column reference may mean as a whole row.
fn relation_names(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_relations(body, &mut out);
    out
}

fn collect_relations(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(a) => a.iter().for_each(|i| collect_relations(i, out)),
        Value::Object(m) => {
            if m.contains_key("relname") {
                out.push(str_field(v, "relname").to_owned());
                if let Some(a) = v.pointer("/alias/aliasname").and_then(Value::as_str) {
                    out.push(a.to_owned());
                }
            }
            if let Some(a) = m
                .get("alias")
                .and_then(|a| a.get("aliasname"))
                .and_then(Value::as_str)
            {
                out.push(a.to_owned());
            }
            m.values().for_each(|i| collect_relations(i, out));
        }
        _ => {}
    }
}

fn is_star_ref(val: &Value) -> bool {
    matches!(node(val), Some(("ColumnRef", c)) if c.get("fields").and_then(Value::as_array).is_some_and(|f| f.iter().any(|x| node(x).is_some_and(|(k, _)| k == "AStar"))))
}

/// What an output expression reads.
fn output_of(val: &Value, relations: &[String]) -> OutputColumn {
    let mut names = Vec::new();
    if refs(val, relations, &mut names) {
        names.sort();
        names.dedup();
        OutputColumn::Reads(names)
    } else {
        OutputColumn::Opaque
    }
}

/// Collects the column names `v` references; false when something other
/// than a named column could feed it (a star, a whole row, a subquery).
fn refs(v: &Value, relations: &[String], names: &mut Vec<String>) -> bool {
    match v {
        Value::Array(a) => a.iter().all(|i| refs(i, relations, names)),
        Value::Object(m) => {
            if let Some(c) = m.get("ColumnRef") {
                let fields = c.get("fields").unwrap_or(&Value::Null);
                if fields
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| node(x).is_some_and(|(k, _)| k == "AStar")))
                {
                    return false;
                }
                let parts = name_parts(fields);
                return match parts.as_slice() {
                    [single] if relations.contains(single) => false,
                    [.., last] => {
                        names.push(last.clone());
                        true
                    }
                    [] => false,
                };
            }
            if m.contains_key("SubLink") {
                return false;
            }
            m.values().all(|i| refs(i, relations, names))
        }
        _ => true,
    }
}

enum OutputRef {
    Alias(String),
    Position(usize),
}

/// The parts of an expression node whose values steer more than its own
/// output: the arguments of a set-returning function (how many rows), of
/// a function with effects or of a user's (it may act on them), of any
/// function or operator that may fail (whether it fails is an answer), of
/// a DISTINCT aggregate (it compares them); a `CASE` branch's test, a
/// simple `CASE`'s subject, and what a cast to a type other than text
/// converts.
fn influencing_arguments(m: &serde_json::Map<String, Value>) -> Vec<&Value> {
    if m.contains_key("funcname") && m.contains_key("agg_star") {
        let parts = name_parts(m.get("funcname").unwrap_or(&Value::Null));
        let (schema, name) = match parts.as_slice() {
            [name] => (None, name.as_str()),
            [.., schema, name] => (Some(schema.as_str()), name.as_str()),
            [] => return m.get("args").into_iter().collect(),
        };
        let builtin = matches!(schema, None | Some("pg_catalog"));
        let total = builtin && TOTAL_FUNCTIONS.contains(&name);
        let distinct = m.get("agg_distinct").and_then(Value::as_bool) == Some(true);
        let steers = !total
            || distinct
            || (builtin && crate::builtins::returns_set(name))
            || crate::builtins::classify_builtin(schema, name) != crate::BuiltinClass::Pure;
        return if steers {
            m.get("args").into_iter().collect()
        } else {
            Vec::new()
        };
    }
    if let Some(op) = m.get("AExpr") {
        let symbol = name_parts(op.get("name").unwrap_or(&Value::Null));
        let total = matches!(symbol.as_slice(), [s] if TOTAL_OPERATORS.contains(&s.as_str()));
        return if total {
            Vec::new()
        } else {
            ["lexpr", "rexpr"]
                .iter()
                .filter_map(|k| op.get(*k))
                .collect()
        };
    }
    if let Some(when) = m.get("CaseWhen") {
        return when.get("expr").into_iter().collect();
    }
    if let Some(case) = m.get("CaseExpr") {
        return case
            .get("arg")
            .filter(|a| !a.is_null())
            .into_iter()
            .collect();
    }
    if let Some(cast) = m.get("TypeCast") {
        let target = name_parts(cast.pointer("/type_name/names").unwrap_or(&Value::Null));
        let textual = matches!(
            target.last().map(String::as_str),
            Some("text" | "varchar" | "bpchar" | "name" | "unknown")
        );
        return if textual {
            Vec::new()
        } else {
            cast.get("arg").into_iter().collect()
        };
    }
    Vec::new()
}

/// Whether `m` is a set operation that compares rows: every one but
/// `UNION ALL` (UNION and INTERSECT and EXCEPT drop or keep rows by
/// equality, which counts rows by value).
fn compares_rows(m: &serde_json::Map<String, Value>) -> bool {
    // SetOperation: 1 none, 2 union, 3 intersect, 4 except.
    let op = m.get("op").and_then(Value::as_i64).unwrap_or(0);
    let all = m.get("all").and_then(Value::as_bool).unwrap_or(false);
    m.contains_key("larg") && (op == 3 || op == 4 || (op == 2 && !all))
}

#[derive(Default)]
struct ConditionScan {
    found: bool,
    opaque: bool,
    names: Vec<String>,
    /// Single names and positions in ORDER BY / GROUP BY / DISTINCT ON,
    /// which may mean an output column.
    output_refs: Vec<OutputRef>,
    /// Nodes already visited, by address and mode. An operator's operands
    /// are visited as a condition and again as children; without this,
    /// each level of a chain (`a - b - c …`, a join of joins) doubled the
    /// work, and a statement of 40 such levels took minutes. A second
    /// visit in the same mode can add nothing the first did not.
    seen: std::collections::HashSet<(usize, bool, bool)>,
}

impl ConditionScan {
    /// `inside`: within a condition clause; `sortish`: within ORDER BY,
    /// GROUP BY or DISTINCT ON, where a single name may mean an output.
    fn visit(&mut self, v: &Value, inside: bool, sortish: bool) {
        if matches!(v, Value::Object(_) | Value::Array(_))
            && !self
                .seen
                .insert((std::ptr::from_ref(v) as usize, inside, sortish))
        {
            return;
        }
        match v {
            Value::Array(a) => a.iter().for_each(|i| self.visit(i, inside, sortish)),
            Value::Object(m) => {
                if inside {
                    if let Some(c) = m.get("ColumnRef") {
                        self.column_ref(c, sortish);
                        return;
                    }
                }
                for args in influencing_arguments(m) {
                    // What these read decides how many rows come back, or
                    // acts on it, or may fail over it: a condition.
                    self.found = true;
                    self.visit(args, true, false);
                }
                if compares_rows(m) {
                    self.found = true;
                    self.opaque = true;
                }
                for (k, child) in m {
                    let cond = CONDITION_KEYS.contains(&k.as_str());
                    if cond && !is_empty(child) {
                        self.found = true;
                        if !inside
                            && matches!(
                                k.as_str(),
                                "sort_clause" | "group_clause" | "distinct_clause"
                            )
                        {
                            self.output_positions(child);
                        }
                        if k == "using_clause" {
                            self.names.extend(name_parts(child));
                        }
                    }
                    let sorts = matches!(
                        k.as_str(),
                        "sort_clause" | "group_clause" | "distinct_clause"
                    );
                    // A subquery inside starts its own scope of outputs.
                    let nested = k == "SubLink" || k == "SelectStmt";
                    self.visit(child, inside || cond, (sortish || sorts) && !nested);
                }
            }
            _ => {}
        }
    }

    fn column_ref(&mut self, c: &Value, sortish: bool) {
        let fields = c.get("fields").unwrap_or(&Value::Null);
        if fields
            .as_array()
            .is_some_and(|f| f.iter().any(|x| node(x).is_some_and(|(k, _)| k == "AStar")))
        {
            self.opaque = true;
            return;
        }
        let parts = name_parts(fields);
        match parts.as_slice() {
            // Only ORDER BY / GROUP BY / DISTINCT ON see output aliases; in
            // WHERE or ON a single name is a column.
            [single] if sortish => self.output_refs.push(OutputRef::Alias(single.clone())),
            [single] => self.names.push(single.clone()),
            [.., last] => self.names.push(last.clone()),
            [] => self.opaque = true,
        }
    }

    /// `ORDER BY 2`: the second output column.
    fn output_positions(&mut self, clause: &Value) {
        for item in clause.as_array().into_iter().flatten() {
            let expr = match node(item) {
                Some(("SortBy", s)) => s.get("node").unwrap_or(&Value::Null),
                _ => item,
            };
            if let Some(("AConst", c)) = node(expr) {
                if let Some(p) = c.pointer("/val/Ival/ival").and_then(Value::as_i64) {
                    self.output_refs
                        .push(OutputRef::Position(usize::try_from(p).unwrap_or(0)));
                }
            }
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn copy_out(body: &Value) -> Option<CopyOut> {
    let from = body
        .get("is_from")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let program = body
        .get("is_program")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if from || program || !str_field(body, "filename").is_empty() {
        return None;
    }
    let mut binary = false;
    let mut csv = false;
    let mut delimiter = None;
    let mut other_options = false;
    for opt in body
        .get("options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(("DefElem", d)) = node(opt) else {
            continue;
        };
        let arg = d
            .pointer("/arg/node/String/sval")
            .and_then(Value::as_str)
            .unwrap_or("");
        match str_field(d, "defname") {
            "format" => {
                binary = arg.eq_ignore_ascii_case("binary");
                csv = arg.eq_ignore_ascii_case("csv");
            }
            "delimiter" => delimiter = Some(arg.to_owned()),
            "null" | "header" => {}
            _ => other_options = true,
        }
    }
    let table = body.get("relation").filter(|r| !r.is_null()).map(|r| {
        (
            str_field(r, "schemaname").to_owned(),
            str_field(r, "relname").to_owned(),
        )
    });
    let columns = body
        .get("attlist")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|n| n.pointer("/node/String/sval").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(CopyOut {
        binary,
        csv,
        table,
        columns,
        delimiter,
        other_options,
    })
}

#[cfg(test)]
mod tests;
