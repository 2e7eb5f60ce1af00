//! The seam between the core and every protocol adapter.
//!
//! An adapter does only what its protocol needs: read the credential the
//! client presents, name the connection, log in upstream, relay bytes and
//! turn them into commands. Everything else about a session is the same
//! for every protocol and lives here, so a new protocol cannot get it
//! wrong:
//!
//! 1. [`Core::authenticate`] turns the credential into an [`Identity`].
//! 2. [`Core::admit`] decides `connect` with Cedar and returns an
//!    [`Admission`], the only way to a session.
//! 3. [`Admission::open`] refuses to start while the audit store cannot
//!    record, records the session's start, registers it (so it can be
//!    listed, revoked and killed) and arms its end at the token's expiry;
//!    it returns the [`SessionHandle`].
//! 4. While the session runs, the adapter polls [`SessionHandle::stop_signal`]
//!    beside its relay, asks [`SessionHandle::check_recording`] before it
//!    forwards a command (fail closed), and hands every finished command
//!    to [`SessionHandle::record`].
//! 5. [`SessionHandle::end`] records the end. A handle dropped without it
//!    (a panic, a cancelled task) still records an end and unregisters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::audit::{
    AuditEvent, CommandDetail, CommandOutcome, CommandRecord, CommandStart, Decision, SessionEnd,
    SessionRecord,
};
use crate::masking::MaskCounts;
use crate::policy::{Action, RequestFacts, Resource, Verdict};
use crate::refusal::Refusal;
use crate::session_stop::{SessionStop, StopReason, StopWatcher};
use crate::sessions::{LiveSession, SessionGuard};
use crate::{Core, Identity, Recorder};

/// How sessions of every protocol are run.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// How long a session may outlive the token it started with.
    pub expiry_grace: Duration,
    /// Whether each command is recorded (sessions always are).
    pub record_commands: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            expiry_grace: Duration::ZERO,
            record_commands: true,
        }
    }
}

/// What the adapter knows of the client before it is admitted.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's address as the gateway saw it.
    pub address: SocketAddr,
    /// Whether the client's connection uses TLS (or another encrypted
    /// transport, such as SSH).
    pub encrypted: bool,
    /// The user name the client claimed in its protocol (recorded, never
    /// trusted).
    pub claimed_user: Option<String>,
    /// The client program's own name, when the protocol carries one.
    pub application: Option<String>,
}

/// A client that policy lets connect; [`Admission::open`] starts its
/// session. Only [`Core::admit`] makes one.
pub struct Admission {
    core: Core,
    protocol: &'static str,
    connection: String,
    identity: Identity,
    client: ClientInfo,
    verdict: Verdict,
}

impl Core {
    /// The identity `credential` proves; failures are counted by reason.
    pub async fn authenticate(&self, credential: &str) -> Result<Identity, Refusal> {
        self.authenticator
            .authenticate(credential)
            .await
            .map_err(|e| {
                metrics::counter!("portcullis_auth_failures_total", "reason" => e.label())
                    .increment(1);
                Refusal::Authentication(e)
            })
    }

    /// Decides whether `identity` may connect to `connection` over
    /// `protocol`. The caller has checked that the connection exists.
    pub fn admit(
        &self,
        protocol: &'static str,
        connection: &str,
        identity: Identity,
        client: ClientInfo,
    ) -> Result<Admission, Refusal> {
        let address = client.address.ip().to_string();
        let verdict = self.decide_connect(&identity, protocol, connection, &address);
        let outcome = if verdict.is_ok() { "allow" } else { "deny" };
        metrics::counter!("portcullis_decisions_total", "action" => "connect", "outcome" => outcome)
            .increment(1);
        let verdict = verdict?;
        Ok(Admission {
            core: self.clone(),
            protocol,
            connection: connection.to_owned(),
            identity,
            client,
            verdict,
        })
    }

    /// Decides `connect` for `identity` to `connection`, as at login
    /// (uncounted: a login counts once, however often it is asked).
    fn decide_connect(
        &self,
        identity: &Identity,
        protocol: &'static str,
        connection: &str,
        client_address: &str,
    ) -> Result<Verdict, Refusal> {
        let facts = RequestFacts {
            protocol,
            client_address: client_address.to_owned(),
            ..Default::default()
        };
        let verdict = self.policy.decide(
            identity,
            Action::CONNECT,
            &Resource::Connection(connection.to_owned()),
            &facts,
        );
        if !verdict.allowed {
            return Err(Refusal::ConnectDenied {
                connection: connection.to_owned(),
                who: identity.describe(),
                reason: verdict.reason(),
            });
        }
        Ok(verdict)
    }

