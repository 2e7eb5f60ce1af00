//! The row-description cache under attack: a prepared statement whose
//! masked results are described once and then executed without a
//! Describe, while its table's layout changes beneath it. PostgreSQL
//! re-plans the statement by name, so the same statement reads another
//! attribute, or another table, with the same result type; a description
//! reused across that change would send the masking to the wrong column.

use portcullis_testkit::{Gateway, ALICE_TOKEN, READER_PASSWORD};
use tokio_postgres::{Client, NoTls, Statement};

use crate::common::*;
use crate::masking::Tap;

const POLICIES: &str = r#"
permit(principal in Group::"engineering", action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
"#;

const MASKING: &str = r#"
[masking]
detectors = []

[[masking.columns]]
connection = "app-db"
column = "public.cached_vault.secret"
class = "secret"
strategy = "redact"
"#;

const STATEMENT: &str = "select secret, note from cached_vault where id = $1";

/// Column names swapped: `note` becomes attribute 2, `secret` attribute 3,
/// and the column now named `secret` holds `value` (`note`, `note-2`).
fn swap_columns(value: &str) -> String {
    format!(
        "alter table cached_vault rename column secret to swapping; \
         alter table cached_vault rename column note to secret; \
         alter table cached_vault rename column swapping to note; \
         update cached_vault set secret = '{value}', note = 'note-2'"
    )
}

fn create_table() {
    cluster().superuser_sql(
        "app",
        "drop table if exists cached_vault, cached_vault_old; \
         create table cached_vault (id int primary key, secret text, note text); \
         insert into cached_vault values (1, 'SECRET-A1', 'note-1'); \
         grant select on cached_vault to portcullis_reader",
    );
}

async fn connect(conninfo: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn run(client: &Client, statement: &Statement) -> (String, String) {
    let row = client.query_one(statement, &[&1i32]).await.unwrap();
    (row.get(0), row.get(1))
}

/// Waits until a fresh (never cached) query through the gateway shows
/// that its catalog has caught up with the DDL: `sql` returns `clear`
/// unmasked only once the gateway resolves names as the server now does.
async fn until_the_gateway_sees(gw: &Gateway, sql: &str, clear: &str) {
    let probe = connect(&gw.conninfo("app-db", &format!("password={ALICE_TOKEN}"))).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let row = probe.query_one(sql, &[]).await.unwrap();
        if row.get::<_, String>(0) == clear {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never saw the DDL: {sql} still masked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_row_description_never_outlives_the_layout_it_described() {
    // Directly, the premise: one prepared statement, re-planned after the
    // columns swap names, reads the other attribute.
    create_table();
    let direct = connect(&format!(
        "host=127.0.0.1 port={} dbname=app user=portcullis_reader password={READER_PASSWORD} sslmode=disable",
        cluster().port()
    ))
    .await;
    let s = direct.prepare(STATEMENT).await.unwrap();
    assert_eq!(run(&direct, &s).await.0, "SECRET-A1");
    cluster().superuser_sql("app", &swap_columns("SECRET-B2"));
    assert_eq!(run(&direct, &s).await.0, "SECRET-B2");

    create_table();
    let gw = gateway()
        .app_db("app-db", cluster())
        .policies(POLICIES)
        .extra(MASKING)
        .start();
    let tap = Tap::start(&gw).await;
    let client = connect(&tap.conninfo(ALICE_TOKEN)).await;
    let s = client.prepare(STATEMENT).await.unwrap();
    for _ in 0..3 {
        // Described once, then executed from the cache.
        assert_eq!(run(&client, &s).await, ("****".into(), "note-1".into()));
    }

    // 1. The columns swap names: the statement now reads attribute 3.
    cluster().superuser_sql("app", &swap_columns("SECRET-B2"));
    assert_eq!(run(&client, &s).await.0, "****");
    until_the_gateway_sees(&gw, "select note from cached_vault", "note-2").await;
    for _ in 0..3 {
        assert_eq!(run(&client, &s).await.0, "****");
    }

    // 2. The table is renamed away and recreated with another layout:
    // the statement now reads another table.
    cluster().superuser_sql(
        "app",
        "alter table cached_vault rename to cached_vault_old; \
         create table cached_vault (id int primary key, note text, secret text); \
         insert into cached_vault values (1, 'note-3', 'SECRET-C3'); \
         grant select on cached_vault to portcullis_reader",
    );
    assert_eq!(run(&client, &s).await, ("****".into(), "note-3".into()));
    until_the_gateway_sees(&gw, "select secret from cached_vault_old", "SECRET-B2").await;
    for _ in 0..3 {
        assert_eq!(run(&client, &s).await, ("****".into(), "note-3".into()));
    }

    // 3. Dropped and recreated with another result type: the server
    // refuses the old statement, and a new one is masked.
    cluster().superuser_sql(
        "app",
        "drop table cached_vault_old; drop table cached_vault; \
         create table cached_vault (id int primary key, secret text, note int); \
         insert into cached_vault values (1, 'SECRET-D4', 4); \
         grant select on cached_vault to portcullis_reader",
    );
    let refused = client.query_one(&s, &[&1i32]).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED),
        "{refused}"
    );
    // Until the gateway has read the new table, its rows are masked
    // whole (an unknown relation fails closed).
    until_the_gateway_sees(&gw, "select note::text from cached_vault", "4").await;
    let s = client.prepare(STATEMENT).await.unwrap();
    for _ in 0..3 {
        let row = client.query_one(&s, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "****");
        assert_eq!(row.get::<_, i32>(1), 4);
    }

    let seen = String::from_utf8_lossy(&tap.bytes()).into_owned();
    for secret in ["SECRET-A1", "SECRET-B2", "SECRET-C3", "SECRET-D4"] {
        assert!(!seen.contains(secret), "{secret} reached the client");
    }
    cluster().superuser_sql("app", "drop table cached_vault");
}
