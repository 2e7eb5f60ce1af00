//! The SSH adapter: clients reach servers through the gateway with their
//! own token, and never see the server's key.
//!
//! How a connection runs (each step's file):
//!
//! 1. `serve` accepts, and russh runs the SSH transport with the gateway's
//!    host key (`host_key.rs`).
//! 2. The client logs in with its SSH user name naming the connection and
//!    a token as its password, or through keyboard-interactive
//!    (`server.rs`). The core authenticates the token and decides
//!    `connect`; the gateway then logs in upstream with the connection's
//!    key, checking the server's host key against the pin (`upstream.rs`),
//!    and only then opens the session.
//! 3. Each channel the client opens is decided on its own: a session
//!    channel's shell, exec or subsystem (`request.rs` classifies it,
//!    `channel.rs` decides, holds for review, records and relays), a local
//!    forward (`forward.rs`), agent forwarding (`server.rs`). A refused
//!    request gets a one-line reason on the client's stderr; the rest of
//!    the session goes on.
//! 4. Terminal and exec output is recorded as asciicast before it is
//!    forwarded (`cast.rs`); a session whose recordings reach their cap is
//!    ended rather than run unrecorded.
//! 5. A kill (operator, revocation, shutdown) or the token's expiry ends
//!    the connection at once, with a line on every terminal first; expiry
//!    also warns ahead of time (`session.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::Core;
use russh::keys::{PrivateKey, PublicKey};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod ca;
pub mod cast;
mod channel;
mod forward;
pub mod host_key;
mod killable;
pub mod probe;
mod relay;
pub mod request;
mod review;
mod server;
mod session;
pub mod upstream;
pub mod vocabulary;

pub use vocabulary::SSH;

/// The protocol's name in records and policy (`context.protocol`).
pub const PROTOCOL: &str = "ssh";

/// The SSH window the gateway offers on each side: large enough that one
/// channel streams at disk speed over loopback (OpenSSH offers 2 MiB).
pub(crate) const WINDOW_SIZE: u32 = 2 * 1024 * 1024;

/// Messages (of at most 32 KiB) russh queues per channel before it stops
/// reading the connection: with the window, this bounds a channel's
/// memory in the gateway (see `docs/ssh.md`).
pub(crate) const CHANNEL_BUFFER: usize = 16;

/// The ciphers the gateway offers its clients. AES-GCM only: OpenSSH
/// clients prefer ChaCha20-Poly1305 whenever a server offers it, and in
/// the gateway, which decrypts and encrypts every byte twice, that cipher
/// took half the CPU of a file copy (ring's Poly1305 has no vector code;
/// its AES-GCM uses AES-NI and CLMUL). Every maintained client supports
/// AES-GCM.
pub(crate) const CLIENT_CIPHERS: &[russh::cipher::Name] =
    &[russh::cipher::AES_256_GCM, russh::cipher::AES_128_GCM];

/// The ciphers the gateway asks servers for, in order (the client's order
/// decides).
pub(crate) const UPSTREAM_CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
];

/// One `kind = "ssh"` connection.
#[derive(Clone)]
pub struct SshTarget {
    /// The name clients use as their SSH user name.
    pub name: String,
    /// `host:port`.
    pub upstream: String,
    /// The account the gateway logs in as.
    pub user: String,
    /// The gateway's key for that account (Ed25519 or ECDSA).
    pub key: Arc<PrivateKey>,
    /// The server's host key, pinned.
    pub host_key: PublicKey,
}

impl SshTarget {
    /// The pinned host key's SHA-256 fingerprint, as `ssh-keygen -l` shows it.
    pub fn host_key_fingerprint(&self) -> String {
        self.host_key
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string()
    }
}

impl std::fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTarget")
            .field("name", &self.name)
            .field("upstream", &self.upstream)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// How SSH sessions are run.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Where recordings are written (`data_dir/recordings`).
    pub recordings_dir: PathBuf,
    /// Whether what the client types is recorded too.
    pub record_input: bool,
    /// The bytes one session's recordings may take; past it the session
    /// ends.
    pub max_recording_bytes: u64,
    /// How long before the session's end (its token's expiry plus grace)
    /// terminals are warned.
    pub expiry_warning: Duration,
    /// Time to log in, from the TCP accept.
    pub login_timeout: Duration,
    /// Time to reach and log in to the upstream.
    pub upstream_timeout: Duration,
    /// The caps on connections logging in, shared with every listener.
    pub preauth: portcullis_core::preauth::PreAuthGate,
}

