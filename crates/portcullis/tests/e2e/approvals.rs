//! Reviews end to end with the real psql: a statement a `@review` permit
//! allows waits inside the client's session until someone else approves
//! it, and runs only then, once. Every outcome is judged by the upstream's
//! rows, read straight from PostgreSQL.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portcullis_testkit::{Gateway, ADMIN_TOKEN, ALICE_TOKEN};
use serde_json::Value;

use crate::common::*;

const DAN: &str = "dan-token-7f21";
const DORA: &str = "dora-token-1c9e";
const BOSS: &str = "boss-token-44aa";

/// Reviewers: dan and dora (dba); boss is a dba and an admin.
const TOKENS: &str = r#"
[[tokens]]
user = "dan"
groups = ["dba"]
token = "dan-token-7f21"

[[tokens]]
user = "dora"
groups = ["dba"]
token = "dora-token-1c9e"

[[tokens]]
user = "boss"
groups = ["dba", "admins", "engineering"]
token = "boss-token-44aa"
"#;

/// Engineers read; deleting from `table` needs `review` (annotations).
fn policies(table: &str, review: &str) -> String {
    format!(
        r#"
@id("engineers-read")
permit(principal in Group::"engineering",
       action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
permit(principal in Group::"admins", action == Action::"view_sessions",
       resource == Gateway::"portcullis");
{review}
@id("deletes-need-dba")
permit(principal in Group::"engineering", action == Action::"delete",
       resource == Table::"app-db/public.{table}");
"#
    )
}

fn reviewed_gateway(name: &str, review: &str) -> Gateway {
    gateway()
        .app_db("app-db", cluster())
        .policies(&policies(name, review))
        .extra(TOKENS)
        .start()
}

/// psql running `sql` through `gw` with `token`, in the background.
fn spawn_psql(gw: &Gateway, token: &str, sql: &str) -> Child {
    Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "--no-align", "--tuples-only"])
        .arg(gw.conninfo("app-db", ""))
        .args(["-c", sql])
        .env("PGPASSWORD", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql")
}

