use thiserror::Error;

/// Why a byte sequence is not a valid protocol message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The declared length is below the minimum a message can have.
    #[error("message length {0} is too short")]
    LengthTooShort(u32),
    /// The declared length exceeds the configured limit.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The message type byte is not one this side of the protocol may send.
    #[error("unknown message type {0:?}")]
    UnknownType(char),
    /// The message body ended before a field was complete.
    #[error("truncated {0} message")]
    Truncated(&'static str),
    /// A string field is not NUL-terminated UTF-8.
    #[error("invalid string in {0} message")]
    BadString(&'static str),
    /// A string field is not text in the session's client encoding, as
    /// the server would convert it.
    #[error("{1} in {0} message")]
    Encoding(&'static str, crate::Undecodable),
    /// A field holds a value the protocol does not allow.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The startup packet asked for a protocol version we do not speak.
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
}
