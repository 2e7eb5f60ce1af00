//! The client's startup phase: TLS negotiation, the startup packet, and the
//! token presented as a password. No upstream is touched until this passes.

use std::sync::Arc;

use bytes::BytesMut;
use portcullis_pg_wire::{encode, FrontendMessage, StartupPacket};
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::SessionError;
use crate::framed::{read_message, read_startup};
use crate::stream::Stream;

/// Largest password message (a token) accepted before authentication.
const PASSWORD_LIMIT: usize = 16 * 1024;
/// First byte of a TLS ClientHello record: a client doing direct TLS (libpq 17 `sslnegotiation=direct`).
const TLS_HANDSHAKE: u8 = 0x16;

/// What a new client connection turned out to be.
pub enum Opening {
    /// A client that wants a session.
    Session(ClientHello),
    /// A CancelRequest for a running session.
    Cancel {
        /// Gateway-issued process id.
        pid: i32,
        /// Gateway-issued secret.
        secret: i32,
        /// The client's connection: closed only once the cancel is
        /// delivered, as the server does, since clients take the close to
        /// mean it is done.
        stream: Stream,
    },
}

/// A client that sent its startup packet.
pub struct ClientHello {
    /// The client connection.
    pub stream: Stream,
    /// Startup parameters, in order.
    pub params: Vec<(String, String)>,
    /// Requested minor protocol version.
    pub minor_version: u16,
}

impl ClientHello {
    /// A startup parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads startup packets until a StartupMessage or CancelRequest, switching
/// to TLS when asked and configured.
pub async fn open(
    tcp: TcpStream,
    tls: Option<&Arc<ServerConfig>>,
) -> Result<Opening, SessionError> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    let mut stream = if n == 1 && first[0] == TLS_HANDSHAKE {
        let cfg = tls.ok_or_else(|| {
            SessionError::not_allowed("TLS is not configured on this listener".into())
        })?;
        accept_tls(tcp, cfg).await?
    } else {
        Stream::Plain(tcp)
    };
    let mut buf = BytesMut::with_capacity(1024);
    // A client asks for GSS encryption and TLS at most once each (libpq
    // tries GSS, then TLS): more is a loop meant to burn the gateway's CPU.
    let (mut asked_gss, mut asked_ssl) = (false, false);
    loop {
        match read_startup(&mut stream, &mut buf).await? {
            StartupPacket::SslRequest if std::mem::replace(&mut asked_ssl, true) => {
                return Err(SessionError::not_allowed("TLS requested twice".into()));
            }
            StartupPacket::GssEncRequest if std::mem::replace(&mut asked_gss, true) => {
                return Err(SessionError::not_allowed(
                    "GSS encryption requested twice".into(),
                ));
            }
            StartupPacket::SslRequest => {
                // Bytes after SSLRequest and before the handshake would be
                // read as if encrypted (CVE-2021-23222): refuse them.
                if !buf.is_empty() {
                    return Err(SessionError::not_allowed(
                        "data sent after SSLRequest before TLS".into(),
                    ));
                }
                let (Stream::Plain(mut tcp), Some(cfg)) = (stream, tls) else {
                    return Err(SessionError::not_allowed(
                        "TLS requested twice or not configured".into(),
                    ));
                };
                tcp.write_all(b"S").await?;
                stream = accept_tls(tcp, cfg).await?;
            }
            StartupPacket::GssEncRequest => stream.write_all(b"N").await?,
            StartupPacket::Cancel { pid, secret } => {
                return Ok(Opening::Cancel {
                    pid,
                    secret,
                    stream,
                })
            }
            StartupPacket::Startup {
                minor_version,
                params,
            } => {
                if !buf.is_empty() {
                    return Err(SessionError::not_allowed(
                        "data sent before authentication was requested".into(),
                    ));
                }
                return Ok(Opening::Session(ClientHello {
                    stream,
                    params,
                    minor_version,
                }));
            }
        }
    }
}

async fn accept_tls(tcp: TcpStream, cfg: &Arc<ServerConfig>) -> Result<Stream, SessionError> {
    let tls = tokio_rustls::TlsAcceptor::from(cfg.clone())
        .accept(tcp)
        .await
        .map_err(|e| SessionError::not_allowed(format!("TLS handshake failed: {e}")))?;
    Ok(Stream::ServerTls(Box::new(tls)))
}

/// Asks the client for its password (the token) and returns it.
pub async fn read_token(hello: &mut ClientHello) -> Result<String, SessionError> {
    let mut out = BytesMut::new();
    // We speak 3.0; tell newer clients so, and which `_pq_.` options we ignore.
    let unknown: Vec<&str> = hello
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect();
    if hello.minor_version > 0 || !unknown.is_empty() {
        encode::negotiate_protocol_version(&mut out, 0, &unknown);
    }
    encode::auth_cleartext(&mut out);
    hello.stream.write_all(&out).await?;
    hello.stream.flush().await?;
    let mut buf = BytesMut::with_capacity(1024);
    let (tag, body) = read_message(&mut hello.stream, &mut buf, PASSWORD_LIMIT).await?;
    let FrontendMessage::Password(raw) = FrontendMessage::decode(tag, &body)? else {
        return Err(SessionError::not_allowed(
            "expected a password message".into(),
        ));
    };
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    let token = std::str::from_utf8(raw).map_err(|_| {
        SessionError::Refused(portcullis_core::Refusal::Authentication(
            portcullis_core::AuthError::Rejected("the token is not valid UTF-8".into()),
        ))
    })?;
    Ok(token.to_owned())
}