/// Waits for psql: (succeeded, stdout, stderr).
fn finish(child: Child) -> (bool, String, String) {
    let out = child.wait_with_output().expect("psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The open review as `token` sees it, once one is pending.
fn pending_review(gw: &Gateway, token: &str) -> Value {
    eventually(Duration::from_secs(20), || {
        let (code, body) = curl(gw, "/api/reviews", Some(token));
        assert_eq!(code, 200, "{body}");
        let list: Vec<Value> = serde_json::from_str(&body).unwrap();
        list.into_iter().find(|r| r["status"] == "pending")
    })
    .expect("a review is pending")
}

/// `portcullis reviews ARGS` against `gw` as `token`: (succeeded, output).
fn reviews_cli(gw: &Gateway, token: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["reviews"];
    all.extend_from_slice(args);
    api_cli(gw, token, &all)
}

fn id_of(review: &Value) -> String {
    review["id"].as_u64().unwrap().to_string()
}

#[test]
fn a_held_statement_runs_in_the_same_session_once_another_identity_approves() {
    table("rv_held", 3);
    let gw = reviewed_gateway("rv_held", r#"@review("dba")"#);
    let sql = "/* reason: TICKET-7 */ delete from public.rv_held where id = 1 returning id";
    let psql = spawn_psql(&gw, ALICE_TOKEN, sql);
    let review = pending_review(&gw, DAN);
    assert_eq!(review["requester"], "alice");
    assert_eq!(review["statement"], sql);
    assert_eq!(review["reason"], "TICKET-7");
    assert_eq!(review["policies"][0], "deletes-need-dba");
    assert_eq!(review["hash"].as_str().unwrap().len(), 64);
    // Nothing ran while it waits.
    assert_eq!(rows("rv_held"), 3);
    let id = id_of(&review);
    let approving = std::time::Instant::now();
    let (ok, out) = reviews_cli(&gw, DAN, &["approve", &id, "--reason", "checked"]);
    let cli_done = approving.elapsed();
    assert!(ok, "{out}");
    assert!(out.contains("approved by dan"), "{out}");
    let (ok, stdout, stderr) = finish(psql);
    // For the record: the approving command's run, and until psql's exit.
    eprintln!(
        "approve command: {cli_done:?}; to psql's exit: {:?}",
        approving.elapsed()
    );
    assert!(ok, "{stderr}");
    // The result arrives in the same session, as if nothing happened.
    assert_eq!(stdout.trim(), "1\nDELETE 1");
    assert!(
        stderr.contains(&format!(
            "NOTICE:  portcullis: review {id} is waiting for approval by dba (portcullis reviews approve {id})"
        )),
        "{stderr}"
    );
    assert_eq!(rows("rv_held"), 2);
    // The statement's record names the review that let it run.
    let recorded = eventually(Duration::from_secs(10), || {
        let (_, list) = curl(&gw, "/api/sessions?user=alice", Some(ADMIN_TOKEN));
        let list: Value = serde_json::from_str(&list).ok()?;
        let session = list[0]["id"].as_str()?.to_owned();
        let (_, detail) = curl(&gw, &format!("/api/sessions/{session}"), Some(ADMIN_TOKEN));
        let detail: Value = serde_json::from_str(&detail).ok()?;
        detail["statements"]
            .as_array()?
            .iter()
            .find(|st| st["review"].as_u64().map(|r| r.to_string()) == Some(id.clone()))
            .cloned()
    })
    .expect("a record naming the review");
    assert_eq!(recorded["text"], sql);
    assert_eq!(recorded["decision"]["allowed"], true);
    // Used: the review says so, and cannot be decided again.
    let (_, shown) = reviews_cli(&gw, DAN, &["show", &id]);
    assert!(shown.contains("(used)"), "{shown}");
    let (ok, out) = reviews_cli(&gw, DORA, &["approve", &id]);
    assert!(!ok && out.contains("can no longer be decided"), "{out}");
}

#[test]
fn a_denial_fails_the_statement_with_the_reviewers_reason() {
    table("rv_denied", 3);
    let gw = reviewed_gateway("rv_denied", r#"@review("dba")"#);
    let psql = spawn_psql(&gw, ALICE_TOKEN, "delete from public.rv_denied");
    let id = id_of(&pending_review(&gw, DAN));
    let (ok, out) = reviews_cli(&gw, DAN, &["deny", &id, "--reason", "not on a Friday"]);
    assert!(ok, "{out}");
    let (ok, _, stderr) = finish(psql);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "ERROR:  portcullis: review {id} was denied by dan: not on a Friday"
        )),
        "{stderr}"
    );
    assert_eq!(rows("rv_denied"), 3);
}

#[test]
fn a_wait_that_times_out_leaves_the_review_open_and_its_approval_runs_once() {
    table("rv_timeout", 5);
    let gw = reviewed_gateway("rv_timeout", "@review(\"dba\")\n@wait(\"2s\")");
    let sql = "delete from public.rv_timeout where id = 1";
    let (ok, _, stderr) = finish(spawn_psql(&gw, ALICE_TOKEN, sql));
    assert!(!ok);
    assert!(
        stderr.contains("portcullis: review 1 was not decided within 2s; it stays open"),
        "{stderr}"
    );
    assert_eq!(rows("rv_timeout"), 5);
    let (ok, out) = reviews_cli(&gw, DAN, &["approve", "1"]);
    assert!(ok, "{out}");
    // The same statement runs, without waiting.
    let (ok, _, stderr) = finish(spawn_psql(&gw, ALICE_TOKEN, sql));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("review 1 approved; running the statement"),
        "{stderr}"
    );
    assert_eq!(rows("rv_timeout"), 4);
    // Once: the next run asks again, and waits again.
    cluster().superuser_sql("app", "insert into rv_timeout values (1)");
    let (ok, _, stderr) = finish(spawn_psql(&gw, ALICE_TOKEN, sql));
    assert!(!ok);
    assert!(
        stderr.contains("review 2 was not decided within 2s"),
        "{stderr}"
    );
    assert_eq!(rows("rv_timeout"), 5);
    // Another statement does not ride on an approval.
    let (ok, out) = reviews_cli(&gw, DAN, &["approve", "2"]);
    assert!(ok, "{out}");
    let (ok, _, stderr) = finish(spawn_psql(
        &gw,
        ALICE_TOKEN,
        "delete from public.rv_timeout where id = 2",
    ));
    assert!(
        !ok && stderr.contains("review 3 was not decided"),
        "{stderr}"
    );
    assert_eq!(rows("rv_timeout"), 5);
}