    /// Whether a live session may go on: its credential still holds (not
    /// revoked, its static tokens configured as they were) and policy
    /// still permits `connect`.
    fn still_admitted(&self, session: &LiveSession) -> Result<(), Refusal> {
        self.authenticator
            .still_valid(&session.identity)
            .map_err(Refusal::Authentication)?;
        self.decide_connect(
            &session.identity,
            session.protocol,
            &session.connection,
            &session.client_address,
        )
        .map(drop)
    }

    /// Ends every live session that is no longer admitted, after a reload
    /// of tokens or policies; returns how many.
    pub fn end_sessions_no_longer_admitted(&self) -> usize {
        self.sessions
            .kill_where(|s| self.still_admitted(s).is_err())
    }
}

impl Admission {
    /// Who was admitted.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The connection they were admitted to.
    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// Starts the session: refuses while the audit store cannot record,
    /// registers the session so `kill` (an operator, a revocation,
    /// shutdown) can end it, asks again whether it is admitted, records
    /// the start, and arms its end when the token expires. Call it once
    /// the upstream is ready, so a session that failed to reach its target
    /// leaves no record of having run.
    ///
    /// Registering before asking again is what makes a revocation (or a
    /// reload) atomic with respect to login: one that lands while this
    /// login was on its way upstream either finds the session registered
    /// and ends it, or is seen by the second question.
    pub async fn open(self, kill: CancellationToken) -> Result<SessionHandle, Refusal> {
        let Admission {
            core,
            protocol,
            connection,
            identity,
            client,
            verdict,
        } = self;
        let id = Uuid::now_v7();
        let recorder = core.recorder.clone();
        let record = SessionRecord {
            id,
            protocol: protocol.into(),
            connection: connection.clone(),
            user: identity.user.clone(),
            groups: identity.groups.clone(),
            actor: identity.actor.clone(),
            auth_method: identity.method.into(),
            client_user: client.claimed_user,
            client_address: client.address.to_string(),
            application_name: client.application,
            client_tls: client.encrypted,
            connect_policies: verdict.policies.clone(),
            started_at: OffsetDateTime::now_utc(),
        };
        if !recorder.healthy() {
            return Err(Refusal::AuditUnavailable);
        }
        let registered = LiveSession {
            id,
            identity: Arc::new(identity.clone()),
            protocol,
            client_address: client.address.ip().to_string(),
            connection: connection.clone(),
            kill: kill.clone(),
        };
        let live = core.sessions.register(registered.clone());
        core.still_admitted(&registered)?;
        // Who the session's statements run as: in strict recording it is
        // staged before the first of them can be (they are staged on this
        // thread, not behind the recorder's queue).
        if !recorder
            .record_all(vec![AuditEvent::SessionStarted(record)], recorder.strict())
            .await
        {
            return Err(Refusal::AuditUnavailable);
        }
        metrics::counter!("portcullis_sessions_total", "protocol" => protocol).increment(1);
        let deadline = expiry_deadline(&identity, core.settings.expiry_grace);
        let (stop, watcher) = SessionStop::watch(kill, deadline);
        let ends_at = deadline;
        tracing::info!(session = %id, user = %identity.describe(), %connection, peer = %client.address, protocol, "session started");
        Ok(SessionHandle {
            id,
            protocol,
            connection,
            client_address: client.address.ip().to_string(),
            identity,
            recorder,
            record_commands: core.settings.record_commands,
            seq: Arc::new(AtomicU64::new(0)),
            stop,
            ends_at,
            _watcher: watcher,
            _live: live,
            ended: false,
            commands_total: metrics::counter!("portcullis_statements_total", "protocol" => protocol),
        })
    }
}

/// A command the adapter has seen through, ready to record. The handle
/// numbers it and attributes it to the session.
#[derive(Debug, Clone)]
pub struct FinishedCommand {
    /// The protocol's word for it (`query`, `execute`, `exec`).
    pub kind: &'static str,
    /// The command as the client sent it.
    pub text: String,
    /// When the gateway received it.
    pub started_at: OffsetDateTime,
    /// How long it took, in microseconds.
    pub duration_us: u64,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// The decision that let it run or stopped it: every command has one.
    pub decision: Decision,
    /// What was masked in its results.
    pub masked: MaskCounts,
    /// The protocol's own facts about it.
    pub detail: CommandDetail,
}

