//! Statements are read in the session's client encoding, as the server
//! reads them, and a change of encoding counts once the server confirms
//! it. Each case first shows, straight against PostgreSQL, that the bytes
//! sent name the forbidden table when read as the server reads them.

use std::io::Write;
use std::process::{Command, Stdio};

use portcullis_testkit::ALICE_TOKEN;

use crate::common::*;
use crate::protocol::{direct, through};

const SECRET: &str = "ENCODED-SECRET-7c1e";

/// `café` is allowed; `cafÃ©` is forbidden. Its name, in UTF-8, is the
/// bytes `caf\xc3\x83\xc2\xa9`; read as LATIN1, the bytes `caf\xc3\xa9`
/// spell it too, and as UTF-8 they spell `café`.
const POLICIES: &str = r#"
permit(principal, action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
forbid(principal, action, resource == Table::"app-db/public.cafÃ©");
"#;

fn seed() {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        cluster().superuser_sql(
            "app",
            &format!(
                "create table \"café\" (w text); \
                 insert into \"café\" values ('allowed-row'); \
                 create table \"cafÃ©\" (w text); \
                 insert into \"cafÃ©\" values ('{SECRET}'); \
                 grant select on \"café\", \"cafÃ©\" to portcullis_reader, trust_user"
            ),
        );
    });
}

