//! Client encodings: statement text read as the server reads it.
//!
//! The server converts every string a client sends from the session's
//! `client_encoding` before it parses anything, so the gateway must decode
//! the same bytes to the same characters, or it decides on names the
//! server never sees. The tables are the server's own conversions
//! (`scripts/gen-encodings`), not a general-purpose library's: those map a
//! few bytes differently (WHATWG's `latin1` is windows-1252, where 0x80
//! is `€` and not U+0080; its EUC-KR is Microsoft's UHC, which reads
//! sequences PostgreSQL refuses), and a name decoded differently is a name
//! decided wrongly.
//!
//! Only encodings in which every byte below 0x80 stands for itself are
//! here: in SJIS, BIG5, GBK, UHC and GB18030 a quote or backslash byte can
//! be the second half of a character, which no reading of the statement
//! before conversion can tell, so those are refused by name.

use std::borrow::Cow;
use std::sync::OnceLock;

mod tables;

/// Characters in one table row of a two-byte EUC plane (0xA1-0xFE).
const ROW: usize = 94;
/// The first byte of a row or column in a two-byte EUC plane.
const FIRST: u8 = 0xA1;

/// A client encoding the gateway can read statements in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEncoding(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Utf8,
    /// An index into [`tables::SINGLE_BYTE`].
    SingleByte(usize),
    EucJp,
    EucKr,
    EucCn,
    /// Encodings whose conversions the gateway has no table for (EUC_TW,
    /// EUC_JIS_2004, MULE_INTERNAL) and SQL_ASCII (whose bytes the server
    /// takes as the database's encoding): ASCII statements only.
    AsciiOnly(&'static str),
    /// Not known yet: a change of encoding the server has not answered.
    Unsettled,
}

/// Statement bytes the gateway cannot read as the server would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Undecodable(String);

