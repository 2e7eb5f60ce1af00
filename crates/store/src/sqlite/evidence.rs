//! The evidence chain in SQLite: appended by the writer thread, read back
//! by the API as sessions and commands.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::audit::{
    AuditStore, CommandDetail, CommandOutcome, CommandRecord, CommandStart, DecisionFilter,
    SessionDetail, SessionEnd, SessionQuery, SessionRecord, SessionSummary, StoreError,
};
use portcullis_core::evidence::{ChainHead, ChainRecord, SignedCheckpoint};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{backend, corrupt, SqliteStore};

/// A stored line's body.
#[derive(Deserialize)]
struct Line<T> {
    body: T,
}

fn body<T: DeserializeOwned>(line: &str) -> Result<T, StoreError> {
    serde_json::from_str::<Line<T>>(line)
        .map(|l| l.body)
        .map_err(corrupt)
}

/// The smallest UUIDv7 of sessions started at `t`: ids sort by start
/// time, so a time filter is a range of ids.
fn v7_floor(t: OffsetDateTime) -> String {
    let ms = u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    let id = Uuid::new_v7(ts);
    // Zero the random bits: the floor of that millisecond.
    let mut bytes = *id.as_bytes();
    bytes[6] &= 0xf0;
    bytes[7] = 0;
    bytes[8] &= 0xc0;
    bytes[9..].fill(0);
    Uuid::from_bytes(bytes).to_string()
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, records: Arc<[ChainRecord]>) -> Result<(), StoreError> {
        let last = records.last().map(|r| r.seq);
        self.writer.run(move |conn| append(conn, &records)).await?;
        if let Some(last) = last {
            self.staging.committed(last);
        }
        Ok(())
    }

    /// One `write` to the staging file: see `sqlite/staging.rs`. Blocking,
    /// but a write to the page cache takes microseconds, less than handing
    /// it to another thread would.
    fn stage(&self, records: &[ChainRecord]) -> Result<(), StoreError> {
        self.staging.stage(records)
    }

    async fn chain_head(&self) -> Result<ChainHead, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(ChainHead::default());
        };
        let hash: String = row.try_get("hash").map_err(corrupt)?;
        let hash = hex::decode(&hash)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| corrupt("the last record's hash is not 32 bytes of hex"))?;
        Ok(ChainHead {
            seq: row.try_get::<i64, _>("seq").map_err(corrupt)? as u64,
            hash,
        })
    }

    async fn save_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        let parsed = checkpoint.checkpoint().map_err(corrupt)?;
        let at =
            time::OffsetDateTime::parse(&parsed.at, &time::format_description::well_known::Rfc3339)
                .map_err(corrupt)?
                .unix_timestamp();
        let (line, signature) = (checkpoint.line.clone(), checkpoint.signature.clone());
        self.writer
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO checkpoints (number, upto, at_unix, line, signature) VALUES (?, ?, ?, ?, ?)",
                    rusqlite::params![parsed.number as i64, parsed.upto as i64, at, line, signature],
                )
            })
            .await
            .map(drop)
    }

    async fn last_checkpoint(&self) -> Result<Option<SignedCheckpoint>, StoreError> {
        let row =
            sqlx::query("SELECT line, signature FROM checkpoints ORDER BY number DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        row.map(|r| {
            Ok(SignedCheckpoint {
                line: r.try_get("line").map_err(corrupt)?,
                signature: r.try_get("signature").map_err(corrupt)?,
            })
        })
        .transpose()
    }

    async fn kind_of(&self, seq: u64) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT kind FROM evidence WHERE seq = ?")
            .bind(seq as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)
    }

    async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<SessionSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.line,
                (SELECT x.line FROM evidence x WHERE x.session_id = e.session_id AND x.kind = 'session_ended' LIMIT 1) AS ended,
                (SELECT count(*) FROM evidence x WHERE x.session_id = e.session_id AND x.kind IN ('command', 'command_started')) AS commands
             FROM evidence e
             WHERE e.kind = 'session_started'
               AND (?1 IS NULL OR e.user = ?1) AND (?2 IS NULL OR e.connection = ?2)
               AND (?3 = 0 OR NOT EXISTS (SELECT 1 FROM evidence x WHERE x.session_id = e.session_id AND x.kind = 'session_ended'))
               AND (?5 IS NULL OR e.session_id >= ?5) AND (?6 IS NULL OR e.session_id < ?6)
               AND (?7 IS NULL OR json_extract(e.line, '$.body.actor') = ?7)
               AND (?8 IS NULL OR ?8 = EXISTS (SELECT 1 FROM evidence x WHERE x.session_id = e.session_id
                      AND x.kind IN ('command', 'command_started')
                      AND json_extract(x.line, '$.body.decision.allowed') = 0))
             ORDER BY e.session_id DESC LIMIT ?4",
        )
        .bind(&q.user)
        .bind(&q.connection)
        .bind(q.active)
        .bind(i64::from(q.limit.unwrap_or(100)))
        .bind(q.since.map(v7_floor))
        .bind(q.until.map(v7_floor))
        .bind(&q.actor)
        .bind(q.decision.map(|d| d == DecisionFilter::Denied))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let ended: Option<String> = row.try_get("ended").map_err(corrupt)?;
                summary(
                    &row.try_get::<String, _>("line").map_err(corrupt)?,
                    ended.as_deref(),
                    row.try_get::<i64, _>("commands").map_err(corrupt)? as u64,
                )
            })
            .collect()
    }

    async fn session(&self, id: Uuid) -> Result<Option<SessionDetail>, StoreError> {
        let rows = sqlx::query("SELECT kind, line FROM evidence WHERE session_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let mut started = None;
        let mut ended = None;
        let mut commands = Commands::default();
        for row in &rows {
            let kind: String = row.try_get("kind").map_err(corrupt)?;
            let line: String = row.try_get("line").map_err(corrupt)?;
            match kind.as_str() {
                "session_started" => started = Some(line),
                "session_ended" => ended = Some(line),
                _ => commands.add(&kind, &line)?,
            }
        }
        let Some(started) = started else {
            return Ok(None);
        };
        let commands = commands.finish(ended.is_some());
        let summary = summary(&started, ended.as_deref(), commands.len() as u64)?;
        Ok(Some(SessionDetail { summary, commands }))
    }

    async fn dangling_sessions(&self) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT e.session_id FROM evidence e WHERE e.kind = 'session_started'
               AND NOT EXISTS (SELECT 1 FROM evidence x WHERE x.session_id = e.session_id AND x.kind = 'session_ended')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        ids.iter()
            .map(|id| Uuid::parse_str(id).map_err(corrupt))
            .collect()
    }
}

