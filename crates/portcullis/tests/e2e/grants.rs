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
    let out = Command::new(BIN)
        .args(args)
        .args(["--api", &gw.api(), "--token", token])
        .output()
        .expect("portcullis");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
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
