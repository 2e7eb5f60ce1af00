use crate::{analyze, OutputColumn, OutputFacts};

fn facts(sql: &str) -> OutputFacts {
    analyze(sql).unwrap().statements.remove(0).outputs
}

fn reads(names: &[&str]) -> OutputColumn {
    OutputColumn::Reads(names.iter().map(|s| (*s).to_owned()).collect())
}

#[test]
fn outputs_name_what_they_read() {
    let f = facts("select id, upper(u.email) as e, count(*), length(name) || 'x' from users u");
    assert_eq!(
        f.columns,
        Some(vec![
            OutputColumn::Column("id".into()),
            reads(&["email"]),
            reads(&[]),
            reads(&["name"])
        ])
    );
    assert!(!f.only_plain_outputs);
    assert!(facts("select *, u.id, email from users u").only_plain_outputs);
    assert!(!f.has_conditions);
    assert!(!f.references_opaque);
}

#[test]
fn whole_rows_subqueries_and_stars_are_opaque() {
    let f = facts("select row_to_json(u), (select email from users limit 1), u::text from users u");
    assert_eq!(
        f.columns,
        Some(vec![
            OutputColumn::Opaque,
            OutputColumn::Opaque,
            OutputColumn::Opaque
        ])
    );
    assert!(f.references_opaque);
    assert_eq!(facts("select *, upper(email) from users").columns, None);
    assert_eq!(
        facts("select email from users union select 'x'").columns,
        None
    );
    assert_eq!(
        facts("with s as (select email from users) select upper(email) from s").columns,
        None
    );
    assert_eq!(
        facts("select upper(e) from (select email e from users) s").columns,
        None
    );
    assert!(facts("select * from users").references_opaque);
}

#[test]
fn returning_lists_are_outputs() {
    let f = facts("update users set name = 'x' where id = 1 returning id, lower(email)");
    assert_eq!(
        f.columns,
        Some(vec![OutputColumn::Column("id".into()), reads(&["email"])])
    );
    assert!(f.has_conditions);
    assert_eq!(f.condition_names, vec!["id"]);
}

#[test]
fn conditions_are_found_everywhere() {
    let f = facts("select id from users where ssn like '1%'");
    assert!(f.has_conditions);
    assert_eq!(f.condition_names, vec!["ssn"]);
    let f = facts("select id from users order by ssn");
    assert_eq!(f.condition_names, vec!["ssn"]);
    let f = facts("select a.id from users a join users b using (ssn)");
    assert!(f.condition_names.contains(&"ssn".to_owned()));
    let f = facts("select id from users where id in (select id from users where email like 'a%')");
    assert!(f.condition_names.contains(&"email".to_owned()));
    // Aliases and positions resolve to what they stand for.
    let f = facts("select upper(email) as e from users order by e");
    assert!(f.condition_names.contains(&"email".to_owned()));
    let f = facts("select id, ssn from users order by 2");
    assert!(f.condition_names.contains(&"ssn".to_owned()));
    // A subquery in FROM can rename anything.
    let f = facts("select x from (select ssn x from users) s where x like '1%'");
    assert!(f.conditions_opaque);
    assert!(!facts("select id from users").has_conditions);
}

#[test]
fn copy_out_is_described() {
    let c = facts("copy public.users (id, email) to stdout with (format csv)")
        .copy_out
        .unwrap();
    assert!(c.csv && !c.binary);
    assert_eq!(c.table, Some(("public".into(), "users".into())));
    assert_eq!(c.columns, vec!["id", "email"]);
    assert!(
        facts("copy users to stdout (format binary)")
            .copy_out
            .unwrap()
            .binary
    );
    assert!(
        facts("copy users to stdout binary")
            .copy_out
            .unwrap()
            .binary
    );
    assert_eq!(
        facts("copy (select 1) to stdout").copy_out.unwrap().table,
        None
    );
    assert!(facts("copy users from stdin").copy_out.is_none());
}

#[test]
fn writes_list_what_they_read() {
    let f = facts("insert into t2 select email from users");
    assert!(f.referenced.contains(&"email".to_owned()));
    assert!(facts("create table t3 as select * from users").references_opaque);
}

/// Whatever steers which or how many rows come back, acts on a value or
/// may fail quoting it counts as a condition on what it reads.
#[test]
fn influence_beyond_where_counts_as_a_condition() {
    for (sql, read) in [
        ("select id from t limit length(ssn)", "ssn"),
        (
            "select id from t offset (select length(ssn) from t limit 1)",
            "ssn",
        ),
        ("select generate_series(1, length(ssn)) from t", "ssn"),
        ("select unnest(string_to_array(ssn, '-')) from t", "ssn"),
        ("select pg_sleep(length(ssn)) from t", "ssn"),
        ("select pg_notify('c', ssn) from t", "ssn"),
        ("select my_logger(ssn) from t", "ssn"),
        (
            "select case when ssn like '1%' then 1 else 0 end from t",
            "ssn",
        ),
        ("select case ssn when 'x' then 1 end from t", "ssn"),
        ("select ssn::int from t", "ssn"),
        ("select cast(ssn as date) from t", "ssn"),
        ("select id from t fetch first length(ssn) rows only", "ssn"),
        // whether an error happens is an answer
        (
            "select 1/(sign(ascii(substr(ssn,1,1)) - 52) + 1) from t",
            "ssn",
        ),
        (
            "select regexp_match('x', '(' || left(ssn, 1)) from t",
            "ssn",
        ),
        ("select substr(ssn, 1, 3) from t", "ssn"),
        // windows and aggregates order, partition, filter and compare
        (
            "select name, row_number() over (order by ssn) from t",
            "ssn",
        ),
        ("select rank() over (partition by ssn) from t", "ssn"),
        ("select string_agg(name, ',' order by ssn) from t", "ssn"),
        ("select count(*) filter (where ssn < '5') from t", "ssn"),
        ("select count(distinct ssn) from t", "ssn"),
    ] {
        let f = facts(sql);
        assert!(f.has_conditions, "{sql}");
        assert!(
            f.conditions_opaque || f.condition_names.iter().any(|n| n == read),
            "{sql}: {:?}",
            f.condition_names
        );
    }
    for sql in [
        "select upper(ssn), ssn::text, ssn::varchar(20), count(ssn) from t",
        "select id::text from t",
    ] {
        assert!(
            !facts(sql).condition_names.iter().any(|n| n == "ssn"),
            "{sql}"
        );
    }
}

/// Set operations other than UNION ALL keep or drop rows by their values.
#[test]
fn set_operations_that_compare_rows_are_conditions() {
    for sql in [
        "select left(ssn, 3) from t intersect select '123'",
        "select name = 'a' and ssn < '5' from t union select false",
        "select ssn from t except all select '1'",
        "with recursive r(x) as (select ssn from t union select x from r) select count(*) from r",
    ] {
        let f = facts(sql);
        assert!(f.has_conditions && f.conditions_opaque, "{sql}");
    }
    assert!(!facts("select ssn from t union all select '1'").has_conditions);
}
