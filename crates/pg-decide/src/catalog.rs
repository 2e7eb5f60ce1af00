//! What the upstream's catalog says about views: the relations and
//! functions each view (or materialized view) reads, transitively, so a
//! statement that reads a view is decided on what lies beneath it too.
//!
//! Read at login, on the session's own upstream connection, from
//! `pg_rewrite` and `pg_depend` (PostgreSQL's own record of what a view's
//! query references), and shared by later logins for as long as the
//! catalog's fingerprint stays the same. Views in `pg_catalog` and
//! `information_schema` are left to the statement classifier, which treats
//! content-bearing catalogs on its own.

use std::collections::{HashMap, HashSet, VecDeque};

/// An expression that changes whenever a view, a relation, a schema or a
/// user function is created, altered, renamed or dropped: the row count and
/// the sum of `xmin` of the catalog rows that name them. Every such change
/// writes a row with a newer transaction id, so the sum moves. Asked at
/// every login (it costs well under a millisecond, against several for
/// reading the dependencies), so the view catalog is read again only after
/// a change. System objects (oid below 16384) never change.
pub const CATALOG_FINGERPRINT_SQL: &str = "\
(SELECT count(*)::text || ':' || coalesce(sum(xmin::text::int8), 0)::text FROM pg_catalog.pg_rewrite) || '/' || \
(SELECT count(*)::text || ':' || coalesce(sum(xmin::text::int8), 0)::text FROM pg_catalog.pg_class WHERE oid >= 16384) || '/' || \
(SELECT count(*)::text || ':' || coalesce(sum(xmin::text::int8), 0)::text FROM pg_catalog.pg_namespace) || '/' || \
(SELECT count(*)::text || ':' || coalesce(sum(xmin::text::int8), 0)::text FROM pg_catalog.pg_proc WHERE oid >= 16384) || '/' || \
(SELECT count(*)::text || ':' || coalesce(sum(xmin::text::int8), 0)::text FROM pg_catalog.pg_inherits) || '/' || \
(SELECT count(*)::text || ':' || coalesce(sum(xmin::text::int8), 0)::text FROM pg_catalog.pg_operator WHERE oid >= 16384) || '/' || \
(SELECT count(*)::text || ':' || coalesce(sum(xmin::text::int8), 0)::text FROM pg_catalog.pg_cast WHERE oid >= 16384)";

/// Added to [`CATALOG_FINGERPRINT_SQL`] where masking traces columns:
/// renaming, retyping, adding or dropping a column writes only
/// `pg_attribute`, and the masking catalog maps a result column's
/// attribute number to its name. Without this, swapping two columns'
/// names left the gateway masking by the old names for good.
pub const COLUMN_FINGERPRINT_SQL: &str = " || '/' || \
(SELECT count(*)::text || ':' || coalesce(sum(xmin::text::int8), 0)::text FROM pg_catalog.pg_attribute WHERE attrelid >= 16384 AND attnum > 0)";

