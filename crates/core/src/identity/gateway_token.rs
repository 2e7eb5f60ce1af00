//! The gateway's own tokens: short-lived EdDSA JWTs it signs after a token
//! exchange or a login, and accepts back. The public key is published as a
//! JWK Set so other services can verify them too.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use super::jwks::KeySet;
use super::jwt::{self, int_claim, str_claim, string_list, Expectations, Unverified};
use super::oidc::actor_of;
use super::{now_secs, AuthError, Credential, Identity};

/// The audience of gateway tokens: they are for this gateway only.
pub const AUDIENCE: &str = "portcullis";

const PEM_LABEL: &str = "PRIVATE KEY";

/// A token the gateway issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// Its identity, as the gateway will see it.
    pub identity: Identity,
}

/// Signs and verifies gateway tokens with one Ed25519 key.
pub struct TokenIssuer {
    issuer: String,
    kid: String,
    signing: EncodingKey,
    keys: KeySet,
    public_x: String,
    ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// The key in `path` (PKCS#8 PEM), generated with mode 0600 if absent.
    pub fn load_or_generate(path: &Path, issuer: &str, ttl: Duration) -> Result<Self, String> {
        let der = if path.exists() {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            STANDARD
                .decode(body.trim())
                .map_err(|_| format!("{} is not a PEM private key", path.display()))?
        } else {
            let rng = ring::rand::SystemRandom::new();
            let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| "generating an Ed25519 key failed".to_owned())?;
            let der = doc.as_ref().to_vec();
            write_private(path, &der)?;
            tracing::info!(path = %path.display(), "generated the token-signing key");
            der
        };
        Self::from_pkcs8(&der, issuer, ttl).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// An issuer over a PKCS#8 Ed25519 key.
    pub fn from_pkcs8(der: &[u8], issuer: &str, ttl: Duration) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| "not an Ed25519 PKCS#8 key".to_owned())?;
        let public = pair.public_key().as_ref();
        let public_x = URL_SAFE_NO_PAD.encode(public);
        // RFC 7638-style thumbprint prefix: stable per key, so a rotated key
        // gets a new kid.
        let kid = hex::encode(&sha2_256(public)[..8]);
        let decoding = DecodingKey::from_ed_components(&public_x)
            .map_err(|_| "bad Ed25519 public key".to_owned())?;
        Ok(Self {
            issuer: issuer.to_owned(),
            keys: KeySet::single(&kid, Algorithm::EdDSA, decoding),
            kid,
            signing: EncodingKey::from_ed_der(der),
            public_x,
            ttl,
        })
    }

    /// The `iss` of gateway tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public key as a JWK Set, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": self.kid, "x": self.public_x,
        }]})
    }

    /// A token for `subject`, with `actor` acting for it if given. It
    /// expires at the configured lifetime or when either input credential
    /// does, whichever is first.
    pub fn issue(
        &self,
        subject: &Identity,
        actor: Option<&Identity>,
    ) -> Result<IssuedToken, AuthError> {
        self.issue_at(subject, actor, now_secs())
    }

    /// [`TokenIssuer::issue`] at `now` (seconds since the epoch).
    pub fn issue_at(
        &self,
        subject: &Identity,
        actor: Option<&Identity>,
        now: i64,
    ) -> Result<IssuedToken, AuthError> {
        let mut exp = now + self.ttl.as_secs() as i64;
        for c in std::iter::once(subject).chain(actor) {
            if let Some(e) = c.credential.expires_at {
                exp = exp.min(e);
            }
        }
        if exp <= now {
            return Err(AuthError::Rejected(
                "the presented token has expired".into(),
            ));
        }
        let acting = match (actor, &subject.actor) {
            (Some(a), _) => Some(a.user.clone()),
            (None, existing) => existing.clone(),
        };
        let jti = uuid::Uuid::now_v7().to_string();
        // The static tokens it rests on, so it ends with them.
        let mut sources: Vec<String> = Vec::new();
        for c in std::iter::once(subject).chain(actor) {
            sources.extend(
                c.credential
                    .id
                    .iter()
                    .filter(|id| id.starts_with("static:"))
                    .cloned(),
            );
            sources.extend(c.credential.sources.iter().cloned());
        }
        sources.sort();
        sources.dedup();
        let mut claims = json!({
            "iss": self.issuer, "aud": AUDIENCE, "sub": subject.user,
            "groups": subject.groups, "iat": now, "nbf": now, "exp": exp,
            "jti": jti, "amr": [subject.method],
        });
        if !sources.is_empty() {
            claims["src"] = json!(sources);
        }
        if let Some(a) = &acting {
            claims["act"] = json!({ "sub": a });
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let token = jsonwebtoken::encode(&header, &claims, &self.signing)
            .map_err(|_| AuthError::Unavailable("signing the token failed".into()))?;
        let identity = Identity {
            user: subject.user.clone(),
            groups: subject.groups.clone(),
            actor: acting,
            method: "gateway-token",
            credential: Credential {
                issued_at: Some(now),
                expires_at: Some(exp),
                id: Some(jti),
                sources,
            },
        };
        Ok(IssuedToken {
            token,
            expires_in: exp - now,
            identity,
        })
    }

    /// Verifies a token this gateway issued, now.
    pub fn verify(&self, t: &Unverified<'_>) -> Result<Identity, AuthError> {
        self.verify_at(t, now_secs())
    }

    /// Verifies a token this gateway issued, at `now` (seconds since the
    /// epoch).
    pub fn verify_at(&self, t: &Unverified<'_>, now: i64) -> Result<Identity, AuthError> {
        let key = self
            .keys
            .find(t.header.kid.as_deref(), t.alg)
            .ok_or_else(|| {
                AuthError::Rejected(
                    "the token was signed with a key this gateway does not hold".into(),
                )
            })?;
        let audiences = [AUDIENCE.to_owned()];
        let claims = jwt::verify(
            t,
            key,
            &Expectations {
                issuer: &self.issuer,
                audiences: &audiences,
                leeway_secs: 5,
                now,
            },
        )?;
        let user = str_claim(&claims, "sub")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Rejected("the token has no \"sub\" claim".into()))?;
        Ok(Identity {
            user: user.to_owned(),
            groups: string_list(claims.get("groups")),
            actor: actor_of(&claims)?,
            method: "gateway-token",
            credential: Credential {
                issued_at: int_claim(&claims, "iat"),
                expires_at: int_claim(&claims, "exp"),
                id: str_claim(&claims, "jti").map(str::to_owned),
                sources: string_list(claims.get("src")),
            },
        })
    }
}