/// How a journaled command ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// How long it took, in microseconds.
    pub duration_us: u64,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// What was masked in its results.
    pub masked: MaskCounts,
    /// The protocol's facts known once it ran.
    pub detail: CommandDetail,
}

/// A command about to be forwarded, as its adapter describes it.
#[derive(Debug, Clone)]
pub struct StartingCommand {
    /// The protocol's word for it (`query`, `execute`, `exec`).
    pub kind: &'static str,
    /// The command as the client sent it.
    pub text: String,
    /// When the gateway received it.
    pub started_at: OffsetDateTime,
    /// The decision that lets it run.
    pub decision: Decision,
    /// The protocol's facts known before it runs.
    pub detail: CommandDetail,
}

/// Where the forwarding half of a session records each command before it
/// forwards it: the command's number, who (the session), what, and the
/// decision. Starts are gathered and handed to the recorder together by
/// [`CommandJournal::durable`], which in strict recording also waits until
/// they are safe: one hand-off and one wait per read of the client,
/// however many commands it held.
pub struct CommandJournal {
    session: Uuid,
    seq: Arc<AtomicU64>,
    recorder: Recorder,
    enabled: bool,
    commands_total: metrics::Counter,
    /// Starts not yet handed to the recorder.
    starts: Vec<AuditEvent>,
}

impl CommandJournal {
    /// Numbers a command and gathers its record (built by `command` only
    /// when commands are recorded). Its outcome goes to
    /// [`SessionHandle::record_outcome`] under the number returned.
    pub fn started(&mut self, command: impl FnOnce() -> StartingCommand) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.commands_total.increment(1);
        if self.enabled {
            let command = command();
            self.starts.push(AuditEvent::CommandStarted(CommandStart {
                session_id: self.session,
                seq,
                kind: command.kind.to_owned(),
                text: command.text,
                started_at: command.started_at,
                decision: command.decision,
                detail: command.detail,
            }));
        }
        seq
    }

    /// Hands the gathered starts to the recorder; in strict recording,
    /// waits until they are safe from a crash, and refuses when the store
    /// could not take them. Call it before forwarding the commands.
    pub async fn durable(&mut self) -> Result<(), Refusal> {
        if self.starts.is_empty() {
            return Ok(());
        }
        let starts = std::mem::take(&mut self.starts);
        if self
            .recorder
            .record_all(starts, self.recorder.strict())
            .await
        {
            Ok(())
        } else {
            Err(Refusal::AuditUnavailable)
        }
    }

    /// Fails while the audit store cannot take records.
    pub fn check_recording(&self) -> Result<(), Refusal> {
        if self.recorder.healthy() {
            Ok(())
        } else {
            Err(Refusal::AuditUnavailable)
        }
    }
}

/// Ends a session from outside; see [`SessionHandle::stop_signal`].
pub struct StopSignal {
    stop: Arc<SessionStop>,
    who: String,
}

impl StopSignal {
    /// Resolves with the refusal to send the client when the session is
    /// stopped. Cheap to poll: one atomic load.
    pub async fn stopped(&self) -> Refusal {
        match self.stop.stopped().await {
            StopReason::Killed => Refusal::Killed,
            StopReason::Expired => Refusal::Expired {
                who: self.who.clone(),
            },
        }
    }
}

/// A live session, as the core runs it for an adapter. Dropping it ends
/// the session (see the module docs).
pub struct SessionHandle {
    id: Uuid,
    protocol: &'static str,
    connection: String,
    client_address: String,
    identity: Identity,
    recorder: Recorder,
    record_commands: bool,
    /// The last command number given, shared with the session's journal.
    seq: Arc<AtomicU64>,
    stop: Arc<SessionStop>,
    /// When the token's expiry (plus grace) ends the session.
    ends_at: Option<tokio::time::Instant>,
    _watcher: StopWatcher,
    _live: SessionGuard,
    ended: bool,
    /// Resolved once per session: a labelled lookup per command costs a hash.
    commands_total: metrics::Counter,
}

