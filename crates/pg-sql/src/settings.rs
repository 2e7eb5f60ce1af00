//! Changing a setting, by `SET` or by `set_config` with constant
//! arguments: which settings need `admin`, which are refused because the
//! gateway would then read statements differently from the server, and
//! which change how names resolve.

use crate::facts::{Effect, EncodingChange, Object, SqlAction, Unclassifiable};
use crate::walk::Walker;

/// Settings only an administrator may change: the upstream's own audit
/// and logging, replication roles that switch off triggers and foreign
/// keys, libraries loaded into the backend, and switches that weaken the
/// server's checks. A name ending in `*` covers every setting starting
/// with the rest.
const PROTECTED: &[&str] = &[
    "log_*",
    "debug_*",
    "trace_*",
    "track_*",
    "pgaudit.*",
    "pg_stat_statements.*",
    "auto_explain.*",
    "compute_query_id",
    "session_replication_role",
    "session_preload_libraries",
    "local_preload_libraries",
    "dynamic_library_path",
    "jit_provider",
    "zero_damaged_pages",
    "ignore_system_indexes",
    "ignore_checksum_failure",
    "ignore_invalid_pages",
    "allow_system_table_mods",
    "allow_in_place_tablespaces",
    "lo_compat_privileges",
    "backtrace_functions",
    "event_triggers",
    "temp_file_limit",
    "exit_on_error",
    "wal_*",
];

/// Settings that may only be switched on by anyone: switching them off
/// undoes an operator's read-only guard on the service role.
const ONLY_ON: &[&str] = &["default_transaction_read_only", "transaction_read_only"];

/// Whether a setting's value may be a secret (a connection string with a
/// password, a command line, a key or its location), so reading it needs
/// `execute` on `current_setting`. Every custom setting (`app.jwt_secret`,
/// `anon.salt`: a dotted name) counts: what applications keep there is
/// theirs to say, and PostgREST keeps its JWT secret there.
pub(crate) fn is_secret_setting(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "all"
        || name.contains('.')
        || [
            "conninfo",
            "command",
            "passphrase",
            "pass",
            "pwd",
            "secret",
            "token",
            "key",
            "salt",
            "credential",
            "private",
        ]
        .iter()
        .any(|s| name.contains(s))
}

fn protected(name: &str) -> bool {
    PROTECTED.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => *p == name,
    })
}

/// A boolean setting's value as PostgreSQL's `parse_bool` reads it: any
/// unambiguous prefix of `true`, `false`, `yes`, `no`, and `on`, `off`
/// (two letters at least), `1`, `0`, in any case; `None` otherwise.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    let v = value.to_ascii_lowercase();
    let prefix_of = |word: &str| !v.is_empty() && word.starts_with(v.as_str());
    match v.as_str() {
        "1" => Some(true),
        "0" => Some(false),
        "on" => Some(true),
        "of" | "off" => Some(false),
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}

/// Whether `values` set a boolean surely on: anything the gateway cannot
/// read as `true` counts as switching it off.
fn surely_on(values: &[String]) -> bool {
    !values.is_empty() && values.iter().all(|v| parse_bool(v) == Some(true))
}

/// Decides setting `name` (lower case) to `values` (`None`: back to the
/// default, which is what the operator configured): pushes `admin` where
/// needed, refuses what would desynchronise the gateway's reading, and
/// returns the change to the session's search_path, if any.
/// `path_is_text`: the value is one string holding the whole list, as
/// `set_config` takes it, not the list `SET` parses.
pub(crate) fn change(
    w: &mut Walker,
    name: &str,
    values: Option<&[String]>,
    path_is_text: bool,
) -> Result<Option<Effect>, Unclassifiable> {
    if matches!(name, "role" | "session_authorization") {
        w.push(SqlAction::Admin, Object::Connection);
    }
    let Some(values) = values else {
        return Ok(match name {
            "search_path" => Some(Effect::SearchPath(None)),
            "client_encoding" => Some(Effect::ClientEncoding(EncodingChange::Set)),
            _ => None,
        });
    };
    if protected(name) || (ONLY_ON.contains(&name) && !surely_on(values)) {
        w.push(SqlAction::Admin, Object::Connection);
    }
    match name {
        "standard_conforming_strings" if !surely_on(values) => {
            return Err(Unclassifiable::Unsafe(
                "standard_conforming_strings must stay on: the gateway reads statements the way the server does".into(),
            ))
        }
        "client_encoding" => {
            let enc = values
                .first()
                .map(|v| v.to_ascii_lowercase().replace('-', "_"))
                .unwrap_or_default();
            if !crate::statement::is_safe_client_encoding(&enc) {
                return Err(Unclassifiable::Unsafe(format!(
                    "client_encoding {enc:?} is not allowed: multi-byte encodings can hide quotes from the gateway"
                )));
            }
            return Ok(Some(Effect::ClientEncoding(EncodingChange::Set)));
        }
        "search_path" if path_is_text => {
            let list = values.first().map(|v| split_search_path(v)).unwrap_or_default();
            return Ok(Some(Effect::SearchPath(Some(list))));
        }
        "search_path" => return Ok(Some(Effect::SearchPath(Some(values.to_vec())))),
        _ => {}
    }
    Ok(None)
}

/// Splits a search_path setting such as `"$user", public, "My Schema"`
/// into schema names, as the server does.
pub fn split_search_path(setting: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = setting.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_owned()),
            c if quoted => cur.push(c),
            c => cur.push(c.to_ascii_lowercase()),
        }
    }
    let last = cur.trim().to_owned();
    if !last.is_empty() {
        out.push(last);
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Refuses a text whose `set_config` with constant arguments would make
/// the gateway read later statements differently from the server
/// (`standard_conforming_strings` off, an unsafe client encoding).
pub(crate) fn refuse_unsafe_set_config(tree: &serde_json::Value) -> Result<(), Unclassifiable> {
    use serde_json::Value;
    match tree {
        Value::Object(m) => {
            if m.contains_key("funcname") && m.contains_key("agg_star") {
                let parts = crate::walk::name_parts(m.get("funcname").unwrap_or(&Value::Null));
                let is_set_config = parts.last().is_some_and(|n| n == "set_config")
                    && parts.len() <= 2
                    && parts
                        .first()
                        .is_some_and(|s| s == "pg_catalog" || parts.len() == 1);
                if let (true, Some(args)) = (is_set_config, crate::walk::constant_arguments(m)) {
                    if let [setting, value, _] = args.as_slice() {
                        let mut scratch = Walker::default();
                        change(
                            &mut scratch,
                            &setting.to_ascii_lowercase(),
                            Some(std::slice::from_ref(value)),
                            true,
                        )?;
                    }
                }
            }
            m.values().try_for_each(refuse_unsafe_set_config)
        }
        Value::Array(a) => a.iter().try_for_each(refuse_unsafe_set_config),
        _ => Ok(()),
    }
}
