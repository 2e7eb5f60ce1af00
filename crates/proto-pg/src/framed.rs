//! Reading whole messages during the setup phases (not the relay hot path).

use bytes::{Buf, BytesMut};
use portcullis_pg_wire::{next_frame, parse_startup, StartupPacket};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::SessionError;

/// Reads one tagged message: its type byte and body.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<(u8, BytesMut), SessionError> {
    loop {
        if let Some(frame) = next_frame(buf, max_len)? {
            let mut msg = buf.split_to(frame.len);
            msg.advance(5);
            return Ok((frame.tag, msg));
        }
        read_more(stream, buf).await?;
    }
}

/// Reads one startup-phase packet (StartupMessage, SSLRequest, …).
pub async fn read_startup<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<StartupPacket, SessionError> {
    loop {
        if let Some((packet, used)) = parse_startup(buf)? {
            buf.advance(used);
            return Ok(packet);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<(), SessionError> {
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        return Err(SessionError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed the connection",
        )));
    }
    Ok(())
}