/// Every name PostgreSQL accepts for a safe encoding (`pg_encname_tbl`),
/// cleaned as the server cleans names: letters and digits, lower case.
const NAMES: &[(&str, &str)] = &[
    ("utf8", "UTF8"),
    ("unicode", "UTF8"),
    ("sqlascii", "SQL_ASCII"),
    ("latin1", "LATIN1"),
    ("iso88591", "LATIN1"),
    ("latin2", "LATIN2"),
    ("iso88592", "LATIN2"),
    ("latin3", "LATIN3"),
    ("iso88593", "LATIN3"),
    ("latin4", "LATIN4"),
    ("iso88594", "LATIN4"),
    ("latin5", "LATIN5"),
    ("iso88599", "LATIN5"),
    ("latin6", "LATIN6"),
    ("iso885910", "LATIN6"),
    ("latin7", "LATIN7"),
    ("iso885913", "LATIN7"),
    ("latin8", "LATIN8"),
    ("iso885914", "LATIN8"),
    ("latin9", "LATIN9"),
    ("iso885915", "LATIN9"),
    ("latin10", "LATIN10"),
    ("iso885916", "LATIN10"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("win1250", "WIN1250"),
    ("windows1250", "WIN1250"),
    ("win1251", "WIN1251"),
    ("windows1251", "WIN1251"),
    ("win", "WIN1251"),
    ("win1252", "WIN1252"),
    ("windows1252", "WIN1252"),
    ("win1253", "WIN1253"),
    ("windows1253", "WIN1253"),
    ("win1254", "WIN1254"),
    ("windows1254", "WIN1254"),
    ("win1255", "WIN1255"),
    ("windows1255", "WIN1255"),
    ("win1256", "WIN1256"),
    ("windows1256", "WIN1256"),
    ("win1257", "WIN1257"),
    ("windows1257", "WIN1257"),
    ("win1258", "WIN1258"),
    ("windows1258", "WIN1258"),
    ("abc", "WIN1258"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("vscii", "WIN1258"),
    ("win866", "WIN866"),
    ("windows866", "WIN866"),
    ("alt", "WIN866"),
    ("win874", "WIN874"),
    ("windows874", "WIN874"),
    ("koi8", "KOI8R"),
    ("koi8r", "KOI8R"),
    ("koi8u", "KOI8U"),
    ("eucjp", "EUC_JP"),
    ("euckr", "EUC_KR"),
    ("euccn", "EUC_CN"),
    ("euctw", "EUC_TW"),
    ("eucjis2004", "EUC_JIS_2004"),
    ("muleinternal", "MULE_INTERNAL"),
];

impl ClientEncoding {
    /// UTF-8, what the gateway reads when nothing else is known.
    pub const UTF8: ClientEncoding = ClientEncoding(Kind::Utf8);

    /// While a change of `client_encoding` is unanswered: the gateway
    /// cannot tell which encoding the server will read the next message
    /// in, so it reads ASCII only, which every encoding here reads alike.
    pub const UNSETTLED: ClientEncoding = ClientEncoding(Kind::Unsettled);

    /// The encoding the server means by `name` (any name it accepts,
    /// `utf-8`, `Latin-9`, `WIN1252`), or `None` for one whose bytes
    /// below 0x80 can be part of a character, or which the server does
    /// not know.
    pub fn by_name(name: &str) -> Option<ClientEncoding> {
        let cleaned: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let (_, canonical) = NAMES.iter().find(|(alias, _)| *alias == cleaned)?;
        Some(ClientEncoding(match *canonical {
            "UTF8" => Kind::Utf8,
            "EUC_JP" => Kind::EucJp,
            "EUC_KR" => Kind::EucKr,
            "EUC_CN" => Kind::EucCn,
            other => match tables::SINGLE_BYTE.iter().position(|(n, _)| *n == other) {
                Some(i) => Kind::SingleByte(i),
                None => Kind::AsciiOnly(canonical),
            },
        }))
    }

    /// The server's name for it.
    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Utf8 => "UTF8",
            Kind::SingleByte(i) => tables::SINGLE_BYTE[i].0,
            Kind::EucJp => "EUC_JP",
            Kind::EucKr => "EUC_KR",
            Kind::EucCn => "EUC_CN",
            Kind::AsciiOnly(name) => name,
            Kind::Unsettled => "unsettled",
        }
    }

    /// `bytes` as the server reads them; borrowed when they are ASCII (or
    /// UTF-8 in a UTF-8 session). Fails where the server would fail to
    /// convert, or where the gateway has no table to read them with.
    pub fn decode(self, bytes: &[u8]) -> Result<Cow<'_, str>, Undecodable> {
        if bytes.is_ascii() || self.0 == Kind::Utf8 {
            return std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| self.invalid(bytes));
        }
        let mut out = String::with_capacity(bytes.len() * 2);
        let mut rest = bytes;
        while let Some((&b, tail)) = rest.split_first() {
            if b < 0x80 {
                out.push(char::from(b));
                rest = tail;
                continue;
            }
            let (c, used) = self.decode_one(rest).ok_or_else(|| self.invalid(bytes))?;
            out.push(c);
            rest = &rest[used..];
        }
        Ok(Cow::Owned(out))
    }

    /// `text` in this encoding, for what the gateway itself says (its
    /// refusals name objects as the client wrote them); a character the
    /// encoding cannot hold becomes `?`. Error texts only: it searches
    /// the tables.
    pub fn encode(self, text: &str) -> Cow<'_, [u8]> {
        if text.is_ascii() || self.0 == Kind::Utf8 {
            return Cow::Borrowed(text.as_bytes());
        }
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            if c.is_ascii() {
                out.push(c as u8);
            } else {
                match self.encode_one(c) {
                    Some(bytes) => out.extend_from_slice(&bytes[..usize::from(bytes[3])]),
                    None => out.push(b'?'),
                }
            }
        }
        Cow::Owned(out)
    }

    /// The bytes of `c` (a non-ASCII character), in the first three, with
    /// their count in the fourth.
    fn encode_one(self, c: char) -> Option<[u8; 4]> {
        let in_plane = |table: &[char], prefix: Option<u8>| {
            let i = table.iter().position(|&t| t == c)?;
            let (lead, trail) = ((i / ROW) as u8 + FIRST, (i % ROW) as u8 + FIRST);
            Some(match prefix {
                Some(p) => [p, lead, trail, 3],
                None => [lead, trail, 0, 2],
            })
        };
        match self.0 {
            Kind::Utf8 | Kind::AsciiOnly(_) | Kind::Unsettled => None,
            Kind::SingleByte(i) => {
                let at = single_byte(i).iter().position(|&t| t == c)?;
                Some([0x80 + at as u8, 0, 0, 1])
            }
            Kind::EucKr => in_plane(plane_table(&EUC_KR, tables::EUC_KR_KSC5601), None),
            Kind::EucCn => in_plane(plane_table(&EUC_CN, tables::EUC_CN_GB2312), None),
            Kind::EucJp => in_plane(plane_table(&EUC_JP_0208, tables::EUC_JP_JIS0208), None)
                .or_else(|| {
                    let kana = plane_table(&EUC_JP_KANA, tables::EUC_JP_KANA);
                    let at = kana.iter().position(|&t| t == c)?;
                    Some([0x8E, FIRST + at as u8, 0, 2])
                })
                .or_else(|| {
                    in_plane(
                        plane_table(&EUC_JP_0212, tables::EUC_JP_JIS0212),
                        Some(0x8F),
                    )
                }),
        }
    }

    /// The character at the start of `bytes` (its first byte is 0x80 or
    /// above) and how many bytes it took.
    fn decode_one(self, bytes: &[u8]) -> Option<(char, usize)> {
        let b = bytes[0];
        match self.0 {
            Kind::Utf8 | Kind::AsciiOnly(_) | Kind::Unsettled => None,
            Kind::SingleByte(i) => mapped(single_byte(i)[usize::from(b - 0x80)]).map(|c| (c, 1)),
            Kind::EucKr => plane(plane_table(&EUC_KR, tables::EUC_KR_KSC5601), bytes),
            Kind::EucCn => plane(plane_table(&EUC_CN, tables::EUC_CN_GB2312), bytes),
            Kind::EucJp => match b {
                0x8E => {
                    let t = *bytes.get(1)?;
                    let kana = plane_table(&EUC_JP_KANA, tables::EUC_JP_KANA);
                    mapped(*kana.get(usize::from(t.checked_sub(FIRST)?))?).map(|c| (c, 2))
                }
                0x8F => plane(
                    plane_table(&EUC_JP_0212, tables::EUC_JP_JIS0212),
                    &bytes[1..],
                )
                .map(|(c, n)| (c, n + 1)),
                _ => plane(plane_table(&EUC_JP_0208, tables::EUC_JP_JIS0208), bytes),
            },
        }
    }

    fn invalid(self, bytes: &[u8]) -> Undecodable {
        if self.0 == Kind::Unsettled {
            return Undecodable(
                "non-ASCII statement text arrived while a change of client_encoding was unanswered, so the gateway cannot tell how the server will read it; wait for the change to complete"
                    .into(),
            );
        }
        let what = match self.0 {
            Kind::AsciiOnly(_) => "the gateway reads only ASCII statement text",
            _ => "the text holds bytes the server cannot convert",
        };
        let first = bytes.iter().position(|b| !b.is_ascii()).unwrap_or(0);
        Undecodable(format!(
            "statement text is not valid {} ({what}; first non-ASCII byte at offset {first})",
            self.name()
        ))
    }
}

