//! PostgreSQL frontend/backend protocol (version 3.0) codec, with no I/O.
//!
//! The codec frames first and decodes second: [`frame::next_frame`] checks a
//! message's declared length against a hard limit before anything is
//! allocated, and the decoders borrow from the framed bytes. Client and server
//! messages are separate enums ([`FrontendMessage`], [`BackendMessage`]) so an
//! unknown client message is rejected instead of being passed through.
//!
//! Everything here is pure: it takes bytes and returns values, so it is
//! unit-tested and fuzzed without sockets.

pub mod backend;
pub mod copy;
pub mod encode;
pub mod encoding;
mod error;
pub mod frame;
pub mod frontend;
mod read;
pub mod rows;
pub mod startup;

pub use backend::{
    command_complete_rows, rows_in_tag, AuthRequest, BackendMessage, ErrorFields, TransactionStatus,
};
pub use encoding::{ClientEncoding, Undecodable};
pub use error::WireError;
pub use frame::{next_frame, Frame};
pub use frontend::{FrontendMessage, Param, Target};
pub use startup::{parse_startup, StartupPacket, MAX_STARTUP_PACKET};
