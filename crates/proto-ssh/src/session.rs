//! One client connection, from accept to the session's end record: the
//! login clock, the stop (kill, revocation, expiry, recording cap) that
//! ends the whole connection at once, and the expiry warning.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use portcullis_core::{Identity, RequestFacts, Resource, SessionHandle};
use russh::server::Handle;
use russh::ChannelId;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cast::Budget;
use crate::killable::KillableStream;
use crate::server::ClientHandler;
use crate::upstream::{AgentRoute, Upstream};
use crate::Shared;

/// How long, after the connection ends, its channels get to record how
/// their commands ended before the session's end is recorded.
const CHANNELS_SETTLE: Duration = Duration::from_secs(5);

/// How long a line to a client's terminal may wait for the client to take
/// it: a client that stops reading must not stall the gateway.
const NOTICE_WAIT: Duration = Duration::from_millis(300);

/// Channels (sessions and forwards) one connection may have open at once:
/// each is bounded (`docs/ssh.md`), so this bounds the connection.
pub(crate) const MAX_CHANNELS: usize = 64;

/// The least time an SSH login gets, whatever `login_timeout_secs` says.
const MIN_LOGIN_TIME: Duration = Duration::from_secs(60);

/// How long a disconnect may wait to be sent before the socket is cut.
const DISCONNECT_WAIT: Duration = Duration::from_secs(1);

/// A logged-in client: who, where, and the upstream the gateway opened.
pub(crate) struct Live {
    pub identity: Identity,
    pub connection: String,
    pub resource: Resource,
    pub facts: RequestFacts,
    pub upstream: Upstream,
    pub session_id: String,
}

/// What the handler, the channel tasks and the connection's own task
/// share.
pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    /// The session's kill token (a child of shutdown's).
    pub kill: CancellationToken,
    /// Set once the client has logged in.
    pub live: OnceLock<Live>,
    /// Cancelled once `live` is set.
    pub logged_in: CancellationToken,
    /// The session, for recording; taken at the end.
    pub session: tokio::sync::Mutex<Option<SessionHandle>>,
    /// Cancelled when the connection must end: the client left, or the
    /// session was stopped. Channel tasks end with it.
    pub done: CancellationToken,
    /// Cuts both sockets (client and upstream) at the very end, whatever
    /// russh's tasks were waiting for (`killable.rs`).
    pub cut: CancellationToken,
    /// Why the gateway ended the session, when it did.
    pub stopped_because: OnceLock<String>,
    /// Agent forwarding, as policy allowed it.
    pub agent: Arc<AgentRoute>,
    /// Channels with a running shell or exec, to warn on their stderr.
    pub terminals: Mutex<Vec<ChannelId>>,
    /// The expiry warning, once given: terminals opened later get it too.
    pub expiry_notice: OnceLock<String>,
    /// What the session's recordings may take.
    pub budget: Arc<Budget>,
    /// The channel tasks, awaited before the end is recorded.
    pub tasks: TaskTracker,
    /// Channels open now.
    pub open_channels: Arc<std::sync::atomic::AtomicUsize>,
}

/// One of a connection's [`MAX_CHANNELS`], held by the channel's task.
pub(crate) struct ChannelSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Conn {
    /// Ends the connection from the gateway's side, for `reason`, with a
    /// line on every terminal.
    pub async fn stop(&self, client: &Handle, reason: String) {
        if self.stopped_because.set(reason.clone()).is_err() {
            return;
        }
        // Best effort, and bounded: the session ends either way.
        let _ = tokio::time::timeout(NOTICE_WAIT, self.tell_terminals(client, &reason)).await;
        self.done.cancel();
    }

    /// A slot for one more channel, unless the connection has
    /// [`MAX_CHANNELS`] open.
    pub fn channel_slot(&self) -> Option<ChannelSlot> {
        use std::sync::atomic::Ordering;
        let open = self.open_channels.fetch_add(1, Ordering::Relaxed);
        let slot = ChannelSlot(self.open_channels.clone());
        (open < MAX_CHANNELS).then_some(slot)
    }

    /// Adds a running shell or exec to the terminals warned, telling it
    /// the expiry warning if one was given before it opened.
    pub async fn add_terminal(&self, client: &Handle, id: ChannelId) {
        if let Ok(mut t) = self.terminals.lock() {
            t.push(id);
        }
        if let Some(notice) = self.expiry_notice.get() {
            let line = format!("{notice}\r\n").into_bytes();
            let _ = tokio::time::timeout(NOTICE_WAIT, client.extended_data(id, 1, line)).await;
        }
    }

    /// Writes `line` to the stderr of every running shell and exec.
    pub async fn tell_terminals(&self, client: &Handle, line: &str) {
        let channels = self.terminals.lock().map(|t| t.clone()).unwrap_or_default();
        for id in channels {
            let text = format!("\r\n{line}\r\n").into_bytes();
            let _ = tokio::time::timeout(NOTICE_WAIT, client.extended_data(id, 1, text)).await;
        }
    }
}