/// `'\0'` in a table marks a sequence the server refuses.
fn mapped(c: char) -> Option<char> {
    (c != '\0').then_some(c)
}

/// A character of a two-byte plane: lead and trail 0xA1-0xFE.
fn plane(table: &[char], bytes: &[u8]) -> Option<(char, usize)> {
    let lead = usize::from(bytes.first()?.checked_sub(FIRST)?);
    let trail = usize::from(bytes.get(1)?.checked_sub(FIRST)?);
    if lead >= ROW || trail >= ROW {
        return None;
    }
    mapped(table[lead * ROW + trail]).map(|c| (c, 2))
}

static SINGLE_BYTE: OnceLock<Vec<Vec<char>>> = OnceLock::new();
static EUC_KR: OnceLock<Vec<char>> = OnceLock::new();
static EUC_CN: OnceLock<Vec<char>> = OnceLock::new();
static EUC_JP_0208: OnceLock<Vec<char>> = OnceLock::new();
static EUC_JP_0212: OnceLock<Vec<char>> = OnceLock::new();
static EUC_JP_KANA: OnceLock<Vec<char>> = OnceLock::new();

/// The tables are kept as text, one character per position, and indexed
/// once on first use.
fn single_byte(i: usize) -> &'static [char] {
    &SINGLE_BYTE.get_or_init(|| {
        tables::SINGLE_BYTE
            .iter()
            .map(|(_, t)| t.chars().collect())
            .collect()
    })[i]
}

fn plane_table(cell: &'static OnceLock<Vec<char>>, text: &'static str) -> &'static [char] {
    cell.get_or_init(|| text.chars().collect())
}

#[cfg(test)]
mod tests;
