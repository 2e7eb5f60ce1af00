//! Terminal recordings in asciicast v2: a JSON header line, then one
//! `[seconds, code, text]` line per event (`o` output, `i` input, `r`
//! resize, and `e` for an exec's stderr, which players that know only the
//! standard codes skip).
//!
//! A recording is written before its bytes are forwarded, so what a
//! client saw is in the file. Each session has one budget of bytes for
//! all its recordings: an event that would pass it is not written, and the
//! caller ends the session instead of forwarding unrecorded output. The
//! file's size and SHA-256 go into the command's outcome record, which the
//! evidence chain covers, so a recording changed afterwards no longer
//! matches its record.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Why an event was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum CastError {
    /// The session's recordings reached their cap.
    #[error("the session's recordings reached their cap of {0} bytes")]
    CapReached(u64),
    /// The file could not be written.
    #[error("the recording could not be written: {0}")]
    Io(#[from] std::io::Error),
}

/// The bytes a session's recordings may still take.
#[derive(Debug)]
pub struct Budget {
    cap: u64,
    used: AtomicU64,
}

impl Budget {
    /// A budget of `cap` bytes.
    pub fn new(cap: u64) -> Arc<Self> {
        Arc::new(Self {
            cap,
            used: AtomicU64::new(0),
        })
    }

    fn take(&self, bytes: u64) -> Result<(), CastError> {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.cap {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(CastError::CapReached(self.cap));
        }
        Ok(())
    }
}

/// The header line.
#[derive(Debug, Serialize)]
pub struct CastHeader {
    /// Always 2.
    pub version: u8,
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Start, in Unix seconds.
    pub timestamp: i64,
    /// What was run (`shell`, the command).
    pub title: String,
    /// `TERM`, when the client asked for a terminal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<serde_json::Value>,
}

