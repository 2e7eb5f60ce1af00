use super::*;
use crate::vocabulary::{ActionSpec, ContextSpec, EntitySpec};

/// A small relational vocabulary, as a SQL protocol would declare one.
const TABLES: Vocabulary = Vocabulary {
    owner: "test",
    entities: &[EntitySpec {
        name: "Table",
        within: &["Connection"],
    }],
    groups: &["read", "write"],
    actions: &[
        ActionSpec {
            names: &["select"],
            group: Some("read"),
            resources: &["Connection", "Table"],
        },
        ActionSpec {
            names: &["insert", "update", "delete"],
            group: Some("write"),
            resources: &["Connection", "Table"],
        },
    ],
    context: &[
        ContextSpec {
            name: "statement_kind",
            cedar_type: "String",
            doc: "The kind of statement.",
            per_request: false,
        },
        ContextSpec {
            name: "statement",
            cedar_type: "String",
            doc: "The statement text.",
            per_request: true,
        },
    ],
};

const SELECT: Action = Action::named("select");
const DELETE: Action = Action::named("delete");

fn table(connection: &str, name: &str) -> Resource {
    Resource::object("Table", connection, name)
}

fn alice() -> Identity {
    Identity {
        user: "alice".into(),
        groups: vec!["engineering".into()],
        actor: None,
        method: "test",
        credential: Default::default(),
    }
}

fn facts() -> RequestFacts {
    RequestFacts {
        protocol: "postgres",
        client_address: "127.0.0.1".into(),
        ..Default::default()
    }
}

fn app_db() -> Resource {
    Resource::Connection("app-db".into())
}

#[test]
fn deny_by_default() {
    let e = PolicyEngine::from_text("", &[&TABLES]).unwrap();
    let v = e.decide(&alice(), Action::CONNECT, &app_db(), &facts());
    assert!(!v.allowed);
    assert_eq!(v.reason(), "no policy permits it");
}

#[test]
fn group_permit_and_named_forbid() {
    let e = PolicyEngine::from_text(
        r#"
        permit(principal in Group::"engineering", action in [Action::"connect", Action::"select"], resource in Connection::"app-db");
        @id("no-bob")
        forbid(principal == User::"bob", action, resource);
        "#, &[&TABLES])
    .unwrap();
    let v = e.decide(&alice(), Action::CONNECT, &app_db(), &facts());
    assert!(v.allowed);
    assert_eq!(v.policies, vec!["<inline>:1"]);
    let mut bob = alice();
    bob.user = "bob".into();
    let v = e.decide(&bob, Action::CONNECT, &app_db(), &facts());
    assert!(!v.allowed);
    assert_eq!(v.policies, vec!["no-bob"]);
    let v = e.decide(
        &alice(),
        Action::CONNECT,
        &Resource::Connection("other".into()),
        &facts(),
    );
    assert!(!v.allowed);
}

#[test]
fn admins_get_the_api() {
    let e = PolicyEngine::from_text(
        r#"permit(principal in Group::"admins", action, resource);"#,
        &[&TABLES],
    )
    .unwrap();
    let mut admin = alice();
    admin.groups = vec!["admins".into()];
    assert!(
        e.decide(&admin, Action::VIEW_SESSIONS, &Resource::Gateway, &facts())
            .allowed
    );
    assert!(
        !e.decide(
            &alice(),
            Action::VIEW_SESSIONS,
            &Resource::Gateway,
            &facts()
        )
        .allowed
    );
}

#[test]
fn schema_violations_are_rejected() {
    let err = PolicyEngine::from_text(
        r#"permit(principal, action == Action::"conect", resource);"#,
        &[&TABLES],
    );
    assert!(
        matches!(err, Err(PolicyError::Invalid(_))),
        "{:?}",
        err.err()
    );
    let err = PolicyEngine::from_text("permit(principal, action, resource", &[&TABLES])
        .err()
        .map(|e| e.to_string());
    assert!(err.unwrap_or_default().starts_with("<inline>:"));
}

#[test]
fn reload_keeps_old_set_on_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.cedar"),
        r#"permit(principal, action == Action::"connect", resource);"#,
    )
    .unwrap();
    let e = PolicyEngine::from_dir(dir.path(), &[&TABLES]).unwrap();
    assert_eq!(e.policy_count(), 1);
    std::fs::write(dir.path().join("b.cedar"), "garbage(").unwrap();
    assert!(e.reload(dir.path()).is_err());
    assert!(
        e.decide(&alice(), Action::CONNECT, &app_db(), &facts())
            .allowed
    );
}

