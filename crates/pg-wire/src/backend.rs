//! Messages a server sends.

use crate::read::Reader;
use crate::WireError;

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `'I'`: not in a transaction.
    Idle,
    /// `'T'`: in a transaction block.
    InTransaction,
    /// `'E'`: in a failed transaction block.
    Failed,
}

impl TransactionStatus {
    /// The status a ReadyForQuery body reports, if it is a known one.
    pub fn of_ready_for_query(body: &[u8]) -> Option<TransactionStatus> {
        match body {
            [b'I'] => Some(TransactionStatus::Idle),
            [b'T'] => Some(TransactionStatus::InTransaction),
            [b'E'] => Some(TransactionStatus::Failed),
            _ => None,
        }
    }

    /// The status byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// An authentication request from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear.
    Cleartext,
    /// Send `md5(md5(password || user) || salt)`.
    Md5 {
        /// The 4-byte salt.
        salt: [u8; 4],
    },
    /// Start SASL with one of these mechanisms.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256`.
        mechanisms: Vec<&'a str>,
    },
    /// A SASL challenge.
    SaslContinue(&'a [u8]),
    /// The SASL outcome, to be verified by the client.
    SaslFinal(&'a [u8]),
    /// A method we do not implement (Kerberos, GSSAPI, SSPI, …).
    Other(i32),
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFields<'a>(&'a [u8]);

impl<'a> ErrorFields<'a> {
    /// Wraps the body of an ErrorResponse or NoticeResponse.
    pub fn new(body: &'a [u8]) -> Self {
        Self(body)
    }

    /// Each `(field code, value)` pair; stops at the first malformed field.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a str)> + 'a {
        let mut r = Reader::new(self.0, "ErrorResponse");
        std::iter::from_fn(move || {
            let code = r.u8().ok()?;
            if code == 0 {
                return None;
            }
            Some((code, r.cstr().ok()?))
        })
    }

    /// The value of one field, e.g. `b'C'` for the SQLSTATE code.
    pub fn get(&self, code: u8) -> Option<&'a str> {
        self.iter().find(|(c, _)| *c == code).map(|(_, v)| v)
    }

    /// The SQLSTATE code.
    pub fn code(&self) -> Option<&'a str> {
        self.get(b'C')
    }

    /// The primary message.
    pub fn message(&self) -> Option<&'a str> {
        self.get(b'M')
    }
}

