//! Evidence: every audit event as one record of a hash chain, and signed
//! checkpoints over the chain's head.
//!
//! A record's canonical form is the exact JSON line stored with it:
//! `{"seq":N,"at":"…","kind":"…","prev":"<hex>","body":{…}}`. Its hash is
//! SHA-256 over those bytes, and the next record names it in `prev`, so
//! editing, deleting, inserting or reordering a record breaks the link
//! after it. Whoever can write the store can rebuild the links, so the
//! chain's head is signed: a checkpoint commits to the head (sequence
//! number and hash), embeds the previous checkpoint's signature, and is
//! signed with the gateway's Ed25519 key. One is written every so many
//! records, every so many seconds even when nothing happened, and when the
//! gateway stops (marked final), so a removed tail shows from the store
//! alone; an exported copy of the checkpoints on storage the store's
//! administrators do not control catches a removed final checkpoint too.
//! The model follows CloudTrail's digest chain.

use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::AuditEvent;

mod body;
pub mod verify;

pub use body::event_body;

/// The `prev` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// One record of the chain, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When it was chained.
    pub at: OffsetDateTime,
    /// What sort of event (`session_started`, `command`, …).
    pub kind: &'static str,
    /// The session it belongs to, for events of one.
    pub session_id: Option<Uuid>,
    /// For `session_started`: the user and connection, which sessions
    /// are listed by.
    pub user: Option<String>,
    /// See `user`.
    pub connection: Option<String>,
    /// The canonical form: the bytes the hash is taken over.
    pub line: String,
    /// SHA-256 of `line`.
    pub hash: [u8; 32],
}

/// Where the chain stands: the last record's number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The last record's sequence number (0 before the first).
    pub seq: u64,
    /// Its hash ([`GENESIS`] before the first).
    pub hash: [u8; 32],
}

impl Default for ChainHead {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS,
        }
    }
}

impl ChainHead {
    /// Chains `event` after the head, and moves the head to it.
    pub fn append(&mut self, event: &AuditEvent, at: OffsetDateTime) -> ChainRecord {
        let seq = self.seq + 1;
        let (kind, body) = event_body(event);
        let mut line = String::with_capacity(body.len() + 160);
        line.push_str("{\"seq\":");
        line.push_str(&seq.to_string());
        line.push_str(",\"at\":\"");
        line.push_str(&rfc3339(at));
        line.push_str("\",\"kind\":\"");
        line.push_str(kind);
        line.push_str("\",\"prev\":\"");
        line.push_str(&hex::encode(self.hash));
        line.push_str("\",\"body\":");
        line.push_str(&body);
        line.push('}');
        let hash: [u8; 32] = Sha256::digest(line.as_bytes()).into();
        let (user, connection) = match event {
            AuditEvent::SessionStarted(s) => (Some(s.user.clone()), Some(s.connection.clone())),
            _ => (None, None),
        };
        self.seq = seq;
        self.hash = hash;
        ChainRecord {
            seq,
            at,
            kind,
            session_id: event.session_id(),
            user,
            connection,
            line,
            hash,
        }
    }
}

/// RFC 3339 with the precision the clock gives; never fails for times
/// between years 0 and 9999.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// What a checkpoint commits to. Serialised in this field order, which is
/// the canonical form its signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Position among checkpoints, from 1.
    pub number: u64,
    /// When it was made.
    pub at: String,
    /// The last record it covers (0: none yet).
    pub upto: u64,
    /// That record's hash, hex.
    pub head: String,
    /// The previous checkpoint's signature (empty for the first).
    pub prev_signature: String,
    /// Written as the gateway stopped: nothing follows it in this run.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The signing key's id (see [`key_id`]).
    pub key: String,
}

/// A checkpoint as stored and exported: the canonical line and its
/// Ed25519 signature (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The checkpoint's canonical JSON.
    pub line: String,
    /// Ed25519 over `line`, standard base64.
    pub signature: String,
}