/// The query the catalog is read with: one row per direct dependency of a
/// user view, `(view schema, view name, kind, dependency schema, name)`,
/// where kind is `r` for a relation and `f` for a function; and one row per
/// function created after initdb (kind `u`), whose names could shadow a
/// built-in called by unqualified name; one row per inheritance or
/// partition link (kind `i`: parent, then child); one row per operator
/// created after initdb (kind `p`: its schema and symbol, then the
/// function it runs); one row per cast created after initdb with a
/// function (kind `k`: source and target type names, a built-in source
/// type's left empty, then the function);
/// one row per such cast the server may apply unasked, implicit or in
/// assignment (kind `j`: the same, a built-in type's name left empty);
/// one row per relation with a column that holds a user type a cast with
/// a function involves (kind `y`: the relation, then the type), in itself
/// or in a domain over it, an array of it, or a composite type or row
/// type with a field holding it, at any depth; and one row per
/// built-in called by unqualified name; and one row per distinct name of a
/// function that one argument can call (kind `c`, any schema), which a
/// field selection `t.f` or `(expr).f` calls when no column or field `f`
/// exists there.
pub const VIEW_DEPENDENCIES_SQL: &str = "\
SELECT DISTINCT vn.nspname::text, v.relname::text, 'r', bn.nspname::text, b.relname::text \
FROM pg_catalog.pg_rewrite r \
JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm') \
JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace \
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid \
 AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> r.ev_class \
JOIN pg_catalog.pg_class b ON b.oid = d.refobjid \
JOIN pg_catalog.pg_namespace bn ON bn.oid = b.relnamespace \
WHERE vn.nspname NOT IN ('pg_catalog', 'information_schema') \
UNION \
SELECT DISTINCT vn.nspname::text, v.relname::text, 'f', pn.nspname::text, p.proname::text \
FROM pg_catalog.pg_rewrite r \
JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm') \
JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace \
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid \
 AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid \
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
WHERE vn.nspname NOT IN ('pg_catalog', 'information_schema') \
UNION \
SELECT '', '', 'u', pn.nspname::text, p.proname::text \
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
WHERE p.oid >= 16384 \
UNION \
SELECT DISTINCT '', '', 'c', '', p.proname::text \
FROM pg_catalog.pg_proc p \
WHERE p.prokind <> 'p' AND p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1 \
UNION \
SELECT pn.nspname::text, p.relname::text, 'i', cn.nspname::text, c.relname::text \
FROM pg_catalog.pg_inherits i \
JOIN pg_catalog.pg_class p ON p.oid = i.inhparent JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
UNION \
SELECT opn.nspname::text, o.oprname::text, 'p', pn.nspname::text, p.proname::text \
FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace opn ON opn.oid = o.oprnamespace \
JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
WHERE o.oid >= 16384 \
UNION \
SELECT CASE WHEN st.oid >= 16384 THEN st.typname::text ELSE '' END, tt.typname::text, 'k', \
 pn.nspname::text, p.proname::text \
FROM pg_catalog.pg_cast c JOIN pg_catalog.pg_type st ON st.oid = c.castsource \
JOIN pg_catalog.pg_type tt ON tt.oid = c.casttarget \
JOIN pg_catalog.pg_proc p ON p.oid = c.castfunc JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
WHERE c.oid >= 16384 \
UNION \
SELECT CASE WHEN st.oid >= 16384 THEN st.typname::text ELSE '' END, \
 CASE WHEN tt.oid >= 16384 THEN tt.typname::text ELSE '' END, 'j', pn.nspname::text, p.proname::text \
FROM pg_catalog.pg_cast c JOIN pg_catalog.pg_type st ON st.oid = c.castsource \
JOIN pg_catalog.pg_type tt ON tt.oid = c.casttarget \
JOIN pg_catalog.pg_proc p ON p.oid = c.castfunc JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
WHERE c.oid >= 16384 AND c.castcontext IN ('i', 'a') \
UNION \
SELECT * FROM (WITH RECURSIVE involved(t) AS ( \
 SELECT k.castsource FROM pg_catalog.pg_cast k WHERE k.oid >= 16384 AND k.castfunc <> 0 AND k.castsource >= 16384 \
 UNION SELECT k.casttarget FROM pg_catalog.pg_cast k WHERE k.oid >= 16384 AND k.castfunc <> 0 AND k.casttarget >= 16384 \
), edges(container, contained) AS ( \
 SELECT t.oid, t.typelem FROM pg_catalog.pg_type t WHERE t.typelem <> 0 \
 UNION ALL SELECT t.oid, t.typbasetype FROM pg_catalog.pg_type t WHERE t.typbasetype <> 0 \
 UNION ALL SELECT ct.oid, a.atttypid FROM pg_catalog.pg_type ct \
  JOIN pg_catalog.pg_attribute a ON a.attrelid = ct.typrelid AND a.attnum > 0 AND NOT a.attisdropped \
  WHERE ct.typrelid <> 0 \
), holds(holder, held) AS ( \
 SELECT t, t FROM involved \
 UNION \
 SELECT e.container, h.held FROM holds h JOIN edges e ON e.contained = h.holder \
) \
SELECT DISTINCT rn.nspname::text, r.relname::text, 'y'::text, ''::text, ht.typname::text \
FROM holds h JOIN pg_catalog.pg_attribute a ON a.atttypid = h.holder AND a.attnum > 0 AND NOT a.attisdropped \
JOIN pg_catalog.pg_class r ON r.oid = a.attrelid AND r.relkind IN ('r', 'p', 'v', 'm', 'f') \
JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
JOIN pg_catalog.pg_type ht ON ht.oid = h.held) AS y";

