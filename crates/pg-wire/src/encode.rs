//! Builders for the messages the gateway writes itself.
//!
//! Each appends one complete message to a buffer; the length field is
//! patched in after the body so no size is computed twice.

use bytes::{BufMut, BytesMut};

use crate::TransactionStatus;

fn tagged(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    untagged(buf, body);
}

fn untagged(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early and desynchronise the peer.
    buf.put_slice(s.replace('\0', "").as_bytes());
    buf.put_u8(0);
}

/// Severity of an ErrorResponse the gateway sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

/// ErrorResponse (or NoticeResponse with `notice`) with severity, SQLSTATE and message.
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    error_response_bytes(buf, severity, code, message.as_bytes());
}

/// ErrorResponse with its message already in the client's encoding.
pub fn error_response_bytes(buf: &mut BytesMut, severity: Severity, code: &str, message: &[u8]) {
    let sev = match severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    tagged(buf, b'E', |b| {
        b.put_u8(b'S');
        cstr(b, sev);
        b.put_u8(b'V');
        cstr(b, sev);
        b.put_u8(b'C');
        cstr(b, code);
        b.put_u8(b'M');
        // A NUL would end the field early; none of the gateway's texts
        // holds one, and none may.
        b.extend(message.iter().copied().filter(|&c| c != 0));
        b.put_u8(0);
        b.put_u8(0);
    });
}

/// NoticeResponse (severity NOTICE) with its message already in the
/// client's encoding.
pub fn notice_response_bytes(buf: &mut BytesMut, code: &str, message: &[u8]) {
    tagged(buf, b'N', |b| {
        for (field, value) in [(b'S', "NOTICE"), (b'V', "NOTICE"), (b'C', code)] {
            b.put_u8(field);
            cstr(b, value);
        }
        b.put_u8(b'M');
        b.extend(message.iter().copied().filter(|&c| c != 0));
        b.put_u8(0);
        b.put_u8(0);
    });
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    tagged(buf, b'R', |b| b.put_i32(0));
}

/// AuthenticationCleartextPassword.
pub fn auth_cleartext(buf: &mut BytesMut) {
    tagged(buf, b'R', |b| b.put_i32(3));
}

/// BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    tagged(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    tagged(buf, b'S', |b| {
        cstr(b, name);
        cstr(b, value);
    });
}

/// ReadyForQuery.
pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    tagged(buf, b'Z', |b| b.put_u8(status.byte()));
}

/// StartupMessage for protocol 3.0.
pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) {
    untagged(buf, |b| {
        b.put_u32(196_608);
        for (k, v) in params {
            cstr(b, k);
            cstr(b, v);
        }
        b.put_u8(0);
    });
}

/// SSLRequest.
pub fn ssl_request(buf: &mut BytesMut) {
    untagged(buf, |b| b.put_u32(80_877_103));
}

/// CancelRequest.
pub fn cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    untagged(buf, |b| {
        b.put_u32(80_877_102);
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// PasswordMessage carrying a NUL-terminated password or md5 hash.
pub fn password(buf: &mut BytesMut, password: &[u8]) {
    tagged(buf, b'p', |b| {
        b.put_slice(password);
        b.put_u8(0);
    });
}

/// SASLInitialResponse.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    tagged(buf, b'p', |b| {
        cstr(b, mechanism);
        b.put_i32(i32::try_from(data.len()).unwrap_or(i32::MAX));
        b.put_slice(data);
    });
}

/// SASLResponse.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, b'p', |b| b.put_slice(data));
}

/// NegotiateProtocolVersion: the newest minor version we speak and the
/// protocol options we did not recognise.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: u32, unrecognized: &[&str]) {
    tagged(buf, b'v', |b| {
        b.put_u32(minor);
        b.put_u32(u32::try_from(unrecognized.len()).unwrap_or(u32::MAX));
        for o in unrecognized {
            cstr(b, o);
        }
    });
}

/// Parse, with the server inferring every parameter type.
pub fn parse(buf: &mut BytesMut, name: &str, sql: &str) {
    tagged(buf, b'P', |b| {
        cstr(b, name);
        cstr(b, sql);
        b.put_i16(0);
    });
}

/// Bind with no parameters and default result formats.
pub fn bind(buf: &mut BytesMut, portal: &str, statement: &str) {
    tagged(buf, b'B', |b| {
        cstr(b, portal);
        cstr(b, statement);
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    });
}

/// Close of a prepared statement (`b'S'`) or portal (`b'P'`).
pub fn close(buf: &mut BytesMut, target: u8, name: &str) {
    tagged(buf, b'C', |b| {
        b.put_u8(target);
        cstr(b, name);
    });
}

/// Sync.
pub fn sync(buf: &mut BytesMut) {
    tagged(buf, b'S', |_| {});
}

/// Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    tagged(buf, b'Q', |b| cstr(b, sql));
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    tagged(buf, b'X', |_| {});
}

/// Describe of a portal (`name`, empty for the unnamed one).
pub fn describe_portal(buf: &mut BytesMut, name: &str) {
    tagged(buf, b'D', |b| {
        b.put_u8(b'P');
        cstr(b, name);
    });
}

/// NotificationResponse.
pub fn notification(buf: &mut BytesMut, pid: i32, channel: &str, payload: &str) {
    tagged(buf, b'A', |b| {
        b.put_i32(pid);
        cstr(b, channel);
        cstr(b, payload);
    });
}

/// ErrorResponse (`tag` b'E') or NoticeResponse (b'N') with the given fields.
pub fn error_fields<'a>(
    buf: &mut BytesMut,
    tag: u8,
    fields: impl IntoIterator<Item = (u8, &'a str)>,
) {
    tagged(buf, tag, |b| {
        for (code, value) in fields {
            b.put_u8(code);
            cstr(b, value);
        }
        b.put_u8(0);
    });
}

/// Execute of a portal with a row limit (0 for all rows).
pub fn execute(buf: &mut BytesMut, portal: &str, max_rows: i32) {
    tagged(buf, b'E', |b| {
        cstr(b, portal);
        b.put_i32(max_rows);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{next_frame, BackendMessage};

    #[test]
    fn error_response_decodes() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Fatal, "28P01", "bad\0token");
        let f = next_frame(&b, 1024).unwrap().unwrap();
        assert_eq!(f.len, b.len());
        match BackendMessage::decode(f.tag, f.body(&b)).unwrap() {
            BackendMessage::ErrorResponse(e) => {
                assert_eq!(e.code(), Some("28P01"));
                assert_eq!(e.message(), Some("badtoken"));
                assert_eq!(e.get(b'S'), Some("FATAL"));
            }
            other => panic!("{other:?}"),
        }
    }
}
