//! Time-bound grants end to end: `portcullis request` asks, another
//! identity approves, the gateway creates a real upstream role for the
//! grantee's sessions, and at the grant's end it removes the role and
//! ends the sessions that ran as it. Judged by the server's own catalog.

use std::process::{Command, Stdio};
use std::time::Duration;

use portcullis_testkit::{Gateway, ALICE_TOKEN};

use crate::common::*;

const DAN: &str = "dan-token-7f21";
const ADMIN_PASSWORD: &str = "ADMIN-PW-51";

fn seed() {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        cluster().superuser_sql(
            "app",
            &format!(
                "create role gr_dba nologin; \
                 create role portcullis_admin login createrole password '{ADMIN_PASSWORD}'; \
                 create table public.gr_items (id int); \
                 insert into public.gr_items select generate_series(1, 10); \
                 grant select on public.gr_items to portcullis_reader, trust_user; \
                 grant select, delete on public.gr_items to gr_dba"
            ),
        );
    });
}

const POLICIES: &str = r#"
permit(principal in Group::"engineering",
       action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
permit(principal in Group::"engineering", action == Action::"execute",
       resource == Function::"app-db/pg_catalog.pg_sleep");
// Deletes only under a grant of gr_dba.
@id("deletes-under-grant")
permit(principal in Group::"engineering", action == Action::"delete",
       resource == Table::"app-db/public.gr_items")
when { context.grants.contains("gr_dba") };
// Asking for gr_dba needs a dba's approval.
@id("grants-need-dba")
@review("dba")
permit(principal in Group::"engineering", action == Action::"request_grant",
       resource == Connection::"app-db")
when { context has role && context.role == "gr_dba" };
"#;

/// A gateway whose grant roles are named `<prefix><id>`: each test's
/// gateway has its own, as gateways sharing an upstream must.
fn grant_gateway(prefix: &str) -> Gateway {
    seed();
    gateway()
        .connection(&format!(
            "name = \"app-db\"\nkind = \"postgres\"\nupstream = \"{}\"\ndatabase = \"app\"\n\
             user = \"portcullis_reader\"\npassword_env = \"PORTCULLIS_TEST_READER_PASSWORD\"\n\
             grant_admin_user = \"portcullis_admin\"\ngrant_admin_password_env = \"PC_ADMIN_PW\"\n\
             grant_roles = [\"gr_dba\"]\ngrant_role_prefix = \"{prefix}\"\n",
            cluster().addr()
        ))
        .env("PC_ADMIN_PW", ADMIN_PASSWORD)
        .policies(POLICIES)
        .extra("[[tokens]]\nuser = \"dan\"\ngroups = [\"dba\"]\ntoken = \"dan-token-7f21\"\n")
        .start()
}

fn cli(gw: &Gateway, token: &str, args: &[&str]) -> (bool, String) {
    api_cli(gw, token, args)
}

fn role_exists(name: &str) -> bool {
    cluster()
        .superuser_sql(
            "app",
            &format!("select count(*) from pg_roles where rolname = '{name}'"),
        )
        .trim()
        == "1"
}

fn items() -> u32 {
    let (ok, out) = direct_psql("select count(*) from public.gr_items");
    assert!(ok, "{out}");
    out.trim().parse().unwrap()
}

/// Asks for gr_dba for `duration` as alice; dan approves. Returns the id.
fn granted(gw: &Gateway, duration: &str) -> String {
    let (ok, out) = cli(
        gw,
        ALICE_TOKEN,
        &[
            "request",
            "--connection",
            "app-db",
            "--role",
            "gr_dba",
            "--for",
            duration,
            "--reason",
            "TICKET-9",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("is waiting for approval by dba"), "{out}");
    let id = out.split_whitespace().nth(1).expect("grant id").to_owned();
    // The grantee cannot approve their own request.
    let (ok, own) = cli(gw, ALICE_TOKEN, &["reviews", "approve", &id]);
    assert!(
        !ok && own.contains("nobody decides a review of their own request"),
        "{own}"
    );
    let (ok, out) = cli(gw, DAN, &["reviews", "approve", &id]);
    assert!(ok, "{out}");
    id
}

#[test]
fn a_grant_runs_sessions_as_a_real_role_that_is_gone_with_its_sessions_at_its_end() {
    let gw = grant_gateway("gr_run_");
    // Without a grant: policy refuses, and the service user could not anyway.
    let (ok, out) = alice_psql(&gw, "delete from public.gr_items where id = 1");
    assert!(!ok && out.contains("denied"), "{out}");
    let id = granted(&gw, "8s");
    let role = format!("gr_run_{id}");
    assert!(
        eventually(Duration::from_secs(15), || role_exists(&role).then_some(())).is_some(),
        "the grant's role was not created:\n{}",
        gw.log()
    );
    // A session started under the grant runs as its role, and may delete.
    let psql = Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "--no-align", "--tuples-only"])
        .arg(gw.conninfo("app-db", ""))
        .env("PGPASSWORD", ALICE_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = psql.stdin.as_ref().unwrap();
        stdin
            .write_all(
                b"select current_user;\ndelete from public.gr_items where id = 1;\nselect pg_catalog.pg_sleep(60);\n",
            )
            .unwrap();
    }
    // The grant ends: the role goes, and the session that ran as it ends.
    assert!(
        eventually(Duration::from_secs(30), || (!role_exists(&role))
            .then_some(()))
        .is_some(),
        "the grant's role outlived it:\n{}",
        gw.log()
    );
    let out = psql.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with(&format!("{role}\nDELETE 1")), "{stdout}");
    assert!(
        stderr.contains(&format!("NOTICE:  portcullis: grant {id} has ended")),
        "{stderr}"
    );
    assert!(stderr.contains("terminating connection"), "{stderr}");
    assert_eq!(items(), 9);
    // After it, policy refuses again, and the history keeps the grant.
    let (ok, out) = alice_psql(&gw, "delete from public.gr_items where id = 2");
    assert!(!ok && out.contains("denied"), "{out}");
    let (ok, list) = cli(&gw, DAN, &["grants", "list", "--all"]);
    assert!(ok, "{list}");
    assert!(list.contains("expired"), "{list}");
    assert_eq!(items(), 9);
}

