//! Persistence for Portcullis.
//!
//! [`SqliteStore`] is the embedded default: one file in `data_dir`, written
//! in WAL mode so a crashed gateway reopens cleanly with every committed
//! batch intact. The [`portcullis_core::AuditStore`] trait it implements is
//! the seam for a PostgreSQL store shared by several gateway replicas.

mod sqlite;

pub use sqlite::{verify_store, RetentionCut, SqliteStore};
