//! Pure PostgreSQL decisions, with no I/O: what a statement may do, and
//! what of its results a principal may see.
//!
//! - [`vocabulary`]: the SQL words policies speak (tables, columns,
//!   functions; `select` … `unmask`), added to the core's schema.
//! - [`gate`]: every statement text parsed once (PostgreSQL's own grammar,
//!   through `portcullis-pg-sql`), its names resolved as the session's
//!   search_path and the upstream's catalog resolve them, and each
//!   (action, object) pair put to Cedar. The decision comes back as a
//!   [`GateDecision`]: allowed with its mask plan, or denied with the
//!   message the client gets.
//! - [`masker`]: the mask plan made with each decision, and the row and
//!   COPY maskers made from a plan and the row description it meets.
//! - [`catalog`]: what the upstream's catalog says of relations, views and
//!   functions, as data (the adapter reads it from the server).
//!
//! The adapter (`portcullis-proto-pg`) owns sockets and message pairing;
//! everything it decides, it asks here.

pub mod catalog;
pub mod gate;
pub mod masker;
pub mod permit;
pub mod vocabulary;

pub use gate::{ParseCache, StatementGate};
pub use permit::{
    hold_key, Allowed, Denied, Forward, GateDecision, Held, Hold, HoldSubject, Permit, ReviewNeed,
    RowGate, RowPolicy, StandIn,
};
