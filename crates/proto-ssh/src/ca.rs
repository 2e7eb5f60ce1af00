//! The gateway's SSH user CA: short-lived OpenSSH certificates, so plain
//! `ssh` logs in with no password after `portcullis login`.
//!
//! A certificate is issued (`POST /api/ssh/certificate`) to an identity
//! the gateway has just authenticated by token, for a key the client
//! holds. It carries that identity, signed: user, groups, actor, method
//! and the credential's facts (when it was issued, when it ends, which
//! static tokens it rests on), in the extension [`IDENTITY_EXTENSION`]. It
//! is valid until the token's own expiry or the configured lifetime,
//! whichever comes first, so a certificate never outlives its token.
//!
//! At login the certificate is the credential. The adapter checks, here,
//! everything `ssh-key`'s validation leaves to the caller (the CA, the
//! validity window, the signature, that it is a user certificate, no
//! critical options, the principal), then asks the core whether that
//! identity still holds (`Authenticator::still_valid`: revocations and
//! removed static tokens), as it does for every live session.

use std::path::Path;

use portcullis_core::{Credential, Identity};
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::{Certificate, Fingerprint, HashAlg};
use russh::keys::{PrivateKey, PublicKey};
use serde::{Deserialize, Serialize};

use crate::host_key::{self, HostKeyError};

/// The extension holding the identity.
pub const IDENTITY_EXTENSION: &str = "identity@portcullis";

/// Why a certificate was not issued or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Not an OpenSSH public key line.
    #[error("not an OpenSSH public key: {0}")]
    BadKey(String),
    /// Signing failed.
    #[error("the certificate could not be signed: {0}")]
    Signing(String),
    /// The certificate is not one of this gateway's, or not valid now.
    #[error("the certificate is not valid here: {0}")]
    Invalid(String),
}

/// The identity, as a certificate carries it.
#[derive(Debug, Serialize, Deserialize)]
struct Carried {
    user: String,
    groups: Vec<String>,
    actor: Option<String>,
    method: String,
    issued_at: Option<i64>,
    expires_at: i64,
    id: Option<String>,
    sources: Vec<String>,
}

/// The gateway's user CA.
pub struct UserCa {
    key: PrivateKey,
    fingerprint: Fingerprint,
}