#[test]
fn ctrl_c_withdraws_the_wait() {
    table("rv_cancel", 2);
    let gw = reviewed_gateway("rv_cancel", r#"@review("dba")"#);
    let psql = spawn_psql(&gw, ALICE_TOKEN, "delete from public.rv_cancel");
    let id = id_of(&pending_review(&gw, DAN));
    // psql's Ctrl-C: a CancelRequest on a new connection.
    let status = Command::new("kill")
        .args(["-INT", &psql.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, _, stderr) = finish(psql);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "portcullis: review {id} withdrawn: the client canceled the statement"
        )),
        "{stderr}"
    );
    let (_, shown) = reviews_cli(&gw, DAN, &["show", &id]);
    assert!(shown.contains("(withdrawn)"), "{shown}");
    assert!(
        shown.contains("withdrawn: the client canceled the statement"),
        "{shown}"
    );
    let (ok, out) = reviews_cli(&gw, DAN, &["approve", &id]);
    assert!(!ok && out.contains("is withdrawn"), "{out}");
    assert_eq!(rows("rv_cancel"), 2);
}

#[test]
fn nobody_approves_their_own_request_not_even_an_admin() {
    table("rv_self", 2);
    let gw = reviewed_gateway("rv_self", r#"@review("dba")"#);
    // boss is a dba and an admin, and asks.
    let psql = spawn_psql(&gw, BOSS, "delete from public.rv_self");
    let id = id_of(&pending_review(&gw, BOSS));
    let (ok, out) = reviews_cli(&gw, BOSS, &["approve", &id]);
    assert!(!ok, "{out}");
    assert!(out.contains("403"), "{out}");
    assert!(
        out.contains("nobody decides a review of their own request"),
        "{out}"
    );
    // An admin outside the reviewing group cannot either.
    let (ok, out) = reviews_cli(&gw, ADMIN_TOKEN, &["approve", &id]);
    assert!(!ok && out.contains("it needs approval by dba"), "{out}");
    // The requester cannot deny (or otherwise decide) it either.
    let (ok, _) = reviews_cli(&gw, BOSS, &["deny", &id]);
    assert!(!ok);
    assert_eq!(rows("rv_self"), 2);
    let (ok, out) = reviews_cli(&gw, DORA, &["approve", &id]);
    assert!(ok, "{out}");
    let (ok, _, stderr) = finish(psql);
    assert!(ok, "{stderr}");
    assert_eq!(rows("rv_self"), 0);
}

#[test]
fn two_approvals_need_two_people() {
    table("rv_two", 2);
    let gw = reviewed_gateway("rv_two", "@review(\"dba\")\n@approvals(\"2\")");
    let psql = spawn_psql(&gw, ALICE_TOKEN, "delete from public.rv_two");
    let id = id_of(&pending_review(&gw, DAN));
    let (ok, out) = reviews_cli(&gw, DAN, &["approve", &id]);
    assert!(ok, "{out}");
    let (ok, out) = reviews_cli(&gw, DAN, &["approve", &id]);
    assert!(!ok && out.contains("already approved"), "{out}");
    let (_, shown) = reviews_cli(&gw, DAN, &["show", &id]);
    assert!(shown.contains("(pending)"), "{shown}");
    assert_eq!(rows("rv_two"), 2);
    let (ok, out) = reviews_cli(&gw, DORA, &["approve", &id]);
    assert!(ok, "{out}");
    let (ok, _, stderr) = finish(psql);
    assert!(ok, "{stderr}");
    assert_eq!(rows("rv_two"), 0);
}

#[test]
fn inside_a_transaction_the_statement_is_refused_at_once_naming_its_review() {
    table("rv_tx", 2);
    let gw = reviewed_gateway("rv_tx", r#"@review("dba")"#);
    let script = "begin;\ndelete from public.rv_tx where id = 1;\ncommit;\n";
    let out = portcullis_testkit::psql(&gw.conninfo("app-db", ""), ALICE_TOKEN, &[], Some(script));
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("review 1 is open, but inside a transaction a statement is not held"),
        "{}",
        out.stderr
    );
    let (ok, out) = reviews_cli(&gw, DAN, &["approve", "1"]);
    assert!(ok, "{out}");
    let out = portcullis_testkit::psql(&gw.conninfo("app-db", ""), ALICE_TOKEN, &[], Some(script));
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(rows("rv_tx"), 1);
}

#[test]
fn a_review_survives_a_restart() {
    table("rv_restart", 2);
    let mut gw = reviewed_gateway("rv_restart", r#"@review("dba")"#);
    let sql = "delete from public.rv_restart where id = 2";
    let psql = spawn_psql(&gw, ALICE_TOKEN, sql);
    let id = id_of(&pending_review(&gw, DAN));
    assert!(gw.stop(), "{}", gw.log());
    let (ok, _, stderr) = finish(psql);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("the gateway is stopping; review {id} stays open")),
        "{stderr}"
    );
    gw.restart();
    let (_, shown) = reviews_cli(&gw, DAN, &["show", &id]);
    assert!(shown.contains("(pending)"), "{shown}");
    let (ok, out) = reviews_cli(&gw, DAN, &["approve", &id]);
    assert!(ok, "{out}");
    let (ok, _, stderr) = finish(spawn_psql(&gw, ALICE_TOKEN, sql));
    assert!(ok, "{stderr}");
    assert_eq!(rows("rv_restart"), 1);
}