/// The SSH listener's shared state.
pub(crate) struct Shared {
    pub core: Core,
    pub ca: Arc<ca::UserCa>,
    pub targets: HashMap<String, Arc<SshTarget>>,
    pub settings: SshSettings,
}

/// Serves SSH clients.
pub struct SshAdapter {
    shared: Arc<Shared>,
    config: Arc<russh::server::Config>,
}

impl SshAdapter {
    /// An adapter for `targets`, presenting `host_key`.
    pub fn new(
        core: Core,
        targets: Vec<SshTarget>,
        settings: SshSettings,
        host_key: PrivateKey,
        ca: Arc<ca::UserCa>,
    ) -> Self {
        use russh::MethodKind;
        let config = russh::server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-Portcullis".into()),
            methods: russh::MethodSet::from(
                &[
                    MethodKind::PublicKey,
                    MethodKind::Password,
                    MethodKind::KeyboardInteractive,
                ][..],
            ),
            auth_rejection_time: Duration::from_millis(500),
            // OpenSSH asks "none" first to learn the methods: no delay.
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key],
            window_size: WINDOW_SIZE,
            channel_buffer_size: CHANNEL_BUFFER,
            // OpenSSH's MaxAuthTries: a client offers each key its agent
            // holds before it asks for the token, and each refused key
            // counts.
            max_auth_attempts: 6,
            // The session's own clocks (login timeout, expiry) end it; an
            // idle shell is not ended for being idle.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(CLIENT_CIPHERS),
                ..Default::default()
            },
            ..Default::default()
        };
        Self {
            shared: Arc::new(Shared {
                core,
                ca,
                targets: targets
                    .into_iter()
                    .map(|t| (t.name.clone(), Arc::new(t)))
                    .collect(),
                settings,
            }),
            config: Arc::new(config),
        }
    }

    /// Serves clients from `listener` until `shutdown`; every session's
    /// kill token is a child of it.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let tasks = tokio_util::task::TaskTracker::new();
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an SSH client failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Over a cap, the connection is closed before anything is read.
            let Ok(permit) = self.shared.settings.preauth.enter(peer.ip()) else {
                drop(tcp);
                continue;
            };
            tasks.spawn(session::serve_client(
                self.shared.clone(),
                self.config.clone(),
                (tcp, peer),
                permit,
                shutdown.child_token(),
            ));
        }
        tasks.close();
        tasks.wait().await;
    }
}

/// Why a connection's SSH settings cannot be used; names the field.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `private_key_file` / `private_key_env`.
    #[error("the private key is not an unencrypted OpenSSH private key: {0}")]
    PrivateKey(String),
    /// An RSA key: see the workspace's note on the rsa crate.
    #[error("RSA keys are not supported (use Ed25519 or ECDSA)")]
    RsaKey,
    /// `host_key`.
    #[error("the host key is not a public key line such as \"ssh-ed25519 AAAA…\": {0}")]
    HostKey(String),
}

impl SshTarget {
    /// A target from its configuration: `key` in OpenSSH format, and the
    /// pinned `host_key` as an `authorized_keys`-style line.
    pub fn new(
        name: &str,
        upstream: &str,
        user: &str,
        key: &str,
        host_key: &str,
    ) -> Result<Self, TargetError> {
        let key = russh::keys::decode_secret_key(key, None)
            .map_err(|e| TargetError::PrivateKey(e.to_string()))?;
        if key.algorithm().is_rsa() {
            return Err(TargetError::RsaKey);
        }
        let host_key = PublicKey::from_openssh(host_key.trim())
            .map_err(|e| TargetError::HostKey(e.to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            upstream: upstream.to_owned(),
            user: user.to_owned(),
            key: Arc::new(key),
            host_key,
        })
    }
}
