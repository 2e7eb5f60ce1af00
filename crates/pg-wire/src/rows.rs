//! Result rows: the column descriptions of RowDescription and the values
//! of DataRow, read without copying and written back when a value changes.

use bytes::{BufMut, BytesMut};

use crate::read::Reader;
use crate::WireError;

/// One column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDescription {
    /// The table the column comes from, or 0 when it is computed.
    pub table_oid: u32,
    /// The column's attribute number in that table, or 0.
    pub column: i16,
    /// The data type.
    pub type_oid: u32,
    /// 0 for text, 1 for binary.
    pub format: i16,
}

/// The columns of a RowDescription body, in order.
pub fn row_description(body: &[u8]) -> Result<Vec<FieldDescription>, WireError> {
    let mut r = Reader::new(body, "RowDescription");
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        r.cstr()?;
        let table_oid = r.u32()?;
        let column = r.i16()?;
        let type_oid = r.u32()?;
        r.i16()?; // type size
        r.i32()?; // type modifier
        let format = r.i16()?;
        out.push(FieldDescription {
            table_oid,
            column,
            type_oid,
            format,
        });
    }
    r.finish()?;
    Ok(out)
}

/// The values of a DataRow body (`None` for NULL), appended to `out`.
pub fn data_row<'a>(body: &'a [u8], out: &mut Vec<Option<&'a [u8]>>) -> Result<(), WireError> {
    let mut r = Reader::new(body, "DataRow");
    let n = r.count()?;
    out.reserve(n);
    for _ in 0..n {
        let len = r.i32()?;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(r.bytes(len as usize)?));
        }
    }
    r.finish()
}

/// Offsets of a DataRow's values (`None` for NULL), appended to `out`,
/// without borrowing the body (and without
/// allocating: `out` is reused row after row).
#[inline]
pub fn data_row_spans(body: &[u8], out: &mut Vec<Option<(usize, usize)>>) -> Result<(), WireError> {
    let bad = || WireError::Truncated("DataRow");
    let count = body.get(..2).ok_or_else(bad)?;
    let n = i16::from_be_bytes([count[0], count[1]]);
    let n = usize::try_from(n).map_err(|_| WireError::Invalid("DataRow"))?;
    let mut at = 2;
    for _ in 0..n {
        let len = body.get(at..at + 4).ok_or_else(bad)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        let end = at
            .checked_add(len as usize)
            .filter(|e| *e <= body.len())
            .ok_or_else(bad)?;
        out.push(Some((at, end)));
        at = end;
    }
    if at != body.len() {
        return Err(WireError::Invalid("DataRow"));
    }
    Ok(())
}

/// Appends a DataRow message with `values`.
pub fn encode_data_row<'a, I>(buf: &mut BytesMut, values: I)
where
    I: IntoIterator<Item = Option<&'a [u8]>>,
{
    buf.put_u8(b'D');
    let start = buf.len();
    buf.put_u32(0);
    // The count is patched in after the values, like the length.
    buf.put_i16(0);
    let mut count: i16 = 0;
    for v in values {
        count = count.saturating_add(1);
        match v {
            None => buf.put_i32(-1),
            Some(b) => {
                buf.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
                buf.put_slice(b);
            }
        }
    }
    let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    buf[start + 4..start + 6].copy_from_slice(&count.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_into_spans_and_bad_rows_are_errors() {
        let mut out = Vec::new();
        data_row_spans(b"\x00\x02\x00\x00\x00\x02ab\xff\xff\xff\xff", &mut out).unwrap();
        assert_eq!(out, vec![Some((6, 8)), None]);
        for bad in [
            &b"\x00"[..],
            b"\x00\x01\x00\x00\x00\x09ab",
            b"\x00\x01\x00\x00\x00\x01ab",
            b"\xff\xff",
        ] {
            assert!(data_row_spans(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_rows_round_trip() {
        let mut buf = BytesMut::new();
        let vals: Vec<Option<&[u8]>> = vec![Some(b"alice"), None, Some(b"")];
        encode_data_row(&mut buf, vals.iter().copied());
        let mut out = Vec::new();
        data_row(&buf[5..], &mut out).unwrap();
        assert_eq!(out, vals);
        // A length past the end is an error, not a panic.
        let mut bad = buf[5..].to_vec();
        bad[5] = 0x7f;
        assert!(data_row(&bad, &mut Vec::new()).is_err());
    }

    #[test]
    fn row_descriptions_are_read() {
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_slice(b"email\0");
        b.put_u32(16385);
        b.put_i16(2);
        b.put_u32(25);
        b.put_i16(-1);
        b.put_i32(-1);
        b.put_i16(1);
        let f = row_description(&b).unwrap();
        assert_eq!(
            f,
            vec![FieldDescription {
                table_oid: 16385,
                column: 2,
                type_oid: 25,
                format: 1
            }]
        );
        assert!(row_description(&b[..b.len() - 1]).is_err());
    }
}
