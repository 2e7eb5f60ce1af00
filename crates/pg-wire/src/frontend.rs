//! Messages a client sends after startup.

use std::borrow::Cow;

use crate::read::Reader;
use crate::{ClientEncoding, WireError};

/// Whether a Describe or Close names a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `'S'`: a prepared statement.
    Statement,
    /// `'P'`: a portal.
    Portal,
}

/// A Bind parameter value as it came on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// The value's bytes, text or binary according to the format codes.
    Value(&'a [u8]),
}

/// A client message, borrowing from the framed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    /// Simple query: one or more statements as text.
    Query {
        /// The SQL text.
        sql: Cow<'a, str>,
    },
    /// Extended protocol: prepare a statement.
    Parse {
        /// Statement name, empty for the unnamed statement.
        name: Cow<'a, str>,
        /// The SQL text.
        sql: Cow<'a, str>,
        /// Parameter type OIDs the client specified.
        param_types: Vec<u32>,
    },
    /// Extended protocol: bind parameters to a statement, making a portal.
    Bind {
        /// Portal name, empty for the unnamed portal.
        portal: Cow<'a, str>,
        /// Prepared statement name.
        statement: Cow<'a, str>,
        /// Parameter format codes (0 text, 1 binary).
        param_formats: Vec<i16>,
        /// Parameter values.
        params: Vec<Param<'a>>,
        /// Result column format codes.
        result_formats: Vec<i16>,
    },
    /// Extended protocol: run a portal.
    Execute {
        /// Portal name.
        portal: Cow<'a, str>,
        /// Row limit, 0 for all.
        max_rows: i32,
    },
    /// Extended protocol: describe a statement or portal.
    Describe {
        /// What is described.
        target: Target,
        /// Its name.
        name: Cow<'a, str>,
    },
    /// Extended protocol: close a statement or portal.
    Close {
        /// What is closed.
        target: Target,
        /// Its name.
        name: Cow<'a, str>,
    },
    /// End of an extended-protocol batch.
    Sync,
    /// Ask the server to send what it has.
    Flush,
    /// COPY FROM STDIN data.
    CopyData(&'a [u8]),
    /// End of COPY FROM STDIN data.
    CopyDone,
    /// The client aborts COPY FROM STDIN.
    CopyFail {
        /// The client's reason.
        message: Cow<'a, str>,
    },
    /// Fast-path function call (legacy; large objects).
    FunctionCall {
        /// The function's OID.
        oid: u32,
    },
    /// The client is leaving.
    Terminate,
    /// Password, SASL initial or SASL response (meaning depends on the auth phase).
    Password(&'a [u8]),
}

impl<'a> FrontendMessage<'a> {
    /// Decodes a framed message from its type byte and body, its strings
    /// as UTF-8.
    pub fn decode(tag: u8, body: &'a [u8]) -> Result<Self, WireError> {
        Self::decode_in(tag, body, ClientEncoding::UTF8)
    }

    /// Decodes a framed message, its strings (statement text and names)
    /// read from `encoding` as the server reads them.
    pub fn decode_in(tag: u8, body: &'a [u8], encoding: ClientEncoding) -> Result<Self, WireError> {
        let enc = encoding;
        Ok(match tag {
            b'Q' => {
                let mut r = Reader::new(body, "Query");
                let sql = r.text(enc)?;
                r.finish()?;
                FrontendMessage::Query { sql }
            }
            b'P' => {
                let mut r = Reader::new(body, "Parse");
                let name = r.text(enc)?;
                let sql = r.text(enc)?;
                let n = r.count()?;
                let param_types = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
                r.finish()?;
                FrontendMessage::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            b'B' => decode_bind(body, enc)?,
            b'E' => {
                let mut r = Reader::new(body, "Execute");
                let portal = r.text(enc)?;
                let max_rows = r.i32()?;
                r.finish()?;
                FrontendMessage::Execute { portal, max_rows }
            }
            b'D' | b'C' => {
                let what = if tag == b'D' { "Describe" } else { "Close" };
                let mut r = Reader::new(body, what);
                let target = match r.u8()? {
                    b'S' => Target::Statement,
                    b'P' => Target::Portal,
                    _ => return Err(WireError::Invalid(what)),
                };
                let name = r.text(enc)?;
                r.finish()?;
                if tag == b'D' {
                    FrontendMessage::Describe { target, name }
                } else {
                    FrontendMessage::Close { target, name }
                }
            }
            b'S' => empty(body, "Sync", FrontendMessage::Sync)?,
            b'H' => empty(body, "Flush", FrontendMessage::Flush)?,
            b'X' => empty(body, "Terminate", FrontendMessage::Terminate)?,
            b'c' => empty(body, "CopyDone", FrontendMessage::CopyDone)?,
            b'd' => FrontendMessage::CopyData(body),
            b'f' => {
                let mut r = Reader::new(body, "CopyFail");
                let message = r.text(enc)?;
                r.finish()?;
                FrontendMessage::CopyFail { message }
            }
            b'F' => {
                let mut r = Reader::new(body, "FunctionCall");
                FrontendMessage::FunctionCall { oid: r.u32()? }
            }
            b'p' => FrontendMessage::Password(body),
            other => return Err(WireError::UnknownType(other as char)),
        })
    }
}

fn empty<'a>(
    body: &[u8],
    what: &'static str,
    msg: FrontendMessage<'a>,
) -> Result<FrontendMessage<'a>, WireError> {
    if body.is_empty() {
        Ok(msg)
    } else {
        Err(WireError::Invalid(what))
    }
}

