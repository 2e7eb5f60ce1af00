//! Relations resolved as the server resolves them: reading a parent reads
//! its inheritance and partition children, so their rules and masks apply.
//! Each case first shows, straight against PostgreSQL, that the parent
//! returns the child's rows.

use crate::common::*;

const KID_ROW: &str = "KID-SECRET-51c2";
const PARTITION_ROW: &str = "PARTITION-SECRET-9ad0";

fn seed() {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        cluster().superuser_sql(
            "app",
            &format!(
                "create table inh_parent (id int, secret text); \
                 create table inh_kid () inherits (inh_parent); \
                 insert into inh_parent values (1, 'parent-row'); \
                 insert into inh_kid values (2, '{KID_ROW}'); \
                 create table part_parent (id int, secret text) partition by range (id); \
                 create table part_kid partition of part_parent for values from (0) to (100); \
                 insert into part_parent values (5, '{PARTITION_ROW}'); \
                 grant select on inh_parent, inh_kid, part_parent, part_kid \
                   to portcullis_reader, trust_user"
            ),
        );
    });
}

fn direct(sql: &str) -> String {
    let (ok, out) = direct_psql(sql);
    assert!(ok, "{out}");
    out
}

#[test]
fn a_childs_rule_holds_when_its_parent_is_read() {
    seed();
    let policies = format!(
        "{SELECT_ONLY}
forbid(principal, action, resource == Table::\"app-db/public.inh_kid\");
forbid(principal, action, resource == Table::\"app-db/public.part_kid\");"
    );
    let gw = app_gateway_with(&policies, "");
    for (parent, row, kid) in [
        ("inh_parent", KID_ROW, "inh_kid"),
        ("part_parent", PARTITION_ROW, "part_kid"),
    ] {
        let sql = format!("select secret from {parent}");
        assert!(
            direct(&sql).contains(row),
            "the parent does not return the child's rows"
        );
        let (ok, out) = alice_psql(&gw, &sql);
        assert!(!ok && !out.contains(row), "{out}");
        assert!(
            out.contains(&format!(
                "public.{kid} (read through parent table app-db/public.{parent})"
            )),
            "{out}"
        );
        // The child by itself stays refused, and the parent's own rows
        // are read through a table with no child.
        assert!(!alice_psql(&gw, &format!("select * from {kid}")).0);
    }
}

#[test]
fn a_childs_masked_column_is_masked_when_its_parent_is_read() {
    seed();
    let gw = app_gateway_with(
        SELECT_ONLY,
        r#"
[masking]
[[masking.columns]]
connection = "app-db"
column = "public.inh_kid.secret"
class = "secret"
strategy = "redact"

[[masking.columns]]
connection = "app-db"
column = "public.part_kid.secret"
class = "secret"
strategy = "redact"
"#,
    );
    for (parent, row) in [("inh_parent", KID_ROW), ("part_parent", PARTITION_ROW)] {
        let sql = format!("select id, secret from {parent} order by id");
        assert!(direct(&sql).contains(row));
        let (ok, out) = alice_psql(&gw, &sql);
        assert!(ok, "{out}");
        assert!(
            !out.contains(row),
            "the child's masked value reached the client: {out}"
        );
    }
}

/// A user's operator runs its function: using the operator needs `execute`
/// on the function, exactly as calling it by name does.
#[test]
fn an_operator_is_a_call_of_its_function() {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        cluster().superuser_sql(
            "app",
            "create function public.tattle(text) returns text language sql \
               as $$ select 'TATTLED-' || $1 $$; \
             create operator public.### (rightarg = text, function = public.tattle); \
             grant execute on function public.tattle(text) to trust_user, portcullis_reader",
        );
    });
    let gw = app_gateway_with(SELECT_ONLY, "");
    for sql in ["select ### 'x'", "select operator(public.###) 'x'"] {
        assert!(
            direct(sql).contains("TATTLED-x"),
            "{sql} does not run directly"
        );
        let (ok, out) = alice_psql(&gw, sql);
        assert!(!ok && !out.contains("TATTLED"), "{sql}: {out}");
        // The function behind it (or, qualified, the operator itself).
        assert!(out.contains("execute on app-db/public."), "{sql}: {out}");
    }
    assert!(!alice_psql(&gw, "select public.tattle('x')").0);
}

/// A user's cast runs its function: casting to its type needs `execute`
/// on the function.
#[test]
fn an_explicit_cast_is_a_call_of_its_function() {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        cluster().superuser_sql(
            "app",
            "create type public.loud as (v text); \
             create function public.shout(text) returns public.loud language sql \
               as $$ select row('CAST-RAN-' || $1)::public.loud $$; \
             create cast (text as public.loud) with function public.shout(text); \
             grant execute on function public.shout(text) to trust_user, portcullis_reader",
        );
    });
    let gw = app_gateway_with(SELECT_ONLY, "");
    for sql in [
        "select ('x'::text)::loud",
        "select cast('x'::text as public.loud)",
    ] {
        assert!(
            direct(sql).contains("CAST-RAN-x"),
            "{sql} does not run directly"
        );
        let (ok, out) = alice_psql(&gw, sql);
        assert!(!ok && !out.contains("CAST-RAN"), "{sql}: {out}");
        assert!(
            out.contains("execute on app-db/public.shout"),
            "{sql}: {out}"
        );
    }
}

