//! Stores from before the evidence chain (layout version 3) kept sessions
//! and commands in tables of their own. Opening one moves their rows into
//! the chain, after a note that says they were imported (their times are
//! their own; the chain's times are the import's), and empties the tables.

use portcullis_core::audit::{
    AuditEvent, CommandDetail, CommandRecord, Decision, SessionEnd, SessionRecord, SessionSummary,
    StoreError,
};
use portcullis_core::evidence::{ChainHead, ChainRecord};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{backend, corrupt, from_json};

/// 3: every session and command of the old tables, chained.
pub(super) async fn import_into_chain(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let sessions = sqlx::query("SELECT s.*, 0 AS statement_count FROM sessions s ORDER BY s.id")
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    if sessions.is_empty() {
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let mut head = ChainHead::default();
    let note = AuditEvent::note(
        "history_imported",
        serde_json::json!({ "sessions": sessions.len(), "from": "store layout 2" }),
    );
    insert(conn, &head.append(&note, now)).await?;
    for row in &sessions {
        let summary = summary_from_row(row)?;
        let id = summary.session.id;
        insert(
            conn,
            &head.append(&AuditEvent::SessionStarted(summary.session), now),
        )
        .await?;
        let commands = sqlx::query("SELECT * FROM statements WHERE session_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        for command in &commands {
            let event = AuditEvent::Command(command_from_row(command)?);
            insert(conn, &head.append(&event, now)).await?;
        }
        if let (Some(ended_at), Some(reason)) = (summary.ended_at, summary.end_reason) {
            let end = AuditEvent::SessionEnded(SessionEnd {
                id,
                ended_at,
                reason,
            });
            insert(conn, &head.append(&end, now)).await?;
        }
    }
    sqlx::raw_sql("DELETE FROM statements; DELETE FROM sessions;")
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

async fn insert(conn: &mut SqliteConnection, r: &ChainRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO evidence (seq, kind, session_id, user, connection, line, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.seq as i64)
    .bind(r.kind)
    .bind(r.session_id.map(|s| s.to_string()))
    .bind(&r.user)
    .bind(&r.connection)
    .bind(&r.line)
    .bind(hex::encode(r.hash))
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

fn parse_ts(s: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(corrupt)
}

pub(super) fn get<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
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