#[test]
fn tables_sit_in_their_connection_and_reviews_are_reported() {
    let e = PolicyEngine::from_text(
        r#"
        permit(principal in Group::"engineering",
               action in [Action::"connect", Action::"select"],
               resource in Connection::"app-db");
        forbid(principal, action, resource == Table::"app-db/public.api_keys");
        @review("dba")
        @id("writes-need-dba")
        permit(principal in Group::"engineering",
               action in [Action::"insert", Action::"update", Action::"delete"],
               resource in Connection::"app-db");
        "#,
        &[&TABLES],
    )
    .unwrap();
    let t = |n: &str| table("app-db", n);
    assert!(
        e.decide(&alice(), SELECT, &t("public.users"), &facts())
            .allowed
    );
    let v = e.decide(&alice(), SELECT, &t("public.api_keys"), &facts());
    assert!(!v.allowed);
    assert_eq!(v.policies, vec!["<inline>:2"]);
    let v = e.decide(&alice(), DELETE, &t("public.users"), &facts());
    assert!(v.allowed);
    let groups: Vec<_> = v.reviews.iter().map(|r| r.describe()).collect();
    assert_eq!(groups, vec!["dba"]);
    assert_eq!(v.policies, vec!["writes-need-dba"]);
    let other = table("other-db", "public.users");
    assert!(!e.decide(&alice(), SELECT, &other, &facts()).allowed);
}

#[test]
fn the_statement_is_in_the_context() {
    let e = PolicyEngine::from_text(
        r#"
        permit(principal, action, resource);
        @id("no-deletes-by-kind")
        forbid(principal, action, resource)
          when { context has statement_kind && context.statement_kind == "delete" };
        "#,
        &[&TABLES],
    )
    .unwrap();
    let t = table("app-db", "public.users");
    let f = facts()
        .with("statement_kind", ContextValue::Str("delete".into()))
        .with("statement", ContextValue::Str("delete from users".into()));
    let v = e.decide(&alice(), DELETE, &t, &f);
    assert!(!v.allowed);
    assert_eq!(v.policies, vec!["no-deletes-by-kind"]);
    // Cached entities do not leak between principals.
    let f = facts().with("statement_kind", ContextValue::Str("select".into()));
    assert!(e.decide(&alice(), SELECT, &t, &f).allowed);
}

#[test]
fn time_is_in_the_context_and_marks_decisions_per_request() {
    let e = PolicyEngine::from_text(
        r#"permit(principal, action, resource)
           when { context.hour >= 0 && context.hour < 24 && context.weekday < 7 && context.time > 1700000000 };"#, &[&TABLES])
    .unwrap();
    let table = table("c", "public.t");
    assert!(e.decide(&alice(), SELECT, &table, &facts()).allowed);
    assert!(e.reads_per_request_context());
    let kind_only = PolicyEngine::from_text(
        r#"permit(principal, action, resource) when { context has statement_kind && context.statement_kind == "select" };"#, &[&TABLES])
    .unwrap();
    assert!(!kind_only.reads_per_request_context());
    let text = PolicyEngine::from_text(
        r#"forbid(principal, action, resource) when { context has statement && context.statement like "*x*" };"#, &[&TABLES])
    .unwrap();
    assert!(text.reads_per_request_context());
}
