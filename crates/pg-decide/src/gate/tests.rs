use super::*;
use portcullis_pg_sql::SqlAction;

const POLICIES: &str = r#"
@id("engineering-reads-app")
permit(principal in Group::"engineering",
       action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
@id("no-api-keys")
forbid(principal, action, resource == Table::"app-db/public.api_keys");
@review("dba")
@id("writes-need-dba")
permit(principal in Group::"engineering",
       action in [Action::"insert", Action::"update", Action::"delete"],
       resource in Connection::"app-db");
"#;

fn gate(schemas: &[&str]) -> StatementGate {
    gate_with(POLICIES, schemas)
}

/// Alice (group engineering) on app-db under `policies`.
fn gate_with(policies: &str, schemas: &[&str]) -> StatementGate {
    StatementGate::new(
        Arc::new(PolicyEngine::from_text(policies, &[&crate::vocabulary::SQL]).unwrap()),
        Arc::new(ParseCache::default()),
        Identity {
            user: "alice".into(),
            groups: vec!["engineering".into()],
            actor: None,
            method: "test",
            credential: Default::default(),
        },
        "app-db".into(),
        "svc".into(),
        "127.0.0.1".into(),
        schemas.iter().map(|s| s.to_string()).collect(),
    )
}

fn denied(g: &mut StatementGate, sql: &str) -> String {
    match g.check(sql) {
        GateDecision::Deny(d) => d.message().to_owned(),
        GateDecision::Allow(_) => panic!("{sql} was allowed"),
        // Not run as it is either: what the review is for.
        GateDecision::Review(h) => format!("held: {} needs approval", h.need().actions.join("; ")),
    }
}

#[test]
fn reads_allowed_secrets_forbidden_writes_need_review() {
    let mut g = gate(&["public"]);
    match g.check("select * from users") {
        GateDecision::Allow(a) => {
            assert_eq!(a.policies().as_ref(), ["engineering-reads-app".to_owned()]);
            assert!(a.mask().is_none());
        }
        other => panic!("not allowed: {other:?}"),
    }
    assert_eq!(
        denied(&mut g, "select * from api_keys"),
        "portcullis: select on app-db/public.api_keys denied (policy no-api-keys)"
    );
    match g.check("DELETE FROM users") {
        GateDecision::Review(held) => {
            let need = held.need();
            assert_eq!(need.actions, ["delete on app-db/public.users"]);
            assert_eq!(need.policies, ["writes-need-dba"]);
            let groups: Vec<_> = need.rules.iter().map(|r| r.describe()).collect();
            assert_eq!(groups, ["dba"]);
        }
        other => panic!("not held: {other:?}"),
    }
    assert_eq!(
        denied(&mut g, "truncate users"),
        "portcullis: truncate on app-db/public.users denied (no policy permits it)"
    );
    assert!(denied(&mut g, "selec 1").starts_with("portcullis: statement denied: cannot parse"));
    assert_eq!(
        denied(&mut g, "select pg_read_file('/etc/passwd')"),
        "portcullis: execute on app-db/pg_catalog.pg_read_file denied (no policy permits it)"
    );
}

#[test]
fn search_path_changes_cannot_hide_a_table() {
    let mut g = gate(&["public"]);
    assert!(matches!(
        g.check("set search_path = other"),
        GateDecision::Allow(_)
    ));
    // The server may still resolve to public (the SET may have been rolled back).
    assert_eq!(
        denied(&mut g, "select * from api_keys"),
        "portcullis: select on app-db/public.api_keys denied (policy no-api-keys)"
    );
    assert!(matches!(
        g.check("select * from other.api_keys"),
        GateDecision::Allow(_)
    ));
}

#[test]
fn pg_catalog_after_another_schema_disables_builtin_shortcuts() {
    let mut g = gate(&["public"]);
    assert!(matches!(
        g.check("select lower('A')"),
        GateDecision::Allow(_)
    ));
    assert!(matches!(
        g.check("set search_path = public, pg_catalog"),
        GateDecision::Allow(_)
    ));
    assert!(denied(&mut g, "select lower('A')").contains("unqualified name"));
    assert!(matches!(
        g.check("select pg_catalog.lower('A')"),
        GateDecision::Allow(_)
    ));
}

/// What `PREPARE … AS <sql>` defines, as the adapter's ledger hands it over.
fn sql_definition(sql: &str) -> Definition {
    let mut a = portcullis_pg_sql::analyze(sql).unwrap();
    Definition::Sql(Arc::new(a.statements.remove(0)))
}

#[test]
fn sql_prepared_statements_carry_their_pairs_to_execute() {
    let mut g = gate(&["public"]);
    assert!(denied(&mut g, "prepare p as select * from api_keys").contains("public.api_keys"));
    assert!(denied(&mut g, "execute p").contains("does not exist"));
    let GateDecision::Allow(a) = g.check("prepare q as select * from users") else {
        panic!("allowed")
    };
    // The decision names the change; the gate itself waits for the
    // adapter to say the server holds it.
    assert_eq!(a.name_changes().len(), 1);
    assert!(denied(&mut g, "execute q").contains("does not exist"));
    g.set_prepared("q", &[sql_definition("select * from users")]);
    assert!(matches!(g.check("execute q"), GateDecision::Allow(_)));
    // Within one text the server runs them in order.
    assert!(matches!(
        g.check("prepare r as select 1; execute r"),
        GateDecision::Allow(_)
    ));
    assert!(
        denied(&mut g, "prepare s as select 1; deallocate s; execute s").contains("does not exist")
    );
    g.set_prepared("q", &[]);
    assert!(denied(&mut g, "execute q").contains("does not exist"));
}

#[test]
fn every_statement_of_a_multi_statement_text_is_decided() {
    let mut g = gate(&["public"]);
    assert!(denied(&mut g, "select 1; select * from public.api_keys").contains("api_keys"));
    assert!(denied(
        &mut g,
        "with x as (delete from users returning 1) select * from x"
    )
    .contains("delete on app-db/public.users"));
}

#[test]
fn a_search_path_set_earlier_in_the_same_text_counts() {
    let mut g = gate(&["other"]);
    assert_eq!(
        denied(&mut g, "set search_path = public; select * from api_keys"),
        "portcullis: select on app-db/public.api_keys denied (policy no-api-keys)"
    );
    // Nothing of a refused text sticks.
    assert!(matches!(
        g.check("select * from api_keys"),
        GateDecision::Allow(_)
    ));
}

#[test]
fn a_name_with_several_possible_definitions_is_decided_for_each() {
    let mut g = gate(&["public"]);
    // The server may have rejected the second as a duplicate, or not.
    g.set_prepared(
        "q",
        &[
            sql_definition("select 1"),
            sql_definition("select * from api_keys"),
        ],
    );
    assert!(denied(&mut g, "execute q").contains("api_keys"));
    g.set_prepared(
        "q",
        &[
            sql_definition("select 1"),
            sql_definition("select * from users"),
        ],
    );
    assert!(matches!(g.check("execute q"), GateDecision::Allow(_)));
    // A protocol-level definition among them: EXECUTE cannot be decided.
    g.set_prepared(
        "q",
        &[
            sql_definition("select 1"),
            Definition::Text(Arc::from("select 2"), Arc::from([])),
        ],
    );
    assert!(denied(&mut g, "execute q").contains("does not exist"));
    // A Bind of such a name is decided for both texts.
    let both = [
        Definition::Text(Arc::from("select 1"), Arc::from([])),
        Definition::Text(Arc::from("select * from api_keys"), Arc::from([])),
    ];
    assert!(matches!(g.check_definitions(&both), GateDecision::Deny(_)));
    let both = [
        Definition::Text(Arc::from("select 1"), Arc::from([])),
        sql_definition("select * from users"),
    ];
    assert!(matches!(g.check_definitions(&both), GateDecision::Allow(_)));
}

#[test]
fn the_raw_search_path_setting_counts_schemas_not_yet_created() {
    let mut g = gate(&["public"]).with_search_path_setting("\"$user\", public, \"Odd\"\"Name\"");
    assert_eq!(
        denied(&mut g, "truncate t"),
        "portcullis: truncate on app-db/public.t denied (no policy permits it)"
    );
    let pairs = g.explain("select * from t").unwrap();
    let names: Vec<String> = pairs.iter().map(|(_, r, _)| r.describe()).collect();
    assert_eq!(
        names,
        vec!["app-db/public.t", "app-db/svc.t", "app-db/Odd\"Name.t"]
    );
    let mut g = gate(&["public"]).with_search_path_setting("public, pg_catalog");
    assert!(denied(&mut g, "select lower('x')").contains("unqualified name"));
}

#[test]
fn views_reach_through_for_data_but_not_for_ddl() {
    let views = crate::catalog::ViewCatalog::from_rows([
        ["public", "v_keys", "r", "public", "api_keys"],
        ["public", "v_fn", "f", "public", "leak"],
        ["public", "v_users", "r", "public", "users"],
    ]);
    let mut g = gate(&["public"]).with_views(Arc::new(views));
    assert!(matches!(
        g.check("select * from v_users"),
        GateDecision::Allow(_)
    ));
    assert_eq!(
        denied(&mut g, "select * from v_keys"),
        "portcullis: select on app-db/public.api_keys (read through view app-db/public.v_keys) denied (policy no-api-keys)"
    );
    // A function a view calls needs execute, like a direct call.
    assert!(denied(&mut g, "select * from v_fn").starts_with(
        "portcullis: execute on app-db/public.leak (read through view app-db/public.v_fn) denied"
    ));
    // Writing through a view writes the table beneath: the view's write
    // would need review, the table's is forbidden, and forbidden wins.
    assert!(denied(&mut g, "insert into v_keys values ('x')").contains(
        "insert on app-db/public.api_keys (read through view app-db/public.v_keys) denied"
    ));
    // Explain lists the pairs beneath.
    let pairs = g.explain("select * from v_keys").unwrap();
    let names: Vec<String> = pairs.iter().map(|(_, r, _)| r.describe()).collect();
    assert_eq!(
        names,
        vec!["app-db/public.v_keys", "app-db/public.api_keys"]
    );
    // Dropping a view touches nothing beneath it.
    let pairs = g.explain("drop view v_keys").unwrap();
    let names: Vec<String> = pairs.iter().map(|(_, r, _)| r.describe()).collect();
    assert!(
        !names.contains(&"app-db/public.api_keys".to_owned()),
        "{names:?}"
    );
}

#[test]
fn decisions_are_reused_across_literals_only_when_policies_ignore_the_text() {
    let mut g = gate(&["public"]);
    for id in 1..5 {
        assert!(matches!(
            g.check(&format!("select * from users where id = {id}")),
            GateDecision::Allow(_)
        ));
    }
    // A policy reading the text sees every text, literals included.
    let text_policy = format!(
        "{POLICIES}\nforbid(principal, action, resource) when {{ context has statement && context.statement like \"*canary*\" }};"
    );
    let mut g = StatementGate::new(
        Arc::new(PolicyEngine::from_text(&text_policy, &[&crate::vocabulary::SQL]).unwrap()),
        Arc::new(ParseCache::default()),
        Identity {
            user: "alice".into(),
            groups: vec!["engineering".into()],
            ..Default::default()
        },
        "app-db".into(),
        "svc".into(),
        "127.0.0.1".into(),
        vec!["public".into()],
    );
    assert!(matches!(
        g.check("select * from users where name = 'ok'"),
        GateDecision::Allow(_)
    ));
    assert!(denied(&mut g, "select * from users where name = 'canary'").contains("denied"));
    assert!(matches!(
        g.check("select * from users where name = 'ok2'"),
        GateDecision::Allow(_)
    ));
}

#[test]
fn a_user_function_named_like_a_builtin_makes_unqualified_calls_need_execute() {
    let mut g = gate(&["public"]);
    assert!(matches!(
        g.check("select lower(name) from users"),
        GateDecision::Allow(_)
    ));
    let catalog = crate::catalog::ViewCatalog::from_rows([["", "", "u", "public", "lower"]]);
    let mut g = gate(&["public"]).with_views(Arc::new(catalog));
    let msg = denied(&mut g, "select lower(name) from users");
    assert!(msg.starts_with("portcullis: execute on app-db/"), "{msg}");
    assert!(msg.contains(".lower denied"), "{msg}");
    // Qualified calls still name exactly one function, the built-in.
    assert!(matches!(
        g.check("select pg_catalog.lower(name) from users"),
        GateDecision::Allow(_)
    ));
    // Names no user function shadows stay trusted.
    assert!(matches!(
        g.check("select upper(name) from users"),
        GateDecision::Allow(_)
    ));
}

#[test]
fn field_selection_that_names_a_function_is_decided_as_its_call() {
    let catalog = crate::catalog::ViewCatalog::from_rows([
        ["", "", "u", "public", "leak"],
        ["", "", "c", "", "leak"],
        ["", "", "c", "", "pg_terminate_backend"],
        ["", "", "c", "", "to_jsonb"],
    ]);
    let mut g = gate(&["public"]).with_views(Arc::new(catalog));
    // `u.leak` is `leak(u)` when users has no column leak.
    for sql in [
        "select u.leak from users u",
        "select users.leak from users",
        "select public.users.leak from users",
        "select (u).leak from users u",
        "select 1 from users u where u.leak is not null",
        "select count(*) from users u group by u.leak",
        "with x as (select * from users) select x.leak from x",
        "prepare p as select u.leak from users u; execute p",
    ] {
        let msg = denied(&mut g, sql);
        assert!(
            msg.starts_with("portcullis: execute on app-db/"),
            "{sql}: {msg}"
        );
        assert!(msg.contains(".leak denied"), "{sql}: {msg}");
    }
    // Any expression, any type: `(u.id).pg_terminate_backend` signals.
    let msg = denied(&mut g, "select (u.id).pg_terminate_backend from users u");
    assert!(msg.contains(".pg_terminate_backend denied"), "{msg}");
    // A safe built-in read this way is a built-in call.
    assert!(matches!(
        g.check("select u.to_jsonb from users u"),
        GateDecision::Allow(_)
    ));
    // Columns and fields no function is named after stay plain reads.
    assert!(matches!(
        g.check("select u.email, (u.addr).city, (u).* from users u"),
        GateDecision::Allow(_)
    ));
    // The built-in shortcut needs pg_catalog searched first, as for calls.
    let mut g = g;
    assert!(matches!(
        g.check("set search_path = public, pg_catalog"),
        GateDecision::Allow(_)
    ));
    let msg = denied(&mut g, "select u.to_jsonb from users u");
    assert!(msg.contains("field selection .to_jsonb"), "{msg}");
}

#[test]
fn the_shape_cache_keeps_apart_what_literals_change() {
    let cache = ParseCache::default();
    let admin = |p: &Parsed| {
        p.as_ref().as_ref().unwrap().statements[0]
            .accesses
            .iter()
            .any(|a| a.action == SqlAction::Admin)
    };
    // An empty file name reads back as none: it must not stand for others.
    let (first, _) = cache.get_keyed("copy t to ''");
    assert!(!admin(&first));
    let (second, _) = cache.get_keyed("copy t to '/tmp/x'");
    assert!(admin(&second), "a file name was read as STDOUT");
    // ORDER BY positions name different columns.
    let (one, k1) = cache.get_keyed("select a, b from t order by 1");
    let (two, k2) = cache.get_keyed("select a, b from t order by 2");
    assert_ne!(k1, k2);
    assert!(!Arc::ptr_eq(&one, &two));
    // A text spelling another text's key cannot take its place.
    let (bad, _) = cache.get_keyed("\u{2}select * from t where id = \u{1}i");
    assert!(bad.as_ref().is_err());
    let (good, _) = cache.get_keyed("select * from t where id = 1");
    assert!(good.as_ref().is_ok());
    // Literal values elsewhere still share one parse.
    let (a, ka) = cache.get_keyed("select * from t where id = 2");
    assert_eq!(ka, cache.get_keyed("select * from t where id = 3").1);
    assert!(a.as_ref().is_ok());
}

/// A session decides a text with new literals by its shape; a text that
/// spells that shape's key must still be decided as itself.
#[test]
fn a_text_spelling_a_decided_shape_key_is_decided_as_itself() {
    let mut g = gate(&["public"]);
    for id in 1..4 {
        let sql = format!("select * from orders where id = {id}");
        assert!(matches!(g.check(&sql), GateDecision::Allow(_)), "{sql}");
    }
    denied(&mut g, "\u{2}select * from orders where id = \u{1}i");
}

#[test]
fn a_function_defined_in_the_session_is_a_call_before_the_catalog_shows_it() {
    let catalog = crate::catalog::ViewCatalog::from_rows([["", "", "c", "", "lower"]]);
    let mut g = gate_with(
        r#"permit(principal in Group::"engineering",
                  action in [Action::"connect", Action::"select", Action::"ddl"],
                  resource in Connection::"app-db");"#,
        &["public"],
    )
    .with_views(Arc::new(catalog));
    assert!(matches!(
        g.check("select u.email from users u"),
        GateDecision::Allow(_)
    ));
    // In one text: create, then call by field selection.
    let msg = denied(
        &mut g,
        "create function leak(users) returns text language sql as 'select 1'; select u.leak from users u",
    );
    assert!(
        msg.contains("execute on app-db/") && msg.contains(".leak denied"),
        "{msg}"
    );
    // In the next text of the session too: until a newer catalog arrives,
    // every field selection is a possible call.
    assert!(matches!(
        g.check("create function leak(users) returns text language sql as 'select 1'"),
        GateDecision::Allow(_)
    ));
    let msg = denied(&mut g, "select u.leak from users u");
    assert!(msg.contains(".leak denied"), "{msg}");
}