/// What the outcome record keeps of a finished recording.
#[derive(Debug, Clone, Serialize)]
pub struct CastSummary {
    /// The file, relative to the recordings directory.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// One channel's recording, being written.
pub struct Cast {
    out: BufWriter<File>,
    hasher: Sha256,
    written: u64,
    started: Instant,
    budget: Arc<Budget>,
    relative: String,
    /// The tail of a UTF-8 sequence split across two chunks, per stream.
    carry: [Vec<u8>; 3],
}

impl Cast {
    /// Creates `dir/relative` (0600, its directories 0700) and writes the
    /// header.
    pub fn create(
        dir: &Path,
        relative: String,
        header: &CastHeader,
        budget: Arc<Budget>,
    ) -> Result<Self, CastError> {
        let path: PathBuf = dir.join(&relative);
        if let Some(parent) = path.parent() {
            portcullis_core::files::private_dir(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut cast = Self {
            out: BufWriter::with_capacity(16 * 1024, file),
            hasher: Sha256::new(),
            written: 0,
            started: Instant::now(),
            budget,
            relative,
            carry: Default::default(),
        };
        let mut line = serde_json::to_vec(header).map_err(std::io::Error::other)?;
        line.push(b'\n');
        cast.write_line(&line)?;
        Ok(cast)
    }

    /// Records output (`o`), input (`i`) or stderr (`e`) bytes.
    pub fn bytes(&mut self, code: Code, data: &[u8]) -> Result<(), CastError> {
        let slot = code as usize;
        let mut joined;
        let data = if self.carry[slot].is_empty() {
            data
        } else {
            joined = std::mem::take(&mut self.carry[slot]);
            joined.extend_from_slice(data);
            &joined[..]
        };
        let (text, rest) = split_utf8(data);
        self.carry[slot] = rest.to_vec();
        if text.is_empty() {
            return Ok(());
        }
        self.event(code.as_str(), &text)
    }

    /// Records a resize to `cols`×`rows`.
    pub fn resize(&mut self, cols: u32, rows: u32) -> Result<(), CastError> {
        self.event("r", &format!("{cols}x{rows}"))
    }

    fn event(&mut self, code: &str, text: &str) -> Result<(), CastError> {
        let at = self.started.elapsed().as_secs_f64();
        let mut line =
            serde_json::to_vec(&(Rounded(at), code, text)).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.write_line(&line)
    }

    fn write_line(&mut self, line: &[u8]) -> Result<(), CastError> {
        self.budget.take(line.len() as u64)?;
        self.out.write_all(line)?;
        self.hasher.update(line);
        self.written += line.len() as u64;
        Ok(())
    }

    /// Flushes the file to disk and returns what the record keeps.
    pub fn finish(mut self) -> Result<CastSummary, CastError> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        Ok(CastSummary {
            file: self.relative,
            bytes: self.written,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

/// Which stream bytes came from.
#[derive(Debug, Clone, Copy)]
pub enum Code {
    /// What the terminal showed (stdout, or everything under a pty).
    Output = 0,
    /// What was typed.
    Input = 1,
    /// An exec's stderr.
    Stderr = 2,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::Output => "o",
            Code::Input => "i",
            Code::Stderr => "e",
        }
    }
}

/// Seconds with microsecond precision, as asciinema writes them.
struct Rounded(f64);

impl Serialize for Rounded {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((self.0 * 1e6).round() / 1e6)
    }
}

/// `data` as text, and the incomplete UTF-8 sequence at its end (kept for
/// the next chunk). Invalid bytes become U+FFFD, as a terminal shows them.
fn split_utf8(data: &[u8]) -> (String, &[u8]) {
    match std::str::from_utf8(data) {
        Ok(text) => (text.to_owned(), &[]),
        Err(e) if e.error_len().is_none() => {
            let (head, tail) = data.split_at(e.valid_up_to());
            (String::from_utf8_lossy(head).into_owned(), tail)
        }
        Err(_) => {
            // Invalid in the middle: replace, but still keep an incomplete
            // sequence at the very end for the next chunk.
            let cut = incomplete_tail(data);
            let (head, tail) = data.split_at(cut);
            (String::from_utf8_lossy(head).into_owned(), tail)
        }
    }
}

/// Where an incomplete UTF-8 sequence at the end of `data` starts (its
/// length when there is none).
fn incomplete_tail(data: &[u8]) -> usize {
    let start = data.len().saturating_sub(3);
    for i in (start..data.len()).rev() {
        let b = data[i];
        if b & 0xC0 != 0x80 {
            let need = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if data.len() - i < need { i } else { data.len() };
        }
    }
    data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, summary: &CastSummary) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join(&summary.file))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn header() -> CastHeader {
        CastHeader {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 0,
            title: "shell".into(),
            env: None,
        }
    }

    #[test]
    fn a_character_split_across_chunks_is_recorded_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut cast = Cast::create(
            dir.path(),
            "s/1.cast".into(),
            &header(),
            Budget::new(1 << 20),
        )
        .unwrap();
        let euro = "€".as_bytes();
        cast.bytes(Code::Output, &[b'a', euro[0]]).unwrap();
        cast.bytes(Code::Output, &euro[1..]).unwrap();
        cast.resize(100, 40).unwrap();
        let summary = cast.finish().unwrap();
        let lines = read(dir.path(), &summary);
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "a");
        assert_eq!(lines[2][2], "€");
        assert_eq!(lines[3][2], "100x40");
        let on_disk = std::fs::read(dir.path().join(&summary.file)).unwrap();
        assert_eq!(summary.bytes, on_disk.len() as u64);
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(&on_disk)));
    }

    #[test]
    fn the_budget_refuses_the_event_that_would_pass_it() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(200);
        let mut cast = Cast::create(dir.path(), "1.cast".into(), &header(), budget).unwrap();
        cast.bytes(Code::Output, b"short").unwrap();
        let big = vec![b'x'; 300];
        assert!(matches!(
            cast.bytes(Code::Output, &big),
            Err(CastError::CapReached(200))
        ));
        cast.bytes(Code::Output, b"y").unwrap();
    }
}