/// A server message, borrowing from the framed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    /// `'R'`.
    Authentication(AuthRequest<'a>),
    /// `'S'`: a run-time parameter's value.
    ParameterStatus {
        /// Parameter name.
        name: &'a str,
        /// Its value.
        value: &'a str,
    },
    /// `'K'`: the cancel key for this session.
    BackendKeyData {
        /// Backend process id.
        pid: i32,
        /// Secret key.
        secret: i32,
    },
    /// `'Z'`.
    ReadyForQuery(TransactionStatus),
    /// `'T'`: the shape of the rows to come (undecoded).
    RowDescription(&'a [u8]),
    /// `'D'`: one row (undecoded).
    DataRow(&'a [u8]),
    /// `'C'`: a statement finished, with its tag such as `SELECT 3`.
    CommandComplete {
        /// The command tag.
        tag: &'a str,
    },
    /// `'E'`.
    ErrorResponse(ErrorFields<'a>),
    /// `'N'`.
    NoticeResponse(ErrorFields<'a>),
    /// `'I'`.
    EmptyQueryResponse,
    /// `'1'`.
    ParseComplete,
    /// `'2'`.
    BindComplete,
    /// `'3'`.
    CloseComplete,
    /// `'n'`.
    NoData,
    /// `'s'`.
    PortalSuspended,
    /// `'t'` (undecoded).
    ParameterDescription(&'a [u8]),
    /// `'G'` (undecoded).
    CopyInResponse(&'a [u8]),
    /// `'H'` (undecoded).
    CopyOutResponse(&'a [u8]),
    /// `'W'` (undecoded).
    CopyBothResponse(&'a [u8]),
    /// `'d'`.
    CopyData(&'a [u8]),
    /// `'c'`.
    CopyDone,
    /// `'A'`: NOTIFY delivered to this session.
    Notification {
        /// Notifying backend's pid.
        pid: i32,
        /// Channel name.
        channel: &'a str,
        /// Payload.
        payload: &'a str,
    },
    /// `'v'` (undecoded).
    NegotiateProtocolVersion(&'a [u8]),
    /// `'V'` (undecoded).
    FunctionCallResponse(&'a [u8]),
}

impl<'a> BackendMessage<'a> {
    /// Decodes a framed message from its type byte and body.
    pub fn decode(tag: u8, body: &'a [u8]) -> Result<Self, WireError> {
        Ok(match tag {
            b'R' => BackendMessage::Authentication(decode_auth(body)?),
            b'S' => {
                let mut r = Reader::new(body, "ParameterStatus");
                let name = r.cstr()?;
                let value = r.cstr()?;
                r.finish()?;
                BackendMessage::ParameterStatus { name, value }
            }
            b'K' => {
                let mut r = Reader::new(body, "BackendKeyData");
                let pid = r.i32()?;
                let secret = r.i32()?;
                r.finish()?;
                BackendMessage::BackendKeyData { pid, secret }
            }
            b'Z' => {
                let mut r = Reader::new(body, "ReadyForQuery");
                let status = match r.u8()? {
                    b'I' => TransactionStatus::Idle,
                    b'T' => TransactionStatus::InTransaction,
                    b'E' => TransactionStatus::Failed,
                    _ => return Err(WireError::Invalid("ReadyForQuery status")),
                };
                r.finish()?;
                BackendMessage::ReadyForQuery(status)
            }
            b'T' => BackendMessage::RowDescription(body),
            b'D' => BackendMessage::DataRow(body),
            b'C' => {
                let mut r = Reader::new(body, "CommandComplete");
                let tag = r.cstr()?;
                r.finish()?;
                BackendMessage::CommandComplete { tag }
            }
            b'E' => BackendMessage::ErrorResponse(ErrorFields(body)),
            b'N' => BackendMessage::NoticeResponse(ErrorFields(body)),
            b'I' => BackendMessage::EmptyQueryResponse,
            b'1' => BackendMessage::ParseComplete,
            b'2' => BackendMessage::BindComplete,
            b'3' => BackendMessage::CloseComplete,
            b'n' => BackendMessage::NoData,
            b's' => BackendMessage::PortalSuspended,
            b't' => BackendMessage::ParameterDescription(body),
            b'G' => BackendMessage::CopyInResponse(body),
            b'H' => BackendMessage::CopyOutResponse(body),
            b'W' => BackendMessage::CopyBothResponse(body),
            b'd' => BackendMessage::CopyData(body),
            b'c' => BackendMessage::CopyDone,
            b'A' => {
                let mut r = Reader::new(body, "NotificationResponse");
                let pid = r.i32()?;
                let channel = r.cstr()?;
                let payload = r.cstr()?;
                r.finish()?;
                BackendMessage::Notification {
                    pid,
                    channel,
                    payload,
                }
            }
            b'v' => BackendMessage::NegotiateProtocolVersion(body),
            b'V' => BackendMessage::FunctionCallResponse(body),
            other => return Err(WireError::UnknownType(other as char)),
        })
    }
}

fn decode_auth(body: &[u8]) -> Result<AuthRequest<'_>, WireError> {
    let mut r = Reader::new(body, "Authentication");
    Ok(match r.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => {
            let s = r.bytes(4)?;
            AuthRequest::Md5 {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => AuthRequest::SaslContinue(r.rest()),
        12 => AuthRequest::SaslFinal(r.rest()),
        other => AuthRequest::Other(other),
    })
}

/// The row count of a CommandComplete body (the tag, NUL-terminated),
/// when its tag reports one.
pub fn command_complete_rows(body: &[u8]) -> Option<u64> {
    let tag = std::str::from_utf8(body.strip_suffix(b"\0").unwrap_or(body)).ok()?;
    rows_in_tag(tag)
}

/// The row count in a CommandComplete tag (`INSERT 0 5`, `SELECT 3`, `COPY 10`), if any.
pub fn rows_in_tag(tag: &str) -> Option<u64> {
    let last = tag.rsplit(' ').next()?;
    if last.len() == tag.len() {
        return None;
    }
    last.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_counts_from_tags() {
        assert_eq!(rows_in_tag("SELECT 3"), Some(3));
        assert_eq!(rows_in_tag("INSERT 0 5"), Some(5));
        assert_eq!(rows_in_tag("BEGIN"), None);
        assert_eq!(rows_in_tag("CREATE TABLE"), None);
        assert_eq!(command_complete_rows(b"SELECT 3\0"), Some(3));
        assert_eq!(command_complete_rows(b"BEGIN\0"), None);
        assert_eq!(command_complete_rows(b"\xff 3\0"), None);
        assert_eq!(
            TransactionStatus::of_ready_for_query(b"T"),
            Some(TransactionStatus::InTransaction)
        );
        assert_eq!(TransactionStatus::of_ready_for_query(b"TT"), None);
    }

    #[test]
    fn error_fields() {
        let body = b"SERROR\0C42501\0Mno\0\0";
        let f = ErrorFields::new(body);
        assert_eq!(f.code(), Some("42501"));
        assert_eq!(f.message(), Some("no"));
        assert_eq!(f.get(b'D'), None);
    }

    #[test]
    fn sasl_mechanisms() {
        let body = b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
        assert_eq!(
            BackendMessage::decode(b'R', body).unwrap(),
            BackendMessage::Authentication(AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
            })
        );
    }

    #[test]
    fn truncated_is_an_error() {
        assert!(BackendMessage::decode(b'K', b"\0\0").is_err());
        assert!(BackendMessage::decode(b'Z', b"").is_err());
        assert!(BackendMessage::decode(b'A', b"\0\0\0\x01chan").is_err());
    }
}
