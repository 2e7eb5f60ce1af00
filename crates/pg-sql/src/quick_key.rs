//! A literal-free cache key for plain statement texts, without PostgreSQL's
//! scanner.
//!
//! Hand-written on purpose: this runs for every simple-protocol statement
//! (each `pgbench -S` text has a new literal), and `pg_query::scan` costs
//! about 3 µs there, most of it protobuf encoding and decoding of the
//! tokens, where this walk costs a fraction. It only accepts texts whose
//! literals it can delimit exactly as the server's lexer does, and gives up
//! (the caller falls back to the scanner) on anything else: comments,
//! quoted identifiers, dollar quotes, backslashes, prefixed strings
//! (`E''`, `U&''`, `B''`, `X''`, `N''`), string continuations across
//! lines, numbers other than short plain integers, bytes other than
//! printable ASCII and whitespace, and
//! any text mentioning `set` or `uescape` (whose literals change what a
//! statement does). The fuzz target and the tests check its spans against
//! the scanner's.

/// The kind of a literal span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LiteralKind {
    /// A plain `'…'` string.
    String,
    /// An integer of at most nine digits (always an `int4` token).
    Integer,
}

/// Byte ranges of the literals of `sql`, or `None` when the text has
/// anything this walk cannot delimit exactly.
pub(crate) fn literal_spans(sql: &str) -> Option<Vec<(usize, usize, LiteralKind)>> {
    let mut spans = Vec::new();
    walk(sql, |start, end, kind| spans.push((start, end, kind))).then_some(spans)
}

/// The key for `sql`: the text with each literal replaced by its kind, or
/// `None` as for [`literal_spans`]. Keys start with `\u{2}`, so they never
/// equal a statement text or a scanner-built key.
pub fn quick_literal_free_key(sql: &str) -> Option<String> {
    let mut key = String::with_capacity(sql.len() + 1);
    key.push('\u{2}');
    let mut at = 0;
    let complete = walk(sql, |start, end, kind| {
        key.push_str(&sql[at..start]);
        key.push_str(match kind {
            LiteralKind::String => "\u{1}s",
            LiteralKind::Integer => "\u{1}i",
        });
        at = end;
    });
    if !complete {
        return None;
    }
    key.push_str(&sql[at..]);
    Some(key)
}

/// Calls `literal` with each literal's span, in order; `false` when the
/// text has anything this walk cannot delimit exactly (the spans already
/// reported are then meaningless).
fn walk(sql: &str, mut literal: impl FnMut(usize, usize, LiteralKind)) -> bool {
    let b = sql.as_bytes();
    if !plain_without_risky_words(b) {
        return false;
    }
    let ident = |c: u8| CLASS[usize::from(c)] & IDENT != 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let prev = if i == 0 { b' ' } else { b[i - 1] };
        match c {
            b'"' | b'\\' | b'`' => return false,
            b'-' if b.get(i + 1) == Some(&b'-') => return false,
            b'/' if b.get(i + 1) == Some(&b'*') => return false,
            // An identifier or keyword, whole: digits and `$` inside it
            // are part of it.
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
            }
            // Only a parameter (`$1`); anything else may open a dollar
            // quote.
            b'$' => {
                i += 1;
                let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                i += digits;
                if digits == 0 || b.get(i).is_some_and(|&c| ident(c) || c == b'.') {
                    return false;
                }
            }
            b'\'' => {
                // A prefix (`E`, `B`, `X`, `N`, `U&`) makes it another kind
                // of string; so might anything glued to it.
                if ident(prev) || prev == b'&' || prev == b'\'' {
                    return false;
                }
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None => return false,
                        Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                        Some(b'\'') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                literal(start, i, LiteralKind::String);
                // `'a'` newline `'b'` is one literal to the server (a
                // carriage return is a newline too).
                let rest = &b[i..];
                let gap = rest.iter().take_while(|c| c.is_ascii_whitespace()).count();
                let newline = rest[..gap].iter().any(|c| matches!(c, b'\n' | b'\r'));
                if rest.get(gap) == Some(&b'\'') && newline {
                    return false;
                }
            }
            b'0'..=b'9' => {
                if prev == b'.' {
                    return false;
                }
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let next = b.get(i).copied().unwrap_or(b' ');
                if ident(next) || next == b'.' || next == b'\'' || i - start > 9 {
                    return false;
                }
                literal(start, i, LiteralKind::Integer);
            }
            _ => i += 1,
        }
    }
    true
}

