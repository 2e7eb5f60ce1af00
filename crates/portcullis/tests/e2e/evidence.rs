//! Evidence: the hash chain, signed checkpoints and `portcullis audit
//! verify` against tampering done with the sqlite3 CLI on the store itself,
//! strict recording under SIGKILL checked against the upstream's own
//! statement log, retention, and the checkpoint export.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use portcullis_testkit::{psql, ClusterOptions, Gateway, PgCluster, ADMIN_TOKEN, ALICE_TOKEN};
use tokio_postgres::NoTls;

use crate::common::*;

/// `portcullis audit verify` on the gateway's config (and its store).
fn verify(config: &Path, extra: &[&str]) -> (bool, String) {
    let config = config.to_str().unwrap();
    let mut args = vec!["audit", "verify", "--config", config];
    args.extend(extra);
    cli(&args)
}

/// Runs `sql` on the store at `db` with the sqlite3 CLI.
fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 must be installed");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A copy of a stopped gateway's data_dir and config, to tamper with.
struct Copy {
    dir: tempfile::TempDir,
}

impl Copy {
    fn of(gw: &Gateway) -> Copy {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("keys")).unwrap();
        for f in ["portcullis.db", "keys/evidence-ed25519.pk8"] {
            std::fs::copy(gw.dir().join("data").join(f), data.join(f)).unwrap();
        }
        // What is committed but not yet checkpointed into the file itself.
        let wal = gw.dir().join("data").join("portcullis.db-wal");
        if wal.exists() {
            std::fs::copy(wal, data.join("portcullis.db-wal")).unwrap();
        }
        // The gateway's own config (data_dir is relative to it).
        std::fs::copy(
            gw.dir().join("portcullis.toml"),
            dir.path().join("portcullis.toml"),
        )
        .unwrap();
        Copy { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("portcullis.toml")
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("data").join("portcullis.db")
    }
}

