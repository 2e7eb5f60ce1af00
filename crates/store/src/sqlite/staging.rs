//! Strict recording's fast path: chained records are appended to a plain
//! file beside the store (`portcullis.db.staged`) with one `write` per
//! batch, and committed into SQLite behind, off the statement's path.
//!
//! Why a file of our own: a SQLite commit in WAL mode writes whole pages
//! (the table's and both indexes') and now and then checkpoints the WAL
//! with fsyncs; sessions waiting on that cost a statement 100–200 µs. A
//! `write` to a file reaches the kernel's page cache, which survives the
//! gateway process being killed, for a few µs. (Like SQLite with
//! `synchronous = NORMAL`, it does not survive the machine losing power
//! before the kernel writes it out.)
//!
//! The file holds each record's canonical line; its hash and columns are
//! recomputed from it. It is emptied whenever everything staged is
//! committed, and read back when the store is opened: staged records the
//! store lacks, continuing its chain, are committed then. A line cut short
//! by a crash mid-write was never acknowledged, and is dropped.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use portcullis_core::audit::StoreError;
use portcullis_core::evidence::ChainRecord;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The staging file and what it holds.
#[derive(Debug)]
pub(super) struct Staging {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    /// The last record staged (0: none since the file was emptied).
    staged_upto: u64,
    /// Bytes in the file.
    len: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{}: {e}", path.display()))
}

impl Staging {
    /// The staging file beside the store at `db`.
    pub(super) fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".staged");
        PathBuf::from(name)
    }

    /// Opens (creating, private) the staging file at `path`.
    pub(super) fn open(path: PathBuf) -> Result<Self, StoreError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        Ok(Self {
            path,
            state: Mutex::new(State {
                file,
                staged_upto: 0,
                len,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the records' lines in one write.
    pub(super) fn stage(&self, records: &[ChainRecord]) -> Result<(), StoreError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let size: usize = records.iter().map(|r| r.line.len() + 1).sum();
        let mut buf = Vec::with_capacity(size);
        for r in records {
            buf.extend_from_slice(r.line.as_bytes());
            buf.push(b'\n');
        }
        let mut state = self.lock();
        state.file.write_all(&buf).map_err(io(&self.path))?;
        state.staged_upto = last.seq;
        state.len += buf.len() as u64;
        Ok(())
    }

    /// Records up to `upto` are committed: once that is everything staged,
    /// the file is emptied.
    pub(super) fn committed(&self, upto: u64) {
        let mut state = self.lock();
        if state.len > 0 && state.staged_upto <= upto {
            match state.file.set_len(0) {
                Ok(()) => {
                    state.len = 0;
                    state.staged_upto = 0;
                }
                // Kept: the records are committed, and reading them back
                // at the next open skips what the store holds.
                Err(e) => tracing::warn!(error = %e, "the staging file could not be emptied"),
            }
        }
    }
}

#[derive(Deserialize)]
struct Staged {
    seq: u64,
    kind: String,
    prev: String,
    body: serde_json::Value,
}

/// What reading a staging file back did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Recovered {
    /// Records committed from it.
    pub committed: u64,
    /// It holds a complete record that does not continue the chain.
    pub rejected: bool,
}

/// Commits the staged records at `path` that continue the store's chain.
/// Run at open, before anything else writes.
pub(super) fn recover(
    conn: &mut rusqlite::Connection,
    path: &Path,
) -> Result<Recovered, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recovered::default()),
        Err(e) => return Err(io(path)(e)),
    };
    let backend = |e: rusqlite::Error| StoreError::Backend(e.to_string());
    let tx = conn.transaction().map_err(backend)?;
    let (mut seq, mut hash): (u64, String) = tx
        .query_row(
            "SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok((0, hex::encode([0u8; 32]))),
            e => Err(e),
        })
        .map_err(backend)?;
    let mut recovered = Recovered::default();
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io(path))?;
        // The end, or a line a crash cut short (never acknowledged).
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        let text = line.trim_end_matches('\n');
        let Ok(staged) = serde_json::from_str::<Staged>(text) else {
            tracing::warn!(path = %path.display(), "a staged record does not parse; the rest is not recovered");
            recovered.rejected = true;
            break;
        };
        let line_hash = hex::encode(Sha256::digest(text.as_bytes()));
        if staged.seq <= seq {
            // Committed already (the file was not emptied in time), unless
            // the store holds another record under that number.
            let held: Option<String> = tx
                .query_row(
                    "SELECT hash FROM evidence WHERE seq = ?",
                    [staged.seq as i64],
                    |r| r.get(0),
                )
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })
                .map_err(backend)?;
            if held.is_some_and(|h| h != line_hash) {
                tracing::warn!(
                    seq = staged.seq,
                    "a staged record differs from the store's; the rest is not recovered"
                );
                recovered.rejected = true;
                break;
            }
            continue;
        }
        if staged.seq != seq + 1 || staged.prev != hash {
            tracing::warn!(
                seq = staged.seq,
                "a staged record does not continue the store's chain; the rest is not recovered"
            );
            recovered.rejected = true;
            break;
        }
        let field = |key: &str| staged.body.get(key).and_then(|v| v.as_str());
        let session = match staged.kind.as_str() {
            "session_started" | "session_ended" => field("id"),
            _ => field("session_id"),
        };
        let (user, connection) = if staged.kind == "session_started" {
            (field("user"), field("connection"))
        } else {
            (None, None)
        };
        tx.execute(
            "INSERT INTO evidence (seq, kind, session_id, user, connection, line, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rusqlite::params![staged.seq as i64, staged.kind, session, user, connection, text, line_hash],
        )
        .map_err(backend)?;
        seq = staged.seq;
        hash = line_hash;
        recovered.committed += 1;
    }
    tx.commit().map_err(backend)?;
    Ok(recovered)
}