#[test]
fn the_reconciler_removes_roles_no_grant_stands_behind_even_after_a_kill() {
    let mut gw = grant_gateway("gr_kill_");
    let id = granted(&gw, "10m");
    let role = format!("gr_kill_{id}");
    assert!(
        eventually(Duration::from_secs(15), || role_exists(&role).then_some(())).is_some(),
        "{}",
        gw.log()
    );
    // Killed while the grant holds; meanwhile a stray role appears, as a
    // crash between creating a role and recording its grant would leave.
    gw.signal("KILL");
    cluster().superuser_sql("app", "create role gr_kill_987654 login in role gr_dba");
    gw.restart();
    assert!(
        eventually(Duration::from_secs(15), || (!role_exists(
            "portcullis_grant_987654"
        ))
        .then_some(()))
        .is_some(),
        "the stray role survived the start-up reconciliation:\n{}",
        gw.log()
    );
    // The grant still holds, with a fresh password only this process
    // knows: once the reconciler has set it, the grantee's sessions run as
    // the role again (until then they run as the service user).
    assert!(role_exists(&role));
    let runs_as_role = eventually(Duration::from_secs(15), || {
        let (ok, out) = alice_psql(&gw, "select current_user");
        (ok && out.trim() == role).then_some(())
    });
    assert!(runs_as_role.is_some(), "{}", gw.log());
    let (ok, out) = cli(&gw, DAN, &["grants", "revoke", &id]);
    assert!(ok, "{out}");
    assert!(
        eventually(Duration::from_secs(15), || (!role_exists(&role))
            .then_some(()))
        .is_some(),
        "{}",
        gw.log()
    );
}

/// A grant role that cannot be dropped (it owns a type another object
/// depends on) is still stripped at its end (no login, no membership, no
/// backends, no gateway session), and holds up no other grant's role.
/// Red-team finding: one failed teardown stopped every other.
#[test]
fn a_grant_role_that_cannot_be_dropped_holds_nothing_and_holds_up_nothing() {
    let gw = grant_gateway("gr_trap_");
    let first = granted(&gw, "10m");
    let trapped = format!("gr_trap_{first}");
    assert!(
        eventually(Duration::from_secs(15), || role_exists(&trapped)
            .then_some(()))
        .is_some(),
        "{}",
        gw.log()
    );
    let psql = Command::new("psql")
        .args(["-X", "--no-align", "--tuples-only"])
        .arg(gw.conninfo("app-db", ""))
        .args(["-c", "select pg_catalog.pg_sleep(60)"])
        .env("PGPASSWORD", ALICE_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let backends = |role: &str| {
        cluster()
            .superuser_sql(
                "app",
                &format!("select count(*) from pg_stat_activity where usename = '{role}'"),
            )
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(15), || (backends(&trapped) == 1)
            .then_some(()))
        .is_some()
    );
    cluster().superuser_sql(
        "app",
        &format!(
            "create type public.{trapped}_t as (a int); alter type public.{trapped}_t owner to {trapped}; \
             create table public.{trapped}_tbl (x public.{trapped}_t)"
        ),
    );
    // Directly, the role's objects cannot be dropped.
    let out = cluster().superuser_sql_result("app", &format!("drop owned by {trapped}"));
    assert!(out.contains("cannot drop"), "{out}");
    let (ok, out) = cli(&gw, DAN, &["grants", "revoke", &first]);
    assert!(ok, "{out}");
    let stripped = |role: &str| {
        cluster()
            .superuser_sql(
                "app",
                &format!(
                    "select r.rolcanlogin, (select count(*) from pg_auth_members m join pg_roles g on g.oid = m.roleid \
                     where m.member = r.oid and g.rolname = 'gr_dba') from pg_roles r where r.rolname = '{role}'"
                ),
            )
            .trim()
            .to_owned()
    };
    assert!(
        eventually(Duration::from_secs(20), || (stripped(&trapped) == "f|0"
            && backends(&trapped) == 0)
            .then_some(()))
        .is_some(),
        "{} {}",
        stripped(&trapped),
        gw.log()
    );
    let out = psql.wait_with_output().unwrap();
    assert!(!out.status.success());
    // Another grant is still provisioned and removed.
    let second = granted(&gw, "10m");
    let other = format!("gr_trap_{second}");
    assert!(
        eventually(Duration::from_secs(40), || role_exists(&other)
            .then_some(()))
        .is_some(),
        "{}",
        gw.log()
    );
    let (ok, out) = cli(&gw, DAN, &["grants", "revoke", &second]);
    assert!(ok, "{out}");
    assert!(
        eventually(Duration::from_secs(40), || (!role_exists(&other))
            .then_some(()))
        .is_some(),
        "{}",
        gw.log()
    );
    cluster().superuser_sql(
        "app",
        &format!("drop table public.{trapped}_tbl; drop type public.{trapped}_t"),
    );
}