/// Added to [`VIEW_DEPENDENCIES_SQL`] when masking classifies columns of
/// the connection: every relation with its kind (kind `o` followed by the
/// relkind; oid, schema, name), and every column of user relations (kind
/// `a`; table oid, name, and `attnum:position` among the live columns), so result
/// columns can be traced to their table and column by the numbers the
/// server reports in RowDescription.
pub const MASKING_CATALOG_SQL: &str = " UNION ALL \
SELECT '', c.oid::text, 'o' || c.relkind::text, n.nspname::text, c.relname::text \
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm') \
UNION ALL \
SELECT '', a.attrelid::text, 'a', a.attname::text, \
 a.attnum::text || ':' || (row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum))::text \
FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
WHERE c.oid >= 16384 AND c.relkind IN ('r', 'p', 'f', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped";

/// A relation as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationInfo {
    /// `r`, `p`, `f` (tables), `v` (view) or `m` (materialized view).
    pub kind: u8,
    /// `schema.name`.
    pub name: String,
}

impl RelationInfo {
    /// Whether rows come from the relation's own storage, not a query.
    pub fn is_table(&self) -> bool {
        matches!(self.kind, b'r' | b'p' | b'f')
    }
}

/// A cast the server applies unasked (implicit, or in assignment), with
/// a function created after initdb.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnaskedCast {
    /// The source type's name; `None` for a built-in type.
    source: Option<String>,
    /// The target type's name; `None` for a built-in type.
    target: Option<String>,
    /// The function it runs, `schema.name`.
    function: String,
}

/// What a view reads, all the way down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewReads {
    /// Relations (`schema.name`) beneath the view, views included.
    pub relations: Vec<String>,
    /// Functions (`schema.name`) the view or a view beneath it calls.
    pub functions: Vec<String>,
}

/// Views by `schema.name`, with what each reads transitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewCatalog {
    views: HashMap<String, ViewReads>,
    /// Bare names of functions created after initdb (users', extensions').
    user_functions: HashSet<String>,
    /// Names of functions one argument can call (field-selection calls).
    attribute_callable: HashSet<String>,
    /// Every inheritance or partition descendant of a table, by
    /// `schema.name`: reading or writing a parent reaches them.
    descendants: HashMap<String, Vec<String>>,
    /// Every ancestor of a table: its masked columns are the parents'
    /// too when read through them.
    ancestors: HashMap<String, Vec<String>>,
    /// Operators created after initdb, by symbol: their schema and the
    /// function (`schema.name`) each runs.
    user_operators: HashMap<String, Vec<(String, String)>>,
    /// Casts created after initdb, by target type name: the source type
    /// (`None`: a built-in one) and the function (`schema.name`) each runs.
    user_casts: HashMap<String, Vec<(Option<String>, String)>>,
    /// Casts created after initdb that the server applies unasked.
    unasked_casts: Vec<UnaskedCast>,
    /// The user types casts with functions involve, by the bare names of
    /// the relations with a column of them.
    relation_types: HashMap<String, Vec<String>>,
    /// Relations by oid (read only when masking needs them).
    relations: HashMap<u32, RelationInfo>,
    /// User relations' columns by (oid, attribute number): name and position.
    columns: HashMap<(u32, i16), (String, usize)>,
    /// User relations' live columns in order, by `schema.name`.
    column_lists: HashMap<String, Vec<String>>,
    /// Whether relations and columns were read.
    pub traced: bool,
}