fn sha2_256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

fn write_private(path: &Path, der: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        crate::files::private_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let b64 = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {PEM_LABEL}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(pem.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let a = TokenIssuer::load_or_generate(&path, "urn:gw", Duration::from_secs(60)).unwrap();
        // Loading again gives the same key.
        let b = TokenIssuer::load_or_generate(&path, "urn:gw", Duration::from_secs(60)).unwrap();
        assert_eq!(a.jwks(), b.jwks());
        a
    }

    #[test]
    fn issued_tokens_verify_with_their_actor_and_forgeries_do_not() {
        let gw = issuer();
        let alice = Identity {
            user: "alice".into(),
            groups: vec!["eng".into()],
            method: "oidc",
            credential: Credential {
                expires_at: Some(now_secs() + 30),
                ..Default::default()
            },
            ..Default::default()
        };
        let agent = Identity {
            user: "agent-x".into(),
            method: "oidc",
            ..Default::default()
        };
        let t = gw.issue(&alice, Some(&agent)).unwrap();
        assert!(t.expires_in <= 30, "capped by the subject's expiry");
        let id = gw.verify(&jwt::peek(&t.token).unwrap()).unwrap();
        assert_eq!(id.describe(), "agent-x acting for alice");
        assert_eq!(id.groups, vec!["eng"]);
        assert!(id.credential.sources.is_empty());

        // Exchanged from a static token: it names the token, and so does
        // what is exchanged from it in turn.
        let by_static = Identity {
            credential: Credential {
                id: Some("static:0123".into()),
                ..Default::default()
            },
            ..alice.clone()
        };
        let t = gw.issue(&by_static, None).unwrap();
        let id = gw.verify(&jwt::peek(&t.token).unwrap()).unwrap();
        assert_eq!(id.credential.sources, ["static:0123"]);
        let again = gw.issue(&id, Some(&agent)).unwrap();
        let id = gw.verify(&jwt::peek(&again.token).unwrap()).unwrap();
        assert_eq!(id.credential.sources, ["static:0123"]);

        // A payload changed after signing: refused.
        let parts: Vec<&str> = t.token.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
                .unwrap()
                .replace("\"alice\"", "\"root\""),
        );
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        let e = gw.verify(&jwt::peek(&tampered).unwrap()).unwrap_err();
        assert_eq!(e.to_string(), "the token's signature does not verify");

        // Another gateway's key, same issuer name: refused.
        let other = issuer();
        let forged = other.issue(&alice, None).unwrap();
        let e = gw.verify(&jwt::peek(&forged.token).unwrap()).unwrap_err();
        assert!(e.to_string().contains("key"), "{e}");
    }

    /// Expiry through the authenticator, on a clock the test moves: no
    /// sleeping for a token to age.
    #[tokio::test]
    async fn a_gateway_token_expires_on_the_injected_clock() {
        use crate::identity::{Authenticator, GatewayAuthenticator, ManualClock, StaticTokens};
        use std::sync::Arc;
        let gw = Arc::new(issuer());
        let clock = Arc::new(ManualClock::at(1_000_000));
        let auth = GatewayAuthenticator::new(
            StaticTokens::new(Vec::new()),
            Vec::new(),
            Some(gw.clone()),
            Default::default(),
        )
        .with_clock(clock.clone());
        let alice = Identity {
            user: "alice".into(),
            method: "oidc",
            ..Default::default()
        };
        let t = gw.issue_at(&alice, None, 1_000_000).unwrap();
        assert_eq!(t.expires_in, 60);
        assert_eq!(auth.authenticate(&t.token).await.unwrap().user, "alice");
        clock.advance(60 + 5);
        assert!(
            auth.authenticate(&t.token).await.is_ok(),
            "within the leeway"
        );
        clock.advance(1);
        assert_eq!(
            auth.authenticate(&t.token).await.unwrap_err().to_string(),
            "the token has expired"
        );
        clock.set(1_000_000 - 10);
        assert_eq!(
            auth.authenticate(&t.token).await.unwrap_err().to_string(),
            "the token is not valid yet (nbf)"
        );
    }
}
