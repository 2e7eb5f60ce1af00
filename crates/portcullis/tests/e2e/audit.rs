//! Every session and statement is recorded outside the target and served by
//! a policy-guarded API and CLI.

use std::process::Command;
use std::time::Duration;

use portcullis_testkit::{psql, ADMIN_TOKEN, ALICE_TOKEN, READER_PASSWORD};
use serde_json::Value;

use crate::common::*;

fn cli(gw: &portcullis_testkit::Gateway, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("PORTCULLIS_API", gw.api())
        .env("PORTCULLIS_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run portcullis");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_statements_are_recorded_and_shown() {
    let gw = app_gateway();
    // The startup user claims to be mallory; the token says alice.
    let conninfo = gw
        .conninfo("app-db", "application_name=audit-probe")
        .replace("user=whoever", "user=mallory");
    let out = psql(
        &conninfo,
        ALICE_TOKEN,
        &["-c", "select count(*) from people"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    let out = psql(
        &conninfo,
        ALICE_TOKEN,
        &["-c", "select * from no_such_table"],
        None,
    );
    assert!(!out.ok);
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let n: i64 = client
        .query_one("select count(*) from people where id <= $1", &[&7i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 7);
    drop(client);

    // Three sessions end up listed, newest first, each with its statement.
    let list = eventually(Duration::from_secs(10), || {
        let (ok, stdout, _) = cli(&gw, &["sessions", "list", "--json", "--user", "alice"]);
        let v: Value = serde_json::from_str(&stdout).ok()?;
        let arr = v.as_array()?.clone();
        (ok && arr.len() == 3
            && arr
                .iter()
                .all(|s| s["ended_at"].is_string() && s["statement_count"] == 1))
        .then_some(arr)
    })
    .unwrap_or_else(|| {
        panic!(
            "sessions not recorded: {}",
            cli(&gw, &["sessions", "list", "--json"]).1
        )
    });
    let psql_first = &list[2];
    assert_eq!(psql_first["client_user"], "mallory");
    assert_eq!(psql_first["user"], "alice");
    assert_eq!(psql_first["application_name"], "audit-probe");
    assert_eq!(
        psql_first["connect_policies"],
        serde_json::json!(["engineering-uses-app"])
    );

    let show = |id: &Value| -> Value {
        let (ok, stdout, stderr) = cli(&gw, &["sessions", "show", "--json", id.as_str().unwrap()]);
        assert!(ok, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let s = show(&psql_first["id"]);
    let st = &s["statements"][0];
    assert_eq!(st["kind"], "query");
    assert_eq!(st["text"], "select count(*) from people");
    assert_eq!(st["rows"], 1);
    assert_eq!(st["error"], Value::Null);
    assert_eq!(st["decision"]["allowed"], true);

    let s = show(&list[1]["id"]);
    assert_eq!(
        s["statements"][0]["error"],
        "42P01: relation \"no_such_table\" does not exist"
    );

    let s = show(&list[0]["id"]);
    let st = &s["statements"][0];
    assert_eq!(st["kind"], "execute");
    assert_eq!(st["text"], "select count(*) from people where id <= $1");
    // tokio-postgres sends parameters in binary: recorded as hex.
    assert_eq!(st["params"], serde_json::json!(["\\x00000007"]));
    assert_eq!(st["rows"], 1);

    // The human-readable forms work too.
    let (ok, text, _) = cli(&gw, &["sessions", "list"]);
    assert!(
        ok && text.contains("alice") && text.contains("client terminated"),
        "{text}"
    );
    let (ok, text, _) = cli(
        &gw,
        &["sessions", "show", psql_first["id"].as_str().unwrap()],
    );
    assert!(
        ok && text.contains("select count(*) from people")
            && text.contains("client said user=mallory"),
        "{text}"
    );
}

#[test]
fn the_api_is_guarded_by_policy() {
    let gw = app_gateway();
    let (code, body) = curl(&gw, "/api/sessions", None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl(&gw, "/api/sessions", Some("bogus-token"));
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl(&gw, "/api/sessions", Some(ALICE_TOKEN));
    assert_eq!(code, 403);
    assert!(
        body.contains("view_sessions on the API denied for alice (no policy permits it)"),
        "{body}"
    );
    let (code, body) = curl(&gw, "/api/sessions", Some(ADMIN_TOKEN));
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with('['));
    let (code, _) = curl(&gw, "/api/sessions/not-a-uuid", Some(ADMIN_TOKEN));
    assert_eq!(code, 400);
    let (code, _) = curl(
        &gw,
        "/api/sessions/01a22280-e3e9-7365-a985-0e22daba8c5e",
        Some(ADMIN_TOKEN),
    );
    assert_eq!(code, 404);
    let (code, body) = curl(&gw, "/healthz", None);
    assert_eq!((code, body.trim()), (200, "ok"));
}

#[test]
fn metrics_count_sessions_statements_failures_and_decisions() {
    let gw = app_gateway();
    assert!(
        psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", "select 1"],
            None
        )
        .ok
    );
    assert!(
        !psql(
            &gw.conninfo("app-db", ""),
            "wrong-token",
            &["-c", "select 1"],
            None
        )
        .ok
    );
    let (code, body) = curl(&gw, "/metrics", None);
    assert_eq!(code, 200);
    for needle in [
        "portcullis_sessions_total{protocol=\"postgres\"} 1",
        "portcullis_statements_total{protocol=\"postgres\"} 1",
        "portcullis_auth_failures_total{reason=\"invalid\"}",
        "portcullis_decisions_total{action=\"connect\",outcome=\"allow\"} 1",
        "portcullis_bytes_total{direction=\"to_client\"}",
        "portcullis_upstream_connect_seconds",
        // Exported from the start; one session never fills the queue.
        "portcullis_audit_queue_waits_total 0",
    ] {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
}

#[test]
fn secrets_never_reach_logs_store_or_api() {
    let mut gw = app_gateway();
    assert!(
        psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", "select 1"],
            None
        )
        .ok
    );
    assert!(
        !psql(
            &gw.conninfo("app-db", ""),
            "wrong-token-xyz",
            &["-c", "select 1"],
            None
        )
        .ok
    );
    let (_, api) = curl(&gw, "/api/sessions", Some(ADMIN_TOKEN));
    assert!(gw.stop(), "gateway did not stop cleanly:\n{}", gw.log());
    let mut haystack = gw.log() + &api;
    for f in ["portcullis.db", "portcullis.db-wal"] {
        if let Ok(b) = std::fs::read(gw.dir().join("data").join(f)) {
            haystack.push_str(&String::from_utf8_lossy(&b));
        }
    }
    assert!(
        haystack.contains("alice"),
        "the store should hold the session"
    );
    for secret in [READER_PASSWORD, ALICE_TOKEN, "wrong-token-xyz"] {
        assert!(!haystack.contains(secret), "{secret} leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_sessions_clearly_and_records_them() {
    let mut gw = app_gateway();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    client.query_one("select 1", &[]).await.unwrap();
    assert!(gw.stop(), "gateway did not stop cleanly:\n{}", gw.log());
    let e = client
        .query_one("select 1", &[])
        .await
        .expect_err("session ended");
    // The FATAL arrives before the close; tokio-postgres reports either.
    let text = format!("{e:?}");
    assert!(text.contains("57P01") || e.is_closed(), "{text}");
    let db = std::fs::read(gw.dir().join("data").join("portcullis.db")).unwrap_or_default();
    let wal = std::fs::read(gw.dir().join("data").join("portcullis.db-wal")).unwrap_or_default();
    let all = String::from_utf8_lossy(&db).into_owned() + &String::from_utf8_lossy(&wal);
    assert!(
        all.contains("the session was ended by the gateway"),
        "end reason not recorded"
    );
}

#[test]
fn statement_recording_can_be_turned_off_but_sessions_are_always_recorded() {
    let gw = gateway()
        .app_db("app-db", cluster())
        .extra("[audit]\nrecord_statements = false\n")
        .start();
    assert!(
        psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", "select 1", "-c", "select 2"],
            None
        )
        .ok
    );
    let listed = eventually(Duration::from_secs(10), || {
        let (_, body) = curl(&gw, "/api/sessions", Some(ADMIN_TOKEN));
        let v: Value = serde_json::from_str(&body).ok()?;
        let s = v.as_array()?.first()?.clone();
        s["ended_at"].is_string().then_some(s)
    })
    .expect("session recorded");
    assert_eq!(listed["user"], "alice");
    assert_eq!(listed["statement_count"], 0);
    let (_, metrics) = curl(&gw, "/metrics", None);
    assert!(
        metrics.contains("portcullis_statements_total{protocol=\"postgres\"} 2"),
        "{metrics}"
    );
}