fn summary(
    started: &str,
    ended: Option<&str>,
    commands: u64,
) -> Result<SessionSummary, StoreError> {
    let session: SessionRecord = body(started)?;
    let end: Option<SessionEnd> = ended.map(body).transpose()?;
    Ok(SessionSummary {
        session,
        ended_at: end.as_ref().map(|e| e.ended_at),
        end_reason: end.map(|e| e.reason),
        command_count: commands,
    })
}

/// A session's commands folded from their records: a whole `command`, or
/// a `command_started` with the `command_finished` that followed it.
#[derive(Default)]
struct Commands {
    by_seq: BTreeMap<u64, CommandRecord>,
    unfinished: std::collections::BTreeSet<u64>,
}

impl Commands {
    fn add(&mut self, kind: &str, line: &str) -> Result<(), StoreError> {
        match kind {
            "command" => {
                let c: CommandRecord = body(line)?;
                self.by_seq.insert(c.seq, c);
            }
            "command_started" => {
                let c: CommandStart = body(line)?;
                self.unfinished.insert(c.seq);
                self.by_seq.insert(
                    c.seq,
                    CommandRecord {
                        session_id: c.session_id,
                        seq: c.seq,
                        kind: c.kind,
                        text: c.text,
                        started_at: c.started_at,
                        duration_us: 0,
                        error: None,
                        decision: c.decision,
                        masked: None,
                        detail: c.detail,
                    },
                );
            }
            "command_finished" => {
                let o: CommandOutcome = body(line)?;
                self.unfinished.remove(&o.seq);
                if let Some(c) = self.by_seq.get_mut(&o.seq) {
                    c.duration_us = o.duration_us;
                    c.error = o.error;
                    c.masked = o.masked;
                    c.detail = merged(&c.detail, &o.detail);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The commands in session order; one whose outcome is not recorded
    /// says so in its detail: `running` in a live session (its outcome
    /// follows), `unknown` in an ended one (the gateway stopped while it
    /// ran).
    fn finish(mut self, session_ended: bool) -> Vec<CommandRecord> {
        let outcome = if session_ended { "unknown" } else { "running" };
        for seq in &self.unfinished {
            if let Some(c) = self.by_seq.get_mut(seq) {
                let unknown = CommandDetail::of(&serde_json::json!({ "outcome": outcome }));
                c.detail = merged(&c.detail, &unknown);
            }
        }
        self.by_seq.into_values().collect()
    }
}

fn merged(a: &CommandDetail, b: &CommandDetail) -> CommandDetail {
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(a.as_json()).unwrap_or_default();
    let more: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(b.as_json()).unwrap_or_default();
    map.extend(more);
    CommandDetail::of(&map)
}

/// Appends `records` in one transaction on `conn`. A record whose number
/// is taken is fine only if it is the same record (a retried batch whose
/// commit did land); anything else means someone else wrote the chain, and
/// the write fails rather than drop the gateway's record for theirs.
fn append(conn: &mut rusqlite::Connection, records: &[ChainRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        // Cached on the connection: one parse for the life of the writer.
        let mut insert = tx.prepare_cached(
            "INSERT INTO evidence (seq, kind, session_id, user, connection, line, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (seq) DO NOTHING",
        )?;
        for r in records {
            let hash = hex::encode(r.hash);
            let inserted = insert.execute(rusqlite::params![
                r.seq as i64,
                r.kind,
                r.session_id.map(|s| s.to_string()),
                r.user,
                r.connection,
                r.line,
                hash,
            ])?;
            if inserted == 0 {
                let held: Option<String> = tx.query_row(
                    "SELECT hash FROM evidence WHERE seq = ?",
                    [r.seq as i64],
                    |row| row.get(0),
                )?;
                if held.as_deref() != Some(hash.as_str()) {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                        Some(format!(
                            "record {} in the store is not the one the gateway wrote: something else wrote the evidence chain",
                            r.seq
                        )),
                    ));
                }
            }
        }
    }
    tx.commit()
}