impl SessionHandle {
    /// The session's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Who the session acts as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The connection it uses.
    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// The request facts every decision in this session starts from.
    pub fn request_facts(&self) -> RequestFacts {
        RequestFacts {
            protocol: self.protocol,
            client_address: self.client_address.clone(),
            ..Default::default()
        }
    }

    /// What tells the relay the session was ended from outside: a kill
    /// (operator, revocation, shutdown) or the token's expiry. Owned, so a
    /// relay can poll it while it records through the handle.
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal {
            stop: self.stop.clone(),
            who: self.identity.describe(),
        }
    }

    /// When the session will be ended for its token's expiry (plus the
    /// configured grace), so an adapter can warn its user first.
    pub fn ends_at(&self) -> Option<tokio::time::Instant> {
        self.ends_at
    }

    /// Fails while the audit store cannot take records: nothing may run
    /// that could not be recorded.
    pub fn check_recording(&self) -> Result<(), Refusal> {
        if self.recorder.healthy() {
            Ok(())
        } else {
            Err(Refusal::AuditUnavailable)
        }
    }

    /// The journal the forwarding half of the session records commands in
    /// before it forwards them.
    pub fn journal(&self) -> CommandJournal {
        CommandJournal {
            session: self.id,
            seq: self.seq.clone(),
            recorder: self.recorder.clone(),
            enabled: self.record_commands,
            commands_total: self.commands_total.clone(),
            starts: Vec::new(),
        }
    }

    /// Counts a finished command that was not journaled before it ran (it
    /// was refused, or failed before it could run) and records it whole,
    /// built by `command` only when commands are recorded (building one
    /// copies its text and parameters). Fails only when the recorder has
    /// shut down; the session must then end.
    pub async fn record(
        &mut self,
        command: impl FnOnce() -> FinishedCommand,
    ) -> Result<(), Refusal> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.commands_total.increment(1);
        if !self.record_commands {
            return Ok(());
        }
        let command = command();
        let record = CommandRecord {
            session_id: self.id,
            seq,
            kind: command.kind.to_owned(),
            text: command.text,
            started_at: command.started_at,
            duration_us: command.duration_us,
            error: command.error,
            decision: command.decision,
            masked: (!command.masked.is_empty()).then_some(command.masked),
            detail: command.detail,
        };
        self.recorder
            .record(AuditEvent::Command(record))
            .await
            .map_err(|_| Refusal::AuditUnavailable)
    }

    /// Records how the journaled command `seq` ended.
    pub async fn record_outcome(
        &mut self,
        seq: u64,
        outcome: impl FnOnce() -> Outcome,
    ) -> Result<(), Refusal> {
        if !self.record_commands {
            return Ok(());
        }
        let outcome = outcome();
        let record = CommandOutcome {
            session_id: self.id,
            seq,
            duration_us: outcome.duration_us,
            error: outcome.error,
            masked: (!outcome.masked.is_empty()).then_some(outcome.masked),
            detail: outcome.detail,
        };
        self.recorder
            .record(AuditEvent::CommandFinished(record))
            .await
            .map_err(|_| Refusal::AuditUnavailable)
    }

    /// Records the session's end, with `reason` in one line.
    pub async fn end(mut self, reason: &str) {
        self.ended = true;
        tracing::info!(session = %self.id, reason = %reason, commands = self.seq.load(Ordering::Relaxed), "session ended");
        let end = AuditEvent::SessionEnded(SessionEnd {
            id: self.id,
            ended_at: OffsetDateTime::now_utc(),
            reason: reason.to_owned(),
        });
        if self.recorder.record(end).await.is_err() {
            // Shutdown closed the recorder first; the next start closes
            // the session as dangling, so the record still ends.
            tracing::warn!(session = %self.id, "the session's end could not be recorded");
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let end = AuditEvent::SessionEnded(SessionEnd {
            id: self.id,
            ended_at: OffsetDateTime::now_utc(),
            reason: "the session's task ended without closing it".into(),
        });
        if !self.recorder.record_without_waiting(end) {
            tracing::warn!(session = %self.id, "the session's end could not be recorded");
        }
    }
}

/// When a session must end because its token has expired.
fn expiry_deadline(identity: &Identity, grace: Duration) -> Option<tokio::time::Instant> {
    let exp = identity.credential.expires_at?;
    let left = exp.saturating_sub(crate::identity::now_secs()).max(0) as u64;
    Some(tokio::time::Instant::now() + Duration::from_secs(left) + grace)
}