/// A cast the server applies unasked counts where a value of its user
/// type may be: a relation with a column of it, the type named, or a call
/// of a user's function; one between built-in types counts everywhere.
#[test]
fn unasked_casts_are_calls_where_their_type_may_be() {
    let catalog = crate::catalog::ViewCatalog::from_rows([
        ["hush", "", "j", "public", "blab"],
        ["public", "hushed", "y", "", "hush"],
    ]);
    let mut g = gate(&["public"]).with_views(Arc::new(catalog));
    for sql in [
        "select upper(h) from hushed",
        "select upper(row('x')::hush)",
    ] {
        let msg = denied(&mut g, sql);
        assert!(
            msg.contains("execute on app-db/public.blab"),
            "{sql}: {msg}"
        );
    }
    // Built-ins other than casts cannot yield a value of a user type.
    assert!(matches!(
        g.check("select upper(name) from users"),
        GateDecision::Allow(_)
    ));
    let everywhere =
        crate::catalog::ViewCatalog::from_rows([["", "", "j", "public", "int_to_text"]]);
    let mut g = gate(&["public"]).with_views(Arc::new(everywhere));
    assert!(denied(&mut g, "select name from users").contains("public.int_to_text"));
}

/// An explicit cast from a user type runs where a value of that type is
/// cast: `'x'::text` casts a literal, not a `hush`, so it runs nothing.
#[test]
fn explicit_casts_from_a_user_type_need_a_value_of_it() {
    let catalog = crate::catalog::ViewCatalog::from_rows([
        ["hush", "text", "k", "public", "blab"],
        ["public", "hushed", "y", "", "hush"],
        ["", "loud", "k", "public", "shout"],
    ]);
    let mut g = gate(&["public"]).with_views(Arc::new(catalog));
    assert!(denied(&mut g, "select h::text from hushed").contains("public.blab"));
    assert!(denied(&mut g, "select 'x'::loud").contains("public.shout"));
    assert!(matches!(
        g.check("select name::text from users"),
        GateDecision::Allow(_)
    ));
}

