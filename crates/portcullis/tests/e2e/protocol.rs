//! Protocol fidelity: where drivers rely on the server's exact behaviour
//! (the order of the end of a session, when a cancel counts as delivered),
//! the gateway behaves as the server does. Each test runs the same steps
//! straight against PostgreSQL first, so it checks the server's behaviour
//! is the one asserted.

use bytes::BytesMut;
use portcullis_pg_wire::encode;
use portcullis_testkit::ALICE_TOKEN;

use crate::common::*;

/// Logs in straight to the upstream as a role it trusts.
pub(crate) fn direct() -> (Raw, (i32, i32)) {
    let mut raw = Raw::connect(cluster().port());
    let mut out = BytesMut::new();
    encode::startup_message(&mut out, &[("user", "trust_user"), ("database", "app")]);
    raw.send(&out);
    let key = until_ready(&mut raw);
    (raw, key)
}

/// Through the gateway as alice.
pub(crate) fn through(port: u16) -> (Raw, (i32, i32)) {
    let mut raw = Raw::connect(port);
    let mut out = BytesMut::new();
    encode::startup_message(&mut out, &[("user", "raw"), ("database", "app-db")]);
    raw.send(&out);
    assert!(matches!(raw.read_msg(), Some((b'R', _))));
    let mut out = BytesMut::new();
    encode::password(&mut out, ALICE_TOKEN.as_bytes());
    raw.send(&out);
    let key = until_ready(&mut raw);
    (raw, key)
}

/// Reads to ReadyForQuery; returns the BackendKeyData seen.
fn until_ready(raw: &mut Raw) -> (i32, i32) {
    let mut key = (0, 0);
    while let Some((tag, body)) = raw.read_msg() {
        assert_ne!(tag, b'E', "{:?}", error_fields(&body));
        if tag == b'K' {
            key = (
                i32::from_be_bytes(body[0..4].try_into().unwrap()),
                i32::from_be_bytes(body[4..8].try_into().unwrap()),
            );
        }
        if tag == b'Z' {
            return key;
        }
    }
    panic!("closed before ReadyForQuery");
}

/// A query and Terminate in one write: the server answers the query, then
/// closes. The client must meet every answer before the end.
#[test]
fn terminate_after_a_running_query_is_answered_before_the_close() {
    let gw = app_gateway();
    let sessions: [(&str, Raw); 2] = [
        ("directly", direct().0),
        ("through the gateway", through(gw.pg_port).0),
    ];
    for (how, mut raw) in sessions {
        let mut out = BytesMut::new();
        encode::query(&mut out, "select 42 from pg_sleep(0.3)");
        encode::terminate(&mut out);
        raw.send(&out);
        let mut tags = Vec::new();
        while let Some((tag, _)) = raw.read_msg() {
            tags.push(tag);
        }
        assert!(
            tags.contains(&b'C') && tags.contains(&b'Z'),
            "{how}: the connection ended before the answer: {:?}",
            String::from_utf8_lossy(&tags)
        );
    }
}

/// Drivers (pgJDBC always) send a CancelRequest and wait for the server
/// to close that connection before they go on. A cancel of an idle
/// session must then be over: it may not cancel the next statement.
#[test]
fn a_cancel_is_delivered_before_its_connection_closes() {
    let gw = app_gateway();
    for round in 0..5 {
        for (how, port, (mut raw, key)) in [
            ("directly", cluster().port(), direct()),
            ("through the gateway", gw.pg_port, through(gw.pg_port)),
        ] {
            let mut cancel = Raw::connect(port);
            let mut out = BytesMut::new();
            encode::cancel_request(&mut out, key.0, key.1);
            cancel.send(&out);
            // The close is the client's only sign the cancel is done.
            assert!(cancel.is_closed());
            let mut out = BytesMut::new();
            encode::query(&mut out, "select 1 from pg_sleep(0.2)");
            raw.send(&out);
            while let Some((tag, body)) = raw.read_msg() {
                assert_ne!(
                    tag,
                    b'E',
                    "{how}, round {round}: the next statement was cancelled: {:?}",
                    error_fields(&body)
                );
                if tag == b'Z' {
                    break;
                }
            }
        }
    }
    // The gateway did not even pass those on: the sessions were idle.
    let (_, metrics) = curl(&gw, "/metrics", Some(portcullis_testkit::ADMIN_TOKEN));
    assert!(
        metrics.contains("portcullis_cancel_requests_dropped_total{why=\"idle\"} 5"),
        "{metrics}"
    );
}

