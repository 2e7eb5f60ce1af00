//! The PostgreSQL protocol adapter.
//!
//! It turns the wire protocol into the core's neutral requests: a startup
//! packet and a token become an [`portcullis_core::Identity`] and a
//! `connect` decision; each statement becomes a recorded
//! [`portcullis_core::StatementRecord`]. The relay itself ([`relay`]) is
//! hand-written because it is the hot path.

pub mod cancel;
pub mod catalog;
pub mod error;
mod framed;
pub mod gate;
pub mod handshake;
pub mod masker;
pub mod relay;
pub mod scram;
pub mod server;
pub mod stream;
pub mod target;
pub mod tls;
pub mod tracker;
pub mod upstream;

pub use error::SessionError;
pub use relay::Limits;
pub use server::{PgAdapter, PgAdapterConfig, PlaintextLogin};
pub use target::{PgTarget, UpstreamTls};
pub use upstream::Upstream;
