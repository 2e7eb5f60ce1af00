//! Bad input ends the offending connection with a clear error; everyone else
//! is still served and the upstream backend is released.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use portcullis_pg_wire::encode;
use portcullis_testkit::{Gateway, ADMIN_TOKEN, ALICE_TOKEN};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_do_not_disturb_a_healthy_session() {
    let gw = app_gateway();
    let healthy = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    // Garbage before startup: an HTTP request reads as a huge length.
    let mut r = Raw::connect(gw.pg_port);
    r.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.is_closed());
    // Garbage after login: an unknown message type.
    let mut r = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
    r.send(b"z\0\0\0\x08abcd");
    let (code, msg) = r.next_error().expect("a FATAL error");
    assert_eq!(code, "08P01");
    assert_eq!(
        msg,
        "portcullis: protocol violation: unknown message type 'z'"
    );
    assert!(r.is_closed());
    // Random bytes after login.
    let mut r = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    r.send(&noise);
    assert!(r.next_error().is_some());
    assert_eq!(
        healthy
            .query_one("select 5", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        5
    );
}

#[test]
fn oversized_messages_are_refused() {
    let gw = gateway()
        .app_db("app-db", cluster())
        .extra("[limits]\nmax_message_bytes = 65536\n")
        .start();
    let mut r = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
    let mut out = BytesMut::new();
    encode::query(&mut out, &format!("select '{}'", "a".repeat(100_000)));
    r.send(&out[..1000]);
    let (code, msg) = r.next_error().expect("refused");
    assert_eq!(code, "08P01");
    assert_eq!(
        msg,
        "portcullis: protocol violation: message of 100015 bytes exceeds the limit of 65536 bytes"
    );
    assert!(Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).is_ok());
}

#[test]
fn a_client_far_ahead_of_the_server_is_ended() {
    let gw = gateway()
        .app_db("app-db", cluster())
        .extra("[limits]\nmax_unanswered_messages = 64\n")
        .start();
    let mut r = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
    // A thousand pipelined Syncs in one write, none read back yet.
    let mut out = BytesMut::new();
    for _ in 0..1000 {
        out.extend_from_slice(b"S\0\0\0\x04"); // Sync
    }
    r.send(&out);
    let (code, msg) = r.next_error().expect("ended");
    assert_eq!(
        (code.as_str(), msg.as_str()),
        (
            "53400",
            "portcullis: the session sent more than 64 messages the server has not answered yet (limits.max_unanswered_messages); it is ended"
        )
    );
    assert!(r.is_closed());
    // Pipelining within the limit is served, and so is everyone else.
    let mut r = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
    let mut out = BytesMut::new();
    for _ in 0..60 {
        out.extend_from_slice(b"S\0\0\0\x04"); // Sync
    }
    r.send(&out);
    for _ in 0..60 {
        assert_eq!(r.read_msg().map(|(tag, _)| tag), Some(b'Z'));
    }
}