impl ViewCatalog {
    /// Builds the catalog from rows of [`VIEW_DEPENDENCIES_SQL`].
    pub fn from_rows<I, S>(rows: I) -> Self
    where
        I: IntoIterator<Item = [S; 5]>,
        S: AsRef<str>,
    {
        let mut catalog = Self::default();
        let mut direct: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        let mut relations = HashMap::new();
        let mut attrs: Vec<(u32, i16, String, usize)> = Vec::new();
        let mut traced = false;
        for [vs, vn, kind, ds, dn] in rows {
            match kind.as_ref().as_bytes() {
                [b'o', relkind] => {
                    traced = true;
                    if let Ok(oid) = vn.as_ref().parse::<u32>() {
                        let kind = *relkind;
                        let name = format!("{}.{}", ds.as_ref(), dn.as_ref());
                        relations.insert(oid, RelationInfo { kind, name });
                    }
                    continue;
                }
                b"a" => {
                    let (num, pos) = dn.as_ref().split_once(':').unwrap_or(("", ""));
                    if let (Ok(oid), Ok(num), Ok(pos)) = (
                        vn.as_ref().parse::<u32>(),
                        num.parse::<i16>(),
                        pos.parse::<usize>(),
                    ) {
                        attrs.push((oid, num, ds.as_ref().to_owned(), pos));
                    }
                    continue;
                }
                _ => {}
            }
            let [vs, vn, kind, ds, dn] = [&vs, &vn, &kind, &ds, &dn].map(|v| v.as_ref());
            if catalog.add_callable(kind, vs, vn, ds, dn) {
                continue;
            }
            if kind == "i" {
                children
                    .entry(format!("{vs}.{vn}"))
                    .or_default()
                    .push(format!("{ds}.{dn}"));
                continue;
            }
            let entry = direct.entry(format!("{vs}.{vn}")).or_default();
            let dep = format!("{ds}.{dn}");
            if kind == "f" {
                entry.1.push(dep);
            } else {
                entry.0.push(dep);
            }
        }
        let mut views = HashMap::new();
        for view in direct.keys() {
            // Breadth-first over views beneath views; `seen` stops cycles
            // (which PostgreSQL forbids, but a catalog read is input).
            let mut seen: HashSet<&str> = HashSet::from([view.as_str()]);
            let mut reads = ViewReads::default();
            let mut queue: VecDeque<&str> = VecDeque::from([view.as_str()]);
            while let Some(v) = queue.pop_front() {
                let Some((rels, funcs)) = direct.get(v) else {
                    continue;
                };
                for f in funcs {
                    if !reads.functions.contains(f) {
                        reads.functions.push(f.clone());
                    }
                }
                for r in rels {
                    if seen.insert(r.as_str()) {
                        reads.relations.push(r.clone());
                        queue.push_back(r.as_str());
                    }
                }
            }
            reads.relations.sort();
            reads.functions.sort();
            views.insert(view.clone(), reads);
        }
        let mut columns = HashMap::new();
        let mut column_lists: HashMap<String, Vec<(usize, String)>> = HashMap::new();
        for (oid, num, name, pos) in attrs {
            if let Some(rel) = relations.get(&oid) {
                column_lists
                    .entry(rel.name.clone())
                    .or_default()
                    .push((pos, name.clone()));
            }
            columns.insert((oid, num), (name, pos));
        }
        let column_lists = column_lists
            .into_iter()
            .map(|(k, mut v)| {
                v.sort();
                (k, v.into_iter().map(|(_, n)| n).collect())
            })
            .collect();
        let (descendants, ancestors) = lineage(&children);
        Self {
            views,
            descendants,
            ancestors,
            relations,
            columns,
            column_lists,
            traced,
            ..catalog
        }
    }

