//! Statement policy end to end: every statement is decided by Cedar over
//! the pairs PostgreSQL's grammar implies, before the upstream sees it.

use std::time::Duration;

use portcullis_testkit::{psql, Gateway, ADMIN_TOKEN, ALICE_TOKEN};
use serde_json::Value;

use crate::common::*;

/// The policy from the issue, as written.
const ISSUE_POLICY: &str = r#"
// engineers may read app-db
permit(principal in Group::"engineering",
       action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
// nobody touches the secrets table
@id("no-secrets")
forbid(principal, action, resource == Table::"app-db/public.api_keys");
// writes need a dba's approval (the tests wait a second for it)
@review("dba")
@wait("1s")
@id("writes-need-dba")
permit(principal in Group::"engineering",
       action in [Action::"insert", Action::"update", Action::"delete"],
       resource in Connection::"app-db");
@id("admins-all")
permit(principal in Group::"admins", action, resource);
"#;

fn policy_gateway() -> Gateway {
    let c = cluster();
    // Once per process: concurrent CREATE TABLE IF NOT EXISTS can race in
    // the catalog.
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        c.superuser_sql(
            "app",
            "create table if not exists api_keys (id int, secret text); \
         grant all on api_keys to portcullis_reader; \
         insert into api_keys select 1, 'sk-live-123' where not exists (select 1 from api_keys)",
        );
    });
    gateway().app_db("app-db", c).policies(ISSUE_POLICY).start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_and_denied_statements_with_tokio_postgres() {
    let gw = policy_gateway();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let n: i64 = client
        .query_one("select count(*) from people", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100);

    // Extended protocol: decided at Parse.
    let e = client
        .prepare("select secret from api_keys")
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "42501".into(),
            "portcullis: select on app-db/public.api_keys denied (policy no-secrets)".into()
        )
    );
    // Evasions read the same to PostgreSQL's grammar.
    for sql in [
        "SELECT * FROM /* people */ \"api_keys\"",
        "select * from people where id in (select id from public.api_keys)",
        "with k as (select * from api_keys) select * from k",
        "select 1; select secret from api_keys",
        "select * from U&\"api\\005fkeys\"",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        let (code, msg) = db_error(&e);
        assert_eq!(code, "42501", "{sql}");
        assert!(
            msg.contains("app-db/public.api_keys denied (policy no-secrets)"),
            "{sql}: {msg}"
        );
    }
    // tokio-postgres returns a query's error before the ReadyForQuery
    // behind it has arrived: one query that completes makes sure the
    // server is idle, as the gateway knows it, before the held statement.
    client.simple_query("select 1").await.unwrap();
    let e = client
        .simple_query("delete from people where id = 1")
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e).1,
        "portcullis: review 1 was not decided within 1s; it stays open: once it is approved (portcullis reviews approve 1), run the same statement again"
    );
    let e = client
        .simple_query("select pg_read_file('/etc/passwd')")
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e).1,
        "portcullis: execute on app-db/pg_catalog.pg_read_file denied (no policy permits it)"
    );
    let e = client
        .simple_query("selec * from people")
        .await
        .unwrap_err();
    // The server's own syntax error, and nothing ran.
    assert_eq!(
        db_error(&e),
        ("42601".into(), "syntax error at or near \"selec\"".into())
    );
    // The session is still healthy, and nothing was deleted.
    let n: i64 = client
        .query_one("select count(*) from people", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_inside_a_transaction_fails_it_like_a_server_error() {
    let gw = policy_gateway();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    client.batch_execute("begin").await.unwrap();
    client
        .query_one("select count(*) from people", &[])
        .await
        .unwrap();
    let e = client
        .batch_execute("select * from api_keys")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42501");
    // Client and server agree: the transaction is failed.
    let e = client.batch_execute("select 1").await.unwrap_err();
    assert_eq!(db_error(&e).0, "25P02");
    client.batch_execute("rollback").await.unwrap();
    client.query_one("select 1", &[]).await.unwrap();
}

#[test]
fn psql_sees_one_clear_line_and_admins_are_not_limited() {
    let gw = policy_gateway();
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &["-c", "select secret from api_keys"],
        None,
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "ERROR:  portcullis: select on app-db/public.api_keys denied (policy no-secrets)"
        ),
        "{}",
        out.stderr
    );
    let out = psql(
        &gw.conninfo("app-db", ""),
        ADMIN_TOKEN,
        &["-c", "select count(*) from people"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    // The forbid applies to admins too: forbid wins over permit.
    let out = psql(
        &gw.conninfo("app-db", ""),
        ADMIN_TOKEN,
        &["-c", "select secret from api_keys"],
        None,
    );
    assert!(!out.ok);
}

#[test]
fn decisions_are_recorded_with_their_policies() {
    let gw = policy_gateway();
    assert!(
        psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", "select 1 from people limit 1"],
            None
        )
        .ok
    );
    assert!(
        !psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", "select * from api_keys"],
            None
        )
        .ok
    );
    let statements: Vec<Value> = eventually(Duration::from_secs(10), || {
        let (_, body) = curl(&gw, "/api/sessions?user=alice", Some(ADMIN_TOKEN));
        let list: Value = serde_json::from_str(&body).ok()?;
        let mut out = Vec::new();
        for s in list.as_array()? {
            let id = s["id"].as_str()?;
            let (_, detail) = curl(&gw, &format!("/api/sessions/{id}"), Some(ADMIN_TOKEN));
            let d: Value = serde_json::from_str(&detail).ok()?;
            out.extend(d["statements"].as_array()?.iter().cloned());
        }
        // Both finished: a statement's outcome is recorded after its start.
        let finished = out.iter().all(|s| s.get("outcome").is_none());
        (out.len() == 2 && finished).then_some(out)
    })
    .expect("two statements recorded");
    let allowed = statements
        .iter()
        .find(|s| s["decision"]["allowed"] == true)
        .expect("allowed one");
    // The first policy of test.cedar has no @id: it is named by file and position.
    assert_eq!(
        allowed["decision"]["policies"],
        serde_json::json!(["test:1"])
    );
    let denied = statements
        .iter()
        .find(|s| s["decision"]["allowed"] == false)
        .expect("denied one");
    assert_eq!(
        denied["decision"]["policies"],
        serde_json::json!(["no-secrets"])
    );
    assert_eq!(
        denied["error"],
        "42501: portcullis: select on app-db/public.api_keys denied (policy no-secrets)"
    );
}