/// The client's BackendKeyData carries the upstream's real process id, as
/// `pg_backend_pid()` and notifications report it; the secret is the
/// gateway's, and a cancel with the right pid but another secret is a
/// guess that does nothing.
#[test]
fn the_client_sees_one_backend_identity() {
    let gw = app_gateway();
    let (mut raw, key) = through(gw.pg_port);
    let mut out = BytesMut::new();
    encode::query(
        &mut out,
        "listen portcullis_ch; notify portcullis_ch; select pg_backend_pid()",
    );
    raw.send(&out);
    let (mut reported, mut notified) = (None, None);
    while let Some((tag, body)) = raw.read_msg() {
        assert_ne!(tag, b'E', "{:?}", error_fields(&body));
        match tag {
            b'A' => notified = Some(i32::from_be_bytes(body[0..4].try_into().unwrap())),
            b'D' => {
                let text = String::from_utf8_lossy(&body[6..]).into_owned();
                reported = Some(text.parse::<i32>().unwrap());
            }
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(
        reported,
        Some(key.0),
        "pg_backend_pid() and BackendKeyData differ"
    );
    assert_eq!(
        notified,
        Some(key.0),
        "the notification's sender is not this backend"
    );

    // A wrong secret with the right pid cancels nothing.
    let mut out = BytesMut::new();
    encode::query(&mut out, "select 1 from pg_sleep(0.3)");
    raw.send(&out);
    let mut cancel = Raw::connect(gw.pg_port);
    let mut guess = BytesMut::new();
    encode::cancel_request(&mut guess, key.0, key.1.wrapping_add(1));
    cancel.send(&guess);
    assert!(cancel.is_closed());
    while let Some((tag, body)) = raw.read_msg() {
        assert_ne!(
            tag,
            b'E',
            "a guessed secret cancelled: {:?}",
            error_fields(&body)
        );
        if tag == b'Z' {
            break;
        }
    }
    // Pools test a connection by terminating its own pid.
    let mut out = BytesMut::new();
    encode::query(&mut out, &format!("select pg_terminate_backend({})", key.0));
    raw.send(&out);
    let mut terminated = false;
    while let Some((tag, body)) = raw.read_msg() {
        if tag == b'E' {
            terminated |= error_fields(&body).0 == "57P01";
        }
    }
    assert!(
        terminated,
        "pg_terminate_backend of the session's own pid did not end it"
    );
}

/// Every field of the next ErrorResponse, and whether ReadyForQuery ended it.
fn next_error_fields(raw: &mut Raw) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    while let Some((tag, body)) = raw.read_msg() {
        if tag == b'E' {
            let mut at = 0;
            while at < body.len() && body[at] != 0 {
                let end = at + 1 + body[at + 1..].iter().position(|b| *b == 0).unwrap();
                fields.push((
                    body[at],
                    String::from_utf8_lossy(&body[at + 1..end]).into_owned(),
                ));
                at = end + 1;
            }
        }
        if tag == b'Z' {
            break;
        }
    }
    fields
}

/// A statement the grammar rejects gets the server's own syntax error:
/// 42601, its message and its cursor position, by simple query and by
/// Parse; nothing of it runs.
#[test]
fn syntax_errors_are_the_servers_own() {
    let gw = app_gateway();
    let texts = [
        "selec 1",
        "select 1; select (2",
        "select * from people where",
    ];
    let run = |raw: &mut Raw, extended: bool, sql: &str| {
        let mut out = BytesMut::new();
        if extended {
            encode::parse(&mut out, "", sql);
            encode::bind(&mut out, "", "");
            encode::execute(&mut out, "", 0);
            encode::sync(&mut out);
        } else {
            encode::query(&mut out, sql);
        }
        raw.send(&out);
        let mut fields = next_error_fields(raw);
        // Source file and line differ by build; what drivers read does not.
        fields.retain(|(code, _)| matches!(code, b'S' | b'V' | b'C' | b'M' | b'P'));
        fields
    };
    for extended in [false, true] {
        for sql in texts {
            let want = run(&mut direct().0, extended, sql);
            assert!(
                want.iter().any(|(c, v)| *c == b'C' && v == "42601"),
                "{want:?}"
            );
            let got = run(&mut through(gw.pg_port).0, extended, sql);
            assert_eq!(got, want, "{sql} (extended: {extended})");
        }
    }
}
