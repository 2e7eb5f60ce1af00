//! Framing of tagged messages (`type byte, int32 length, body`).

use crate::WireError;

/// Where one complete tagged message sits in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The message type byte.
    pub tag: u8,
    /// Total bytes of the message, type byte and length included.
    pub len: usize,
}

impl Frame {
    /// The message body within `buf`, which must start at this frame.
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[5..self.len]
    }
}

/// Finds the frame at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. The declared length is
/// checked against `max_len` before the caller buffers anything for it, so a
/// peer cannot make us allocate a size it chose.
pub fn next_frame(buf: &[u8], max_len: usize) -> Result<Option<Frame>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let declared = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if declared < 4 {
        return Err(WireError::LengthTooShort(declared));
    }
    let len = declared as usize + 1;
    if len > max_len {
        return Err(WireError::TooLarge {
            len,
            limit: max_len,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Frame { tag: buf[0], len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_header_needs_more() {
        assert_eq!(next_frame(b"Q\0\0", 100), Ok(None));
    }

    #[test]
    fn partial_body_needs_more() {
        assert_eq!(next_frame(b"Q\0\0\0\x09ab", 100), Ok(None));
    }

    #[test]
    fn complete_frame() {
        let f = next_frame(b"Q\0\0\0\x06a\0rest", 100).unwrap().unwrap();
        assert_eq!(f, Frame { tag: b'Q', len: 7 });
        assert_eq!(f.body(b"Q\0\0\0\x06a\0rest"), b"a\0");
    }

    #[test]
    fn length_below_four_is_an_error() {
        assert_eq!(
            next_frame(b"Q\0\0\0\x03", 100),
            Err(WireError::LengthTooShort(3))
        );
    }

    #[test]
    fn oversized_is_refused_before_body_arrives() {
        assert!(matches!(
            next_frame(b"Q\x7f\xff\xff\xff", 1 << 20),
            Err(WireError::TooLarge { .. })
        ));
    }
}