/// A gateway that ran a few statements and stopped cleanly.
fn stopped_gateway_with_history() -> Gateway {
    let mut gw = gateway().app_db("app-db", cluster()).start();
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &["-c", "select 1", "-c", "select 2", "-c", "select 3"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(gw.stop(), "the gateway stops cleanly");
    gw
}

#[test]
fn verify_passes_untouched_evidence_and_names_each_kind_of_tampering() {
    let gw = stopped_gateway_with_history();
    let clean = Copy::of(&gw);
    let (ok, out) = verify(&clean.config(), &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("final") && out.contains("evidence intact"),
        "{out}"
    );
    let last: u64 = sqlite(&clean.db(), "SELECT max(seq) FROM evidence")
        .parse()
        .unwrap();
    let command: u64 = sqlite(
        &clean.db(),
        "SELECT min(seq) FROM evidence WHERE kind = 'command_started'",
    )
    .parse()
    .unwrap();
    assert!(command > 1 && command < last);
    let n = command.to_string();
    let cases: Vec<(&str, String, String)> = vec![
        (
            "edited",
            format!("UPDATE evidence SET line = replace(line, 'select 1', 'select 9') WHERE seq = {n}"),
            format!("BAD record {n}: its content does not match its hash"),
        ),
        (
            "deleted",
            format!("DELETE FROM evidence WHERE seq = {n}"),
            format!("BAD record {}: records {n}..{n} are missing", command + 1),
        ),
        (
            "reordered",
            format!(
                "UPDATE evidence SET seq = -1 WHERE seq = {n};
                 UPDATE evidence SET seq = {n} WHERE seq = {next};
                 UPDATE evidence SET seq = {next} WHERE seq = -1;",
                next = command + 1
            ),
            format!("BAD record {n}"),
        ),
        (
            "inserted",
            format!(
                "UPDATE evidence SET seq = seq + 1000000 WHERE seq >= {n};
                 UPDATE evidence SET seq = seq - 999999 WHERE seq >= 1000000;
                 INSERT INTO evidence SELECT {n}, kind, session_id, user, connection,
                     replace(line, 'select 1', 'drop table people'), hash FROM evidence WHERE seq = {n1};",
                n1 = command + 1
            ),
            format!("BAD record {n}"),
        ),
        (
            "truncated",
            format!("DELETE FROM evidence WHERE seq > {}", last - 2),
            format!("covers records up to {last}, which the store does not hold"),
        ),
        (
            "truncated with its final checkpoint",
            format!(
                "DELETE FROM evidence WHERE seq > {}; DELETE FROM checkpoints WHERE number = (SELECT max(number) FROM checkpoints);",
                last - 2
            ),
            "does not end with a final checkpoint".into(),
        ),
        (
            "renumbered checkpoints",
            "UPDATE checkpoints SET number = number + 1000000".into(),
            "columns disagree with its signed line".into(),
        ),
        (
            "an index that hides a statement from lookups",
            format!(
                "DROP INDEX evidence_session;
                 CREATE INDEX evidence_session ON evidence (session_id, kind) WHERE session_id IS NOT NULL AND seq <> {n};
                 PRAGMA writable_schema = ON;
                 UPDATE sqlite_master SET sql = 'CREATE INDEX evidence_session ON evidence (session_id, kind) WHERE session_id IS NOT NULL' WHERE name = 'evidence_session';"
            ),
            "fails SQLite's integrity check".into(),
        ),
        (
            "emptied",
            "DELETE FROM evidence; DELETE FROM checkpoints;".into(),
            "the store holds no records".into(),
        ),
        (
            "a listing column",
            "UPDATE evidence SET user = 'mallory' WHERE kind = 'session_started'".into(),
            "user or connection column disagrees".into(),
        ),
        (
            "a checkpoint",
            "UPDATE checkpoints SET line = replace(line, '\"final\":true', '\"final\":false')".into(),
            "is not signed by key".into(),
        ),
    ];
    for (what, sql, expected) in cases {
        let copy = Copy::of(&gw);
        sqlite(&copy.db(), &sql);
        let (ok, out) = verify(&copy.config(), &[]);
        assert!(!ok, "{what}: verification passed\n{out}");
        assert!(
            out.contains(&expected),
            "{what}: expected {expected:?} in\n{out}"
        );
        assert!(out.contains("evidence NOT intact"), "{what}: {out}");
    }
}

#[test]
fn the_exported_checkpoints_catch_a_tail_removed_with_its_final_checkpoint() {
    let export = tempfile::tempdir().unwrap();
    let file = export.path().join("checkpoints.jsonl");
    let mut gw = gateway()
        .app_db("app-db", cluster())
        .extra(&format!("[audit]\ncheckpoint_file = {file:?}\n"))
        .start();
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &["-c", "select 1"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(gw.stop());
    let copy = Copy::of(&gw);
    let file = file.to_str().unwrap();
    assert!(verify(&copy.config(), &["--checkpoints", file]).0);
    // Removed so that the store alone reads as a crash.
    sqlite(
        &copy.db(),
        "DELETE FROM evidence WHERE seq > (SELECT max(seq) - 3 FROM evidence);
         DELETE FROM checkpoints WHERE number = (SELECT max(number) FROM checkpoints);",
    );
    let (ok, out) = verify(&copy.config(), &["--checkpoints", file, "--live"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("was exported but is not in the store (deleted)"),
        "{out}"
    );
}

#[test]
fn a_running_gateway_verifies_live_and_checkpoints_even_when_idle() {
    let gw = gateway()
        .app_db("app-db", cluster())
        .extra("[audit]\ncheckpoint_interval = \"1s\"\n")
        .start();
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &["-c", "select 1"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    let config = gw.dir().join("portcullis.toml");
    let db = gw.dir().join("data").join("portcullis.db");
    // Idle, it still seals: a checkpoint each interval covers the head.
    let sealed = eventually(Duration::from_secs(10), || {
        let head = sqlite(&db, "SELECT max(seq) FROM evidence");
        let upto = sqlite(&db, "SELECT max(upto) FROM checkpoints");
        let numbers: u64 = sqlite(&db, "SELECT count(*) FROM checkpoints")
            .parse()
            .ok()?;
        (head == upto && numbers >= 3).then_some(())
    });
    assert!(sealed.is_some(), "no checkpoint sealed the idle chain");
    let (ok, out) = verify(&config, &["--live"]);
    assert!(ok, "{out}");
}

#[test]
fn retention_prunes_behind_a_checkpoint_and_verification_still_passes() {
    let mut gw = gateway()
        .app_db("app-db", cluster())
        .extra("[audit]\ncheckpoint_interval = \"1s\"\ncheckpoint_every = 5\nretention = \"2s\"\n")
        .start();
    for i in 0..4 {
        let out = psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", &format!("select {i}")],
            None,
        );
        assert!(out.ok, "{}", out.stderr);
    }
    let db = gw.dir().join("data").join("portcullis.db");
    let pruned = eventually(Duration::from_secs(20), || {
        let first: u64 = sqlite(&db, "SELECT min(seq) FROM evidence").parse().ok()?;
        (first > 10).then_some(first)
    });
    assert!(pruned.is_some(), "retention pruned nothing:\n{}", gw.log());
    assert!(gw.stop());
    let (ok, out) = verify(&gw.dir().join("portcullis.toml"), &[]);
    assert!(ok, "{out}");
    assert!(out.contains("retention removed records before"), "{out}");
    // Pruning by hand, without the retention record, is deletion.
    let copy = Copy::of(&gw);
    sqlite(&copy.db(), "DELETE FROM evidence WHERE kind = 'retention'");
    assert!(!verify(&copy.config(), &[]).0);
}

/// Statements the upstream logged (`log_statement = all`) that carry
/// `marker`, as their text.
fn upstream_statements(cluster: &PgCluster, marker: &str) -> Vec<String> {
    cluster
        .log()
        .lines()
        .filter_map(|l| {
            l.split_once("statement: ")
                .map(|(_, s)| s.trim().to_owned())
        })
        .filter(|s| s.contains(marker))
        .collect()
}

/// Strict recording: a SIGKILL under load loses no statement the upstream
/// received. Checked against the upstream's own statement log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_no_statement_the_upstream_received() {
    let own = PgCluster::start(ClusterOptions {
        extra_conf: "log_statement = 'all'\n".into(),
        ..Default::default()
    });
    let mut gw = gateway().app_db("app-db", &own).start();
    let marker = format!("ev{}", std::process::id());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let conninfo = format!("{} password={ALICE_TOKEN}", gw.conninfo("app-db", ""));
        let marker = marker.clone();
        tasks.push(tokio::spawn(async move {
            let Ok((client, conn)) = tokio_postgres::connect(&conninfo, NoTls).await else {
                return;
            };
            tokio::spawn(conn);
            for i in 0..100_000 {
                let sql = format!("select {i} /* {marker}-{t}-{i} */");
                if client.simple_query(&sql).await.is_err() {
                    return;
                }
            }
        }));
    }
    let config = gw.dir().join("portcullis.toml");
    let db = gw.dir().join("data").join("portcullis.db");
    eventually(Duration::from_secs(30), || {
        let n: u64 = sqlite(
            &db,
            "SELECT count(*) FROM evidence WHERE kind = 'command_started'",
        )
        .parse()
        .ok()?;
        (n >= 1000).then_some(())
    })
    .expect("statements were recorded under load");
    gw.signal("KILL");
    futures_util::future::join_all(tasks).await;
    let received = upstream_statements(&own, &marker);
    assert!(received.len() >= 1000, "{}", received.len());
    // Records staged but not yet committed when it was killed are
    // committed as it opens the store again.
    gw.restart();
    let recorded: std::collections::HashSet<String> = sqlite(
        &db,
        "SELECT json_extract(line, '$.body.text') FROM evidence WHERE kind IN ('command', 'command_started')",
    )
    .lines()
    .map(str::to_owned)
    .collect();
    let lost: Vec<&String> = received.iter().filter(|s| !recorded.contains(*s)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} statements the upstream received have no record, e.g. {:?}",
        lost.len(),
        received.len(),
        lost.first()
    );
    // And who ran them was safe before the first of them: every session's
    // start precedes its statements in the chain.
    let early = sqlite(
        &db,
        "SELECT count(*) FROM evidence c WHERE c.kind = 'command_started' AND NOT EXISTS \
         (SELECT 1 FROM evidence s WHERE s.kind = 'session_started' AND s.session_id = c.session_id AND s.seq < c.seq)",
    );
    assert_eq!(
        early, "0",
        "statements were recorded before their session's start"
    );
    // The killed run left no final checkpoint: the restart says so, seals
    // it, and ends the sessions it left open.
    assert!(gw
        .log()
        .contains("the previous gateway run did not stop cleanly"));
    assert!(gw
        .log()
        .contains("ended sessions left open by an earlier gateway process"));
    assert!(gw.stop());
    let (ok, out) = verify(&config, &[]);
    assert!(ok, "{out}");
}

