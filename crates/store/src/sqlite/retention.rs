//! Verifying the evidence chain straight from the store file, and
//! retention: pruning whole stretches of the chain behind a checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use portcullis_core::audit::StoreError;
use portcullis_core::evidence::verify::{verify, Problem, Report, StoredRecord};
use portcullis_core::evidence::{PublicKey, SignedCheckpoint};
use rusqlite::{Connection, OpenFlags};

use super::SqliteStore;

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Checks the chain and checkpoints in the store at `path` (opened read
/// only), with `exported` checkpoints (from a checkpoint file) merged in:
/// one the store lacks is used and reported, one that differs from the
/// store's is reported. Streams the records: memory stays flat however
/// long the chain is.
pub fn verify_store(
    path: &Path,
    key: PublicKey,
    exported: &[SignedCheckpoint],
) -> Result<Report, StoreError> {
    if !path.exists() {
        return Err(StoreError::Backend(format!(
            "{}: no such store",
            path.display()
        )));
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(backend)?;
    let mut problems = store_integrity(&conn)?;
    problems.extend(set_aside_staging(path));
    let mut checkpoints = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT number, upto, line, signature FROM checkpoints ORDER BY number")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    SignedCheckpoint {
                        line: text(r, 2).unwrap_or_default(),
                        signature: text(r, 3).unwrap_or_default(),
                    },
                ))
            })
            .map_err(backend)?;
        for row in rows {
            let (column, upto, c) = row.map_err(backend)?;
            // Kept by the number its signed line says; the columns beside
            // it must agree, or a renumbered row could pass for an old one.
            let Ok(parsed) = c.checkpoint() else {
                problems.push(Problem {
                    record: 0,
                    what: format!("checkpoint row {column} does not parse"),
                });
                continue;
            };
            if parsed.number as i64 != column || parsed.upto as i64 != upto {
                problems.push(Problem {
                    record: parsed.upto,
                    what: format!(
                        "checkpoint {}'s columns disagree with its signed line (renumbered)",
                        parsed.number
                    ),
                });
            }
            checkpoints.insert(parsed.number, c);
        }
    }
    let first_record: i64 = conn
        .query_row("SELECT coalesce(min(seq), 1) FROM evidence", [], |r| {
            r.get(0)
        })
        .map_err(backend)?;
    let mut exported_by_number: BTreeMap<u64, &SignedCheckpoint> = BTreeMap::new();
    for c in exported {
        let Ok(parsed) = c.checkpoint() else {
            problems.push(Problem {
                record: 0,
                what: "an exported checkpoint does not parse".into(),
            });
            continue;
        };
        if let Some(other) = exported_by_number.insert(parsed.number, c) {
            if other != c {
                problems.push(Problem {
                    record: parsed.upto,
                    what: format!(
                        "the export holds two different checkpoints numbered {} (the store was rolled back and sealed again)",
                        parsed.number
                    ),
                });
            }
        }
        match checkpoints.get(&parsed.number) {
            Some(kept) if kept == c => {}
            Some(_) => problems.push(Problem {
                record: parsed.upto,
                what: format!(
                    "checkpoint {} in the store differs from the exported one (replaced)",
                    parsed.number
                ),
            }),
            // Wholly behind the first kept record: retention removed it,
            // and verification checks that a retention record says so.
            None if (parsed.upto as i64) + 1 < first_record => {}
            None => {
                problems.push(Problem {
                    record: parsed.upto,
                    what: format!(
                        "checkpoint {} was exported but is not in the store (deleted)",
                        parsed.number
                    ),
                });
                checkpoints.insert(parsed.number, c.clone());
            }
        }
    }
    let mut stmt = conn
        .prepare(
            "SELECT seq, kind, session_id, user, connection, line, hash FROM evidence ORDER BY seq",
        )
        .map_err(backend)?;
    // Every column read as whatever it holds: a value of the wrong type (a
    // tampered row) is a bad record named by verification, not a failure
    // to read the store.
    let records = stmt
        .query_map([], |r| {
            Ok(StoredRecord {
                seq: r.get::<_, i64>(0)? as u64,
                kind: text(r, 1).unwrap_or_default(),
                session_id: text(r, 2),
                user: text(r, 3),
                connection: text(r, 4),
                line: text(r, 5).unwrap_or_default(),
                hash: text(r, 6).unwrap_or_default(),
            })
        })
        .map_err(backend)?;
    let mut report = verify(key, records, checkpoints.into_values()).map_err(backend)?;
    report.problems.splice(0..0, problems);
    Ok(report)
}

/// SQLite's own check of the file (every index holds what its table
/// does, so a lookup shows what a scan shows), and no trigger on the
/// evidence tables: either could make the API show what verification does
/// not read.
fn store_integrity(conn: &Connection) -> Result<Vec<Problem>, StoreError> {
    let mut problems = Vec::new();
    let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(backend)?;
    let found = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(backend)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)?;
    if found != ["ok"] {
        problems.push(Problem {
            record: 0,
            what: format!(
                "the store file fails SQLite's integrity check: {}",
                found.join("; ")
            ),
        });
    }
    let triggers: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN ('evidence', 'checkpoints')",
            [],
            |r| r.get(0),
        )
        .map_err(backend)?;
    if triggers > 0 {
        problems.push(Problem {
            record: 0,
            what: "triggers were added to the evidence tables".into(),
        });
    }
    Ok(problems)
}

