//! The untagged packets a client sends first: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest.

use crate::read::Reader;
use crate::WireError;

/// PostgreSQL's own cap on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// One packet of the startup phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks to switch to TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption (we always answer no).
    GssEncRequest,
    /// Cancel the query running on the session with this key.
    Cancel {
        /// The backend process id the client was given.
        pid: i32,
        /// The secret key the client was given.
        secret: i32,
    },
    /// A protocol 3.x startup message with its parameters in order.
    Startup {
        /// Requested minor protocol version (major is always 3).
        minor_version: u16,
        /// `(name, value)` pairs such as `user` and `database`.
        params: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// The value of a startup parameter, if the client sent it.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params, .. } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Parses the startup packet at the start of `buf`.
///
/// Returns the packet and the bytes it used, or `Ok(None)` when more bytes
/// are needed. Packets over [`MAX_STARTUP_PACKET`] are refused from their
/// length field alone.
pub fn parse_startup(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < 8 {
        return Err(WireError::LengthTooShort(len as u32));
    }
    if len > MAX_STARTUP_PACKET {
        return Err(WireError::TooLarge {
            len,
            limit: MAX_STARTUP_PACKET,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut r = Reader::new(&buf[4..len], "startup");
    let code = r.u32()?;
    let packet = match code {
        SSL_REQUEST => {
            r.finish()?;
            StartupPacket::SslRequest
        }
        GSSENC_REQUEST => {
            r.finish()?;
            StartupPacket::GssEncRequest
        }
        CANCEL_REQUEST => {
            let pid = r.i32()?;
            let secret = r.i32()?;
            r.finish()?;
            StartupPacket::Cancel { pid, secret }
        }
        version => {
            let major = (version >> 16) as u16;
            let minor = (version & 0xffff) as u16;
            if major != 3 {
                return Err(WireError::UnsupportedVersion { major, minor });
            }
            let mut params = Vec::new();
            loop {
                let name = r.cstr()?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr()?;
                params.push((name.to_owned(), value.to_owned()));
            }
            r.finish()?;
            StartupPacket::Startup {
                minor_version: minor,
                params,
            }
        }
    };
    Ok(Some((packet, len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;
    use bytes::BytesMut;

    #[test]
    fn startup_roundtrip() {
        let mut b = BytesMut::new();
        encode::startup_message(&mut b, &[("user", "alice"), ("database", "app-db")]);
        let (p, n) = parse_startup(&b).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert_eq!(p.param("user"), Some("alice"));
        assert_eq!(p.param("database"), Some("app-db"));
    }

    #[test]
    fn ssl_and_cancel() {
        let mut b = BytesMut::new();
        encode::ssl_request(&mut b);
        assert_eq!(
            parse_startup(&b).unwrap().unwrap().0,
            StartupPacket::SslRequest
        );
        let mut b = BytesMut::new();
        encode::cancel_request(&mut b, 7, -9);
        assert_eq!(
            parse_startup(&b).unwrap().unwrap().0,
            StartupPacket::Cancel { pid: 7, secret: -9 }
        );
    }

    #[test]
    fn oversized_refused_from_length_alone() {
        assert!(matches!(
            parse_startup(&[0, 1, 0, 0]),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_startup(b"\0\0\0\x08\x00\x02\x00\x00").is_err());
        assert!(parse_startup(b"\0\0\0\x0a\x00\x03\x00\x00ab").is_err());
        assert!(parse_startup(b"\0\0\0\x02").is_err());
    }
}