#[test]
fn replay_prints_the_session_as_it_happened_and_export_writes_each_statement() {
    let policies = format!(
        "{SELECT_ONLY}\npermit(principal == User::\"admin\", action, resource == Gateway::\"portcullis\");"
    );
    let gw = app_gateway_with(&policies, "");
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &[
            "-c",
            "select name from people where id <= 2",
            "-c",
            "select 42",
            "-c",
            "delete from people where id = 1",
        ],
        None,
    );
    assert!(!out.ok, "the delete is denied");
    // Records reach the store's tables a few milliseconds behind.
    let id = eventually(Duration::from_secs(10), || {
        let (_, body) = curl(&gw, "/api/sessions?user=alice", Some(ADMIN_TOKEN));
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        list[0]["id"].as_str().map(str::to_owned)
    })
    .expect("the session is listed");
    let ended = eventually(Duration::from_secs(10), || {
        let (_, body) = curl(&gw, &format!("/api/sessions/{id}"), Some(ADMIN_TOKEN));
        let detail: serde_json::Value = serde_json::from_str(&body).ok()?;
        detail["end_reason"].is_string().then_some(detail)
    })
    .expect("the session ended");
    let (ok, replayed) = api_cli(&gw, ADMIN_TOKEN, &["replay", &id]);
    assert!(ok, "{replayed}");
    // Every statement, in order, with its decision and outcome.
    let mut at = 0;
    for st in ended["statements"].as_array().unwrap() {
        let text = st["text"].as_str().unwrap();
        let found = replayed[at..]
            .find(text)
            .unwrap_or_else(|| panic!("{text:?} is missing or out of order in\n{replayed}"));
        at += found;
    }
    assert!(replayed.contains("query allow"), "{replayed}");
    assert!(replayed.contains("query deny"), "{replayed}");
    assert!(replayed.contains("→ 2 rows"), "{replayed}");
    assert!(replayed.contains("→ error 42501"), "{replayed}");
    assert!(
        replayed.contains("session ended: client terminated"),
        "{replayed}"
    );

    let (ok, jsonl) = api_cli(
        &gw,
        ADMIN_TOKEN,
        &["sessions", "export", "--format", "jsonl", "--user", "alice"],
    );
    assert!(ok, "{jsonl}");
    let rows: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{jsonl}");
    assert_eq!(rows[2]["statement"]["decision"]["allowed"], false);
    let (ok, denied) = api_cli(
        &gw,
        ADMIN_TOKEN,
        &[
            "sessions",
            "export",
            "--format",
            "csv",
            "--decision",
            "deny",
        ],
    );
    assert!(ok, "{denied}");
    let lines: Vec<&str> = denied.lines().collect();
    assert_eq!(lines.len(), 2, "{denied}");
    assert!(lines[0].starts_with("session_id,user,"), "{denied}");
    assert!(
        lines[1].contains("delete from people where id = 1"),
        "{denied}"
    );
}