/// The extended protocol (drivers): each Bind of a reviewed statement is
/// held with its parameters, so an approval runs one execution, with the
/// parameters the reviewer saw, and a prepared statement approved once
/// does not run again unreviewed.
#[tokio::test(flavor = "multi_thread")]
async fn a_driver_statement_is_held_per_execution_with_its_parameters() {
    table("rv_ext", 3);
    let gw = reviewed_gateway("rv_ext", "@review(\"dba\")\n@wait(\"20s\")");
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let delete = client
        .prepare("delete from public.rv_ext where id = $1")
        .await
        .unwrap();
    let running = {
        let delete = delete.clone();
        let client_ref = &client;
        async move { client_ref.execute(&delete, &[&1i32]).await }
    };
    let approve = async {
        let review = tokio::task::block_in_place(|| pending_review(&gw, DAN));
        // Binary parameters are shown as the bytes the server gets.
        assert_eq!(review["params"][0], "\\x00000001");
        let id = id_of(&review);
        tokio::task::block_in_place(|| reviews_cli(&gw, DAN, &["approve", &id]))
    };
    let (deleted, (ok, out)) = tokio::join!(running, approve);
    assert!(ok, "{out}");
    assert_eq!(deleted.unwrap(), 1);
    assert_eq!(rows("rv_ext"), 2);
    // The same prepared statement again is another execution: held again,
    // and denied this time.
    let running = client.execute(&delete, &[&2i32]);
    let deny = async {
        let review = tokio::task::block_in_place(|| pending_review(&gw, DAN));
        assert_eq!(review["params"][0], "\\x00000002");
        let id = id_of(&review);
        tokio::task::block_in_place(|| reviews_cli(&gw, DAN, &["deny", &id]))
    };
    let (refused, (ok, out)) = tokio::join!(running, deny);
    assert!(ok, "{out}");
    let (code, message) = db_error(&refused.unwrap_err());
    assert_eq!(code, "42501");
    assert!(message.contains("was denied by dan"), "{message}");
    assert_eq!(rows("rv_ext"), 2);
}