impl UserCa {
    /// The CA whose key is at `path` (made there on first use, 0600).
    pub fn load_or_generate(path: &Path) -> Result<Self, HostKeyError> {
        let key = host_key::load_or_generate(path)?;
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256);
        Ok(Self { key, fingerprint })
    }

    /// The CA's public key line, for servers that trust it directly.
    pub fn public_line(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// A certificate for `public_key` (an `authorized_keys`-style line)
    /// carrying `identity`, valid from a minute ago (clock skew) until
    /// `now + lifetime` or the credential's expiry, whichever is sooner.
    pub fn issue(
        &self,
        identity: &Identity,
        public_key: &str,
        now: i64,
        lifetime_secs: i64,
    ) -> Result<Certificate, CertError> {
        let subject = PublicKey::from_openssh(public_key.trim())
            .map_err(|e| CertError::BadKey(e.to_string()))?;
        let ends = identity
            .credential
            .expires_at
            .map_or(now + lifetime_secs, |exp| exp.min(now + lifetime_secs));
        if ends <= now {
            return Err(CertError::Invalid("the token has expired".into()));
        }
        let carried = Carried {
            user: identity.user.clone(),
            groups: identity.groups.clone(),
            actor: identity.actor.clone(),
            method: identity.method.to_owned(),
            issued_at: identity.credential.issued_at,
            expires_at: ends,
            id: identity.credential.id.clone(),
            sources: identity.credential.sources.clone(),
        };
        let mut nonce = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let sign = |e: russh::keys::ssh_key::Error| CertError::Signing(e.to_string());
        let mut builder = Builder::new(
            nonce.to_vec(),
            subject.key_data().clone(),
            (now - 60).max(0) as u64,
            ends as u64,
        )
        .map_err(sign)?;
        builder
            .serial(rand::RngCore::next_u64(&mut rand::rngs::OsRng))
            .and_then(|b| b.cert_type(CertType::User))
            .and_then(|b| b.key_id(format!("portcullis:{}", identity.describe())))
            .and_then(|b| b.valid_principal(identity.user.clone()))
            .and_then(|b| b.extension("permit-pty", ""))
            .and_then(|b| b.extension("permit-port-forwarding", ""))
            .and_then(|b| b.extension("permit-agent-forwarding", ""))
            .map_err(sign)?;
        let json =
            serde_json::to_string(&carried).map_err(|e| CertError::Signing(e.to_string()))?;
        builder.extension(IDENTITY_EXTENSION, json).map_err(sign)?;
        builder.sign(&self.key).map_err(sign)
    }

    /// The identity `cert` carries, when it is this CA's, valid at `now`,
    /// and well-formed.
    pub fn verify(&self, cert: &Certificate, now: u64) -> Result<Identity, CertError> {
        let invalid = |m: &str| CertError::Invalid(m.to_owned());
        cert.validate_at(now, [&self.fingerprint])
            .map_err(|e| CertError::Invalid(e.to_string()))?;
        if cert.cert_type() != CertType::User {
            return Err(invalid("a host certificate"));
        }
        if !cert.critical_options().is_empty() {
            return Err(invalid(
                "it has critical options this gateway does not issue",
            ));
        }
        let json = cert
            .extensions()
            .get(IDENTITY_EXTENSION)
            .ok_or_else(|| invalid("it carries no identity"))?;
        let carried: Carried =
            serde_json::from_str(json).map_err(|_| invalid("its identity is unreadable"))?;
        if cert.valid_principals() != [carried.user.clone()] {
            return Err(invalid("its principal is not its user"));
        }
        Ok(Identity {
            user: carried.user,
            groups: carried.groups,
            actor: carried.actor,
            method: "ssh-certificate",
            credential: Credential {
                issued_at: carried.issued_at,
                expires_at: Some(carried.expires_at.min(cert.valid_before() as i64)),
                id: carried.id,
                sources: carried.sources,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(expires_at: Option<i64>) -> Identity {
        Identity {
            user: "alice".into(),
            groups: vec!["engineering".into()],
            actor: None,
            method: "static-token",
            credential: Credential {
                issued_at: Some(100),
                expires_at,
                id: Some("static:ab".into()),
                sources: vec![],
            },
        }
    }

    fn client_key() -> String {
        let dir = tempfile::tempdir().unwrap();
        let key = host_key::load_or_generate(&dir.path().join("k")).unwrap();
        key.public_key().to_openssh().unwrap()
    }

    #[test]
    fn a_certificate_carries_its_identity_and_never_outlives_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let ca = UserCa::load_or_generate(&dir.path().join("ca")).unwrap();
        let cert = ca
            .issue(&alice(Some(1_000_500)), &client_key(), 1_000_000, 3600)
            .unwrap();
        assert_eq!(cert.valid_before(), 1_000_500);
        let identity = ca.verify(&cert, 1_000_100).unwrap();
        assert_eq!(identity.user, "alice");
        assert_eq!(identity.groups, ["engineering"]);
        assert_eq!(identity.method, "ssh-certificate");
        assert_eq!(identity.credential.issued_at, Some(100));
        assert_eq!(identity.credential.expires_at, Some(1_000_500));
        assert!(ca.verify(&cert, 1_000_501).is_err(), "expired");
        assert!(ca
            .issue(&alice(Some(999_999)), &client_key(), 1_000_000, 3600)
            .is_err());
    }

    #[test]
    fn another_cas_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ours = UserCa::load_or_generate(&dir.path().join("ours")).unwrap();
        let theirs = UserCa::load_or_generate(&dir.path().join("theirs")).unwrap();
        let cert = theirs
            .issue(&alice(None), &client_key(), 1_000_000, 3600)
            .unwrap();
        assert!(ours.verify(&cert, 1_000_100).is_err());
    }
}
