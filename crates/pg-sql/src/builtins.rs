//! PostgreSQL's built-in functions, classified by effect.
//!
//! Two sources make the classification:
//! - a table generated from a real server's catalog
//!   (`scripts/gen-builtins`, into `builtins/pg15.rs`): every function of
//!   `pg_catalog` and `information_schema`, by name, with its volatility;
//! - a reviewed list (`builtins/reviewed.rs`) of the built-ins that act or
//!   escape whatever their volatility says (files, large objects, signals,
//!   settings, replication, locks, sequences, notifications, sleeping, SQL
//!   text run by name, other sessions' activity), and of the volatile ones
//!   that do neither.
//!
//! A built-in that only reads its arguments or the catalog is callable
//! under `select`. One with effects needs `execute` on itself. A name the
//! table does not know (a newer server's function, an extension's) is
//! treated as one with effects.

mod pg15;
mod reviewed;

/// How much a function may depend on or change, as `pg_proc.provolatile`
/// says (the strongest among a name's overloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Volatility {
    /// Same result for the same arguments, forever.
    Immutable,
    /// Same result within one statement (may read the catalog or settings).
    Stable,
    /// May change anything, or return anything.
    Volatile,
}

/// What calling a built-in does, for the statement's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinClass {
    /// Reads only its arguments, the catalog or harmless session facts:
    /// allowed wherever the statement is.
    Pure,
    /// Acts, or reads past the policy; the reason is for messages.
    Effects(&'static str),
    /// Not a built-in of the catalog the table was generated from.
    Unknown,
}

/// The class of `schema.name` as a built-in: `schema` is `None` (or
/// `pg_catalog`) for an unqualified call, which the server resolves in
/// `pg_catalog` first.
pub fn classify_builtin(schema: Option<&str>, name: &str) -> BuiltinClass {
    let table = match schema {
        None | Some("pg_catalog") => pg15::PG_CATALOG,
        Some("information_schema") => pg15::INFORMATION_SCHEMA,
        Some(_) => return BuiltinClass::Unknown,
    };
    let Ok(i) = table.binary_search_by(|(n, _)| n.cmp(&name)) else {
        return BuiltinClass::Unknown;
    };
    if let Some(reason) = reviewed::effect_of(name) {
        return BuiltinClass::Effects(reason);
    }
    match table[i].1 {
        Volatility::Immutable | Volatility::Stable => BuiltinClass::Pure,
        Volatility::Volatile if reviewed::is_volatile_without_effects(name) => BuiltinClass::Pure,
        Volatility::Volatile => BuiltinClass::Effects("volatile"),
    }
}

/// Whether some built-in called `name` returns a set: in a target list it
/// changes how many rows come back.
pub fn returns_set(name: &str) -> bool {
    pg15::SET_RETURNING.binary_search(&name).is_ok()
}

/// The built-ins the system view `schema.name` calls, through the system
/// views beneath it (`information_schema.` before those not in
/// `pg_catalog`); empty for anything else. An unqualified name is looked
/// up in `pg_catalog`, which the server searches first.
pub fn system_view_calls(schema: Option<&str>, name: &str) -> &'static [&'static str] {
    let schema = schema.unwrap_or("pg_catalog");
    pg15::SYSTEM_VIEWS
        .binary_search_by(|(s, n, _)| (*s, *n).cmp(&(schema, name)))
        .map_or(&[], |i| pg15::SYSTEM_VIEWS[i].2)
}

/// Whether the unqualified (or `pg_catalog.`) function `name` may be
/// called under `select` with no `execute` grant.
pub fn is_builtin_safe(name: &str) -> bool {
    classify_builtin(None, name) == BuiltinClass::Pure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_tables_are_sorted_for_binary_search() {
        for table in [pg15::PG_CATALOG, pg15::INFORMATION_SCHEMA] {
            assert!(table.windows(2).all(|w| w[0].0 < w[1].0));
        }
        assert!(pg15::SET_RETURNING.windows(2).all(|w| w[0] < w[1]));
        assert!(pg15::SYSTEM_VIEWS
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        assert!(returns_set("generate_series") && returns_set("unnest"));
        assert!(!returns_set("lower"));
    }

    #[test]
    fn every_reviewed_name_is_a_builtin() {
        for name in reviewed::all_names() {
            let known = match name.strip_suffix('*') {
                Some(prefix) => pg15::PG_CATALOG.iter().any(|(n, _)| n.starts_with(prefix)),
                None => pg15::PG_CATALOG
                    .binary_search_by(|(n, _)| n.cmp(&name))
                    .is_ok(),
            };
            assert!(known, "{name} is reviewed but not in the generated table");
        }
    }

    #[test]
    fn tools_helpers_are_pure_and_acting_builtins_are_not() {
        for pure in [
            "format_type",
            "pg_get_userbyid",
            "pg_get_viewdef",
            "pg_table_is_visible",
            "has_table_privilege",
            "to_regtype",
            "oid",
            "convert_from",
            "lower",
            "count",
            "random",
            "pg_total_relation_size",
            "array_to_string",
        ] {
            assert_eq!(classify_builtin(None, pure), BuiltinClass::Pure, "{pure}");
        }
        for acting in [
            "pg_read_file",
            "pg_sleep",
            "lo_import",
            "pg_terminate_backend",
            "set_config",
            "nextval",
            "pg_advisory_lock",
            "pg_notify",
            "query_to_xml",
            "table_to_xml",
            "pg_stat_get_activity",
            "pg_logical_slot_peek_changes",
            "txid_current",
            "dblink",
        ] {
            assert_ne!(
                classify_builtin(None, acting),
                BuiltinClass::Pure,
                "{acting}"
            );
        }
        assert_eq!(
            classify_builtin(Some("information_schema"), "_pg_expandarray"),
            BuiltinClass::Pure
        );
        assert_eq!(
            classify_builtin(Some("public"), "lower"),
            BuiltinClass::Unknown
        );
    }
}

/// The system views a select-only user cannot read without `execute` on
/// what they call, listed so a new server version's table is reviewed.
#[cfg(test)]
#[test]
fn system_views_that_call_what_needs_execute() {
    let mut needing: Vec<String> = pg15::SYSTEM_VIEWS
        .iter()
        .filter(|(_, _, calls)| {
            calls.iter().any(|c| {
                let (s, n) = c.split_once('.').unwrap_or(("pg_catalog", c));
                classify_builtin(Some(s), n) != BuiltinClass::Pure
            })
        })
        .map(|(s, n, _)| format!("{s}.{n}"))
        .collect();
    needing.sort();
    let expected = [
        // the server's configuration files, and every setting
        "pg_catalog.pg_file_settings",
        "pg_catalog.pg_hba_file_rules",
        "pg_catalog.pg_ident_file_mappings",
        "pg_catalog.pg_settings",
        // other sessions (pg_stat_get_activity), replication origins
        "pg_catalog.pg_replication_origin_status",
        "pg_catalog.pg_stat_activity",
        "pg_catalog.pg_stat_gssapi",
        "pg_catalog.pg_stat_replication",
        "pg_catalog.pg_stat_ssl",
        // every sequence's current value, past `select` on it
        "pg_catalog.pg_sequences",
    ];
    let mut expected = expected.map(String::from).to_vec();
    expected.sort();
    assert_eq!(needing, expected);
}