/// Staging files the gateway set aside at open because they did not
/// continue the chain: records in them may be missing from it. Reported
/// until someone has looked and removed them.
fn set_aside_staging(db: &Path) -> Vec<Problem> {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.staged-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with(&prefix) && f.contains(".rejected-"))
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|f| Problem {
            record: 0,
            what: format!(
                "staged records were set aside as {f} when the store was opened: they did not continue the chain, and may be missing from it"
            ),
        })
        .collect()
}

/// A column as text: NULL is `None`; a number or blob is its text form
/// (lossy), which no hash of the original matches.
fn text(row: &rusqlite::Row<'_>, i: usize) -> Option<String> {
    use rusqlite::types::ValueRef;
    match row.get_ref(i).ok()? {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(x) => Some(x.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

/// Where retention would cut: the newest checkpoint behind which every
/// record is older than `cutoff_unix`, or behind which enough of the chain
/// lies to bring the store under `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionCut {
    /// The checkpoint that anchors what is kept.
    pub anchor: u64,
    /// The last record removed.
    pub through: u64,
}

impl SqliteStore {
    /// Where retention would cut now, if anywhere.
    pub async fn retention_cut(
        &self,
        cutoff_unix: Option<i64>,
        max_bytes: Option<u64>,
    ) -> Result<Option<RetentionCut>, StoreError> {
        self.writer
            .run(move |conn| retention_cut(conn, cutoff_unix, max_bytes))
            .await
    }

    /// Removes the records up to `cut.through` and the checkpoints before
    /// its anchor, a checkpoint's worth at a time so that the writer (and
    /// the statements waiting on it) is never held for long, and every
    /// state in between still verifies.
    pub async fn prune(&self, cut: RetentionCut) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let step = self.writer.run(move |conn| prune_step(conn, cut)).await?;
            if step == 0 {
                return Ok(removed);
            }
            removed += step;
        }
    }
}

fn retention_cut(
    conn: &mut Connection,
    cutoff_unix: Option<i64>,
    max_bytes: Option<u64>,
) -> rusqlite::Result<Option<RetentionCut>> {
    let first: Option<i64> = conn.query_row("SELECT min(seq) FROM evidence", [], |r| r.get(0))?;
    let last: Option<i64> = conn.query_row("SELECT max(seq) FROM evidence", [], |r| r.get(0))?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(None);
    };
    let mut target: i64 = first - 1;
    if let Some(cutoff) = cutoff_unix {
        let by_age: Option<i64> = conn.query_row(
            "SELECT max(upto) FROM checkpoints WHERE at_unix <= ?",
            [cutoff],
            |r| r.get(0),
        )?;
        target = target.max(by_age.unwrap_or(0));
    }
    if let Some(max) = max_bytes {
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let used = ((pages - free) * page) as f64;
        if used > max as f64 {
            // Records are about the same size: drop the share of them the
            // excess is, and a tenth more so the next run has headroom.
            let share = (1.0 - (max as f64 / used) * 0.9).clamp(0.0, 1.0);
            let by_size = first + ((last - first + 1) as f64 * share) as i64;
            target = target.max(by_size);
        }
    }
    if target < first {
        return Ok(None);
    }
    conn.query_row(
        "SELECT number, upto FROM checkpoints WHERE upto <= ? AND upto >= ? ORDER BY number DESC LIMIT 1",
        [target, first],
        |r| {
            Ok(RetentionCut {
                anchor: r.get::<_, i64>(0)? as u64,
                through: r.get::<_, i64>(1)? as u64,
            })
        },
    )
    .map(Some)
    .or_else(|e| match e {
        rusqlite::Error::QueryReturnedNoRows => Ok(None),
        e => Err(e),
    })
}

/// Removes the records behind the oldest checkpoint not yet cut to, up to
/// `cut`; returns how many.
fn prune_step(conn: &mut Connection, cut: RetentionCut) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let first: Option<i64> = tx.query_row("SELECT min(seq) FROM evidence", [], |r| r.get(0))?;
    let Some(first) = first.filter(|f| *f as u64 <= cut.through) else {
        tx.execute(
            "DELETE FROM checkpoints WHERE number < ?",
            [cut.anchor as i64],
        )?;
        tx.commit()?;
        return Ok(0);
    };
    // The next checkpoint past the first record, but not past the cut.
    let (number, upto): (i64, i64) = tx.query_row(
        "SELECT number, upto FROM checkpoints WHERE upto >= ? AND number <= ? ORDER BY number LIMIT 1",
        [first, cut.anchor as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let removed = tx.execute("DELETE FROM evidence WHERE seq <= ?", [upto])?;
    tx.execute("DELETE FROM checkpoints WHERE number < ?", [number])?;
    tx.commit()?;
    Ok(removed as u64)
}
