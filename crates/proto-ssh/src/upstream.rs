//! The gateway's own SSH connection to the target: the pinned host key is
//! checked before anything is sent, and the gateway logs in with the
//! connection's key, which the client never sees.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use russh::client::{self, Msg};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use russh::{Channel, ChannelMsg};

use crate::SshTarget;

/// Why the upstream could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Not reached in time, or refused.
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    /// Its host key is not the pinned one.
    #[error("the host key of {0} is not the one pinned in the configuration; refusing to connect")]
    HostKeyMismatch(String),
    /// It refused the gateway's key.
    #[error("{0} refused the gateway's key for user {1}")]
    LoginRefused(String, String),
}

/// What the upstream connection asks of the client's side: agent
/// forwarding channels it opens go back to the client, when policy let
/// the client forward its agent.
#[derive(Default)]
pub struct AgentRoute {
    /// The client's connection, once authenticated.
    pub client: OnceLock<russh::server::Handle>,
    /// Whether policy allowed agent forwarding on some channel.
    pub allowed: std::sync::atomic::AtomicBool,
}

/// The upstream client's callbacks.
pub struct UpstreamHandler {
    pinned: PublicKey,
    /// Set when the key offered was not the pinned one.
    mismatch: Arc<std::sync::atomic::AtomicBool>,
    agent: Arc<AgentRoute>,
}

impl client::Handler for UpstreamHandler {
    type Error = russh::Error;

    async fn check_server_key(&mut self, offered: &PublicKey) -> Result<bool, Self::Error> {
        // Compare the key material only: a comment is not part of a key.
        let same = offered.key_data() == self.pinned.key_data();
        if !same {
            self.mismatch
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(same)
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let allowed = self
            .agent
            .allowed
            .load(std::sync::atomic::Ordering::Relaxed);
        let Some(client) = self.agent.client.get().filter(|_| allowed).cloned() else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let Ok(to_client) = client.channel_open_agent().await else {
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(pipe_agent(channel, to_client));
        Ok(())
    }
}

/// Relays one agent channel both ways until either side closes it.
async fn pipe_agent(upstream: Channel<Msg>, client: Channel<russh::server::Msg>) {
    let (mut up_rx, up_tx) = upstream.split();
    let (mut cl_rx, cl_tx) = client.split();
    let to_client = async {
        while let Some(ChannelMsg::Data { data }) = up_rx.wait().await {
            if cl_tx.data_bytes(data).await.is_err() {
                break;
            }
        }
        let _ = cl_tx.close().await;
    };
    let to_upstream = async {
        while let Some(ChannelMsg::Data { data }) = cl_rx.wait().await {
            if up_tx.data_bytes(data).await.is_err() {
                break;
            }
        }
        let _ = up_tx.close().await;
    };
    tokio::select! {
        () = to_client => {}
        () = to_upstream => {}
    }
}

/// A logged-in upstream connection.
pub type Upstream = client::Handle<UpstreamHandler>;

/// Connects to `target`, checks its host key against the pin and logs in
/// with its key, all within `timeout`.
pub async fn connect(
    target: &SshTarget,
    timeout: Duration,
    agent: Arc<AgentRoute>,
    cut: tokio_util::sync::CancellationToken,
) -> Result<Upstream, UpstreamError> {
    let mismatch = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = UpstreamHandler {
        pinned: target.host_key.clone(),
        mismatch: mismatch.clone(),
        agent,
    };
    let config = Arc::new(client::Config {
        // The gateway answers the client's keepalives; the upstream is
        // asked every 30 s so a dead target ends the session.
        keepalive_interval: Some(Duration::from_secs(30)),
        inactivity_timeout: None,
        nodelay: true,
        window_size: crate::WINDOW_SIZE,
        channel_buffer_size: crate::CHANNEL_BUFFER,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(crate::UPSTREAM_CIPHERS),
            ..Default::default()
        },
        ..Default::default()
    });
    let unreachable = |e: String| UpstreamError::Unreachable(target.upstream.clone(), e);
    let login = async {
        let tcp = tokio::net::TcpStream::connect(target.upstream.as_str())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = crate::killable::KillableStream::new(tcp, cut);
        let mut handle = match client::connect_stream(config, stream, handler).await {
            Ok(h) => h,
            Err(_) if mismatch.load(std::sync::atomic::Ordering::Relaxed) => {
                return Err(UpstreamError::HostKeyMismatch(target.upstream.clone()))
            }
            Err(e) => return Err(unreachable(e.to_string())),
        };
        let key = PrivateKeyWithHashAlg::new(target.key.clone(), None);
        let auth = handle
            .authenticate_publickey(target.user.clone(), key)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !auth.success() {
            return Err(UpstreamError::LoginRefused(
                target.upstream.clone(),
                target.user.clone(),
            ));
        }
        Ok(handle)
    };
    tokio::time::timeout(timeout, login)
        .await
        .map_err(|_| unreachable(format!("no login within {}s", timeout.as_secs())))?
}
