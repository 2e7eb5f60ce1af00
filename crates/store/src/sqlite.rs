//! The SQLite audit store.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::audit::{
    AuditEvent, AuditStore, Decision, SessionDetail, SessionQuery, SessionRecord, SessionSummary,
    StatementRecord, StoreError,
};
use portcullis_core::identity::RevocationStore;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection, SqlitePool};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::{MappedMutexGuard, MutexGuard};
use uuid::Uuid;

const SCHEMA: &str = include_str!("sqlite_schema.sql");

/// Audit records in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers (the API, revocation checks).
    pool: SqlitePool,
    /// The one connection every write goes through.
    writer: Arc<Writer>,
}

/// The writing connection, held outside any pool. SQLite takes one writer
/// at a time anyway; one connection keeps its page cache warm (writes
/// spread over a pool make each connection re-read the pages the others
/// changed), and no pool bookkeeping sits between batches (a pool of one
/// logged a 2 s acquire during a burst of 1,000 logins).
#[derive(Debug)]
struct Writer {
    options: SqliteConnectOptions,
    /// `None` until first used, and again after a failed write.
    conn: tokio::sync::Mutex<Option<SqliteConnection>>,
}

impl Writer {
    /// The connection, opened if there is none.
    async fn get(&self) -> Result<MappedMutexGuard<'_, SqliteConnection>, StoreError> {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            *slot = Some(self.options.connect().await.map_err(backend)?);
        }
        MutexGuard::try_map(slot, Option::as_mut).map_err(|_| corrupt("no writer connection"))
    }

    /// Closes the connection after a failed write. A write that failed on
    /// a full disk can leave SQLite and sqlx disagreeing on whether a
    /// transaction is open, and later "commits" then only release
    /// savepoints of a transaction that never ends; the next write opens a
    /// fresh connection instead.
    async fn reset(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }

    /// Passes on the outcome of a write, closing the connection first if it
    /// failed. Every write ends here, with the connection's guard dropped.
    async fn settle<T>(&self, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        if outcome.is_err() {
            self.reset().await;
        }
        outcome
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn parse_ts(s: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(corrupt)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(corrupt)
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(backend)?
            .filename(path)
            .create_if_missing(true)
            // WAL with NORMAL sync: a committed batch survives a killed
            // process; only an OS crash can lose the last commits.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5))
            // A multi-row INSERT OR REPLACE keeps a statement journal; in
            // memory it costs no temporary file per transaction.
            .pragma("temp_store", "memory");
        let mut first = opts.connect().await.map_err(backend)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut first)
            .await
            .map_err(backend)?;
        migrate(&mut first).await?;
        let writer = Arc::new(Writer {
            options: opts.clone(),
            conn: tokio::sync::Mutex::new(Some(first)),
        });
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(backend)?;
        Ok(Self { pool, writer })
    }
}