/// A portal bound, or a cursor declared, under a grant does not run after
/// the grant ends: it keeps what it was decided to run, so it is refused
/// once the policies or grants in force differ. Red-team finding. (Grants
/// that reach policies only: the session runs as the service user.)
#[tokio::test(flavor = "multi_thread")]
async fn portals_and_cursors_decided_under_a_grant_do_not_outlive_it() {
    seed();
    cluster().superuser_sql(
        "app",
        "drop table if exists public.gr_portal; create table public.gr_portal (id int); \
         insert into public.gr_portal select generate_series(1, 5); \
         grant all on public.gr_portal to portcullis_reader, trust_user",
    );
    let policies = r#"
permit(principal in Group::"engineering", action == Action::"connect",
       resource == Connection::"app-db");
permit(principal in Group::"engineering", action in [Action::"select", Action::"delete"],
       resource == Table::"app-db/public.gr_portal")
when { context.grants.contains("ops") };
@review("dba")
permit(principal in Group::"engineering", action == Action::"request_grant",
       resource == Connection::"app-db");
"#;
    let gw = gateway()
        .app_db("app-db", cluster())
        .policies(policies)
        .extra("[[tokens]]\nuser = \"dan\"\ngroups = [\"dba\"]\ntoken = \"dan-token-7f21\"\n")
        .start();
    let mut client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let grant = || {
        tokio::task::block_in_place(|| {
            let (ok, out) = cli(
                &gw,
                ALICE_TOKEN,
                &[
                    "request",
                    "--connection",
                    "app-db",
                    "--role",
                    "ops",
                    "--for",
                    "10m",
                ],
            );
            assert!(ok, "{out}");
            let id = out.split_whitespace().nth(1).unwrap().to_owned();
            let (ok, out) = cli(&gw, DAN, &["reviews", "approve", &id]);
            assert!(ok, "{out}");
            id
        })
    };
    let revoke = |id: &str| {
        tokio::task::block_in_place(|| {
            let (ok, out) = cli(&gw, DAN, &["grants", "revoke", id]);
            assert!(ok, "{out}");
        })
    };
    // A cursor declared under the grant.
    let id = grant();
    client.simple_query("begin").await.unwrap();
    client
        .simple_query("declare c cursor for select id from public.gr_portal")
        .await
        .unwrap();
    revoke(&id);
    let e = client.simple_query("fetch all from c").await.unwrap_err();
    assert!(
        db_error(&e)
            .1
            .contains("the policies or grants changed since portal \"c\""),
        "{e:?}"
    );
    client.simple_query("rollback").await.unwrap();
    // A portal bound under the grant.
    let id = grant();
    let tx = client.transaction().await.unwrap();
    let delete = tx
        .prepare("delete from public.gr_portal where id = 3")
        .await
        .unwrap();
    let portal = tx.bind(&delete, &[]).await.unwrap();
    revoke(&id);
    let e = tx.query_portal(&portal, 0).await.unwrap_err();
    assert!(
        db_error(&e)
            .1
            .contains("the policies or grants changed since portal"),
        "{e:?}"
    );
    drop(tx);
    assert_eq!(items_in("gr_portal"), 5);
    // Directly, the same portal deletes (the server keeps what it bound).
    let (ok, out) = direct_psql("begin; delete from public.gr_portal where id = 3; rollback");
    assert!(ok && out.contains("DELETE 1"), "{out}");
}

fn items_in(table: &str) -> u32 {
    let (ok, out) = direct_psql(&format!("select count(*) from public.{table}"));
    assert!(ok, "{out}");
    out.trim().parse().unwrap()
}