#[test]
fn stalled_clients_time_out() {
    let gw = gateway()
        .app_db("app-db", cluster())
        .extra("[limits]\nmessage_timeout_secs = 1\nlogin_timeout_secs = 2\n")
        .start();
    // Mid-message stall after login.
    let mut r = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
    r.send(b"Q\0\0\0\x64select");
    let started = Instant::now();
    let (code, msg) = r.next_error().expect("timed out");
    assert_eq!(
        (code.as_str(), msg.as_str()),
        (
            "08006",
            "portcullis: timed out waiting for the rest of a client message"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Stall before login: the connection is closed.
    let mut r = Raw::connect(gw.pg_port);
    r.send(b"\0\0");
    let started = Instant::now();
    assert!(r.is_closed());
    assert!(started.elapsed() < Duration::from_secs(10));
    let logged = eventually(Duration::from_secs(5), || {
        gw.log().contains("login timed out").then_some(())
    });
    assert!(logged.is_some(), "{}", gw.log());
}

/// A raw client whose `select <sleep>` is running upstream (one backend).
fn sleep_running_upstream(gw: &Gateway, sleep: &str) -> Raw {
    let mut r = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
    let mut out = BytesMut::new();
    encode::query(&mut out, &format!("select {sleep}"));
    r.send(&out);
    let running = eventually(Duration::from_secs(10), || {
        (backends_running(sleep) == 1).then_some(())
    });
    assert!(
        running.is_some(),
        "{sleep} never ran upstream:\n{}",
        gw.log()
    );
    r
}

/// Asserts that `select <sleep>` stops running upstream within 10 s.
fn assert_stops_running_upstream(gw: &Gateway, sleep: &str, what: &str) {
    let gone = eventually(Duration::from_secs(10), || {
        (backends_running(sleep) == 0).then_some(())
    });
    assert!(gone.is_some(), "{what}:\n{}", gw.log());
}

#[test]
fn a_query_running_when_the_gateway_stops_is_cancelled_upstream() {
    // The server would not notice the closed socket until pg_sleep ends:
    // only the cancel the gateway sends as the session ends stops it.
    let mut gw = app_gateway();
    let r = sleep_running_upstream(&gw, "pg_sleep(33)");
    assert!(gw.stop(), "gateway did not stop cleanly:\n{}", gw.log());
    assert_stops_running_upstream(
        &gw,
        "pg_sleep(33)",
        "the query still runs upstream after the gateway stopped",
    );
    drop(r);
}

#[test]
fn a_vanishing_client_releases_its_upstream_backend() {
    let gw = app_gateway();
    let r = sleep_running_upstream(&gw, "pg_sleep(32)");
    drop(r);
    assert_stops_running_upstream(&gw, "pg_sleep(32)", "upstream backend still running");
}

#[test]
fn fast_path_function_calls_are_refused() {
    let gw = app_gateway();
    let mut r = Raw::login(gw.pg_port, "app-db", ADMIN_TOKEN).unwrap();
    // FunctionCall for oid 1 with no arguments.
    r.send(b"F\0\0\0\x0e\0\0\0\x01\0\0\0\0\0\0");
    let (code, msg) = r.next_error().expect("refused");
    assert_eq!(code, "08P01");
    assert!(msg.contains("fast-path function calls"), "{msg}");
}

#[test]
fn configuration_errors_name_the_file_and_key() {
    let log = gateway()
        .connection("name = \"x\"\nkind = \"postgres\"\nupstream = \"127.0.0.1:1\"\ndatabase = \"d\"\nuser = \"u\"\npassword_env = \"PORTCULLIS_SURELY_UNSET\"\n")
        .start_expecting_failure();
    assert!(
        log.contains("portcullis.toml: connections[0].password_env: environment variable PORTCULLIS_SURELY_UNSET is not set"),
        "{log}"
    );
    let log = gateway()
        .policies("permit(principal, action == Action::\"conect\", resource);")
        .start_expecting_failure();
    assert!(log.contains("loading policies from"), "{log}");
    let log = gateway()
        .extra("[runtime]\nsession_threads = 5000\n")
        .start_expecting_failure();
    assert!(
        log.contains("portcullis.toml: runtime.session_threads: must be at most 1024"),
        "{log}"
    );
}

#[test]
fn a_statement_nested_thousands_deep_is_refused_and_the_gateway_lives() {
    let gw = app_gateway();
    let mut joins = "select 1 from pg_class c0".to_owned();
    for i in 1..=5_000 {
        joins.push_str(&format!(" join pg_class c{i} on true"));
    }
    // Long chains of joins and operators: libpg_query wrote such trees out
    // by unbounded C recursion and aborted the gateway; 40 joins took the
    // condition scan minutes.
    // A chain whose links each hold an OR, which the scanner's estimate
    // does not count: the stack given to the parser is what holds.
    let ors = format!(
        "select 1 from pg_class c{}",
        " join pg_class d on true or false".repeat(3_000)
    );
    for (i, sql) in [joins, ors].iter().enumerate() {
        let file = gw.dir().join(format!("deep-{i}.sql"));
        std::fs::write(&file, format!("{sql};\n")).unwrap();
        let out = portcullis_testkit::psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-f", file.to_str().unwrap()],
            None,
        );
        assert!(
            !out.ok && out.stderr.contains("nests too deeply to analyze"),
            "{out:?}"
        );
    }
    let mut chain = "select 1 from pg_class c0".to_owned();
    for i in 1..=30 {
        chain.push_str(&format!(" join pg_class c{i} on c{i}.oid = c0.oid"));
    }
    let started = Instant::now();
    let (_, out) = alice_psql(&gw, &format!("{chain} limit 1"));
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
    // Still serving.
    let (ok, out) = alice_psql(&gw, "select 'still-serving'");
    assert!(ok && out.contains("still-serving"), "{out}");
}