impl SignedCheckpoint {
    /// The checkpoint the line holds.
    pub fn checkpoint(&self) -> Result<Checkpoint, EvidenceError> {
        serde_json::from_str(&self.line)
            .map_err(|e| EvidenceError::Malformed(format!("checkpoint: {e}")))
    }
}

/// Evidence keys and files that could not be used.
#[derive(Debug, Error)]
pub enum EvidenceError {
    /// The signing key file could not be read or made.
    #[error("evidence signing key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A public key that is not 32 bytes of hex.
    #[error("not an Ed25519 public key (64 hex digits expected): {0}")]
    PublicKey(String),
    /// Stored evidence that does not parse.
    #[error("malformed evidence: {0}")]
    Malformed(String),
}

/// The short id of a public key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// The gateway's checkpoint signing key.
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &key_id(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads the PKCS#8 key at `path`, or makes one there (mode 0600, in
    /// a private directory).
    pub fn load_or_generate(path: &Path) -> Result<Self, EvidenceError> {
        let fail = |reason: String| EvidenceError::Key {
            path: path.display().to_string(),
            reason,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| fail("cannot generate a key".into()))?;
                if let Some(dir) = path.parent() {
                    crate::files::private_dir(dir).map_err(|e| fail(e.to_string()))?;
                }
                write_new_private(path, pkcs8.as_ref()).map_err(|e| fail(e.to_string()))?;
                pkcs8.as_ref().to_vec()
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        Self::from_pkcs8(&bytes).map_err(|_| fail("not an Ed25519 PKCS#8 key".into()))
    }

    /// A signer from PKCS#8 bytes.
    pub fn from_pkcs8(bytes: &[u8]) -> Result<Self, ring::error::KeyRejected> {
        Ok(Self {
            pair: Ed25519KeyPair::from_pkcs8(bytes)?,
        })
    }

    /// A fresh key held in memory only (tests, tools).
    pub fn ephemeral() -> Result<Self, EvidenceError> {
        let fail = |reason: &str| EvidenceError::Key {
            path: "(in memory)".into(),
            reason: reason.into(),
        };
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| fail("cannot generate a key"))?;
        Self::from_pkcs8(pkcs8.as_ref()).map_err(|_| fail("the generated key is rejected"))
    }

    /// The public half, 32 bytes.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs the checkpoint after `previous` over `head`.
    pub fn checkpoint(
        &self,
        previous: Option<&SignedCheckpoint>,
        previous_number: u64,
        head: ChainHead,
        at: OffsetDateTime,
        is_final: bool,
    ) -> SignedCheckpoint {
        let checkpoint = Checkpoint {
            number: previous_number + 1,
            at: rfc3339(at),
            upto: head.seq,
            head: hex::encode(head.hash),
            prev_signature: previous.map(|p| p.signature.clone()).unwrap_or_default(),
            is_final,
            key: key_id(self.public_key()),
        };
        let line = serde_json::to_string(&checkpoint).expect("a checkpoint serialises");
        let signature = self.pair.sign(line.as_bytes());
        SignedCheckpoint {
            line,
            signature: base64_encode(signature.as_ref()),
        }
    }
}

fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A public key that checks checkpoint signatures.
#[derive(Debug, Clone)]
pub struct PublicKey(Vec<u8>);

impl PublicKey {
    /// From 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, EvidenceError> {
        match hex::decode(text.trim()) {
            Ok(bytes) if bytes.len() == 32 => Ok(Self(bytes)),
            _ => Err(EvidenceError::PublicKey(
                text.trim().chars().take(80).collect(),
            )),
        }
    }

    /// The signer's public key.
    pub fn of(signer: &Signer) -> Self {
        Self(signer.public_key().to_vec())
    }

    /// Hex, as `from_hex` reads it.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Its id, as checkpoints name it.
    pub fn id(&self) -> String {
        key_id(&self.0)
    }

    /// Whether `signed` carries a valid signature by this key.
    pub fn signed(&self, signed: &SignedCheckpoint) -> bool {
        use base64::Engine;
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(&signed.signature)
        else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(signed.line.as_bytes(), &signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests;