/// A collector on loopback that answers every POST with 200 and keeps the
/// bodies: enough HTTP/1.1 for one client with keep-alive.
fn collector() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    kept.lock().unwrap().push(String::from_utf8(body).unwrap());
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, bodies)
}

#[test]
fn sinks_copy_every_record_and_checkpoint_to_a_rotated_file_syslog_and_http() {
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("evidence.jsonl");
    let syslog = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (http_port, bodies) = collector();
    let mut gw = gateway()
        .app_db("app-db", cluster())
        .extra(&format!(
            "[audit]\n\
             [[audit.sinks]]\nkind = \"jsonl\"\npath = {file:?}\nmax_size = \"4KiB\"\nkeep = 2\n\
             [[audit.sinks]]\nkind = \"syslog\"\naddress = \"{}\"\n\
             [[audit.sinks]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{http_port}/ingest\"\n",
            syslog.local_addr().unwrap()
        ))
        .start();
    for i in 0..20 {
        let out = psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", &format!("select {i} as sink_marker")],
            None,
        );
        assert!(out.ok, "{}", out.stderr);
    }
    assert!(gw.stop());
    let chain: Vec<String> = sqlite(
        &gw.dir().join("data").join("portcullis.db"),
        "SELECT line FROM evidence ORDER BY seq",
    )
    .lines()
    .map(str::to_owned)
    .collect();
    // The file: rotated at 4 KiB, the newest files holding the chain's
    // newest lines exactly, and the final checkpoint last.
    let rotated = std::fs::read_to_string(out_dir.path().join("evidence.jsonl.1")).unwrap();
    let current = std::fs::read_to_string(&file).unwrap();
    assert!(rotated.len() <= 4096 + 2048, "{}", rotated.len());
    let copied: Vec<&str> = rotated.lines().chain(current.lines()).collect();
    let records: Vec<&str> = copied
        .iter()
        .copied()
        .filter(|l| !l.starts_with("{\"kind\":\"checkpoint\""))
        .collect();
    assert!(chain.ends_with(&records.iter().map(|l| l.to_string()).collect::<Vec<_>>()));
    assert!(
        copied.last().unwrap().contains("\\\"final\\\":true"),
        "{copied:?}"
    );
    // Syslog: RFC 5424 messages carrying the same lines.
    let mut buf = [0u8; 65536];
    let n = syslog.recv(&mut buf).unwrap();
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(message.starts_with("<134>1 "), "{message}");
    assert!(
        message.contains(" portcullis ") && message.contains("{\"seq\":"),
        "{message}"
    );
    // HTTP: every record, in batches of JSON lines.
    let posted: Vec<String> = bodies
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| !l.starts_with("{\"kind\":\"checkpoint\""))
        .collect();
    assert_eq!(posted, chain);
}