/// Columns added after the first release, added to stores made before.
async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('statements')")
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
    if !columns.iter().any(|c| c == "masked") {
        sqlx::raw_sql("ALTER TABLE statements ADD COLUMN masked TEXT")
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn write(&self, batch: &[AuditEvent]) -> Result<(), StoreError> {
        let written = {
            let mut conn = self.writer.get().await?;
            write_batch(&mut conn, batch).await
        };
        self.writer.settle(written).await
    }

    async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<SessionSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.*, (SELECT count(*) FROM statements t WHERE t.session_id = s.id) AS statement_count
             FROM sessions s
             WHERE (?1 IS NULL OR s.user = ?1) AND (?2 IS NULL OR s.connection = ?2)
               AND (?3 = 0 OR s.ended_at IS NULL)
             ORDER BY s.id DESC LIMIT ?4",
        )
        .bind(&q.user)
        .bind(&q.connection)
        .bind(q.active)
        .bind(i64::from(q.limit.unwrap_or(100)))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn session(&self, id: Uuid) -> Result<Option<SessionDetail>, StoreError> {
        let row = sqlx::query(
            "SELECT s.*, (SELECT count(*) FROM statements t WHERE t.session_id = s.id) AS statement_count
             FROM sessions s WHERE s.id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let summary = summary_from_row(&row)?;
        let rows = sqlx::query("SELECT * FROM statements WHERE session_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let statements = rows
            .iter()
            .map(statement_from_row)
            .collect::<Result<_, _>>()?;
        Ok(Some(SessionDetail {
            summary,
            statements,
        }))
    }

    async fn close_dangling(&self, reason: &str) -> Result<u64, StoreError> {
        let r =
            sqlx::query("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE ended_at IS NULL")
                .bind(ts(OffsetDateTime::now_utc()))
                .bind(reason)
                .execute(&mut *self.writer.get().await?)
                .await
                .map_err(backend);
        Ok(self.writer.settle(r).await?.rows_affected())
    }
}

/// Writes `batch` in one transaction on `conn`.
async fn write_batch(conn: &mut SqliteConnection, batch: &[AuditEvent]) -> Result<(), StoreError> {
    let mut tx = conn.begin().await.map_err(backend)?;
    // Consecutive statements go in one multi-row INSERT: one round trip
    // to SQLite's thread per batch instead of one per statement.
    let mut statements: Vec<&StatementRecord> = Vec::new();
    for event in batch {
        if !matches!(event, AuditEvent::Statement(_)) {
            insert_statements(&mut tx, &mut statements).await?;
        }
        match event {
            AuditEvent::SessionStarted(s) => {
                sqlx::query(
                    "INSERT OR IGNORE INTO sessions (id, protocol, connection, user, groups, actor, auth_method,
                     client_user, client_address, application_name, client_tls, connect_policies, started_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(s.id.to_string())
                .bind(&s.protocol)
                .bind(&s.connection)
                .bind(&s.user)
                .bind(json(&s.groups))
                .bind(&s.actor)
                .bind(&s.auth_method)
                .bind(&s.client_user)
                .bind(&s.client_address)
                .bind(&s.application_name)
                .bind(s.client_tls)
                .bind(json(&s.connect_policies))
                .bind(ts(s.started_at))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
            AuditEvent::Statement(st) => statements.push(st),
            AuditEvent::SessionEnded(e) => {
                sqlx::query("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ?")
                    .bind(ts(e.ended_at))
                    .bind(&e.reason)
                    .bind(e.id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
        }
    }
    insert_statements(&mut tx, &mut statements).await?;
    tx.commit().await.map_err(backend)
}

/// Most rows per INSERT: 13 bound values each, well under SQLite's
/// variable limit.
const STATEMENT_ROWS_PER_INSERT: usize = 256;

/// Splits `n` rows into INSERTs of power-of-two sizes, largest first: a
/// batch of any size then uses at most nine distinct statement texts, which
/// stay in the connection's prepared-statement cache instead of one text
/// (and one SQLite parse of hundreds of placeholders) per batch size.
fn insert_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = STATEMENT_ROWS_PER_INSERT.min(1 << n.ilog2());
        n -= size;
        Some(size)
    })
}

async fn insert_statements(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    pending: &mut Vec<&StatementRecord>,
) -> Result<(), StoreError> {
    let mut rest: &[&StatementRecord] = pending;
    for size in insert_sizes(rest.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT OR REPLACE INTO statements (session_id, seq, kind, text, params, prepared_name, \
             started_at, duration_us, rows, error, allowed, policies, masked) ",
        );
        q.push_values(chunk, |mut row, st| {
            row.push_bind(st.session_id.to_string())
                .push_bind(st.seq as i64)
                .push_bind(st.kind.as_str())
                .push_bind(st.text.as_str())
                .push_bind(st.params.as_ref().map(json))
                .push_bind(st.prepared_name.as_deref())
                .push_bind(ts(st.started_at))
                .push_bind(st.duration_us as i64)
                .push_bind(st.rows.map(|r| r as i64))
                .push_bind(st.error.as_deref())
                .push_bind(st.decision.allowed)
                .push_bind(json(&st.decision.policies))
                .push_bind(st.masked.as_ref().map(json));
        });
        q.build().execute(&mut **tx).await.map_err(backend)?;
    }
    pending.clear();
    Ok(())
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    row: &'r SqliteRow,
    col: &str,
) -> Result<T, StoreError> {
    row.try_get(col).map_err(|e| corrupt(format!("{col}: {e}")))
}

fn summary_from_row(row: &SqliteRow) -> Result<SessionSummary, StoreError> {
    let id: String = get(row, "id")?;
    let ended_at: Option<String> = get(row, "ended_at")?;
    Ok(SessionSummary {
        session: SessionRecord {
            id: Uuid::parse_str(&id).map_err(corrupt)?,
            protocol: get(row, "protocol")?,
            connection: get(row, "connection")?,
            user: get(row, "user")?,
            groups: from_json(&get::<String>(row, "groups")?)?,
            actor: get(row, "actor")?,
            auth_method: get(row, "auth_method")?,
            client_user: get(row, "client_user")?,
            client_address: get(row, "client_address")?,
            application_name: get(row, "application_name")?,
            client_tls: get(row, "client_tls")?,
            connect_policies: from_json(&get::<String>(row, "connect_policies")?)?,
            started_at: parse_ts(&get::<String>(row, "started_at")?)?,
        },
        ended_at: ended_at.as_deref().map(parse_ts).transpose()?,
        end_reason: get(row, "end_reason")?,
        statement_count: get::<i64>(row, "statement_count")? as u64,
    })
}

fn statement_from_row(row: &SqliteRow) -> Result<StatementRecord, StoreError> {
    let session_id: String = get(row, "session_id")?;
    let params: Option<String> = get(row, "params")?;
    let masked: Option<String> = get(row, "masked")?;
    Ok(StatementRecord {
        session_id: Uuid::parse_str(&session_id).map_err(corrupt)?,
        seq: get::<i64>(row, "seq")? as u64,
        kind: get(row, "kind")?,
        text: get(row, "text")?,
        params: params.as_deref().map(from_json).transpose()?,
        prepared_name: get(row, "prepared_name")?,
        started_at: parse_ts(&get::<String>(row, "started_at")?)?,
        duration_us: get::<i64>(row, "duration_us")? as u64,
        rows: get::<Option<i64>>(row, "rows")?.map(|r| r as u64),
        error: get(row, "error")?,
        decision: Decision {
            allowed: get(row, "allowed")?,
            policies: from_json(&get::<String>(row, "policies")?)?,
        },
        masked: masked.as_deref().map(from_json).transpose()?,
    })
}

#[cfg(test)]
mod tests;

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn save_revocation(&self, user: &str, at: i64, by: &str) -> Result<(), StoreError> {
        let r = sqlx::query(
            "INSERT INTO revocations (user, revoked_at, revoked_by) VALUES (?, ?, ?) \
             ON CONFLICT (user) DO UPDATE SET revoked_at = excluded.revoked_at, revoked_by = excluded.revoked_by",
        )
        .bind(user)
        .bind(at)
        .bind(by)
        .execute(&mut *self.writer.get().await?)
        .await
        .map_err(backend);
        self.writer.settle(r).await.map(drop)
    }

    async fn delete_revocation(&self, user: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM revocations WHERE user = ?")
            .bind(user)
            .execute(&mut *self.writer.get().await?)
            .await
            .map_err(backend);
        Ok(self.writer.settle(r).await?.rows_affected() > 0)
    }

    async fn revocations(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT user, revoked_at FROM revocations")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| Ok((get::<String>(r, "user")?, get::<i64>(r, "revoked_at")?)))
            .collect()
    }
}
