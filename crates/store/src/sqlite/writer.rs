//! The audit store's one writing connection, on a thread of its own.
//!
//! Why rusqlite here, beside sqlx: every statement run through sqlx's
//! SQLite driver is a round trip to its worker thread (BEGIN, each INSERT
//! and COMMIT are one each), and every bound value is copied twice on the
//! way: a batch of one row took 208 µs, most of it that traffic rather
//! than SQLite's own work (63 µs here). This thread takes a whole batch in
//! one hand-off and runs one cached single-row INSERT per statement. Both
//! bindings link the same `libsqlite3-sys`, so there is one SQLite in the
//! binary; sqlx keeps the reads.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use portcullis_core::audit::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// One piece of work for the writing thread.
type Job = Box<dyn FnOnce(&mut Slot) + Send>;

/// The writing connection, opened on first use and again after a failure.
struct Slot {
    path: PathBuf,
    conn: Option<Connection>,
}

/// A handle to the thread that owns the writing connection. The thread
/// ends when the last handle is dropped.
#[derive(Debug)]
pub(super) struct WriteThread {
    jobs: mpsc::Sender<Job>,
}

impl WriteThread {
    /// Starts the thread for the store file at `path`.
    pub(super) fn start(path: &Path) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let mut slot = Slot {
            path: path.to_owned(),
            conn: None,
        };
        std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || {
                for job in queue {
                    // A job that panics (a bug) fails its own write, which
                    // the recorder retries, instead of ending the thread and
                    // every write after it; the connection it may have left
                    // mid-transaction is dropped, which rolls that back.
                    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut slot)));
                    if ran.is_err() {
                        slot.conn = None;
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `work` on the writing connection and returns its outcome. A
    /// failed write closes the connection, which rolls back whatever it
    /// left open (a full disk can fail a COMMIT half-way), and the next
    /// write opens a fresh one.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (done, outcome) = oneshot::channel();
        let job: Job = Box::new(move |slot: &mut Slot| {
            let result = slot.connection().and_then(work);
            if result.is_err() {
                slot.conn = None;
            }
            let _ = done.send(result);
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        outcome
            .await
            .map_err(|_| StoreError::Backend("the audit write panicked (see the log)".into()))?
            .map_err(backend)
    }
}

impl Slot {
    fn connection(&mut self) -> rusqlite::Result<&mut Connection> {
        match self.conn {
            Some(ref mut conn) => Ok(conn),
            None => Ok(self.conn.insert(open(&self.path)?)),
        }
    }
}

/// Opens the writing connection with the settings sqlx gives the readers
/// (see `SqliteStore::open`); the journal mode is the file's own, set there.
/// Statement journals (foreign key checks keep one) stay in memory rather
/// than in a temporary file per transaction.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

fn stopped() -> StoreError {
    StoreError::Backend("the audit writer thread has stopped".into())
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}
