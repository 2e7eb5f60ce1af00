//! The PostgreSQL listener: admits clients (TLS, token, connection, policy),
//! logs in upstream with the service credential, and runs the relay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use portcullis_core::tls::PlaintextLogin;
use portcullis_core::{Admission, ClientInfo, Core, Refusal, SessionThreads};
use portcullis_pg_decide::{ParseCache, StatementGate};
use portcullis_pg_wire::encode::{self, Severity};
use rustls::ServerConfig;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cancel::{CancelRegistry, CancelTarget};
use crate::error::SessionError;
use crate::handshake::{self, ClientHello, Opening};
use crate::hold::HoldContext;
use crate::relay::{self, Limits, RelayEnd, StatementLog};
use crate::tracker::BackendTracker;
use crate::upstream::{Upstream, UpstreamSession};

/// Client startup parameters passed on to the upstream. Others (notably
/// `options`, which can set arbitrary server settings) are dropped.
const FORWARDED_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
];

/// Everything the adapter is configured with.
pub struct PgAdapterConfig {
    /// TLS for clients (`None` answers SSLRequest with `N`).
    pub tls: Option<Arc<ServerConfig>>,
    /// When plaintext token login is accepted.
    pub plaintext: PlaintextLogin,
    /// Connections by name.
    pub targets: HashMap<String, Arc<Upstream>>,
    /// Protective limits.
    pub limits: Limits,
    /// Caps on connections logging in, shared with every other listener.
    pub preauth: portcullis_core::preauth::PreAuthGate,
    /// Grant roles, where connections provision them.
    pub grant_roles: Option<Arc<crate::provision::GrantRoles>>,
}

/// The PostgreSQL protocol adapter.
#[derive(Clone)]
pub struct PgAdapter {
    cfg: Arc<PgAdapterConfig>,
    core: Core,
    cancels: CancelRegistry,
    parses: Arc<ParseCache>,
    /// Where sessions run; `None` runs them on the caller's runtime.
    threads: Option<Arc<SessionThreads>>,
    /// Sessions and the work they leave behind (a cancel sent upstream as
    /// a session ends): `serve` returns, and the session threads stop, only
    /// once all of it is done.
    tasks: TaskTracker,
}

/// A client that passed every check, with its upstream session open.
struct Admitted {
    admission: Admission,
    upstream: Arc<Upstream>,
    session: UpstreamSession,
}

impl PgAdapter {
    /// An adapter over the core services.
    pub fn new(cfg: PgAdapterConfig, core: Core) -> Self {
        Self {
            cfg: Arc::new(cfg),
            core,
            cancels: CancelRegistry::default(),
            parses: Arc::new(ParseCache::default()),
            threads: None,
            tasks: TaskTracker::new(),
        }
    }