    /// Takes a row about what a statement can call without naming it
    /// (kinds `u`, `c`, `p`, `k`, `j`, `y`); false for any other kind.
    fn add_callable(&mut self, kind: &str, vs: &str, vn: &str, ds: &str, dn: &str) -> bool {
        let function = || format!("{ds}.{dn}");
        let user_type = |t: &str| Some(t.to_owned()).filter(|t| !t.is_empty());
        match kind {
            "u" => {
                self.user_functions.insert(dn.to_owned());
            }
            "c" => {
                self.attribute_callable.insert(dn.to_owned());
            }
            "p" => self
                .user_operators
                .entry(vn.to_owned())
                .or_default()
                .push((vs.to_owned(), function())),
            "k" => self
                .user_casts
                .entry(vn.to_owned())
                .or_default()
                .push((user_type(vs), function())),
            "j" => self.unasked_casts.push(UnaskedCast {
                source: user_type(vs),
                target: user_type(vn),
                function: function(),
            }),
            "y" => self
                .relation_types
                .entry(vn.to_owned())
                .or_default()
                .push(dn.to_owned()),
            _ => return false,
        }
        true
    }

    /// Every table that reading or writing `schema.name` reaches through
    /// inheritance or partitioning (without `ONLY`).
    pub fn descendants(&self, qualified: &str) -> &[String] {
        self.descendants.get(qualified).map_or(&[], Vec::as_slice)
    }

    /// The functions (`schema.name`) the operator `symbol` (or
    /// `schema.symbol`) may run, when a user created one of that symbol:
    /// operand types are unknown here, so every such operator counts.
    pub fn operator_functions(&self, operator: &str) -> Vec<&str> {
        let (schema, symbol) = match operator.rsplit_once('.') {
            // A symbol may contain no dot, so a dot splits off a schema.
            Some((s, o)) => (Some(s), o),
            None => (None, operator),
        };
        self.user_operators
            .get(symbol)
            .into_iter()
            .flatten()
            .filter(|(s, _)| schema.is_none_or(|want| want == s))
            .map(|(_, f)| f.as_str())
            .collect()
    }

    /// The functions (`schema.name`) a user's cast to the type named
    /// `target` may run: one from a user type only where `present` says a
    /// value of that type may be (a cast from a built-in type may take any
    /// operand).
    pub fn cast_functions(&self, target: &str, present: impl Fn(&str) -> bool) -> Vec<&str> {
        self.user_casts
            .get(target)
            .into_iter()
            .flatten()
            .filter(|(source, _)| source.as_deref().is_none_or(&present))
            .map(|(_, f)| f.as_str())
            .collect()
    }

    /// The functions (`schema.name`) of casts the server applies unasked
    /// (implicit, or in assignment) that may run where `present` says a
    /// value of their user-defined type may be: types are not known here,
    /// so a cast counts wherever either of its types may appear, and one
    /// between built-in types counts everywhere.
    pub fn unasked_cast_functions(&self, present: impl Fn(&str) -> bool) -> Vec<&str> {
        self.unasked_casts
            .iter()
            .filter(|c| match (&c.source, &c.target) {
                (None, None) => true,
                (s, t) => s.iter().chain(t).any(|ty| present(ty)),
            })
            .map(|c| c.function.as_str())
            .collect()
    }

    /// Whether a relation of bare name `relation` (in any schema) has a
    /// column of the user type `ty` that a user's cast involves.
    pub fn relation_has_type(&self, relation: &str, ty: &str) -> bool {
        self.relation_types
            .get(relation)
            .is_some_and(|types| types.iter().any(|t| t == ty))
    }

    /// Every table `schema.name` inherits from or is a partition of.
    pub fn ancestors(&self, qualified: &str) -> &[String] {
        self.ancestors.get(qualified).map_or(&[], Vec::as_slice)
    }

    /// The relation with `oid`, if the catalog lists it.
    pub fn relation(&self, oid: u32) -> Option<&RelationInfo> {
        self.relations.get(&oid)
    }

    /// The name of column `attnum` of relation `oid`.
    pub fn column(&self, oid: u32, attnum: i16) -> Option<&str> {
        self.columns.get(&(oid, attnum)).map(|(n, _)| n.as_str())
    }

    /// The live columns of `schema.name`, in order.
    pub fn column_list(&self, qualified: &str) -> Option<&[String]> {
        self.column_lists.get(qualified).map(Vec::as_slice)
    }