/// Runs one client connection to its end.
pub(crate) async fn serve_client(
    shared: Arc<Shared>,
    config: Arc<russh::server::Config>,
    (tcp, peer): (TcpStream, SocketAddr),
    logging_in: portcullis_core::preauth::PreAuthPermit,
    kill: CancellationToken,
) {
    // The version line comes from the client program at once, and gets
    // `login_timeout`; the login itself waits on people (a host-key
    // prompt, a pasted token): at least a minute, as OpenSSH's
    // LoginGraceTime gives two.
    let version_timeout = shared.settings.login_timeout;
    let login_timeout = version_timeout.max(MIN_LOGIN_TIME);
    let budget = Budget::new(shared.settings.max_recording_bytes);
    let conn = Arc::new(Conn {
        shared,
        peer,
        kill,
        live: OnceLock::new(),
        logged_in: CancellationToken::new(),
        session: tokio::sync::Mutex::new(None),
        done: CancellationToken::new(),
        cut: CancellationToken::new(),
        stopped_because: OnceLock::new(),
        agent: Arc::new(AgentRoute::default()),
        terminals: Mutex::new(Vec::new()),
        expiry_notice: OnceLock::new(),
        budget,
        tasks: TaskTracker::new(),
        open_channels: Arc::default(),
    });
    let handler = ClientHandler::new(conn.clone());
    let accepted = tokio::time::Instant::now();
    let login_deadline = accepted + login_timeout;
    let stream = KillableStream::new(tcp, conn.cut.clone());
    // russh waits for the client's version line without a clock of its
    // own.
    let started = tokio::time::timeout_at(
        accepted + version_timeout,
        russh::server::run_stream(config, stream, handler),
    );
    let running = match started.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "SSH handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no SSH version line in time; connection closed");
            return;
        }
    };
    let client = running.handle();
    let mut running = std::pin::pin!(running);
    let login = tokio::select! {
        result = &mut running => Err(result),
        () = tokio::time::sleep_until(login_deadline) => {
            let _ = conn.stopped_because.set("no login in time".into());
            Ok(false)
        }
        () = conn.kill.cancelled() => Ok(false),
        () = conn.logged_in.cancelled() => Ok(true),
    };
    let ended_by_client = match login {
        Err(result) => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "SSH connection ended with an error");
            }
            true
        }
        Ok(false) => false,
        Ok(true) => {
            // Logged in: it no longer counts against the login caps.
            drop(logging_in);
            let _ = conn.agent.client.set(client.clone());
            if let Some(session) = conn.session.lock().await.as_ref() {
                watch_stop(conn.clone(), client.clone(), session);
            }
            tokio::select! {
                result = &mut running => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "SSH connection ended with an error");
                    }
                    true
                }
                () = conn.done.cancelled() => false,
            }
        }
    };
    conn.done.cancel();
    if !ended_by_client {
        let reason = conn
            .stopped_because
            .get()
            .cloned()
            .unwrap_or_else(|| "the gateway is stopping".into());
        let bye = client.disconnect(russh::Disconnect::ByApplication, reason, "en".into());
        let _ = tokio::time::timeout(DISCONNECT_WAIT, bye).await;
        let _ = tokio::time::timeout(DISCONNECT_WAIT, &mut running).await;
    }
    if let Some(live) = conn.live.get() {
        let bye = live
            .upstream
            .disconnect(russh::Disconnect::ByApplication, "", "en");
        let _ = tokio::time::timeout(DISCONNECT_WAIT, bye).await;
    }
    // Whatever russh's tasks still wait for, both sockets close now, and
    // every send queued for them fails, so the channel tasks end.
    conn.cut.cancel();
    conn.tasks.close();
    let _ = tokio::time::timeout(CHANNELS_SETTLE, conn.tasks.wait()).await;
    let session = conn.session.lock().await.take();
    if let Some(session) = session {
        let reason = conn
            .stopped_because
            .get()
            .cloned()
            .unwrap_or_else(|| "client disconnected".into());
        session.end(&reason).await;
    }
}

/// Watches the session's stop signal (kill, revocation, expiry) and the
/// approaching expiry, once the client has logged in.
pub(crate) fn watch_stop(conn: Arc<Conn>, client: Handle, session: &SessionHandle) {
    let stop = session.stop_signal();
    let ends_at = session.ends_at();
    let warning = conn.shared.settings.expiry_warning;
    tokio::spawn(async move {
        // A warning longer than what is left is given at once.
        let warn_at = ends_at.map(|end| {
            end.checked_sub(warning)
                .unwrap_or_else(tokio::time::Instant::now)
        });
        let warned = async {
            if let Some(at) = warn_at {
                tokio::time::sleep_until(at).await;
                let left = ends_at
                    .map(|e| e.saturating_duration_since(tokio::time::Instant::now()))
                    .unwrap_or_default();
                let notice = format!(
                    "portcullis: your token has expired or is about to; this session ends in {}s. Log in again and reconnect.",
                    left.as_secs()
                );
                let _ = conn.expiry_notice.set(notice.clone());
                conn.tell_terminals(&client, &notice).await;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            refusal = stop.stopped() => conn.stop(&client, refusal.to_string()).await,
            () = conn.done.cancelled() => {}
            () = warned => {}
        }
    });
}
