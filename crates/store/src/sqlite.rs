//! The SQLite audit store.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::audit::{
    AuditEvent, AuditStore, CommandDetail, CommandRecord, Decision, SessionDetail, SessionQuery,
    SessionRecord, SessionSummary, StoreError,
};
use portcullis_core::identity::RevocationStore;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection, SqlitePool};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;
use writer::WriteThread;

const SCHEMA: &str = include_str!("sqlite_schema.sql");

/// Audit records in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers (the API, revocation checks).
    pool: SqlitePool,
    /// The one connection every write goes through, on its own thread.
    /// SQLite takes one writer at a time anyway; one connection keeps its
    /// page cache and prepared statements warm.
    writer: Arc<WriteThread>,
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
    /// Opens (creating if needed) the store at `path`, readable and
    /// writable by the gateway's user only.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        make_private(path)?;
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(backend)?
            .filename(path)
            .create_if_missing(true)
            // WAL with NORMAL sync: a committed batch survives a killed
            // process; only an OS crash can lose the last commits.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5))
            // Temporary tables and sorts that spill stay off the disk.
            .pragma("temp_store", "memory");
        let mut first = opts.connect().await.map_err(backend)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut first)
            .await
            .map_err(backend)?;
        migrate(&mut first).await?;
        first.close().await.map_err(backend)?;
        let writer = Arc::new(WriteThread::start(path)?);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(backend)?;
        Ok(Self { pool, writer })
    }
}

/// The store holds every recorded statement and its parameters: it is
/// created 0600 before SQLite opens it, whatever the umask, and SQLite
/// gives its `-wal` and `-shm` files the database file's mode. A store
/// from an earlier release, and files beside it, are tightened.
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::Backend(format!("{}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    for suffix in ["", "-wal", "-shm"] {
        let file = path.with_file_name(format!("{name}{suffix}"));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
}

/// Brings a store made by an earlier release up to this one's layout.
/// Each step runs once, in order, inside one transaction with the bump
/// of `PRAGMA user_version` that marks it done.
async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
    for target in (version + 1)..=LATEST_VERSION {
        let mut tx = conn.begin().await.map_err(backend)?;
        match target {
            1 => add_masked_column(&mut tx).await?,
            2 => move_sql_facts_into_detail(&mut tx).await?,
            other => return Err(corrupt(format!("no migration to version {other}"))),
        }
        sqlx::raw_sql(&format!("PRAGMA user_version = {target}"))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
    }
    Ok(())
}

/// The layout this release writes.
const LATEST_VERSION: i64 = 2;

async fn columns_of(conn: &mut SqliteConnection, table: &str) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)
}

