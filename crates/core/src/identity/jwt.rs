//! JSON Web Tokens: reading the parts that route a token (header, issuer)
//! before any key is chosen, and verifying the signature and time claims
//! with a chosen key. No I/O here; key sets are fetched by [`super::jwks`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::AuthError;

/// The signature algorithms accepted from any issuer. `none` and every HMAC
/// algorithm are refused: a gateway holds no shared secrets with issuers,
/// and accepting HS256 would let a public key act as an HMAC secret.
pub const ALLOWED_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// The unverified header fields that select a key.
#[derive(Debug, Clone, Deserialize)]
pub struct RawHeader {
    /// Algorithm as written (checked against [`ALLOWED_ALGORITHMS`]).
    pub alg: String,
    /// Key id.
    pub kid: Option<String>,
}

/// A token split into its parts, with its header and claims read but not
/// yet trusted.
#[derive(Debug)]
pub struct Unverified<'a> {
    /// The raw token.
    pub token: &'a str,
    /// Its header.
    pub header: RawHeader,
    /// The allowed algorithm the header names.
    pub alg: Algorithm,
    /// Its `iss`, for choosing the issuer's keys.
    pub issuer: String,
    /// Its `aud`, for choosing among one issuer's configured entries.
    pub audiences: Vec<String>,
}

/// Whether a credential is shaped like a compact JWS (three base64url
/// parts), as opposed to an opaque static token.
pub fn looks_like_jwt(credential: &str) -> bool {
    // Every JWS header is a JSON object, so its base64url starts `eyJ`.
    credential.starts_with("eyJ") && credential.bytes().filter(|&b| b == b'.').count() == 2
}

fn rejected(why: impl Into<String>) -> AuthError {
    AuthError::Rejected(why.into())
}

fn decode_part(part: &str, what: &str) -> Result<Value, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| rejected(format!("the token's {what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| rejected(format!("the token's {what} is not JSON")))
}

/// Reads the header and issuer of `token` without verifying anything.
pub fn peek(token: &str) -> Result<Unverified<'_>, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(rejected(
            "the token is not a signed JWT (expected three parts)",
        ));
    };
    let header_json = decode_part(h, "header")?;
    // RFC 7515 4.1.11: a recipient must refuse a token whose `crit` names
    // extensions it does not understand; this gateway understands none.
    if header_json.get("crit").is_some() {
        return Err(rejected(
            "the token's header names critical extensions (crit) this gateway does not understand",
        ));
    }
    let header: RawHeader = serde_json::from_value(header_json)
        .map_err(|_| rejected("the token's header has no algorithm"))?;
    let alg = match header.alg.as_str() {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        "none" => return Err(rejected("the token is unsigned (alg \"none\" is refused)")),
        other => {
            return Err(rejected(format!(
                "the token's algorithm {other:?} is not accepted (RS256, ES256 and EdDSA are)"
            )))
        }
    };
    let claims = decode_part(p, "payload")?;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| rejected("the token names no issuer (iss)"))?
        .to_owned();
    let audiences = string_list(claims.get("aud"));
    Ok(Unverified {
        token,
        header,
        alg,
        issuer,
        audiences,
    })
}

/// What a verification must check besides the signature.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// Exact `iss`.
    pub issuer: &'a str,
    /// Accepted audiences: `aud` must contain one.
    pub audiences: &'a [String],
    /// Clock skew allowed on `exp`, `nbf` and `iat`, seconds.
    pub leeway_secs: u64,
    /// Now, in seconds since the epoch, from the caller's clock.
    pub now: i64,
}

/// Verifies the signature with `key` and checks `iss`, `aud`, `exp`,
/// `nbf` and `iat` against `expect.now`; returns the claims.
pub fn verify(
    t: &Unverified<'_>,
    key: &DecodingKey,
    expect: &Expectations<'_>,
) -> Result<Value, AuthError> {
    let mut v = Validation::new(t.alg);
    // The time claims are checked below against the caller's clock (the
    // library reads the system's), and typed strictly.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.set_issuer(&[expect.issuer]);
    v.set_audience(expect.audiences);
    // `exp` is required too, by `check_times`, which can say when it is
    // there but not a number.
    v.set_required_spec_claims(&["iss", "aud"]);
    let claims = match jsonwebtoken::decode::<Value>(t.token, key, &v) {
        Ok(data) => data.claims,
        Err(e) => {
            return Err(match e.kind() {
                ErrorKind::InvalidSignature => rejected("the token's signature does not verify"),
                ErrorKind::ExpiredSignature => rejected("the token has expired"),
                ErrorKind::ImmatureSignature => rejected("the token is not valid yet (nbf)"),
                ErrorKind::InvalidAudience => rejected(format!(
                    "the token's audience is not accepted (expected {})",
                    expect.audiences.join(" or ")
                )),
                ErrorKind::InvalidIssuer => rejected("the token's issuer does not match"),
                ErrorKind::MissingRequiredClaim(c) => {
                    rejected(format!("the token has no {c:?} claim"))
                }
                ErrorKind::InvalidAlgorithm => {
                    rejected("the token's algorithm does not match its key")
                }
                _ => rejected("the token is malformed"),
            })
        }
    };
    check_times(&claims, expect.now, expect.leeway_secs)?;
    Ok(claims)
}