/// Parse with one parameter of type `oid`, Bind it to `value`, Sync: no
/// Execute.
fn bind_without_execute(oid: u32, value: &str) -> bytes::BytesMut {
    use bytes::BufMut;
    let mut out = bytes::BytesMut::new();
    let sql = "select $1";
    out.put_u8(b'P');
    out.put_u32((4 + 1 + sql.len() + 1 + 2 + 4) as u32);
    out.put_u8(0);
    out.extend_from_slice(sql.as_bytes());
    out.put_u8(0);
    out.put_u16(1);
    out.put_u32(oid);
    out.put_u8(b'B');
    out.put_u32((4 + 1 + 1 + 2 + 2 + 4 + value.len() + 2) as u32);
    out.put_u8(0);
    out.put_u8(0);
    out.put_u16(0);
    out.put_u16(1);
    out.put_u32(value.len() as u32);
    out.extend_from_slice(value.as_bytes());
    out.put_u16(0);
    portcullis_pg_wire::encode::sync(&mut out);
    out
}

/// Reads messages up to ReadyForQuery; the first error's fields, if any.
fn until_ready(raw: &mut Raw) -> Option<(String, String)> {
    let mut error = None;
    while let Some((tag, body)) = raw.read_msg() {
        if tag == b'E' && error.is_none() {
            error = Some(error_fields(&body));
        }
        if tag == b'Z' {
            break;
        }
    }
    error
}

