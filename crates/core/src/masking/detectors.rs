//! Content detectors: sensitive values recognised by their shape, in any
//! column, whoever classified it or not.
//!
//! All configured detectors are compiled into one multi-pattern automaton
//! (`regex-automata`'s meta engine over bytes, ASCII only), so a value is
//! scanned once whatever the number of detectors. Shapes with a checksum
//! are validated after the match (Luhn for cards, ISO 13616 mod-97 for
//! IBANs, the SSA's rules for SSNs), which keeps order numbers and phone
//! numbers from reading as cards.

use regex_automata::meta::Regex;
use regex_automata::{Input, PatternID};
use serde::{Deserialize, Serialize};

/// A kind of sensitive content the scanner recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// An e-mail address.
    Email,
    /// A payment card number of 13 to 19 digits passing the Luhn check.
    CreditCard,
    /// An IBAN passing the mod-97 check.
    Iban,
    /// A US social security number in `AAA-GG-SSSS` form, of a valid range.
    UsSsn,
    /// A phone number: international (`+…`) or North American with separators.
    Phone,
    /// A JSON Web Token (three base64url parts, the first two JSON objects).
    Jwt,
    /// An AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// A PEM private key block, to its END line or the end of the value.
    PrivateKey,
}

impl Detector {
    /// Every detector, in configuration order.
    pub const ALL: [Detector; 8] = [
        Detector::Email,
        Detector::CreditCard,
        Detector::Iban,
        Detector::UsSsn,
        Detector::Phone,
        Detector::Jwt,
        Detector::AwsAccessKey,
        Detector::PrivateKey,
    ];

    /// The configuration name, which is also the masking class.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::CreditCard => "credit_card",
            Detector::Iban => "iban",
            Detector::UsSsn => "us_ssn",
            Detector::Phone => "phone",
            Detector::Jwt => "jwt",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::PrivateKey => "private_key",
        }
    }

    /// The detector configured as `name`.
    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    fn pattern(self) -> &'static str {
        match self {
            Detector::Email => {
                r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*\.[A-Za-z]{2,24}"
            }
            // Digits in groups separated by single spaces or dashes.
            Detector::CreditCard => r"\b[0-9](?:[ \-]?[0-9]){12,18}\b",
            // Compact, or in the printed groups of four.
            Detector::Iban => {
                r"\b[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)\b"
            }
            Detector::UsSsn => r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
            Detector::Phone => {
                r"(?:\+[0-9]{1,3}[ .\-]?(?:\([0-9]{1,4}\)[ .\-]?)?[0-9]{1,4}(?:[ .\-]?[0-9]{2,4}){2,4}\b|\([0-9]{3}\) ?[0-9]{3}[ .\-][0-9]{4}\b|\b[0-9]{3}[.\-][0-9]{3}[.\-][0-9]{4}\b)"
            }
            Detector::Jwt => r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{8,}",
            Detector::AwsAccessKey => r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
            Detector::PrivateKey => {
                r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)"
            }
        }
    }

    /// Whether a match is the real thing (checksums and ranges).
    fn validates(self, text: &[u8]) -> bool {
        match self {
            Detector::CreditCard => luhn(text),
            Detector::Iban => iban_checksum(text),
            Detector::UsSsn => ssn_range(text),
            Detector::Phone => {
                let digits = text.iter().filter(|b| b.is_ascii_digit()).count();
                (10..=15).contains(&digits)
            }
            _ => true,
        }
    }
}

/// One recognised value: where it lies in the scanned bytes, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset just past the last byte.
    pub end: usize,
    /// What was recognised.
    pub detector: Detector,
}

/// The configured detectors compiled into one automaton.
#[derive(Debug, Clone)]
pub struct Scanner {
    regex: Option<Regex>,
    detectors: Vec<Detector>,
}

/// A scanner's scratch space (see [`Scanner::cache`]).
#[derive(Debug, Clone)]
pub struct ScanCache(Option<regex_automata::meta::Cache>);

/// A detector set that cannot be compiled (a bug, not a user error: the
/// patterns are fixed).
#[derive(Debug, thiserror::Error)]
#[error("masking detectors do not compile: {0}")]
pub struct ScannerError(String);

impl Scanner {
    /// A scanner for `detectors` (none: it never finds anything).
    pub fn new(detectors: &[Detector]) -> Result<Self, ScannerError> {
        let mut list: Vec<Detector> = Vec::new();
        for d in detectors {
            if !list.contains(d) {
                list.push(*d);
            }
        }
        if list.is_empty() {
            return Ok(Self {
                regex: None,
                detectors: list,
            });
        }
        let patterns: Vec<String> = list
            .iter()
            .map(|d| format!("(?-u){}", d.pattern()))
            .collect();
        let regex = Regex::builder()
            .syntax(
                regex_automata::util::syntax::Config::new()
                    .unicode(false)
                    .utf8(false),
            )
            .build_many(&patterns)
            .map_err(|e| ScannerError(e.to_string()))?;
        Ok(Self {
            regex: Some(regex),
            detectors: list,
        })
    }

    /// Whether any detector is configured.
    pub fn is_active(&self) -> bool {
        self.regex.is_some()
    }

    /// The detectors this scanner runs.
    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// Every validated finding in `text`, leftmost first, none overlapping.
    pub fn scan(&self, text: &[u8], out: &mut Vec<Finding>) {
        let mut cache = self.cache();
        self.scan_with(&mut cache, text, out);
    }

    /// Scratch space for [`Scanner::scan_with`]. Each session keeps its
    /// own, so scanning a value takes no lock (the regex's shared pool
    /// would, from any thread but the first).
    pub fn cache(&self) -> ScanCache {
        ScanCache(self.regex.as_ref().map(Regex::create_cache))
    }

    /// [`Scanner::scan`] with the caller's scratch space.
    pub fn scan_with(&self, cache: &mut ScanCache, text: &[u8], out: &mut Vec<Finding>) {
        let (Some(regex), Some(cache)) = (&self.regex, cache.0.as_mut()) else {
            return;
        };
        let mut at = 0;
        while at < text.len() {
            let Some(m) = regex.search_with(cache, &Input::new(text).range(at..)) else {
                break;
            };
            let detector = self.detector(m.pattern());
            if detector.validates(&text[m.start()..m.end()]) {
                out.push(Finding {
                    start: m.start(),
                    end: m.end(),
                    detector,
                });
                at = m.end().max(m.start() + 1);
            } else {
                // A failed checksum: another detector may still match from
                // the next byte (a phone number inside a non-card digit run).
                at = m.start() + 1;
            }
        }
    }

    fn detector(&self, id: PatternID) -> Detector {
        self.detectors[id.as_usize()]
    }
}

/// The Luhn check over the digits of `text` (13 to 19 of them).
fn luhn(text: &[u8]) -> bool {
    let digits: Vec<u32> = text
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616: move the first four characters to the end, read letters as
/// 10..35, and the number must be 1 modulo 97.
fn iban_checksum(text: &[u8]) -> bool {
    let chars: Vec<u8> = text.iter().copied().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&chars.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000.
fn ssn_range(text: &[u8]) -> bool {
    let s = std::str::from_utf8(text).unwrap_or("");
    let mut parts = s.split('-');
    let (Some(a), Some(g), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    a != "000" && a != "666" && !a.starts_with('9') && g != "00" && n != "0000"
}

#[cfg(test)]
mod tests;