/// `exp` must be a number and not past; `nbf` and `iat`, when present,
/// numbers and not ahead of `now` by more than the leeway. A token issued
/// in the future would outlive a revocation made before its `iat`.
fn check_times(claims: &Value, now: i64, leeway: u64) -> Result<(), AuthError> {
    let leeway = i64::try_from(leeway).unwrap_or(i64::MAX);
    let number = |name: &str| -> Result<Option<i64>, AuthError> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => numeric_date(v)
                .map(Some)
                .ok_or_else(|| rejected(format!("the token's {name} is not a number"))),
        }
    };
    let exp = number("exp")?.ok_or_else(|| rejected("the token has no \"exp\" claim"))?;
    if exp < now.saturating_sub(leeway) {
        return Err(rejected("the token has expired"));
    }
    if number("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(rejected("the token is not valid yet (nbf)"));
    }
    if number("iat")?.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(rejected("the token was issued in the future (iat)"));
    }
    Ok(())
}

/// A NumericDate (RFC 7519 §2): a JSON number, possibly with a fraction,
/// read as whole seconds. A string is not one.
fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

/// A string claim, if present.
pub fn str_claim<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// A claim found by a dotted path such as `realm_access.roles`.
pub fn claim_path<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    // An exact key wins, for claims whose names contain dots (URLs).
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, k| v.get(k))
}

/// A claim as a list of strings: an array's strings, or a single string.
pub fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Seconds since the epoch, for `iat`/`exp`.
pub fn int_claim(claims: &Value, name: &str) -> Option<i64> {
    claims
        .get(name)
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;

    /// `claims` signed with a fresh Ed25519 key, and that key's public half.
    fn sign(claims: &Value) -> (String, DecodingKey) {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("key pair");
        let signing = EncodingKey::from_ed_der(doc.as_ref());
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &signing).expect("sign");
        (token, DecodingKey::from_ed_der(pair.public_key().as_ref()))
    }

    fn check(claims: &Value, now: i64) -> Result<Value, AuthError> {
        let (token, key) = sign(claims);
        let t = peek(&token)?;
        let audiences = ["a".to_owned()];
        let expect = Expectations {
            issuer: "urn:i",
            audiences: &audiences,
            leeway_secs: 5,
            now,
        };
        verify(&t, &key, &expect)
    }

    fn refusal(claims: &Value, now: i64) -> String {
        check(claims, now).expect_err("refused").to_string()
    }

    /// A header naming critical extensions is refused before anything
    /// else is read: the gateway understands none (RFC 7515 4.1.11).
    #[test]
    fn critical_header_extensions_are_refused() {
        let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let header = part(json!({"alg": "EdDSA", "crit": ["x-ext"], "x-ext": true}));
        let payload = part(json!({"iss": "urn:i", "aud": "a", "exp": 2_000_000_000}));
        let e = peek(&format!("{header}.{payload}.c2ln"))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("critical extensions"), "{e}");
    }

    #[test]
    fn time_claims_are_checked_against_the_callers_clock() {
        let token = json!({"iss": "urn:i", "aud": "a", "iat": 1000, "nbf": 1000, "exp": 1060});
        assert!(check(&token, 1000).is_ok());
        assert!(check(&token, 1064).is_ok(), "within the leeway");
        assert_eq!(refusal(&token, 1066), "the token has expired");
        assert_eq!(refusal(&token, 990), "the token is not valid yet (nbf)");
        let mut ahead = token.clone();
        ahead["nbf"] = json!(900);
        ahead["iat"] = json!(1100);
        assert_eq!(
            refusal(&ahead, 1000),
            "the token was issued in the future (iat)"
        );
        let mut fractional = token.clone();
        fractional["exp"] = json!(1060.5);
        assert!(
            check(&fractional, 1000).is_ok(),
            "a NumericDate may have a fraction"
        );
    }

    #[test]
    fn time_claims_must_be_numbers() {
        let token = json!({"iss": "urn:i", "aud": "a", "iat": 1000, "nbf": 1000, "exp": 1060});
        for (claim, value) in [
            ("exp", json!("1060")),
            ("nbf", json!("soon")),
            ("iat", json!(true)),
        ] {
            let mut typed = token.clone();
            typed[claim] = value;
            assert_eq!(
                refusal(&typed, 1000),
                format!("the token's {claim} is not a number")
            );
        }
    }
}