/// 1: masking counts (added before versions were numbered, so a store
/// may have the column already).
async fn add_masked_column(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    if !columns_of(conn, "statements")
        .await?
        .iter()
        .any(|c| c == "masked")
    {
        sqlx::raw_sql("ALTER TABLE statements ADD COLUMN masked TEXT")
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// 2: commands of any protocol. What only SQL has (parameters, the
/// prepared statement's name, the row count) is copied from columns of
/// its own into the protocol-specific `detail` object. The old columns
/// keep their values, so an older binary still shows them; a row such a
/// binary writes later has no `detail`, and is read from them.
async fn move_sql_facts_into_detail(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    if !columns_of(conn, "statements")
        .await?
        .iter()
        .any(|c| c == "detail")
    {
        sqlx::raw_sql("ALTER TABLE statements ADD COLUMN detail TEXT")
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    sqlx::raw_sql(
        "UPDATE statements SET
             detail = json_object('params', json(params), 'prepared_name', prepared_name, 'rows', rows)
         WHERE detail IS NULL",
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn write(&self, batch: Arc<[AuditEvent]>) -> Result<(), StoreError> {
        self.writer.run(move |conn| write_batch(conn, &batch)).await
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
        let commands = rows
            .iter()
            .map(command_from_row)
            .collect::<Result<_, _>>()?;
        Ok(Some(SessionDetail { summary, commands }))
    }

    async fn close_dangling(&self, reason: &str) -> Result<u64, StoreError> {
        let reason = reason.to_owned();
        let closed = self
            .writer
            .run(move |conn| {
                conn.execute(
                    "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE ended_at IS NULL",
                    rusqlite::params![ts(OffsetDateTime::now_utc()), reason],
                )
            })
            .await?;
        Ok(closed as u64)
    }
}

/// Writes `batch` in one transaction on `conn`.
fn write_batch(conn: &mut rusqlite::Connection, batch: &[AuditEvent]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        // Cached on the connection: one parse per statement text for the
        // life of the writer, not per batch. OR IGNORE keeps a retried
        // batch whose commit did land from failing on its own rows; OR
        // REPLACE did the same but made SQLite keep a statement journal
        // for every row, a third of the cost of writing it.
        let mut insert_statement = tx.prepare_cached(
            "INSERT OR IGNORE INTO statements (session_id, seq, kind, text, \
             started_at, duration_us, error, allowed, policies, masked, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for event in batch {
            match event {
                AuditEvent::Command(st) => {
                    let mut id = Uuid::encode_buffer();
                    insert_statement.execute(rusqlite::params![
                        st.session_id.hyphenated().encode_lower(&mut id) as &str,
                        st.seq as i64,
                        st.kind,
                        st.text,
                        ts(st.started_at),
                        st.duration_us as i64,
                        st.error,
                        st.decision.allowed,
                        json(&st.decision.policies),
                        st.masked.as_ref().map(json),
                        (!st.detail.is_empty()).then(|| st.detail.as_json()),
                    ])?;
                }
                AuditEvent::SessionStarted(s) => {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO sessions (id, protocol, connection, user, groups, actor, auth_method,
                         client_user, client_address, application_name, client_tls, connect_policies, started_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )?
                    .execute(rusqlite::params![
                        s.id.to_string(),
                        s.protocol,
                        s.connection,
                        s.user,
                        json(&s.groups),
                        s.actor,
                        s.auth_method,
                        s.client_user,
                        s.client_address,
                        s.application_name,
                        s.client_tls,
                        json(&s.connect_policies),
                        ts(s.started_at),
                    ])?;
                }
                AuditEvent::SessionEnded(e) => {
                    tx.prepare_cached(
                        "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ?",
                    )?
                    .execute(rusqlite::params![
                        ts(e.ended_at),
                        e.reason,
                        e.id.to_string()
                    ])?;
                }
            }
        }
    }
    tx.commit()
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
        command_count: get::<i64>(row, "statement_count")? as u64,
    })
}

/// The SQL facts of a row without `detail`, from the columns that held
/// them before version 2.
fn legacy_sql_detail(row: &SqliteRow) -> Result<CommandDetail, StoreError> {
    let params: Option<String> = get(row, "params")?;
    let params: Option<serde_json::Value> = params.as_deref().map(from_json).transpose()?;
    let prepared_name: Option<String> = get(row, "prepared_name")?;
    let rows: Option<i64> = get(row, "rows")?;
    if params.is_none() && prepared_name.is_none() && rows.is_none() {
        return Ok(CommandDetail::default());
    }
    Ok(CommandDetail::of(&serde_json::json!({
        "params": params,
        "prepared_name": prepared_name,
        "rows": rows,
    })))
}

fn command_from_row(row: &SqliteRow) -> Result<CommandRecord, StoreError> {
    let session_id: String = get(row, "session_id")?;
    let masked: Option<String> = get(row, "masked")?;
    let detail: Option<String> = get(row, "detail")?;
    Ok(CommandRecord {
        session_id: Uuid::parse_str(&session_id).map_err(corrupt)?,
        seq: get::<i64>(row, "seq")? as u64,
        kind: get(row, "kind")?,
        text: get(row, "text")?,
        started_at: parse_ts(&get::<String>(row, "started_at")?)?,
        duration_us: get::<i64>(row, "duration_us")? as u64,
        error: get(row, "error")?,
        detail: match detail {
            Some(d) => {
                CommandDetail::from_json(d).ok_or_else(|| corrupt("detail: not a JSON object"))?
            }
            // Written by a binary from before version 2 after this one
            // migrated the store.
            None => legacy_sql_detail(row)?,
        },
        decision: Decision {
            allowed: get(row, "allowed")?,
            policies: from_json(&get::<String>(row, "policies")?)?,
        },
        masked: masked.as_deref().map(from_json).transpose()?,
    })
}

mod reviews;
#[cfg(test)]
mod tests;
mod writer;

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn save_revocation(&self, user: &str, at: i64, by: &str) -> Result<(), StoreError> {
        let (user, by) = (user.to_owned(), by.to_owned());
        self.writer
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO revocations (user, revoked_at, revoked_by) VALUES (?, ?, ?) \
                     ON CONFLICT (user) DO UPDATE SET revoked_at = excluded.revoked_at, revoked_by = excluded.revoked_by",
                    rusqlite::params![user, at, by],
                )
            })
            .await
            .map(drop)
    }

    async fn delete_revocation(&self, user: &str) -> Result<bool, StoreError> {
        let user = user.to_owned();
        let deleted = self
            .writer
            .run(move |conn| conn.execute("DELETE FROM revocations WHERE user = ?", [user]))
            .await?;
        Ok(deleted > 0)
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
