//! How a sensitive value is shown to someone who may not see it.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Secret;

/// What replaces a sensitive value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// A fixed mask, `****`, whatever the value.
    #[default]
    Redact,
    /// Keeps a documented part: an e-mail's domain (`****@example.com`),
    /// the last four characters of cards, IBANs, SSNs, phone numbers and
    /// other classes with at least eight of them; everything else is redacted.
    Partial,
    /// `hmac:` and the first 16 hex digits of HMAC-SHA256 under the
    /// gateway's masking key: equal values stay equal (joinable), and the
    /// value cannot be recovered without the key.
    Hash,
    /// SQL NULL.
    Null,
}

/// The fixed mask.
pub const REDACTED: &str = "****";

/// The key behind [`Strategy::Hash`].
#[derive(Clone)]
pub struct HashKey(Secret<Vec<u8>>);

impl HashKey {
    /// A key of raw bytes (at least 32 of them, random).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Secret::new(bytes))
    }

    fn tag(&self, value: &[u8]) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.0.expose()) {
            Ok(m) => m,
            Err(_) => return REDACTED.to_owned(),
        };
        mac.update(value);
        let out = mac.finalize().into_bytes();
        format!("hmac:{}", hex::encode(&out[..8]))
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(<secret>)")
    }
}

/// The replacement for `value` of class `class`, or `None` for SQL NULL.
pub fn apply(strategy: Strategy, class: &str, value: &[u8], key: &HashKey) -> Option<Vec<u8>> {
    match strategy {
        Strategy::Null => None,
        Strategy::Redact => Some(REDACTED.as_bytes().to_vec()),
        Strategy::Hash => Some(key.tag(value).into_bytes()),
        Strategy::Partial => Some(partial(class, value)),
    }
}

fn partial(class: &str, value: &[u8]) -> Vec<u8> {
    let mut out = REDACTED.as_bytes().to_vec();
    if class == "email" {
        if let Some(at) = value.iter().rposition(|b| *b == b'@') {
            out.extend_from_slice(&value[at..]);
        }
        return out;
    }
    // Keeping four characters of a short value would show most of it.
    let keep = 4;
    let alnum: Vec<u8> = value
        .iter()
        .copied()
        .filter(u8::is_ascii_alphanumeric)
        .collect();
    if alnum.len() >= 8 && !matches!(class, "jwt" | "private_key" | "aws_access_key") {
        out.extend_from_slice(&alnum[alnum.len() - keep..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HashKey {
        HashKey::new(vec![7; 32])
    }

    fn show(s: Strategy, class: &str, v: &str) -> Option<String> {
        apply(s, class, v.as_bytes(), &key()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn each_strategy() {
        assert_eq!(
            show(Strategy::Redact, "email", "a@b.com").as_deref(),
            Some("****")
        );
        assert_eq!(show(Strategy::Null, "email", "a@b.com"), None);
        assert_eq!(
            show(Strategy::Partial, "email", "alice@example.com").as_deref(),
            Some("****@example.com")
        );
        assert_eq!(
            show(Strategy::Partial, "credit_card", "4111 1111 1111 1234").as_deref(),
            Some("****1234")
        );
        assert_eq!(
            show(Strategy::Partial, "name", "Bob").as_deref(),
            Some("****")
        );
        assert_eq!(
            show(Strategy::Partial, "aws_access_key", "AKIAIOSFODNN7EXAMPLE").as_deref(),
            Some("****")
        );
    }

    #[test]
    fn hashes_are_stable_keyed_and_hide_the_value() {
        let a = show(Strategy::Hash, "email", "alice@example.com").unwrap();
        let b = show(Strategy::Hash, "email", "alice@example.com").unwrap();
        let c = show(Strategy::Hash, "email", "bob@example.com").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("hmac:") && a.len() == 21, "{a}");
        assert!(!a.contains("alice"));
        let other = apply(
            Strategy::Hash,
            "email",
            b"alice@example.com",
            &HashKey::new(vec![8; 32]),
        )
        .unwrap();
        assert_ne!(a.as_bytes(), other.as_slice());
        assert_eq!(format!("{:?}", key()), "HashKey(<secret>)");
    }
}
