//! Load and faults, bounded and on loopback: hundreds of concurrent
//! sessions, an upstream that restarts, a gateway killed mid-load, and
//! clients that trickle bytes.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_testkit::{psql, ClusterOptions, PgCluster, ADMIN_TOKEN, ALICE_TOKEN};
use serde_json::Value;
use tokio_postgres::NoTls;

use crate::common::*;

const SESSIONS: usize = 500;

/// Sessions and statements the API lists for alice.
fn recorded(gw: &portcullis_testkit::Gateway) -> (usize, u64) {
    let (code, body) = curl(
        gw,
        "/api/sessions?user=alice&limit=10000",
        Some(ADMIN_TOKEN),
    );
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let list = list.as_array().unwrap();
    let statements = list
        .iter()
        .map(|s| s["statement_count"].as_u64().unwrap())
        .sum();
    (list.len(), statements)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_sessions_are_all_answered_and_recorded() {
    let gw = gateway().app_db("app-db", cluster()).start();
    let marker = format!("load{}", std::process::id());
    let all_connected = Arc::new(tokio::sync::Barrier::new(SESSIONS));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let conninfo = format!(
            "{} password={ALICE_TOKEN} application_name={marker}",
            gw.conninfo("app-db", "")
        );
        let all_connected = all_connected.clone();
        let marker = marker.clone();
        tasks.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await?;
            tokio::spawn(conn);
            // Every session is open at once before any statement runs.
            all_connected.wait().await;
            let i = i as i32;
            // Simple protocol, extended protocol, a transaction, a denial.
            let rows = client
                .simple_query(&format!("select {i} as n, '{marker}'"))
                .await?;
            let n = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            });
            assert_eq!(n.as_deref(), Some(i.to_string().as_str()));
            let doubled: i32 = client.query_one("select $1::int * 2", &[&i]).await?.get(0);
            assert_eq!(doubled, i * 2);
            client
                .batch_execute("begin; select count(*) from people; commit")
                .await?;
            let e = client.simple_query("selec 1").await.unwrap_err();
            assert_eq!(db_error(&e).0, "42601");
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!("{SESSIONS} sessions x 4 statements in {elapsed:?}");
    // Every session and statement is recorded: 4 texts (the transaction
    // is one simple query) plus the extended protocol's Execute.
    let (sessions, statements) = eventually(Duration::from_secs(30), || {
        let r = recorded(&gw);
        (r.0 == SESSIONS && r.1 >= (SESSIONS * 4) as u64).then_some(r)
    })
    .unwrap_or_else(|| panic!("not everything was recorded: {:?}", recorded(&gw)));
    assert_eq!(sessions, SESSIONS);
    assert_eq!(statements, (SESSIONS * 4) as u64);
    // No upstream backend outlives its client.
    let left = eventually(Duration::from_secs(20), || {
        let n = backends_of(&marker);
        (n == 0).then_some(n)
    });
    assert_eq!(left, Some(0), "upstream backends leaked");
}

/// Upstream backends whose application_name is `marker`.
fn backends_of(marker: &str) -> u64 {
    cluster()
        .superuser_sql(
            "postgres",
            &format!("select count(*) from pg_stat_activity where application_name = '{marker}'"),
        )
        .trim()
        .parse()
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_restart_ends_sessions_clearly_and_new_ones_work_after() {
    let own = PgCluster::start(ClusterOptions::default());
    let gw = gateway().app_db("app-db", &own).start();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let n: i64 = client
        .query_one("select count(*) from people", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100);
    own.stop();
    let e = client.simple_query("select 1").await.unwrap_err();
    // The server's own shutdown notice or the gateway's, never a hang.
    let text = e.to_string();
    assert!(
        e.as_db_error().is_some() || e.is_closed() || text.contains("closed"),
        "{e:?}"
    );
    // While it is down, new sessions are refused with the reason.
    let e = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap_err();
    let (code, msg) = db_error(&e);
    assert_eq!(code, "08001");
    assert!(msg.contains("cannot reach upstream of app-db"), "{msg}");
    own.restart();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let n: i64 = client
        .query_one("select count(*) from people", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_restarts_with_every_recorded_statement_intact() {
    let mut gw = gateway().app_db("app-db", cluster()).start();
    // Load from several sessions while the gateway is killed.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let conninfo = format!("{} password={ALICE_TOKEN}", gw.conninfo("app-db", ""));
        tasks.push(tokio::spawn(async move {
            let Ok((client, conn)) = tokio_postgres::connect(&conninfo, NoTls).await else {
                return 0u64;
            };
            tokio::spawn(conn);
            let mut done = 0;
            for i in 0..10_000i32 {
                if client.query_one("select $1::int", &[&i]).await.is_err() {
                    break;
                }
                done += 1;
            }
            done
        }));
    }
    // Wait until statements have been committed to the store.
    let before = eventually(Duration::from_secs(30), || {
        let (_, n) = recorded(&gw);
        (n >= 200).then_some(n)
    })
    .expect("statements were recorded under load");
    gw.signal("KILL");
    let answered: u64 = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert!(answered >= before, "{answered} answered, {before} recorded");
    gw.restart();
    assert!(gw
        .log()
        .contains("ended sessions left open by an earlier gateway process"));
    let (sessions, after) = recorded(&gw);
    assert_eq!(sessions, 8);
    assert!(
        after >= before,
        "recorded statements were lost: {before} before, {after} after"
    );
    // Every record reads back whole.
    let (code, body) = curl(&gw, "/api/sessions?user=alice&limit=100", Some(ADMIN_TOKEN));
    assert_eq!(code, 200);
    for s in serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
    {
        let id = s["id"].as_str().unwrap();
        let (code, detail) = curl(&gw, &format!("/api/sessions/{id}"), Some(ADMIN_TOKEN));
        assert_eq!(code, 200, "{detail}");
        let detail: Value = serde_json::from_str(&detail).unwrap();
        assert!(detail["end_reason"].as_str().is_some(), "{detail}");
        for st in detail["statements"].as_array().unwrap() {
            assert_eq!(st["text"], "select $1::int");
        }
    }
    // And the restarted gateway serves.
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &["-c", "select 41 + 1"],
        None,
    );
    assert!(out.ok && out.stdout.trim() == "42", "{}", out.stderr);
}

#[test]
fn trickling_clients_do_not_starve_the_others() {
    let gw = gateway()
        .app_db("app-db", cluster())
        .extra("[limits]\nlogin_timeout_secs = 2\nmessage_timeout_secs = 2\n")
        .start();
    // 200 clients that send their startup packet one byte at a time, slowly.
    let mut slow: Vec<std::net::TcpStream> = (0..200)
        .map(|_| {
            let s = std::net::TcpStream::connect(("127.0.0.1", gw.pg_port)).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
            s
        })
        .collect();
    for s in &mut slow {
        let _ = s.write_all(&[0]);
    }
    // Meanwhile real clients get through at once.
    let started = Instant::now();
    for _ in 0..5 {
        let out = psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", "select 1"],
            None,
        );
        assert!(out.ok, "{}", out.stderr);
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // After the login timeout the trickling clients have been dropped.
    std::thread::sleep(Duration::from_secs(3));
    let mut closed = 0;
    for s in &mut slow {
        use std::io::{ErrorKind, Read};
        let mut buf = [0u8; 256];
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                // The gateway may say why before it closes.
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => {
                    closed += 1;
                    break;
                }
            }
        }
    }
    assert_eq!(closed, slow.len(), "trickling clients were left open");
}