    /// Whether a function named `name` was created after initdb, so an
    /// unqualified call to a built-in of that name might reach it instead.
    pub fn shadows_builtin(&self, name: &str) -> bool {
        self.user_functions.contains(name)
    }

    /// Whether some function named `name` takes one argument, so the field
    /// selection `t.name` or `(expr).name` may call it.
    pub fn callable_by_attribute(&self, name: &str) -> bool {
        self.attribute_callable.contains(name)
    }

    /// What the view `schema.name` reads, if it is a view.
    pub fn reads(&self, qualified: &str) -> Option<&ViewReads> {
        self.views.get(qualified)
    }

    /// How many views are known.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Whether no view is known.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }
}

/// Every descendant and every ancestor of each table, from direct
/// parent-to-child links (which may form a cycle only in a forged catalog).
#[allow(clippy::type_complexity)]
fn lineage(
    children: &HashMap<String, Vec<String>>,
) -> (HashMap<String, Vec<String>>, HashMap<String, Vec<String>>) {
    let mut descendants: HashMap<String, Vec<String>> = HashMap::new();
    let mut ancestors: HashMap<String, Vec<String>> = HashMap::new();
    for parent in children.keys() {
        let mut seen: HashSet<&str> = HashSet::from([parent.as_str()]);
        let mut queue: VecDeque<&str> = VecDeque::from([parent.as_str()]);
        while let Some(p) = queue.pop_front() {
            for c in children.get(p).into_iter().flatten() {
                if seen.insert(c.as_str()) {
                    descendants
                        .entry(parent.clone())
                        .or_default()
                        .push(c.clone());
                    ancestors.entry(c.clone()).or_default().push(parent.clone());
                    queue.push_back(c.as_str());
                }
            }
        }
    }
    (descendants, ancestors)
}

/// A connection's latest view catalog, shared by its sessions and kept
/// fresh by logins and by a watcher: a session adopts a newer catalog at
/// its next statement.
#[derive(Debug, Default)]
pub struct SharedCatalog {
    current: std::sync::RwLock<Option<(String, std::sync::Arc<ViewCatalog>)>>,
    generation: std::sync::atomic::AtomicU64,
}

impl SharedCatalog {
    /// The catalog read at `fingerprint`, if that is the one held.
    pub fn at(&self, fingerprint: &str) -> Option<std::sync::Arc<ViewCatalog>> {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        cur.as_ref()
            .filter(|(fp, _)| fp == fingerprint)
            .map(|(_, c)| c.clone())
    }

    /// Installs a catalog read at `fingerprint`; bumps the generation when
    /// its contents differ from the one held.
    pub fn install(&self, fingerprint: &str, catalog: std::sync::Arc<ViewCatalog>) {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        let changed = cur.as_ref().is_none_or(|(_, c)| **c != *catalog);
        *cur = Some((fingerprint.to_owned(), catalog));
        if changed {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    }

    /// The catalog held now (empty before the first read).
    pub fn latest(&self) -> std::sync::Arc<ViewCatalog> {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().map(|(_, c)| c.clone()).unwrap_or_default()
    }

    /// Changes whenever the catalog's contents do.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_over_views_resolve_to_everything_beneath() {
        let c = ViewCatalog::from_rows([
            ["public", "v_keys", "r", "public", "api_keys"],
            ["public", "v_all", "r", "public", "v_keys"],
            ["public", "v_all", "r", "public", "people"],
            ["public", "v_all", "f", "public", "leak"],
            ["s", "a", "r", "s", "b"],
            ["s", "b", "r", "s", "a"], // a cycle must not hang
        ]);
        let all = c.reads("public.v_all").unwrap();
        assert_eq!(
            all.relations,
            vec!["public.api_keys", "public.people", "public.v_keys"]
        );
        assert_eq!(all.functions, vec!["public.leak"]);
        assert_eq!(c.reads("s.a").unwrap().relations, vec!["s.b"]);
        assert!(c.reads("public.people").is_none());
    }
}