/// psql with `PGCLIENTENCODING=encoding` running `script` (raw bytes in
/// that encoding): (succeeded, stdout and stderr bytes).
fn psql_in(conninfo: &str, password: &str, encoding: &str, script: &[u8]) -> (bool, Vec<u8>) {
    let mut child = Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-f", "-", conninfo])
        .env("PGPASSWORD", password)
        .env("PGCLIENTENCODING", encoding)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut all = out.stdout;
    all.extend_from_slice(&out.stderr);
    (out.status.success(), all)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn direct_conninfo() -> String {
    format!(
        "host=127.0.0.1 port={} dbname=app user=trust_user",
        cluster().port()
    )
}

#[test]
fn statements_are_read_in_the_sessions_client_encoding() {
    seed();
    let gw = app_gateway_with(POLICIES, "");
    let via = gw.conninfo("app-db", "");
    // In LATIN1, `caf\xe9` is café, and `caf\xc3\xa9` is cafÃ©.
    let forbidden = b"select w from \"caf\xc3\xa9\";\n";
    let (ok, out) = psql_in(&direct_conninfo(), "", "LATIN1", forbidden);
    assert!(
        ok && contains(&out, SECRET.as_bytes()),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let (ok, out) = psql_in(&via, ALICE_TOKEN, "LATIN1", forbidden);
    assert!(
        !ok && !contains(&out, SECRET.as_bytes()),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        contains(&out, b"select on app-db/public.caf\xc3\xa9 denied"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    let (ok, out) = psql_in(
        &via,
        ALICE_TOKEN,
        "LATIN1",
        b"select '\xe9t\xe9:' || w from \"caf\xe9\";\n",
    );
    assert!(
        ok && contains(&out, b"\xe9t\xe9:allowed-row"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // Names the server accepts for the encodings, multi-byte ones too.
    for (encoding, text) in [
        ("ISO-8859-15", &b"\xa4"[..]),
        ("WIN1251", b"\xe0\xe1"),
        ("KOI8R", b"\xc1\xc2"),
        ("EUC_JP", b"\xa4\xa2\x8e\xb1"),
        ("EUC_KR", b"\xb0\xa1"),
    ] {
        let mut script = b"select 'x' || '".to_vec();
        script.extend_from_slice(text);
        script.extend_from_slice(b"' as word;\n");
        let (ok, out) = psql_in(&via, ALICE_TOKEN, encoding, &script);
        assert!(
            ok && contains(&out, text),
            "{encoding}: {}",
            String::from_utf8_lossy(&out)
        );
    }
    // psql's \encoding waits for the server, then the new one holds.
    let (ok, out) = psql_in(
        &via,
        ALICE_TOKEN,
        "UTF8",
        b"\\encoding LATIN1\nselect w from \"caf\xe9\";\n",
    );
    assert!(
        ok && contains(&out, b"allowed-row"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

fn query(sql: &[u8]) -> Vec<u8> {
    let mut out = vec![b'Q'];
    out.extend_from_slice(&(sql.len() as u32 + 5).to_be_bytes());
    out.extend_from_slice(sql);
    out.push(0);
    out
}

/// Every DataRow value and error message up to the `n`th ReadyForQuery,
/// or to the end of the connection.
fn answers(raw: &mut Raw, mut n: usize) -> String {
    let mut seen = String::new();
    while let Some((tag, body)) = raw.read_msg() {
        match tag {
            b'D' => seen.push_str(&String::from_utf8_lossy(&body)),
            b'E' => seen.push_str(&format!("{:?}", error_fields(&body))),
            b'Z' => {
                n -= 1;
                if n == 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    seen
}

/// A `SET client_encoding` pipelined with the statement it would change
/// the reading of: the gateway cannot know the server's encoding for the
/// second message until the first is answered.
#[test]
fn a_change_of_encoding_counts_once_the_server_confirms_it() {
    seed();
    let mut pipelined = query(b"set client_encoding to 'LATIN1'");
    pipelined.extend(query(b"select w from \"caf\xc3\xa9\""));
    let (mut raw, _) = direct();
    raw.send(&pipelined);
    assert!(answers(&mut raw, 2).contains(SECRET));

    let gw = app_gateway_with(POLICIES, "");
    let (mut raw, _) = through(gw.pg_port);
    raw.send(&pipelined);
    let seen = answers(&mut raw, 2);
    assert!(!seen.contains(SECRET), "{seen}");
    assert!(
        seen.contains("change of client_encoding was unanswered"),
        "{seen}"
    );
    assert!(raw.is_closed());

    // Once the server has answered, the new encoding holds.
    let (mut raw, _) = through(gw.pg_port);
    raw.send(&query(b"set client_encoding to 'LATIN1'"));
    answers(&mut raw, 1);
    raw.send(&query(b"select w from \"caf\xe9\""));
    assert!(answers(&mut raw, 1).contains("allowed-row"));
    raw.send(&query(b"select w from \"caf\xc3\xa9\""));
    let seen = answers(&mut raw, 1);
    assert!(!seen.contains(SECRET) && seen.contains("42501"), "{seen}");
}

/// A statement prepared earlier that changes the encoding when EXECUTEd:
/// the change is unanswered until the EXECUTE's own answer, as for a SET.
#[test]
fn an_encoding_change_run_by_execute_counts_once_answered() {
    seed();
    // LATIN1 at login; the EXECUTE switches to UTF8, in which the next
    // message's bytes spell the forbidden cafÃ©. Read as LATIN1 they name
    // a table that does not exist.
    let login = |port: u16, db: &str, user: &str, token: Option<&str>| {
        let mut raw = Raw::connect(port);
        let mut out = bytes::BytesMut::new();
        portcullis_pg_wire::encode::startup_message(
            &mut out,
            &[
                ("user", user),
                ("database", db),
                ("client_encoding", "LATIN1"),
            ],
        );
        raw.send(&out);
        if let Some(token) = token {
            assert!(matches!(raw.read_msg(), Some((b'R', _))));
            let mut out = bytes::BytesMut::new();
            portcullis_pg_wire::encode::password(&mut out, token.as_bytes());
            raw.send(&out);
        }
        answers(&mut raw, 1);
        raw
    };
    let prepare = query(b"prepare switch as select set_config('client_encoding', 'UTF8', false)");
    let mut pipelined = query(b"execute switch");
    pipelined.extend(query(b"select w from \"caf\xc3\x83\xc2\xa9\""));

    let mut raw = login(cluster().port(), "app", "trust_user", None);
    raw.send(&prepare);
    answers(&mut raw, 1);
    raw.send(&pipelined);
    assert!(answers(&mut raw, 2).contains(SECRET));

    let gw = app_gateway_with(POLICIES, "");
    let mut raw = login(gw.pg_port, "app-db", "raw", Some(ALICE_TOKEN));
    raw.send(&prepare);
    answers(&mut raw, 1);
    raw.send(&pipelined);
    let seen = answers(&mut raw, 2);
    assert!(!seen.contains(SECRET), "{seen}");
    assert!(
        seen.contains("change of client_encoding was unanswered"),
        "{seen}"
    );
}