/// A small tmpfs mounted for one test, so the store's disk can be filled
/// under a running gateway. (A read-only remount is refused while the
/// store has files open for writing; a full disk fails the same writes.)
/// Mounting needs root, as the test suite runs.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs() -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-store-")
            .tempdir()
            .unwrap()
            .keep();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount must be installed");
        assert!(
            ok.success(),
            "mounting a tmpfs needs root (the test suite runs as root)"
        );
        Mount(dir)
    }

    /// Fills what is left of the disk (again: SQLite may free a little
    /// when a failed transaction rolls back).
    fn fill(&self) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut f = std::fs::File::create(self.0.join(format!("filler-{n}"))).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        for e in std::fs::read_dir(&self.0).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("filler-") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_disk_stops_statements_until_it_takes_writes_again() {
    let disk = Mount::tmpfs();
    let gw = gateway()
        .app_db("app-db", cluster())
        .data_dir(&disk.0)
        .start();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    client.simple_query("select 1").await.unwrap();
    // Let the first records reach the store before the disk fills.
    eventually(Duration::from_secs(10), || {
        (recorded(&gw).1 >= 1).then_some(())
    })
    .expect("the first statement was recorded");
    disk.fill();
    // The statement in flight as the disk fills may run (its record waits
    // for room); once a write has failed, nothing runs unrecorded.
    let second_ran = client.simple_query("select 2").await.is_ok();
    let refused = eventually(Duration::from_secs(10), || {
        disk.fill();
        let out = psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", "select 3"],
            None,
        );
        (!out.ok).then_some(out.stderr)
    })
    .expect("statements kept running on a store that cannot write");
    assert!(
        refused.contains("the audit store is unavailable; refusing to run unrecorded"),
        "{refused}"
    );
    let e = client.simple_query("select 4").await.unwrap_err();
    let said = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(
        said.contains("audit store is unavailable") || e.is_closed(),
        "{e:?}"
    );
    let (code, _) = curl(&gw, "/healthz", None);
    assert_eq!(code, 503);
    assert!(gw.log().contains("audit write failed"));
    // Space again: the held batch is written and sessions run again.
    disk.free();
    let back = eventually(Duration::from_secs(15), || {
        let out = psql(
            &gw.conninfo("app-db", ""),
            ALICE_TOKEN,
            &["-c", "select 5"],
            None,
        );
        out.ok.then_some(out.stdout)
    });
    assert_eq!(back.as_deref().map(str::trim), Some("5"));
    let (code, _) = curl(&gw, "/healthz", None);
    assert_eq!(code, 200);
    // Every statement the client saw answered is recorded: a record that
    // waited for room was kept and written once there was some.
    let (code, body) = curl(&gw, "/api/sessions?user=alice", Some(ADMIN_TOKEN));
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let first = list.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, detail) = curl(&gw, &format!("/api/sessions/{first}"), Some(ADMIN_TOKEN));
    let detail: Value = serde_json::from_str(&detail).unwrap();
    let texts: Vec<&str> = detail["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert!(texts.contains(&"select 1"), "{texts:?}");
    assert!(
        !second_ran || texts.contains(&"select 2"),
        "{texts:?}\n{}",
        gw.log()
    );
}