/// A Bind runs code (here a domain's check) with no Execute after it: it
/// is a command, journaled before it is forwarded, like any statement.
#[test]
fn a_bind_without_execute_runs_code_and_is_recorded_before_it_is_forwarded() {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        cluster().superuser_sql(
            "app",
            "create table bind_effects (v text); \
             create function bind_side(text) returns bool language plpgsql security definer \
               as $$ begin insert into bind_effects values ($1); return true; end $$; \
             create domain bind_checked as text check (bind_side(value));",
        );
    });
    let oid: u32 = cluster()
        .superuser_sql("app", "select 'bind_checked'::regtype::oid")
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap();
    let effects = || cluster().superuser_sql("app", "select string_agg(v, ',') from bind_effects");
    // Straight to the server: the check runs at Bind.
    let mut direct = Raw::connect(cluster().port());
    let mut out = bytes::BytesMut::new();
    portcullis_pg_wire::encode::startup_message(
        &mut out,
        &[("user", "trust_user"), ("database", "app")],
    );
    direct.send(&out);
    assert!(until_ready(&mut direct).is_none());
    direct.send(&bind_without_execute(oid, "direct-bind"));
    assert_eq!(until_ready(&mut direct), None);
    assert!(effects().contains("direct-bind"), "{}", effects());
    // Through the gateway it runs too, and the store holds it.
    let gw = gateway().app_db("app-db", cluster()).start();
    let mut raw = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
    raw.send(&bind_without_execute(oid, "gateway-bind"));
    assert_eq!(until_ready(&mut raw), None);
    assert!(effects().contains("gateway-bind"), "{}", effects());
    let db = gw.dir().join("data").join("portcullis.db");
    let started = sqlite(
        &db,
        "SELECT json_extract(line, '$.body.kind') || ' ' || json_extract(line, '$.body.params') \
         FROM evidence WHERE kind = 'command_started'",
    );
    assert!(started.contains("bind [\"gateway-bind\"]"), "{started}");
    let finished: u64 = sqlite(
        &db,
        "SELECT count(*) FROM evidence WHERE kind = 'command_finished'",
    )
    .parse()
    .unwrap();
    assert!(finished >= 1);
}

/// A run that starts after a clean stop and is killed before its first
/// checkpoint is a crash, not tampering: the next start says "unclean" and
/// the evidence, once sealed again, verifies.
#[test]
fn a_crash_after_a_clean_restart_is_a_crash_not_tampering() {
    let mut gw = gateway().app_db("app-db", cluster()).start();
    // Right after the listeners open: a SIGTERM this early once found no
    // handler yet and killed the gateway (seen in CI under load).
    assert!(gw.stop(), "{}", gw.log());
    gw.restart();
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &["-c", "select 1"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    gw.signal("KILL");
    gw.restart();
    assert!(gw.stop());
    assert!(!gw
        .log()
        .contains("something other than the gateway wrote it"));
    let db = gw.dir().join("data").join("portcullis.db");
    let stops = sqlite(
        &db,
        "SELECT group_concat(json_extract(line, '$.body.previous_stop')) FROM evidence WHERE kind = 'gateway_started'",
    );
    assert_eq!(stops, "none,clean,unclean");
    let (ok, out) = verify(&gw.dir().join("portcullis.toml"), &[]);
    assert!(ok, "{out}");
}

/// Two gateways on one data_dir would each continue the chain from where
/// they found it: the second is refused.
#[test]
fn a_second_gateway_on_the_same_data_dir_is_refused() {
    let gw = gateway().app_db("app-db", cluster()).start();
    let log = gateway()
        .app_db("app-db", cluster())
        .data_dir(&gw.dir().join("data"))
        .start_expecting_failure();
    assert!(
        log.contains("another gateway is running with data_dir"),
        "{log}"
    );
}