    /// Runs each session on one of `threads` instead of the caller's
    /// runtime (see [`SessionThreads`] for why).
    pub fn with_session_threads(mut self, threads: Arc<SessionThreads>) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Accepts clients until `shutdown`, then ends live sessions and waits
    /// for them to record their end.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let tasks = self.tasks.clone();
        let accept_failures = portcullis_core::preauth::LogEvery::default();
        for upstream in self.cfg.targets.values() {
            tasks.spawn(upstream.clone().watch_catalog(shutdown.child_token()));
        }
        if let Some(grants) = &self.cfg.grant_roles {
            tasks.spawn(grants.clone().run(shutdown.child_token()));
        }
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        metrics::counter!("portcullis_accept_failures_total", "listener" => "postgres").increment(1);
                        if let Some(held) = accept_failures.due(portcullis_core::preauth::LOG_EVERY) {
                            tracing::warn!(error = %e, also_failed_since_last_report = held, "accept failed");
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Over a cap, the connection is closed before anything is read.
            let Ok(permit) = self.cfg.preauth.enter(peer.ip()) else {
                drop(tcp);
                continue;
            };
            let this = self.clone();
            let kill = shutdown.child_token();
            let Some(threads) = &self.threads else {
                tasks.spawn(async move { this.serve_connection(tcp, peer, kill, permit).await });
                continue;
            };
            // A socket belongs to the runtime that registered it: hand the
            // session thread a plain socket to register on its own.
            let tcp = match tcp.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot hand the connection to a session thread");
                    continue;
                }
            };
            let session = tasks.track_future(async move {
                match TcpStream::from_std(tcp) {
                    Ok(tcp) => this.serve_connection(tcp, peer, kill, permit).await,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot register the connection on its session thread")
                    }
                }
            });
            if let Err(e) = threads.spawn(session) {
                tracing::warn!(%peer, error = %e, "connection dropped");
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    async fn serve_connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        kill: CancellationToken,
        permit: portcullis_core::preauth::PreAuthPermit,
    ) {
        let _ = tcp.set_nodelay(true);
        crate::stream::keepalive(&tcp);
        let setup = tokio::time::timeout(self.cfg.limits.login_timeout, self.setup(tcp, peer));
        let ready = tokio::select! {
            r = setup => match r {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!(%peer, "login timed out; connection closed");
                    metrics::counter!("portcullis_auth_failures_total", "reason" => "timeout").increment(1);
                    None
                }
            },
            _ = kill.cancelled() => None,
        };
        // Logged in, or gone: either way no longer logging in.
        drop(permit);
        if let Some((hello, admitted)) = ready {
            self.run_session(hello, admitted, peer, kill).await;
        }
    }

    async fn setup(&self, tcp: TcpStream, peer: SocketAddr) -> Option<(ClientHello, Admitted)> {
        let opening = match handshake::open(tcp, self.cfg.tls.as_ref()).await {
            Ok(o) => o,
            Err(e) => {
                tracing::info!(%peer, error = %e, "client startup failed");
                return None;
            }
        };
        let mut hello = match opening {
            Opening::Session(h) => h,
            Opening::Cancel {
                pid,
                secret,
                stream,
            } => {
                self.forward_cancel(pid, secret, peer).await;
                // Only now: the client takes the close as "delivered".
                drop(stream);
                return None;
            }
        };
        match self.admit(&mut hello, peer).await {
            Ok(a) => Some((hello, a)),
            Err(e) => {
                tracing::info!(%peer, code = e.sqlstate(), error = %e, "client refused");
                send_fatal(&mut hello.stream, &e).await;
                None
            }
        }
    }

    async fn forward_cancel(&self, pid: i32, secret: i32, peer: SocketAddr) {
        metrics::counter!("portcullis_cancel_requests_total").increment(1);
        match self.cancels.resolve(pid, secret) {
            Some(CancelTarget::Idle(withdraw)) => {
                // Wakes only a wait for review in progress: no permit is
                // stored for a later one.
                withdraw.notify_waiters();
                metrics::counter!("portcullis_cancel_requests_dropped_total", "why" => "idle")
                    .increment(1);
                tracing::debug!(%peer, "cancel request for a session with nothing running upstream: not forwarded");
            }
            Some(CancelTarget::Running(upstream, key)) => {
                if let Err(e) = upstream.cancel(key).await {
                    tracing::warn!(%peer, error = %e, "forwarding cancel failed");
                }
            }
            // Counted, not logged one line each: a guesser would flood the
            // log (the registry warns once a second's budget is spent).
            None => {
                metrics::counter!("portcullis_cancel_requests_dropped_total", "why" => "unknown_key")
                    .increment(1);
                tracing::debug!(%peer, "cancel request with an unknown key ignored");
            }
        }
    }

    /// Checks transport, token, connection and policy, then logs in upstream.
    async fn admit(
        &self,
        hello: &mut ClientHello,
        peer: SocketAddr,
    ) -> Result<Admitted, SessionError> {
        if !hello.stream.is_tls() && !self.cfg.plaintext.permits(peer) {
            return Err(Refusal::TlsRequired {
                hint: "connect with sslmode=require or stronger",
            }
            .into());
        }
        if hello
            .param("replication")
            .is_some_and(|r| r != "false" && r != "0")
        {
            return Err(
                Refusal::Unsupported("replication connections are not supported".into()).into(),
            );
        }
        if let Some(enc) = hello.param("client_encoding") {
            if !portcullis_pg_sql::is_safe_client_encoding(enc) {
                return Err(Refusal::InvalidParameter(format!(
                    "client_encoding {enc:?} is not allowed: multi-byte encodings can hide quotes from the gateway"
                ))
                .into());
            }
        }
        let connection = hello
            .param("database")
            .or_else(|| hello.param("user"))
            .unwrap_or_default()
            .to_owned();

        let token = handshake::read_token(hello).await?;
        let identity = self.core.authenticate(&token).await?;
        let upstream = self
            .cfg
            .targets
            .get(&connection)
            .cloned()
            .ok_or_else(|| Refusal::UnknownConnection(connection.clone()))?;
        let client = ClientInfo {
            address: peer,
            encrypted: hello.stream.is_tls(),
            claimed_user: hello.param("user").map(str::to_owned),
            application: hello.param("application_name").map(str::to_owned),
        };
        // A grantee's sessions log in as their grant's role while it holds.
        let upstream = self
            .cfg
            .grant_roles
            .as_ref()
            .and_then(|g| g.upstream_for(&identity, &connection))
            .unwrap_or(upstream);
        let admission = self.core.admit(PROTOCOL, &connection, identity, client)?;

        let forwarded: Vec<(&str, &str)> = hello
            .params
            .iter()
            .filter(|(k, _)| FORWARDED_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let started = Instant::now();
        let session = upstream.login(&forwarded).await?;
        // Role or database defaults could have set these at login.
        for (name, value) in &session.params {
            crate::relay::check_reported_setting(name, value)?;
        }
        metrics::histogram!("portcullis_upstream_connect_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(Admitted {
            admission,
            upstream,
            session,
        })
    }

    async fn run_session(
        &self,
        hello: ClientHello,
        admitted: Admitted,
        peer: SocketAddr,
        kill: CancellationToken,
    ) {
        let Admitted {
            admission,
            upstream,
            session: up,
        } = admitted;
        let mut client = hello.stream;
        // What ends this session, for a grant role's end to use too.
        let session_kill = kill.clone();
        let mut session = match admission.open(kill).await {
            Ok(s) => s,
            Err(refusal) => {
                send_fatal(&mut client, &refusal.into()).await;
                return;
            }
        };
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let withdraw = Arc::new(tokio::sync::Notify::new());
        let (key, _cancel_key) =
            self.cancels
                .issue(upstream.clone(), up.key, busy.clone(), withdraw.clone());
        let holds = HoldContext {
            board: self.core.reviews.clone(),
            identity: session.identity().clone(),
            session_id: session.id().to_string(),
            connection: upstream.target.name.clone(),
            withdraw,
        };

        let mut welcome = BytesMut::new();
        encode::auth_ok(&mut welcome);
        for (k, v) in &up.params {
            encode::parameter_status(&mut welcome, k, v);
        }
        encode::backend_key_data(&mut welcome, key.0, key.1);
        encode::ready_for_query(&mut welcome, up.status);

        let mut gate = StatementGate::new(
            self.core.policy.clone(),
            self.parses.clone(),
            session.identity().clone(),
            upstream.target.name.clone(),
            upstream.target.user.clone(),
            peer.ip().to_string(),
            up.search_path.clone(),
        )
        .with_search_path_setting(&up.search_path_setting)
        .with_shared_views(upstream.views.clone())
        .with_masking(self.core.masking.clone());
        let at_login = up
            .params
            .iter()
            .find(|(k, _)| k == "client_encoding")
            .map(|(_, v)| v.clone());
        let mut tracker = BackendTracker::with_masking(self.core.masking.clone())
            .with_encoding(at_login.as_deref());
        let (client_r, mut client_w) = tokio::io::split(client);
        let (upstream_r, upstream_w) = tokio::io::split(up.stream);
        let mut journal = session.journal();
        let stop = session.stop_signal();
        let mut log = StatementLog::new(&mut session);
        let outcome = match write_flushed(&mut client_w, &welcome).await {
            Err(e) => Err(SessionError::Io(e)),
            Ok(()) => {
                let pending = relay::Handoff::with_busy(busy).with_encoding(at_login.as_deref());
                if let Some(g) = &self.cfg.grant_roles {
                    g.attach(&upstream, pending.notices(), &session_kill);
                }
                let limits = &self.cfg.limits;
                let outcome = {
                    let to_client = relay::upstream_to_client(
                        upstream_r,
                        &mut client_w,
                        up.leftover,
                        &pending,
                        &mut tracker,
                        limits,
                        &mut log,
                    );
                    tokio::pin!(to_client);
                    let mut outcome = tokio::select! {
                        r = relay::client_to_upstream(client_r, upstream_w, &pending, limits, &mut journal, &mut gate, Some(&holds)) => r,
                        r = &mut to_client => r,
                        refusal = stop.stopped() => Err(refusal.into()),
                    };
                    if matches!(outcome, Ok(RelayEnd::ClientTerminated)) {
                        // The server finishes what it runs, answers it, and only
                        // then reads Terminate and closes: relay that first, so
                        // the client meets the answers before the end.
                        outcome = tokio::select! {
                            r = &mut to_client => r.map(|_| RelayEnd::ClientTerminated),
                            refusal = stop.stopped() => Err(refusal.into()),
                        };
                    }
                    outcome
                };
                // What was sent but not yet met by a response is unfinished too.
                pending.drain_into(&mut tracker);
                outcome
            }
        };

        // A query still running upstream would outlive us: cancel it.
        if tracker.in_flight() && !matches!(outcome, Ok(RelayEnd::UpstreamClosed)) {
            let upstream = upstream.clone();
            let key = up.key;
            self.tasks.spawn(async move {
                if let Err(e) = upstream.cancel(key).await {
                    tracing::warn!(error = %e, "cancelling the statement of an ended session failed");
                }
            });
        }
        for mut s in tracker.drain_unfinished() {
            s.error
                .get_or_insert_with(|| "session ended before the statement completed".into());
            if let Err(e) = log.record(s).await {
                tracing::warn!(error = %e, "an unfinished statement could not be recorded");
            }
        }
        let reason = match &outcome {
            Ok(end) => end.describe().to_owned(),
            Err(e) => {
                tracing::info!(session = %session.id(), error = %e, "session ended with an error");
                send_fatal(&mut client_w, e).await;
                e.to_string()
            }
        };
        session.end(&reason).await;
    }
}

/// The protocol's name in records and policy context.
pub(crate) const PROTOCOL: &str = portcullis_pg_decide::vocabulary::PROTOCOL;

/// The ALPN protocol of the client-facing TLS: libpq 17+ offers
/// "postgresql" (and requires it for direct TLS).
pub const ALPN: &[&[u8]] = &[b"postgresql"];

/// Writes `bytes` and flushes them (over TLS, the end of a write may wait
/// in the TLS layer until a flush).
async fn write_flushed<W: AsyncWrite + Unpin>(out: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes).await?;
    out.flush().await
}

/// Sends a FATAL ErrorResponse and closes; errors writing it are moot.
async fn send_fatal<W: AsyncWrite + Unpin>(client: &mut W, e: &SessionError) {
    if let SessionError::Io(_) = e {
        return;
    }
    let mut out = BytesMut::new();
    encode::error_response(&mut out, Severity::Fatal, e.sqlstate(), &e.to_string());
    let _ = write_flushed(client, &out).await;
    let _ = client.shutdown().await;
}