#[test]
fn policies_reload_when_their_files_change_and_bad_sets_are_refused() {
    let gw = gateway().app_db("app-db", cluster()).start();
    let q = |gw: &Gateway| {
        psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", "select 1 from people limit 1"],
            None,
        )
    };
    assert!(q(&gw).ok);
    let file = gw.dir().join("policies").join("test.cedar");
    std::fs::write(
        &file,
        "permit(principal in Group::\"engineering\", action == Action::\"connect\", resource);\n",
    )
    .unwrap();
    let denied = eventually(Duration::from_secs(10), || {
        let out = q(&gw);
        (!out.ok
            && out
                .stderr
                .contains("select on app-db/public.people denied (no policy permits it)"))
        .then_some(())
    });
    assert!(denied.is_some(), "{}", gw.log());
    std::fs::write(
        &file,
        "permit(principal, action == Action::\"nonsense\", resource);\n",
    )
    .unwrap();
    let logged = eventually(Duration::from_secs(10), || {
        gw.log().contains("keeping the previous set").then_some(())
    });
    assert!(logged.is_some(), "{}", gw.log());
    let out = q(&gw);
    assert!(
        !out.ok && out.stderr.contains("no policy permits it"),
        "the previous set stays: {}",
        out.stderr
    );
}

#[test]
fn policy_check_explains_a_decision_without_a_gateway() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.cedar"), ISSUE_POLICY).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["policy", "check", "--dir"])
        .arg(dir.path())
        .args([
            "--user",
            "alice",
            "--groups",
            "engineering",
            "--connection",
            "app-db",
            "DELETE FROM users",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with(
            "review: delete on app-db/public.users needs approval by dba (policy writes-need-dba)"
        ),
        "{text}"
    );
    assert!(text.contains("delete    app-db/public.users"), "{text}");
    assert!(
        text.contains("needs review by dba (writes-need-dba)"),
        "{text}"
    );
    let out = std::process::Command::new(BIN)
        .args(["policy", "validate", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 policies valid"));

    // From a config file whose secrets are not in this environment: the
    // policy tools need only [policy] dir.
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        "data_dir = \"./data\"\n[listen]\npostgres = \"127.0.0.1:1\"\n[[connections]]\nname = \"app-db\"\n\
         kind = \"postgres\"\nupstream = \"127.0.0.1:1\"\ndatabase = \"app\"\nuser = \"u\"\n\
         password_env = \"PORTCULLIS_SURELY_UNSET_TOO\"\n[policy]\ndir = \".\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["policy", "check", "--config"])
        .arg(&config)
        .args([
            "--user",
            "alice",
            "--groups",
            "engineering",
            "--connection",
            "app-db",
            "select u.email, u.name from users u",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("allow"), "{text}");
    // Without the catalog, `u.email` may be `email(u)`: said, not hidden.
    // `name` is a safe built-in conversion, so it needs no note.
    assert!(
        text.contains("note: .email would call a function of that name"),
        "{text}"
    );
}

#[test]
fn views_are_decided_on_what_lies_beneath_them() {
    let c = cluster();
    let gw = policy_gateway();
    c.superuser_sql(
        "app",
        "create or replace view v_keys as select secret from api_keys; \
         create or replace view v_nested as select * from v_keys; \
         create or replace view v_people as select name from people; \
         drop materialized view if exists mv_keys; \
         create materialized view mv_keys as select * from api_keys; \
         grant select on v_keys, v_nested, v_people, mv_keys to portcullis_reader",
    );
    let run = |sql: &str| psql(&gw.conninfo("app-db", ""), ALICE_TOKEN, &["-c", sql], None);

    let out = run("select count(*) from v_people");
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "100");

    for (view, via) in [
        ("v_keys", "v_keys"),
        ("public.v_nested", "v_nested"),
        ("mv_keys", "mv_keys"),
    ] {
        let out = run(&format!("select * from {view}"));
        assert!(!out.ok, "{view} leaked: {}", out.stdout);
        assert!(
            out.stderr.contains(&format!(
                "select on app-db/public.api_keys (read through view app-db/public.{via}) denied (policy no-secrets)"
            )),
            "{view}: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("sk-live"));
    }
    // A view inside a subquery or a CTE is resolved the same way.
    let out = run("with k as (select * from v_nested) select count(*) from people, k");
    assert!(
        out.stderr
            .contains("read through view app-db/public.v_nested"),
        "{}",
        out.stderr
    );

    // The catalog is reused while unchanged, and read again after a change:
    // a renamed view is still resolved.
    c.superuser_sql("app", "alter view v_keys rename to v_keys_renamed");
    let out = run("select * from v_keys_renamed");
    assert!(
        out.stderr
            .contains("read through view app-db/public.v_keys_renamed"),
        "{}",
        out.stderr
    );
    c.superuser_sql("app", "alter view v_keys_renamed rename to v_keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_created_during_a_session_is_resolved_within_seconds() {
    let c = cluster();
    let gw = policy_gateway();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    client.simple_query("select 1").await.unwrap();
    // Someone else creates a view over the forbidden table mid-session; the
    // gateway's catalog watcher notices within about a second.
    c.superuser_sql(
        "app",
        "create or replace view v_late as select secret from api_keys; \
         grant select on v_late to portcullis_reader",
    );
    let start = std::time::Instant::now();
    loop {
        match client.simple_query("select * from v_late").await {
            Err(e) => {
                let (code, msg) = db_error(&e);
                assert_eq!(code, "42501");
                assert!(
                    msg.contains("read through view app-db/public.v_late"),
                    "{msg}"
                );
                break;
            }
            Ok(_) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "the new view stayed readable"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!(
        "new view resolved after {:.2} s",
        start.elapsed().as_secs_f64()
    );
}

/// PostgreSQL reads `p.f` as `f(p)` when `p` has no column `f`, and
/// `(expr).f` as `f(expr)` for any type: a call written as a column must
/// be decided as the call it is.
#[test]
fn a_function_called_by_field_selection_needs_execute() {
    let c = cluster();
    let gw = policy_gateway();
    c.superuser_sql(
        "app",
        "create or replace function people_secret(people) returns text \
         language sql as 'select secret from api_keys limit 1'; \
         grant execute on function people_secret(people) to portcullis_reader",
    );
    let run = |sql: &str| psql(&gw.conninfo("app-db", ""), ALICE_TOKEN, &["-c", sql], None);
    for sql in [
        "select p.people_secret from people p limit 1",
        "select (p).people_secret from people p limit 1",
        "select public.people.people_secret from people limit 1",
        "select count(*) from people p where p.people_secret like 'sk-%'",
    ] {
        let out = run(sql);
        assert!(!out.ok, "{sql} ran: {}", out.stdout);
        assert!(!out.stdout.contains("sk-live"), "{sql} leaked");
        assert!(
            out.stderr.contains("portcullis: execute on app-db/")
                && out.stderr.contains(".people_secret denied"),
            "{sql}: {}",
            out.stderr
        );
    }
    // Any type: `(p.id).pg_terminate_backend` would signal backend `id`.
    let out = run("select (p.id).pg_terminate_backend from people p limit 1");
    assert!(
        out.stderr
            .contains("execute on app-db/pg_catalog.pg_terminate_backend denied"),
        "{}",
        out.stderr
    );
    // Real columns, including one named like a built-in conversion, read as
    // before.
    let out = run("select p.name from people p order by p.id limit 1");
    assert!(out.ok, "{}", out.stderr);
    assert!(!out.stdout.trim().is_empty());
    // An admin may call it (policy admins-all), and it really is a call.
    let out = psql(
        &gw.conninfo("app-db", ""),
        ADMIN_TOKEN,
        &["-c", "select p.people_secret from people p limit 1"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("sk-live-123"), "{}", out.stdout);
}

type Read = Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>;

/// Reads `api_keys` inside a transaction whose `SET LOCAL` puts
/// `decoy_path` first on the search_path, and again after its COMMIT.
async fn read_around_a_local_path(client: &tokio_postgres::Client) -> (Read, Read) {
    client.execute("begin", &[]).await.unwrap();
    client
        .execute("set local search_path = decoy_path, public", &[])
        .await
        .unwrap();
    let inside = client.query("select secret from api_keys", &[]).await;
    client.execute("commit", &[]).await.unwrap();
    let after = client.query("select secret from api_keys", &[]).await;
    (inside, after)
}

/// A `SET LOCAL search_path` ends with its transaction: afterwards the
/// server resolves names on the path from before it. The gate decides
/// names over every schema the path may hold, so a shadowing schema
/// neither hides a forbidden table while it is on the path nor after.
/// (Red team, issue 21: the same sequence took a prepared statement past
/// masking through a cached row description.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_path_set_for_one_transaction_hides_no_forbidden_table() {
    let gw = policy_gateway();
    cluster().superuser_sql(
        "app",
        "create schema if not exists decoy_path; \
         create table if not exists decoy_path.api_keys (id int, secret text); \
         grant usage on schema decoy_path to portcullis_reader; \
         grant select on decoy_path.api_keys to portcullis_reader",
    );
    // Directly: the decoy inside the transaction, the secret after it.
    let (direct, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} dbname=app user=portcullis_reader password={} sslmode=disable",
            cluster().port(),
            portcullis_testkit::READER_PASSWORD
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let secrets = |rows: Vec<tokio_postgres::Row>| -> Vec<Option<String>> {
        rows.iter().map(|r| r.get(0)).collect()
    };
    let (inside, after) = read_around_a_local_path(&direct).await;
    assert!(secrets(inside.unwrap()).is_empty(), "the decoy is empty");
    assert_eq!(
        secrets(after.unwrap()),
        vec![Some("sk-live-123".to_owned())]
    );

    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let (inside, after) = read_around_a_local_path(&client).await;
    assert_eq!(db_error(&inside.unwrap_err()).0, "42501");
    let after = after.unwrap_err();
    assert_eq!(
        db_error(&after),
        (
            "42501".into(),
            "portcullis: select on app-db/public.api_keys denied (policy no-secrets)".into()
        )
    );
    cluster().superuser_sql("app", "drop schema decoy_path cascade");
}