/// An approval names the pairs its review was for: the same text resolved
/// to another schema (a search_path change) is another request, held for
/// its own reviewers. Red-team finding: the approval used to carry over.
#[test]
fn an_approval_does_not_carry_to_the_same_text_resolved_elsewhere() {
    cluster().superuser_sql(
        "app",
        "create schema if not exists s2; grant usage on schema s2 to portcullis_reader, trust_user; \
         drop table if exists public.rv_sp, s2.rv_sp; \
         create table public.rv_sp (id int); create table s2.rv_sp (id int); \
         insert into public.rv_sp select generate_series(1, 3); \
         insert into s2.rv_sp select generate_series(1, 3); \
         grant all on public.rv_sp, s2.rv_sp to portcullis_reader, trust_user",
    );
    // Directly, the second text deletes s2's rows.
    let (ok, out) = direct_psql(
        "begin; set local search_path = s2, public; delete from rv_sp where id > 0; rollback",
    );
    assert!(ok && out.contains("DELETE 3"), "{out}");
    let policies = r#"
permit(principal in Group::"engineering",
       action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
@review("dba")
@wait("1s")
permit(principal in Group::"engineering", action == Action::"delete",
       resource in Connection::"app-db")
unless { resource == Table::"app-db/s2.rv_sp" };
@review("security")
@wait("1s")
permit(principal in Group::"engineering", action == Action::"delete",
       resource == Table::"app-db/s2.rv_sp");
"#;
    let gw = gateway()
        .app_db("app-db", cluster())
        .policies(policies)
        .extra(TOKENS)
        .start();
    let conn = gw.conninfo("app-db", "");
    let out = portcullis_testkit::psql(
        &conn,
        ALICE_TOKEN,
        &[],
        Some("begin;\ndelete from rv_sp where id > 0;\n"),
    );
    assert!(out.stderr.contains("review 1 is open"), "{}", out.stderr);
    let (ok, out) = reviews_cli(&gw, DAN, &["approve", "1"]);
    assert!(ok, "{out}");
    let out = portcullis_testkit::psql(
        &conn,
        ALICE_TOKEN,
        &[],
        Some("set search_path = s2, public;\ndelete from rv_sp where id > 0;\n"),
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("review 2 was not decided"),
        "{}",
        out.stderr
    );
    assert_eq!(rows("s2.rv_sp"), 3);
    assert_eq!(rows("public.rv_sp"), 3);
}

/// Parameters count byte for byte: a lookalike of an approved execution
/// (same first kilobyte, same length) is another request. Red-team
/// finding: the record's cut rendering was what the approval named.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_names_every_byte_of_the_parameters() {
    table("rv_long", 10);
    let gw = reviewed_gateway("rv_long", "@review(\"dba\")\n@wait(\"1s\")");
    let mut client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let delete = client
        .prepare("delete from public.rv_long where id = any(string_to_array($1, ',')::int[])")
        .await
        .unwrap();
    let approved = format!("{}1", "1,".repeat(520));
    let lookalike = format!("{}2,3,4,5,6,7,8,9,1", "1,".repeat(512));
    assert_eq!(approved.len(), lookalike.len());
    // Directly, the lookalike deletes nine rows.
    let (ok, out) = direct_psql(&format!(
        "begin; delete from public.rv_long where id = any(string_to_array('{lookalike}', ',')::int[]); rollback"
    ));
    assert!(ok && out.contains("DELETE 9"), "{out}");
    let tx = client.transaction().await.unwrap();
    let e = tx.execute(&delete, &[&approved]).await.unwrap_err();
    assert!(db_error(&e).1.contains("review 1 is open"), "{e:?}");
    tx.rollback().await.unwrap();
    let (ok, out) = tokio::task::block_in_place(|| reviews_cli(&gw, DAN, &["approve", "1"]));
    assert!(ok, "{out}");
    let e = client.execute(&delete, &[&lookalike]).await.unwrap_err();
    assert!(db_error(&e).1.contains("review 2 was not decided"), "{e:?}");
    assert_eq!(rows("rv_long"), 10);
    // The approved execution runs.
    assert_eq!(client.execute(&delete, &[&approved]).await.unwrap(), 1);
    assert_eq!(rows("rv_long"), 9);
}

