//! Strict recording's fast path: chained records are appended to a plain
//! file beside the store (`portcullis.db.staged-a` or `-b`) with one
//! `write` per batch, and committed into SQLite behind, off the
//! statement's path.
//!
//! Why a file of our own: a SQLite commit in WAL mode writes whole pages
//! (the table's and both indexes') and now and then checkpoints the WAL
//! with fsyncs; sessions waiting on that cost a statement 100–200 µs. A
//! `write` to a file reaches the kernel's page cache, which survives the
//! gateway process being killed, for a few µs. (Like SQLite with
//! `synchronous = NORMAL`, it does not survive the machine losing power
//! before the kernel writes it out.)
//!
//! A file holds each record's canonical line; its hash and columns are
//! recomputed from it. Two files take turns: under steady load the
//! committer is never quite caught up with the file being written, so once
//! that one passes [`SWITCH_AT`] staging moves to the other (emptied by
//! then), and a file is emptied as soon as everything in it is committed.
//! Both are read back when the store is opened: staged records the store
//! lacks, continuing its chain, are committed then. A line cut short by a
//! crash mid-write was never acknowledged, and is dropped.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use portcullis_core::audit::StoreError;
use portcullis_core::evidence::ChainRecord;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Size past which staging moves to the other file, once that one is
/// empty.
const SWITCH_AT: u64 = 4 << 20;

/// The staging files and what they hold.
#[derive(Debug)]
pub(super) struct Staging {
    paths: [PathBuf; 2],
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    files: [StagingFile; 2],
    /// The file being written.
    current: usize,
}

#[derive(Debug)]
struct StagingFile {
    file: File,
    /// The last record staged in it (0: none since it was emptied).
    staged_upto: u64,
    /// Bytes in it.
    len: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{}: {e}", path.display()))
}

impl Staging {
    /// The two staging files beside the store at `db`.
    pub(super) fn paths_for(db: &Path) -> [PathBuf; 2] {
        ["a", "b"].map(|side| {
            let mut name = db.as_os_str().to_owned();
            name.push(format!(".staged-{side}"));
            PathBuf::from(name)
        })
    }

    /// Opens (creating, private, empty) the staging files at `paths`.
    pub(super) fn open(paths: [PathBuf; 2]) -> Result<Self, StoreError> {
        let open = |path: &PathBuf| -> Result<StagingFile, StoreError> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
            file.set_len(0).map_err(io(path))?;
            Ok(StagingFile {
                file,
                staged_upto: 0,
                len: 0,
            })
        };
        let files = [open(&paths[0])?, open(&paths[1])?];
        Ok(Self {
            paths,
            state: Mutex::new(State { files, current: 0 }),
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
        let other = 1 - state.current;
        if state.files[state.current].len >= SWITCH_AT && state.files[other].len == 0 {
            state.current = other;
        }
        let current = state.current;
        let staged = &mut state.files[current];
        if let Err(e) = staged.file.write_all(&buf) {
            // A full disk can take part of the batch: cut it off again, so
            // the retry's lines follow whole ones, not a fragment.
            if let Err(cut) = staged.file.set_len(staged.len) {
                tracing::error!(error = %cut, "a partly written staging batch could not be cut off");
            }
            return Err(io(&self.paths[current])(e));
        }
        staged.staged_upto = last.seq;
        staged.len += buf.len() as u64;
        Ok(())
    }

    /// Records up to `upto` are committed: a file holding nothing newer is
    /// emptied.
    pub(super) fn committed(&self, upto: u64) {
        let mut state = self.lock();
        for staged in &mut state.files {
            if staged.len > 0 && staged.staged_upto <= upto {
                match staged.file.set_len(0) {
                    Ok(()) => {
                        staged.len = 0;
                        staged.staged_upto = 0;
                    }
                    // Kept: the records are committed, and reading them
                    // back at the next open skips what the store holds.
                    Err(e) => tracing::warn!(error = %e, "a staging file could not be emptied"),
                }
            }
        }
    }
}

/// A staged line and its record. A line that begins with a fragment (a
/// write cut short whose retry followed it) is read from the last record
/// start in it.
fn parse_staged(text: &str) -> Option<(String, Staged)> {
    if let Ok(staged) = serde_json::from_str::<Staged>(text) {
        return Some((text.to_owned(), staged));
    }
    let start = text.rfind("{\"seq\":")?;
    let tail = &text[start..];
    let staged = serde_json::from_str::<Staged>(tail).ok()?;
    Some((tail.to_owned(), staged))
}

/// What reading the staging files back did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Recovered {
    /// Records committed from them.
    pub committed: u64,
    /// Their lines, for the sinks, which never saw them.
    pub lines: Vec<String>,
    /// They hold a complete record that does not continue the chain.
    pub rejected: bool,
}

#[derive(Deserialize)]
struct Staged {
    seq: u64,
    kind: String,
    prev: String,
    body: serde_json::Value,
}

/// Commits the staged records in `paths` that continue the store's chain,
/// in sequence order. Run at open, before anything else writes.
pub(super) fn recover(
    conn: &mut rusqlite::Connection,
    paths: &[PathBuf],
) -> Result<Recovered, StoreError> {
    let mut recovered = Recovered::default();
    let mut lines: std::collections::BTreeMap<u64, String> = std::collections::BTreeMap::new();
    for path in paths {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(path)(e)),
        };
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io(path))?;
            // The end, or a line a crash cut short (never acknowledged).
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            line.pop();
            // Bytes, not text: a fragment cut inside a character must not
            // stop the rest from being read.
            let text = String::from_utf8_lossy(&line).into_owned();
            let Some((text, staged)) = parse_staged(&text) else {
                tracing::warn!(path = %path.display(), "a staged line does not parse; skipped");
                continue;
            };
            if lines
                .insert(staged.seq, text.clone())
                .is_some_and(|other| other != text)
            {
                recovered.rejected = true;
            }
        }
    }
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
    for text in lines.values() {
        let Ok(staged) = serde_json::from_str::<Staged>(text) else {
            continue;
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
                tracing::warn!(seq = staged.seq, "a staged record differs from the store's");
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
        recovered.lines.push(text.clone());
    }
    tx.commit().map_err(backend)?;
    Ok(recovered)
}