/// Whether every byte of `b` is printable ASCII or whitespace, and `b`
/// never mentions `set` or `uescape`, ignoring ASCII case, anywhere
/// (inside longer words too: erring towards the scanner is safe).
///
/// One pass with a window of the last seven bytes, each with bit 5 set:
/// that maps an upper-case letter to its lower case and nothing else onto
/// a letter, so the window spells a word exactly when the bytes do in
/// some case. The window is compared only at a byte that can end one of
/// the words, which the byte's class says (most bytes cannot).
fn plain_without_risky_words(b: &[u8]) -> bool {
    const SET: u64 = u64::from_be_bytes([0, 0, 0, 0, 0, b's', b'e', b't']);
    const UESCAPE: u64 = u64::from_be_bytes([0, b'u', b'e', b's', b'c', b'a', b'p', b'e']);
    let mut window = 0u64;
    for &c in b {
        let class = CLASS[usize::from(c)];
        if class & PLAIN == 0 {
            return false;
        }
        window = (window << 8) | u64::from(c | 0x20);
        if class & ENDS_RISKY_WORD != 0
            && (window & 0xff_ffff == SET || window & 0xff_ffff_ffff_ffff == UESCAPE)
        {
            return false;
        }
    }
    true
}

/// Printable ASCII, tab, newline or carriage return.
const PLAIN: u8 = 1;
/// Continues an identifier: an ASCII letter or digit, `_` or `$`.
const IDENT: u8 = 2;
/// The last letter of `set` or `uescape`, in either case.
const ENDS_RISKY_WORD: u8 = 4;
/// The classes of every byte: a lookup per byte instead of range tests.
const CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if (b >= b' ' && b < 0x7f) || b == b'\t' || b == b'\n' || b == b'\r' {
            class[c] |= PLAIN;
        }
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' {
            class[c] |= IDENT;
        }
        if matches!(b, b't' | b'T' | b'e' | b'E') {
            class[c] |= ENDS_RISKY_WORD;
        }
        c += 1;
    }
    class
};

/// Checks [`literal_spans`] against PostgreSQL's scanner: where the quick
/// walk accepts a text, its spans must be exactly the scanner's literal
/// tokens, and the scanner must see no comment and no other literal kind.
/// `Err` names the first disagreement. For tests and the fuzz target.
pub fn check_against_scanner(sql: &str) -> Result<(), String> {
    use pg_query::protobuf::Token;
    let Some(ours) = literal_spans(sql) else {
        return Ok(());
    };
    let scanned = pg_query::scan(sql)
        .map_err(|e| format!("quick key accepted {sql:?}, which the scanner rejects: {e}"))?;
    let mut theirs = Vec::new();
    for t in &scanned.tokens {
        // Single characters the protobuf enum does not name (`{`) are
        // never literals.
        let Ok(kind) = Token::try_from(t.token) else {
            continue;
        };
        let span = (t.start as usize, t.end as usize);
        match kind {
            Token::Sconst => theirs.push((span.0, span.1, LiteralKind::String)),
            Token::Iconst => theirs.push((span.0, span.1, LiteralKind::Integer)),
            Token::Fconst
            | Token::Bconst
            | Token::Xconst
            | Token::Usconst
            | Token::SqlComment
            | Token::CComment
            | Token::Set
            | Token::Reset
            | Token::Uescape => {
                return Err(format!(
                    "quick key accepted {sql:?}, whose tokens include {kind:?}"
                ));
            }
            _ => {}
        }
    }
    if ours != theirs {
        return Err(format!(
            "quick key spans {ours:?} differ from the scanner's {theirs:?} for {sql:?}"
        ));
    }
    Ok(())
}