fn decode_bind(body: &[u8], enc: ClientEncoding) -> Result<FrontendMessage<'_>, WireError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.text(enc)?;
    let statement = r.text(enc)?;
    let nf = r.count()?;
    let param_formats = (0..nf).map(|_| r.i16()).collect::<Result<Vec<_>, _>>()?;
    let np = r.count()?;
    let mut params = Vec::with_capacity(np.min(body.len() / 4));
    for _ in 0..np {
        let len = r.i32()?;
        params.push(if len < 0 {
            Param::Null
        } else {
            Param::Value(r.bytes(len as usize)?)
        });
    }
    let nr = r.count()?;
    let result_formats = (0..nr).map(|_| r.i16()).collect::<Result<Vec<_>, _>>()?;
    if !r.is_empty() {
        return Err(WireError::Invalid("Bind"));
    }
    if param_formats
        .iter()
        .chain(&result_formats)
        .any(|f| !matches!(f, 0 | 1))
    {
        return Err(WireError::Invalid("Bind format code"));
    }
    Ok(FrontendMessage::Bind {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, next_frame};
    use bytes::BytesMut;

    fn decode_one(buf: &[u8]) -> FrontendMessage<'_> {
        let f = next_frame(buf, 1 << 20).unwrap().unwrap();
        FrontendMessage::decode(f.tag, f.body(buf)).unwrap()
    }

    #[test]
    fn query() {
        let mut b = BytesMut::new();
        encode::query(&mut b, "select 1");
        assert_eq!(
            decode_one(&b),
            FrontendMessage::Query {
                sql: "select 1".into()
            }
        );
    }

    #[test]
    fn bind_with_null_and_value() {
        let body = b"p\0s\0\0\x01\0\x01\0\x02\xff\xff\xff\xff\0\0\0\x02hi\0\x01\0\x00";
        let m = FrontendMessage::decode(b'B', body).unwrap();
        match m {
            FrontendMessage::Bind {
                portal,
                statement,
                params,
                result_formats,
                ..
            } => {
                assert_eq!((&*portal, &*statement), ("p", "s"));
                assert_eq!(params, vec![Param::Null, Param::Value(b"hi")]);
                assert_eq!(result_formats, vec![0]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bind_with_lying_lengths_is_an_error() {
        assert!(FrontendMessage::decode(b'B', b"\0\0\0\0\x7f\xff").is_err());
        assert!(FrontendMessage::decode(b'B', b"\0\0\0\0\0\x01\0\0\0\x09ab\0\0").is_err());
    }

    /// Text and names are read in the session's encoding; bytes the
    /// server could not convert fail with the encoding named.
    #[test]
    fn strings_in_the_client_encoding() {
        let latin9 = ClientEncoding::by_name("LATIN9").unwrap();
        let m = FrontendMessage::decode_in(b'Q', b"select '\xa4'\0", latin9).unwrap();
        assert_eq!(
            m,
            FrontendMessage::Query {
                sql: "select '€'".into()
            }
        );
        let m = FrontendMessage::decode_in(b'P', b"caf\xe9\0select 1\0\0\0", latin9).unwrap();
        assert!(matches!(m, FrontendMessage::Parse { name, .. } if name == "café"));
        let err = FrontendMessage::decode(b'Q', b"select '\xa4'\0").unwrap_err();
        assert!(err.to_string().contains("not valid UTF8"), "{err}");
        assert!(err.to_string().ends_with("in Query message"), "{err}");
    }

    #[test]
    fn unknown_type_rejected() {
        assert_eq!(
            FrontendMessage::decode(b'z', b""),
            Err(WireError::UnknownType('z'))
        );
    }
}
