//! The SQLite audit store.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::audit::StoreError;
use portcullis_core::identity::RevocationStore;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection, SqlitePool};
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
    /// Records staged ahead of their commit (strict recording).
    staging: Arc<staging::Staging>,
    /// Lines committed from staging at open, until the sinks take them.
    recovered: Arc<std::sync::Mutex<Vec<String>>>,
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
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
        let (staging, recovered) = recover_staged(path)?;
        let staging = Arc::new(staging);
        let writer = Arc::new(WriteThread::start(path)?);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(backend)?;
        Ok(Self {
            pool,
            writer,
            staging,
            recovered: Arc::new(std::sync::Mutex::new(recovered)),
        })
    }
}

/// Commits what a killed gateway staged but had not committed, then opens
/// the staging files empty. Staging files that do not continue the chain
/// (someone else's, or damaged) are kept aside for inspection, not used.
fn recover_staged(path: &Path) -> Result<(staging::Staging, Vec<String>), StoreError> {
    let paths = staging::Staging::paths_for(path);
    let mut conn =
        rusqlite::Connection::open(path).map_err(|e| StoreError::Backend(e.to_string()))?;
    let recovered = staging::recover(&mut conn, &paths)?;
    drop(conn);
    if recovered.committed > 0 {
        tracing::warn!(
            records = recovered.committed,
            "committed records a stopped gateway had staged"
        );
    }
    if recovered.rejected {
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
        for staged in paths.iter().filter(|p| p.exists()) {
            let mut aside = staged.as_os_str().to_owned();
            aside.push(format!(".rejected-{stamp}"));
            std::fs::rename(staged, &aside)
                .map_err(|e| StoreError::Backend(format!("{}: {e}", staged.display())))?;
            tracing::error!(file = %std::path::Path::new(&aside).display(), "staged records that do not continue the store's chain were set aside");
        }
    }
    Ok((staging::Staging::open(paths)?, recovered.lines))
}

impl SqliteStore {
    /// The lines committed from staging when the store was opened (once):
    /// the sinks never saw them.
    pub fn take_recovered(&self) -> Vec<String> {
        std::mem::take(&mut *self.recovered.lock().unwrap_or_else(|p| p.into_inner()))
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
            3 => legacy::import_into_chain(&mut tx).await?,
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
const LATEST_VERSION: i64 = 3;

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

mod evidence;
mod legacy;
use legacy::get;
mod retention;
mod reviews;
mod staging;
pub use retention::{verify_store, RetentionCut};
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
