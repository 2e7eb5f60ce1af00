//! The PostgreSQL protocol adapter.
//!
//! It implements the core's session seam ([`portcullis_core::session`])
//! for PostgreSQL: a startup packet and a token become an
//! [`portcullis_core::Identity`] and an admission; each statement is
//! decided by `portcullis-pg-decide` before it is forwarded and recorded as
//! a [`portcullis_core::CommandRecord`] with its [`relay::SqlDetail`]. The
//! relay itself ([`relay`]) is hand-written because it is the hot path.

pub mod cancel;
mod end_point;
mod error;
mod framed;
pub mod handshake;
pub mod hold;
pub mod probe;
pub mod provision;
pub mod relay;
pub mod scram;
pub mod server;
pub mod stream;
pub mod target;
pub mod tls;
pub mod tracker;
pub mod upstream;

pub use error::SessionError;
pub use provision::{GrantProvisioning, GrantRoles, OwnedObjects};
pub use relay::Limits;
pub use server::{PgAdapter, PgAdapterConfig, ALPN};
pub use target::{PgTarget, UpstreamAuth, UpstreamTls};
pub use upstream::Upstream;
