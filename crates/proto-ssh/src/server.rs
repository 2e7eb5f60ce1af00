//! The client side of the gateway: russh's callbacks for one connection.
//! Login (token as password or keyboard-interactive answer), then each
//! channel the client opens, sent to its own task.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use portcullis_core::audit::{CommandDetail, Decision};
use portcullis_core::{ClientInfo, FinishedCommand, Identity, Refusal, Resource};
use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Response, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure};

use crate::session::{Conn, Live};
use crate::vocabulary::AGENT;
use crate::{channel, forward, upstream, PROTOCOL};

/// What keyboard-interactive asks.
const TOKEN_PROMPT: &str = "Portcullis token: ";

/// russh's callbacks for one client connection.
pub(crate) struct ClientHandler {
    conn: Arc<Conn>,
}

impl ClientHandler {
    pub fn new(conn: Arc<Conn>) -> Self {
        Self { conn }
    }

    /// Logs `connection`'s client in with `token`: authenticate, decide
    /// `connect`, log in upstream, open the session. A refusal is logged
    /// (the SSH client only hears "permission denied").
    async fn login(&mut self, connection: &str, token: &str) -> Auth {
        if self.conn.live.get().is_some() {
            return Auth::reject();
        }
        let identity = match self.conn.shared.core.authenticate(token).await {
            Ok(identity) => identity,
            Err(refusal) => {
                tracing::warn!(peer = %self.conn.peer, %connection, "SSH login refused: {refusal}");
                return Auth::reject();
            }
        };
        self.enter(connection, identity).await
    }

    /// Logs `connection`'s client in as `identity`, already proved.
    async fn enter(&mut self, connection: &str, identity: Identity) -> Auth {
        match self.try_enter(connection, identity).await {
            Ok(()) => Auth::Accept,
            Err(refusal) => {
                tracing::warn!(peer = %self.conn.peer, %connection, "SSH login refused: {refusal}");
                Auth::reject()
            }
        }
    }

    /// A slot for a channel the client opens: only once logged in, while
    /// the session runs, and up to its cap on open channels.
    fn admit_channel(&self) -> Option<crate::session::ChannelSlot> {
        if self.conn.live.get().is_none() || self.conn.done.is_cancelled() {
            return None;
        }
        self.conn.channel_slot()
    }

    async fn try_enter(&mut self, connection: &str, identity: Identity) -> Result<(), Refusal> {
        let shared = &self.conn.shared;
        let target = shared
            .targets
            .get(connection)
            .cloned()
            .ok_or_else(|| Refusal::UnknownConnection(connection.to_owned()))?;
        let client = ClientInfo {
            address: self.conn.peer,
            encrypted: true,
            claimed_user: Some(connection.to_owned()),
            application: None,
        };
        let admission = shared.core.admit(PROTOCOL, connection, identity, client)?;
        let upstream = upstream::connect(
            &target,
            shared.settings.upstream_timeout,
            self.conn.agent.clone(),
            self.conn.cut.clone(),
        )
        .await
        .map_err(|e| Refusal::Upstream(e.to_string()))?;
        let session = admission.open(self.conn.kill.clone()).await?;
        let live = Live {
            identity: session.identity().clone(),
            connection: connection.to_owned(),
            resource: Resource::Connection(connection.to_owned()),
            facts: session.request_facts(),
            upstream,
            session_id: session.id().to_string(),
        };
        *self.conn.session.lock().await = Some(session);
        let _ = self.conn.live.set(live);
        self.conn.logged_in.cancel();
        Ok(())
    }
}

impl Handler for ClientHandler {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.login(user, password).await)
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        if self.conn.live.get().is_some() {
            return Ok(Auth::reject());
        }
        let now = portcullis_core::identity::now_secs().max(0) as u64;
        let verified = self
            .conn
            .shared
            .ca
            .verify(certificate, now)
            .map_err(|e| e.to_string())
            .and_then(|identity| {
                let authenticator = &self.conn.shared.core.authenticator;
                authenticator
                    .still_valid(&identity)
                    .map(|()| identity)
                    .map_err(|e| Refusal::Authentication(e).to_string())
            });
        match verified {
            Ok(identity) => Ok(self.enter(user, identity).await),
            Err(why) => {
                tracing::warn!(peer = %self.conn.peer, connection = %user, "SSH certificate login refused: {why}");
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(mut answers) = response else {
            return Ok(Auth::Partial {
                name: Cow::Borrowed(""),
                instructions: Cow::Borrowed(""),
                prompts: Cow::Owned(vec![(Cow::Borrowed(TOKEN_PROMPT), false)]),
            });
        };
        let token = answers.next().unwrap_or_default();
        let Ok(token) = std::str::from_utf8(&token) else {
            return Ok(Auth::reject());
        };
        Ok(self.login(user, token.trim()).await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(slot) = self.admit_channel() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        let conn = self.conn.clone();
        let handle = session.handle();
        self.conn.tasks.spawn(async move {
            let _slot = slot;
            channel::serve(conn, channel, handle).await;
        });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(slot) = self.admit_channel() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let forward = forward::Forward {
            host: host_to_connect.to_owned(),
            port: port_to_connect,
            originator: (originator_address.to_owned(), originator_port),
        };
        let conn = self.conn.clone();
        let handle = session.handle();
        self.conn.tasks.spawn(async move {
            let _slot = slot;
            forward::serve(conn, forward, channel, reply, handle).await;
        });
        Ok(())
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(live) = self.conn.live.get() else {
            return Ok(false);
        };
        let verdict =
            self.conn
                .shared
                .core
                .policy
                .decide(&live.identity, AGENT, &live.resource, &live.facts);
        let command = FinishedCommand {
            kind: "agent",
            text: "agent forwarding".into(),
            started_at: time::OffsetDateTime::now_utc(),
            duration_us: 0,
            error: None,
            decision: Decision {
                allowed: verdict.allowed,
                policies: Arc::from(verdict.policies.clone()),
            },
            masked: Default::default(),
            detail: CommandDetail::default(),
        };
        if let Some(handle) = self.conn.session.lock().await.as_mut() {
            if handle.record(|| command).await.is_err() {
                return Ok(false);
            }
        }
        if verdict.allowed {
            self.conn.agent.allowed.store(true, Ordering::Relaxed);
        } else {
            let line = format!(
                "portcullis: agent forwarding refused ({})\r\n",
                verdict.reason()
            );
            let _ = session.extended_data(channel, 1, line.into_bytes());
        }
        Ok(verdict.allowed)
    }

    // The requests kept until the decision are answered here, as they
    // arrive: see `channel::read_setup`.
    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        tracing::info!(peer = %self.conn.peer, %address, port = *port, "remote forwarding (ssh -R) is not offered");
        Ok(false)
    }
}