/// A user's implicit cast runs its function where the server applies it
/// unasked (a function argument of the other type): a statement that may
/// hold a value of its type needs `execute` on the function.
#[test]
fn an_implicit_cast_is_a_call_of_its_function() {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        cluster().superuser_sql(
            "app",
            "create type public.hush as (v text); \
             create table public.hushed (h public.hush); \
             insert into public.hushed values (row('quiet')); \
             create table public.plain_words (w text); \
             insert into public.plain_words values ('plain'); \
             create function public.blab(public.hush) returns text language sql \
               as $$ select 'IMPLICIT-RAN-' || ($1).v $$; \
             create cast (public.hush as text) with function public.blab(public.hush) as implicit; \
             create type public.hush_box as (h public.hush); \
             create table public.boxed (b public.hush_box); \
             insert into public.boxed values (row(row('quiet')::public.hush)); \
             create table public.nested (n public.boxed); \
             insert into public.nested select boxed from public.boxed; \
             grant select on public.hushed, public.plain_words, public.boxed, public.nested to trust_user, portcullis_reader; \
             grant execute on function public.blab(public.hush) to trust_user, portcullis_reader",
        );
    });
    let gw = app_gateway_with(SELECT_ONLY, "");
    // Each shows, directly, that the cast's function ran.
    for (sql, ran) in [
        ("select upper(h) from hushed", "IMPLICIT-RAN-QUIET"),
        ("select length(h) from hushed", "18"),
        (
            "select 'matched' from hushed where h like 'IMPLICIT%'",
            "matched",
        ),
        ("select upper(row('quiet')::hush)", "IMPLICIT-RAN-QUIET"),
        // Held in a composite column, or in a row of another table.
        ("select upper((b).h) from boxed", "IMPLICIT-RAN-QUIET"),
        ("select upper(((n).b).h) from nested", "IMPLICIT-RAN-QUIET"),
    ] {
        let out = direct(sql);
        assert!(out.contains(ran), "{sql} does not run directly: {out}");
        let (ok, out) = alice_psql(&gw, sql);
        assert!(!ok && !out.contains("IMPLICIT-RAN"), "{sql}: {out}");
        assert!(
            out.contains("execute on app-db/public.blab"),
            "{sql}: {out}"
        );
    }
    // Statements that hold no value of the type are not affected.
    assert!(alice_psql(&gw, "select upper(w) from plain_words").0);
}

/// A system view is decided by what it calls: `pg_settings` is the call
/// `pg_show_all_settings()`, which shows what `current_setting` needs
/// `execute` for, and `pg_stat_ssl` reads other sessions through
/// `pg_stat_get_activity`.
#[test]
fn a_system_view_is_decided_by_what_it_calls() {
    let gw = app_gateway_with(SELECT_ONLY, "");
    let secret = "select 'value:' || setting from pg_settings where name = 'password_encryption'";
    assert!(direct(secret).contains("value:scram-sha-256"));
    let (ok, out) = alice_psql(&gw, secret);
    assert!(!ok && !out.contains("value:"), "{out}");
    assert!(
        out.contains("execute on app-db/pg_catalog.pg_show_all_settings"),
        "{out}"
    );
    assert!(!alice_psql(&gw, "select current_setting('password_encryption')").0);
    let sessions = "select 'sessions:' || count(*) from pg_stat_ssl";
    assert!(direct(sessions).contains("sessions:"));
    let (ok, out) = alice_psql(&gw, sessions);
    assert!(
        !ok && out.contains("pg_catalog.pg_stat_get_activity"),
        "{out}"
    );
    // One setting by a name that is not secret stays readable, as drivers
    // and pg_dump ask.
    let (ok, out) = alice_psql(
        &gw,
        "select 'value:' || setting from pg_settings where name = 'DateStyle'",
    );
    assert!(ok && out.contains("value:ISO"), "{out}");
}

/// Parses are shared by texts that differ only in literals, but not where
/// a literal decides: a setting's name or value. Each secret read is first
/// preceded by the same shape with a harmless literal, which the cache
/// then holds.
#[test]
fn a_literal_that_decides_is_not_shared_through_the_parse_cache() {
    let gw = app_gateway_with(SELECT_ONLY, "");
    for (harmless, secret) in [
        (
            "select 'value:' || current_setting('work_mem')",
            "select 'value:' || current_setting('password_encryption')",
        ),
        (
            "select 'value:' || setting from pg_settings where name = 'work_mem'",
            "select 'value:' || setting from pg_settings where name = 'password_encryption'",
        ),
    ] {
        assert!(direct(secret).contains("value:scram-sha-256"));
        let (ok, out) = alice_psql(&gw, harmless);
        assert!(ok && out.contains("value:"), "{harmless}: {out}");
        let (ok, out) = alice_psql(&gw, secret);
        assert!(!ok && !out.contains("value:"), "{secret}: {out}");
    }
    // A SET's value decides too: switching a read-only guard off is admin.
    let on = "set default_transaction_read_only = 'on'";
    let off = "set default_transaction_read_only = 'off'";
    assert!(alice_psql(&gw, on).0);
    let (ok, out) = alice_psql(&gw, off);
    assert!(!ok && out.contains("admin"), "{out}");
}
