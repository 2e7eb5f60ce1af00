//! What psql and drivers do keeps working through the gateway.

use std::time::{Duration, Instant};

use futures_util::{pin_mut, StreamExt};
use portcullis_testkit::{psql, ALICE_TOKEN};
use tokio_postgres::NoTls;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_prepared_binary_and_pipelined() {
    let gw = app_gateway();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.expect("connect");
    let stmt = client
        .prepare("select $1::int4 + 1, $2::text, $3::bytea")
        .await
        .unwrap();
    let row = client
        .query_one(&stmt, &[&41i32, &"hé", &vec![0u8, 255]])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hé");
    assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 255]);

    // Concurrent queries on one client are pipelined by tokio-postgres.
    let futs = (0..20).map(|i| {
        let client = &client;
        async move {
            let r = client
                .query_one("select $1::int8 * 2", &[&(i as i64)])
                .await
                .unwrap();
            r.get::<_, i64>(0)
        }
    });
    let results = futures_util::future::join_all(futs).await;
    assert_eq!(results, (0..20).map(|i| i * 2).collect::<Vec<i64>>());

    // A portal read in pieces (PortalSuspended) inside a transaction.
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    let portal = tx
        .bind("select g from generate_series(1, 10) g", &[])
        .await
        .unwrap();
    let first = tx.query_portal(&portal, 4).await.unwrap();
    let rest = tx.query_portal(&portal, 0).await.unwrap();
    assert_eq!((first.len(), rest.len()), (4, 6));
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_keep_their_status() {
    let gw = app_gateway();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.expect("connect");
    client
        .batch_execute("begin; create temp table tx_probe(a int)")
        .await
        .unwrap();
    let e = client
        .batch_execute("select 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(db_error(&e).0, "22012");
    let e = client
        .batch_execute("select 1")
        .await
        .expect_err("aborted transaction");
    assert_eq!(db_error(&e).0, "25P02");
    client.batch_execute("rollback").await.unwrap();
    assert_eq!(
        client
            .query_one("select 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
}

#[test]
fn copy_in_and_out_with_psql() {
    let gw = app_gateway();
    let rows: String = (1..=1000).map(|i| format!("{i}\tlabel {i}\n")).collect();
    let script = format!(
        "create temp table copy_probe (id int, label text);\n\\copy copy_probe from stdin\n{rows}\\.\n\
         select count(*), sum(id) from copy_probe;\ncopy (select id from copy_probe where id <= 3 order by id) to stdout;\n"
    );
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &["-q", "-f", "-"],
        Some(&script),
    );
    assert!(out.ok, "{}\n{}", out.stderr, gw.log());
    assert_eq!(out.stdout.trim(), "1000|500500\n1\n2\n3");
}

#[test]
fn notices_and_notifications_reach_psql() {
    let gw = app_gateway();
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &[
            "-c",
            "do $$ begin raise notice 'hello from the server'; end $$",
            "-c",
            "listen portcullis_probe",
            "-c",
            "notify portcullis_probe, 'payload-42'",
        ],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains("NOTICE:  hello from the server"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout
            .contains("Asynchronous notification \"portcullis_probe\" with payload \"payload-42\""),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_reach_the_upstream_backend() {
    let gw = app_gateway();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.expect("connect");
    let token = client.cancel_token();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(NoTls).await
    });
    let e = client
        .batch_execute("select pg_sleep(30)")
        .await
        .expect_err("cancelled");
    assert_eq!(db_error(&e).0, "57014");
    assert!(started.elapsed() < Duration::from_secs(15));
    canceller.await.unwrap().unwrap();
    assert_eq!(
        client
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[test]
fn ctrl_c_in_psql_cancels_the_running_query() {
    let gw = app_gateway();
    let child = std::process::Command::new("psql")
        .arg("-X")
        .arg(gw.conninfo("app-db", ""))
        .arg("-c")
        .arg("select pg_sleep(31)")
        .env("PGPASSWORD", ALICE_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    let started = Instant::now();
    // Wait until the query is really running upstream, then press Ctrl-C.
    let running = eventually(Duration::from_secs(15), || {
        (backends_running("pg_sleep(31)") > 0).then_some(())
    });
    assert!(running.is_some(), "query never started:\n{}", gw.log());
    std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_stream_with_bounded_gateway_memory() {
    let gw = app_gateway();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.expect("connect");
    let before = gw.rss_kib();
    let rows = client
        .query_raw(
            "select g, repeat('x', 100) from generate_series(1, 1000000) g",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    pin_mut!(rows);
    let mut n = 0u64;
    let mut bytes = 0usize;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        bytes += row.get::<_, &str>(1).len();
        n += 1;
    }
    assert_eq!(n, 1_000_000);
    assert_eq!(bytes, 100_000_000);
    let peak = gw.peak_rss_kib();
    // ~110 MB crossed the gateway; it may hold only its buffers.
    assert!(
        peak < before + 48 * 1024,
        "gateway peak RSS {peak} KiB grew more than 48 MiB over {before} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_through_the_gateway_equal_results_direct() {
    let gw = app_gateway();
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.expect("connect");
    let q = "select id, name, email, ssn, card from people order by id";
    let via: Vec<String> = client
        .simple_query(q)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..5)
                    .map(|i| r.get(i).unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect();
    let direct = cluster().superuser_sql("app", q);
    assert_eq!(via.len(), 100);
    assert_eq!(via.join("\n"), direct);
}