/// What drivers send for one statement (Parse, Bind, Execute, Sync in one
/// write) is held like psql's query, though the Parse goes out first.
#[test]
fn a_statement_sent_in_one_extended_write_is_held() {
    table("rv_raw", 2);
    let gw = reviewed_gateway("rv_raw", r#"@review("dba")"#);
    let mut raw = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
    let mut out = bytes::BytesMut::new();
    portcullis_pg_wire::encode::parse(&mut out, "", "delete from public.rv_raw where id = 1");
    portcullis_pg_wire::encode::bind(&mut out, "", "");
    portcullis_pg_wire::encode::execute(&mut out, "", 0);
    portcullis_pg_wire::encode::sync(&mut out);
    raw.send(&out);
    let id = id_of(&pending_review(&gw, DAN));
    let (ok, text) = reviews_cli(&gw, DAN, &["approve", &id]);
    assert!(ok, "{text}");
    let mut seen = Vec::new();
    while let Some((tag, body)) = raw.read_msg() {
        seen.push((tag, String::from_utf8_lossy(&body).into_owned()));
        if tag == b'Z' {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|(t, b)| *t == b'N' && b.contains("is waiting for approval")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(t, b)| *t == b'C' && b.contains("DELETE 1")),
        "{seen:?}"
    );
    assert_eq!(rows("rv_raw"), 1);
}

/// A token for `subject` acted for by `actor` (RFC 8693 exchange).
fn exchanged(gw: &Gateway, subject: &str, actor: &str) -> String {
    let jwt = "urn:ietf:params:oauth:token-type:jwt";
    let out = Command::new("curl")
        .args(["-s", "-f"])
        .args([
            "--data-urlencode",
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange",
        ])
        .args(["--data-urlencode", &format!("subject_token={subject}")])
        .args(["--data-urlencode", &format!("subject_token_type={jwt}")])
        .args(["--data-urlencode", &format!("actor_token={actor}")])
        .args(["--data-urlencode", &format!("actor_token_type={jwt}")])
        .arg(format!("{}/oauth/token", gw.api()))
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("exchange failed: {out:?}"))
        .to_owned()
}

#[test]
fn neither_the_requester_nor_its_agent_approves_a_request_made_through_the_agent() {
    table("rv_agent", 2);
    let gw = gateway()
        .app_db("app-db", cluster())
        .policies(&policies("rv_agent", r#"@review("dba")"#))
        .extra(&format!(
            "{TOKENS}\n[[tokens]]\nuser = \"bot\"\ngroups = [\"dba\"]\ntoken = \"bot-token-90ac\"\n"
        ))
        .start();
    // boss (a dba) acts through the agent bot (also in dba).
    let boss_via_bot = exchanged(&gw, BOSS, "bot-token-90ac");
    let psql = spawn_psql(&gw, &boss_via_bot, "delete from public.rv_agent");
    let review = pending_review(&gw, DAN);
    assert_eq!(
        (review["requester"].as_str(), review["actor"].as_str()),
        (Some("boss"), Some("bot"))
    );
    let id = id_of(&review);
    for (who, token) in [
        ("boss", BOSS),
        ("boss through bot", boss_via_bot.as_str()),
        ("bot", "bot-token-90ac"),
    ] {
        let (ok, out) = reviews_cli(&gw, token, &["approve", &id]);
        assert!(!ok, "{who} approved: {out}");
        assert!(
            out.contains("nobody decides a review of their own request"),
            "{who}: {out}"
        );
    }
    assert_eq!(rows("rv_agent"), 2);
    let (ok, out) = reviews_cli(&gw, DAN, &["approve", &id]);
    assert!(ok, "{out}");
    let (ok, _, stderr) = finish(psql);
    assert!(ok, "{stderr}");
    assert_eq!(rows("rv_agent"), 0);
}