/// A reviewer approves the exact text that runs: `EXECUTE name` (SQL or
/// a Bind of a name with more than one possible definition) does not show
/// it, so such a statement is refused rather than held.
#[test]
fn a_reviewed_statement_runs_only_as_its_own_text() {
    let mut g = gate(&["public"]);
    g.set_prepared("wipe", &[sql_definition("delete from users")]);
    assert!(denied(&mut g, "execute wipe")
        .contains("needs approval, and it runs a prepared statement through EXECUTE"));
    let both = [
        Definition::Text(Arc::from("select 1"), Arc::from([])),
        Definition::Text(Arc::from("delete from users"), Arc::from([])),
    ];
    match g.check_definitions(&both) {
        GateDecision::Deny(d) => assert!(d.message().contains("more than one definition")),
        other => panic!("{other:?}"),
    }
    let one = [Definition::Text(
        Arc::from("delete from users"),
        Arc::from([]),
    )];
    assert!(matches!(g.check_definitions(&one), GateDecision::Review(_)));
}

/// What an approval names covers every byte the server reads and what the
/// review was for.
#[test]
fn the_hold_key_covers_parameters_whole_and_the_pairs_under_review() {
    use crate::permit::{hold_key, HoldSubject};
    use portcullis_pg_wire::Param;
    let mut g = gate(&["public"]);
    let GateDecision::Review(held) = g.check("delete from users") else {
        panic!("held")
    };
    let need = held.need().clone();
    let bind = |types: &'static [u32], formats: &'static [i16], value: &'static [u8]| {
        hold_key(
            &need,
            HoldSubject::Bind {
                text: "delete from users where id = $1",
                types,
                formats,
                params: &[Param::Value(value)],
            },
        )
    };
    let base = bind(&[], &[], b"1");
    assert_eq!(base, bind(&[], &[], b"1"));
    assert_ne!(base, bind(&[23], &[], b"1"));
    assert_ne!(base, bind(&[], &[1], b"1"));
    assert_ne!(base, bind(&[], &[], b"2"));
    let long_a = [b'1'; 2000];
    let mut long_b = [b'1'; 2000];
    long_b[1999] = b'2';
    let key = |v: &[u8]| {
        hold_key(
            &need,
            HoldSubject::Bind {
                text: "t",
                types: &[],
                formats: &[],
                params: &[Param::Value(v)],
            },
        )
    };
    assert_ne!(key(&long_a), key(&long_b));
    // The same text under review for other pairs is another request.
    let mut other = need.clone();
    other.actions = vec!["delete on app-db/s2.users".into()];
    assert_ne!(
        hold_key(&need, HoldSubject::Query("delete from users")),
        hold_key(&other, HoldSubject::Query("delete from users"))
    );
}
