//! The text and CSV formats of `COPY … TO STDOUT` lines (one line per
//! CopyData message), as the server writes them: splitting a line into
//! fields, reading a field's value and writing one back.

/// A COPY field's value: CSV quotes removed, text escapes undone.
pub fn field_value(raw: &[u8], csv: bool) -> Vec<u8> {
    if csv {
        if raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' {
            let inner = &raw[1..raw.len() - 1];
            let mut out = Vec::with_capacity(inner.len());
            let mut i = 0;
            while i < inner.len() {
                out.push(inner[i]);
                i += if inner[i] == b'"' && inner.get(i + 1) == Some(&b'"') {
                    2
                } else {
                    1
                };
            }
            return out;
        }
        return raw.to_vec();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            out.push(match raw[i + 1] {
                b't' => b'\t',
                b'n' => b'\n',
                b'r' => b'\r',
                other => other,
            });
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

/// Writes `v` as a COPY field: quoted for CSV, escaped for text.
pub fn write_field(out: &mut Vec<u8>, v: &[u8], csv: bool, delimiter: u8) {
    if csv {
        out.push(b'"');
        for &b in v {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
        return;
    }
    for &b in v {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ if b == delimiter => {
                out.push(b'\\');
                out.push(b);
            }
            _ => out.push(b),
        }
    }
}

/// Field spans of one COPY line (without its newline), honouring CSV
/// quotes; text-format escapes never contain a raw delimiter.
pub fn split_line(line: &[u8], delimiter: u8, csv: bool) -> Vec<(usize, usize)> {
    let end = line
        .iter()
        .rposition(|b| *b != b'\n' && *b != b'\r')
        .map_or(0, |p| p + 1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in line[..end].iter().enumerate() {
        if escaped {
            // Text format writes a delimiter inside a value as `\` and the
            // delimiter byte.
            escaped = false;
        } else if !csv && b == b'\\' {
            escaped = true;
        } else if csv && b == b'"' {
            quoted = !quoted;
        } else if b == delimiter && !quoted {
            out.push((start, i));
            start = i + 1;
        }
    }
    out.push((start, end));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_split_like_the_server_writes_them() {
        assert_eq!(
            split_line(b"1\ta@b.com\n", b'\t', false),
            vec![(0, 1), (2, 9)]
        );
        assert_eq!(
            split_line(b"1,\"x,y\",z\n", b',', true),
            vec![(0, 1), (2, 7), (8, 9)]
        );
    }
}
