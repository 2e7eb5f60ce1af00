//! The relay: client and upstream bytes flow through the codec in both
//! directions; every statement is decided by the [`StatementGate`] before
//! it is forwarded, paired with its outcome, and recorded.
//!
//! Hand-written on purpose: this is the hot path. Complete frames are
//! forwarded as one contiguous write per read, with no copy and no
//! per-message allocation beyond the statement text kept for the record;
//! only a denied statement (and the server's error for its stand-in) is
//! spliced out and replaced.
//! Memory per session is bounded by two read buffers, each at most
//! `max(READ_CHUNK, largest message)`, and `max_message_bytes` caps the
//! largest message in either direction.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use portcullis_core::audit::CommandDetail;
use portcullis_core::{CommandJournal, FinishedCommand, Outcome, SessionHandle, StartingCommand};
use portcullis_pg_decide::{StandIn, StatementGate};
use portcullis_pg_wire::{next_frame, FrontendMessage};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::SessionError;
use crate::hold::HoldContext;

mod handoff;
use crate::tracker::{BackendTracker, Forward, FrontendTracker, Stmt};
use handoff::HANDOFF_WAKE;
pub use handoff::{Handoff, Notices};

/// Bytes requested per read; buffers grow past it only for larger messages.
const READ_CHUNK: usize = 64 * 1024;

/// Limits that protect the gateway from a client (or upstream).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message accepted in either direction.
    pub max_message_bytes: usize,
    /// How long a partly received client message may stall.
    pub message_timeout: Duration,
    /// Time allowed from TCP accept to a ready session.
    pub login_timeout: Duration,
    /// Named prepared statements per session.
    pub max_prepared_statements: usize,
    /// Messages a session may have sent upstream that the server has not
    /// answered yet (each is held until its answer arrives).
    pub max_unanswered_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            message_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(15),
            max_prepared_statements: 10_000,
            max_unanswered_messages: 65_536,
        }
    }
}

/// Why the relay stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client closed its socket without Terminate.
    ClientVanished,
    /// The upstream closed the connection.
    UpstreamClosed,
}

impl RelayEnd {
    /// One line for the session record.
    pub fn describe(self) -> &'static str {
        match self {
            RelayEnd::ClientTerminated => "client terminated",
            RelayEnd::ClientVanished => "client disconnected",
            RelayEnd::UpstreamClosed => "upstream closed the connection",
        }
    }
}

/// What SQL adds to a recorded command: the core's record is protocol
/// neutral, and these are the PostgreSQL facts kept with it. Borrowed from
/// the statement: it is only serialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SqlDetail<'a> {
    /// Extended-protocol parameters from Bind, text-format values as text,
    /// binary ones as `\\x…` hex; `None` inside for NULL.
    pub params: Option<&'a [Option<String>]>,
    /// The prepared statement's name, for extended-protocol statements.
    pub prepared_name: Option<&'a str>,
    /// Rows returned or affected, when the server reported them.
    pub rows: Option<u64>,
    /// The review whose approval let it run, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<u64>,
}

/// Where the relay records finished statements: the session's handle.
pub struct StatementLog<'s> {
    session: &'s mut SessionHandle,
}

impl<'s> StatementLog<'s> {
    /// Records through `session`.
    pub fn new(session: &'s mut SessionHandle) -> Self {
        Self { session }
    }

    /// Records a finished statement: the outcome of one journaled before
    /// it was forwarded, or the whole of one that was not.
    pub async fn record(&mut self, s: Stmt) -> Result<(), SessionError> {
        let detail = || {
            CommandDetail::of(&SqlDetail {
                params: s.params.as_deref().map(Vec::as_slice),
                prepared_name: s.prepared_name.as_deref().filter(|n| !n.is_empty()),
                rows: s.has_rows.then_some(s.rows),
                review: s.review,
            })
        };
        let duration_us = u64::try_from(s.received.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Some(seq) = s.seq {
            let outcome = || Outcome {
                duration_us,
                error: s.error.clone(),
                masked: s.masked.clone(),
                detail: CommandDetail::of(&SqlOutcome {
                    rows: s.has_rows.then_some(s.rows),
                    review: s.review,
                }),
            };
            return Ok(self.session.record_outcome(seq, outcome).await?);
        }
        let command = || FinishedCommand {
            kind: s.kind,
            text: s.text.to_string(),
            started_at: s.received_at,
            duration_us,
            error: s.error.clone(),
            decision: s.decision.clone(),
            masked: s.masked.clone(),
            detail: detail(),
        };
        Ok(self.session.record(command).await?)
    }
}

/// What SQL adds to a journaled statement's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
struct SqlOutcome {
    rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    review: Option<u64>,
}

/// Journals the statements of `batch` that will run (or be refused in the
/// server's place), numbering them, and in strict recording waits until
/// their records are committed: none is forwarded before.
///
/// A Bind runs code too (parameter input functions, a domain's checks,
/// functions folded while planning), Execute or not: one is journaled on
/// its own unless an Execute of the portal it binds follows in the same
/// batch, whose record carries its statement and parameters and is
/// committed before either is forwarded.
async fn journal_batch(
    journal: &mut CommandJournal,
    batch: &mut [crate::tracker::Pending],
) -> Result<(), SessionError> {
    use crate::tracker::Pending;
    let mut any = false;
    for i in 0..batch.len() {
        let executed_later = match &batch[i] {
            Pending::Bind(bind) => batch[i + 1..]
                .iter()
                .any(|later| match (later, &bind.params) {
                    (Pending::Execute(e), Some(params)) => e
                        .params
                        .as_ref()
                        .is_some_and(|p| std::sync::Arc::ptr_eq(p, params)),
                    _ => false,
                }),
            _ => false,
        };
        let s = match &mut batch[i] {
            Pending::Query(s) | Pending::Execute(s) | Pending::SyntaxProbe(s, _) => s,
            Pending::Bind(s) if !executed_later => s,
            _ => continue,
        };
        let starting = || StartingCommand {
            kind: s.kind,
            text: s.text.to_string(),
            started_at: s.received_at,
            decision: s.decision.clone(),
            detail: CommandDetail::of(&SqlDetail {
                params: s.params.as_deref().map(Vec::as_slice),
                prepared_name: s.prepared_name.as_deref().filter(|n| !n.is_empty()),
                rows: None,
                review: None,
            }),
        };
        s.seq = Some(journal.started(starting));
        any = true;
    }
    if any {
        journal.durable().await?;
    }
    Ok(())
}

/// Client → upstream: frame, decode, decide each statement, forward.
pub async fn client_to_upstream<R, W>(
    mut client: R,
    mut upstream: W,
    pending: &Handoff,
    limits: &Limits,
    journal: &mut CommandJournal,
    gate: &mut StatementGate,
    holds: Option<&HoldContext>,
) -> Result<RelayEnd, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut tracker = FrontendTracker::new(limits.max_prepared_statements);
    let mut batch = Vec::new();
    let mut replaced: Vec<(usize, usize, StandIn)> = Vec::new();
    let bytes_in = metrics::counter!("portcullis_bytes_total", "direction" => "from_client");
    // After a hold, the held message waits at the front of `buf`.
    let mut decide_held = false;
    loop {
        if !std::mem::take(&mut decide_held) {
            buf.reserve(READ_CHUNK);
            let n = if buf.is_empty() {
                client.read_buf(&mut buf).await?
            } else {
                // A partial message is waiting: the client must finish it in time.
                tokio::time::timeout(limits.message_timeout, client.read_buf(&mut buf))
                    .await
                    .map_err(|_| {
                        SessionError::Refused(portcullis_core::Refusal::Timeout(
                            "the rest of a client message",
                        ))
                    })??
            };
            if n == 0 {
                return Ok(RelayEnd::ClientVanished);
            }
            bytes_in.increment(n as u64);
        }
        // What the server confirmed so far decides what names hold.
        tracker.resolve(&pending.take_answered(), gate);
        tracker.new_read();
        // Whether the server is idle before anything of this read is sent.
        let quiet = pending.quiet();
        let failed = pending.failed_transaction();
        let mut used = 0;
        let mut terminate = false;
        let mut held = None;
        while let Some(frame) = next_frame(&buf[used..], limits.max_message_bytes)? {
            let body = &buf[used + 5..used + frame.len];
            let encoding = tracker.reading_encoding(&pending.encoding)?;
            let msg = FrontendMessage::decode_in(frame.tag, body, encoding)?;
            terminate = matches!(msg, FrontendMessage::Terminate);
            // The tracker's answer is the only leave to send the frame:
            // a permit for the client's bytes, or a stand-in in their place.
            match tracker.on_message(&msg, &mut batch, gate)? {
                Forward::AsIs(_permit) => {}
                Forward::Instead(stand_in) => replaced.push((used, frame.len, stand_in)),
                // What came before it goes out now; it waits.
                Forward::Hold(hold) => {
                    held = Some(hold);
                    break;
                }
            }
            used += frame.len;
            if terminate {
                break;
            }
        }
        if !batch.is_empty() {
            // Fail closed: nothing runs that could not be recorded, and in
            // strict recording nothing runs before its record is durable.
            journal.check_recording()?;
            journal_batch(journal, &mut batch).await?;
            // Hand the entries over before the upstream can answer them.
            let held = pending.put(&mut batch);
            check_unanswered(held, limits)?;
            if held >= HANDOFF_WAKE {
                // Both sides run in this task: yielding has it polled again,
                // so the upstream side, if it waits for a read, sees the
                // queue has grown.
                tokio::task::yield_now().await;
            }
        }
        if used > 0 {
            write_spliced(&mut upstream, &buf[..used], &mut replaced).await?;
            buf.advance(used);
            shrink(&mut buf);
        }
        if terminate {
            return Ok(RelayEnd::ClientTerminated);
        }
        if let Some(hold) = held {
            let server = crate::hold::ServerState { quiet, failed };
            let reason = tracker.reason().map(str::to_owned);
            let held_in = crate::hold::Client {
                stream: &mut client,
                buf: &mut buf,
            };
            let decided =
                crate::hold::decide(holds, &hold, reason.as_deref(), server, pending, held_in);
            let Some(verdict) = decided.await? else {
                return Ok(RelayEnd::ClientVanished);
            };
            tracker.review_ended(verdict);
            decide_held = true;
        }
    }
}

/// Upstream → client: frame, pair responses with pending statements, forward, record.
pub async fn upstream_to_client<R, W>(
    mut upstream: R,
    client: &mut W,
    mut buf: BytesMut,
    pending: &Handoff,
    tracker: &mut BackendTracker,
    limits: &Limits,
    rec: &mut StatementLog<'_>,
) -> Result<RelayEnd, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut done = Vec::new();
    let mut replaced: Vec<(usize, usize, BytesMut)> = Vec::new();
    let bytes_out = metrics::counter!("portcullis_bytes_total", "direction" => "to_client");
    loop {
        if buf.is_empty() || next_frame(&buf, limits.max_message_bytes)?.is_none() {
            buf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                // The gateway's own notices first: one telling a session
                // why it is about to end must not lose to the end itself.
                texts = pending.notices.next() => {
                    write_spliced(client, &tracker.notices(&texts), &mut Vec::<(usize, usize, BytesMut)>::new()).await?;
                    continue;
                }
                n = upstream.read_buf(&mut buf) => {
                    if n? == 0 {
                        return Ok(RelayEnd::UpstreamClosed);
                    }
                }
                // The server may be answering nothing for a while (after an
                // error it discards messages up to Sync): take the entries
                // now, so the tracker can drop what will never be answered.
                () = pending.grown() => {
                    pending.drain_into(tracker);
                    check_unanswered(tracker.unanswered(), limits)?;
                    continue;
                }
            }
        }
        // Entries are handed over before their messages are forwarded, so
        // every response we can read is already matched by one.
        pending.drain_into(tracker);
        check_unanswered(tracker.unanswered(), limits)?;
        let mut used = 0;
        while let Some(frame) = next_frame(&buf[used..], limits.max_message_bytes)
            .map_err(|e| SessionError::upstream(format!("upstream sent an invalid message: {e}")))?
        {
            if !matches!(frame.tag, b'D' | b'd') {
                check_backend_tag(frame.tag)?;
            }
            if frame.tag == b'S' {
                if let Ok(portcullis_pg_wire::BackendMessage::ParameterStatus { name, value }) =
                    portcullis_pg_wire::BackendMessage::decode(
                        b'S',
                        &buf[used + 5..used + frame.len],
                    )
                {
                    check_reported_setting(name, value)?;
                    if name == "client_encoding" {
                        if let Some(encoding) = portcullis_pg_wire::ClientEncoding::by_name(value) {
                            pending.encoding.reported(encoding);
                        }
                    }
                }
            }
            if let Some(bytes) =
                tracker.on_message(frame.tag, &buf[used + 5..used + frame.len], &mut done)?
            {
                replaced.push((used, frame.len, bytes));
            }
            used += frame.len;
        }
        // Before the client can see the answers and act on them.
        pending.answered(tracker.take_answered());
        pending.encoding.answered_up_to(tracker.answered_entries());
        pending.settle_busy(tracker);
        if used > 0 {
            bytes_out.increment(used as u64);
            write_spliced(client, &buf[..used], &mut replaced).await?;
            buf.advance(used);
            shrink(&mut buf);
        }
        for s in done.drain(..) {
            rec.record(s).await?;
        }
    }
}

/// Ends the session when the server reports a setting under which it would
/// read statement text differently from the gateway (a RESET, a function's
/// SET clause or a role default can change them without a SET statement).
pub fn check_reported_setting(name: &str, value: &str) -> Result<(), SessionError> {
    let unsafe_setting = match name {
        "client_encoding" => !portcullis_pg_sql::is_safe_client_encoding(value),
        "standard_conforming_strings" => value != "on",
        _ => false,
    };
    if unsafe_setting {
        return Err(SessionError::not_allowed(format!(
            "the server switched {name} to {value:?}, under which it would read statements differently from the gateway; the session is ended"
        )));
    }
    Ok(())
}

/// Ends a session holding more unanswered messages than the limit: each
/// is kept until the server answers, and a client that pipelines small
/// messages without reading the answers would otherwise hold as many as
/// the sockets' buffers let through.
fn check_unanswered(held: usize, limits: &Limits) -> Result<(), SessionError> {
    if held > limits.max_unanswered_messages {
        return Err(SessionError::Refused(portcullis_core::Refusal::LimitExceeded(
            format!(
                "the session sent more than {} messages the server has not answered yet (limits.max_unanswered_messages); it is ended",
                limits.max_unanswered_messages
            ),
        )));
    }
    Ok(())
}

/// Messages a server may send after login; anything else ends the session.
fn check_backend_tag(tag: u8) -> Result<(), SessionError> {
    match tag {
        b'T' | b'C' | b'E' | b'N' | b'I' | b'1' | b'2' | b'3' | b'n' | b's' | b't' | b'G'
        | b'H' | b'W' | b'c' | b'A' | b'S' | b'Z' | b'V' => Ok(()),
        other => Err(SessionError::upstream(format!(
            "upstream sent unexpected message type {:?}",
            other as char
        ))),
    }
}

/// Writes `data` with the frames at `(offset, len)` swapped for new bytes,
/// as one write either way: masking can replace every row of a read, and a
/// write per replaced frame would cost a system call per row.
///
/// Each write ends with a flush: over TLS, a write the socket could not
/// take whole leaves records in the TLS layer, which only a later write or
/// a flush sends on, and the peer may be waiting for exactly those bytes
/// before it sends anything that would cause a later write.
async fn write_spliced<W: AsyncWrite + Unpin, B: AsRef<[u8]>>(
    out: &mut W,
    data: &[u8],
    replaced: &mut Vec<(usize, usize, B)>,
) -> std::io::Result<()> {
    if replaced.is_empty() {
        out.write_all(data).await?;
        return out.flush().await;
    }
    let grown: usize = replaced.iter().map(|(_, _, b)| b.as_ref().len()).sum();
    let mut joined = Vec::with_capacity(data.len() + grown);
    let mut start = 0;
    for (offset, len, bytes) in replaced.drain(..) {
        joined.extend_from_slice(&data[start..offset]);
        joined.extend_from_slice(bytes.as_ref());
        start = offset + len;
    }
    joined.extend_from_slice(&data[start..]);
    out.write_all(&joined).await?;
    out.flush().await
}

/// Drops a buffer that grew for one large message, so an idle session
/// goes back to holding one read chunk.
fn shrink(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 4 * READ_CHUNK {
        *buf = BytesMut::with_capacity(READ_CHUNK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Pending;
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn describes(n: usize) -> Vec<Pending> {
        (0..n).map(|_| Pending::Describe).collect()
    }

    /// Over TLS, a write the socket cannot take whole leaves records in
    /// the TLS layer (tokio-rustls says so): the relay's writes flush, or a
    /// peer waiting for the end of an answer waits forever. A narrow pipe
    /// keeps the socket full, as a slow client does.
    #[tokio::test]
    async fn a_write_over_tls_reaches_the_peer_whole() {
        let tls = portcullis_core::tls::generate_ca_and_server(&["localhost".into()]).unwrap();
        let server_cfg = portcullis_core::tls::server_config(
            tls.cert_pem.as_bytes(),
            tls.key_pem.as_bytes(),
            "test",
            &[],
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(tls.ca_cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let client_cfg =
            rustls::ClientConfig::builder_with_provider(portcullis_core::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let (server_io, client_io) = tokio::io::duplex(4096);
        let accept = tokio_rustls::TlsAcceptor::from(server_cfg).accept(server_io);
        let connect = tokio_rustls::TlsConnector::from(Arc::new(client_cfg)).connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            client_io,
        );
        let (server, client) = tokio::join!(accept, connect);
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        let answer = vec![b'y'; 200_000];
        let writer = tokio::spawn(async move {
            let mut none: Vec<(usize, usize, Vec<u8>)> = Vec::new();
            write_spliced(&mut server, &answer, &mut none)
                .await
                .unwrap();
            // The relay goes on to wait for the upstream, writing nothing.
            std::future::pending::<()>().await;
            drop(server);
        });
        let mut got = vec![0u8; 200_000];
        let read = tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got));
        assert!(
            read.await.is_ok(),
            "the end of the answer stayed in the TLS layer"
        );
        writer.abort();
    }

    /// A client that floods messages the server will not answer (as after
    /// an extended-protocol error) must not pile them up in the handoff:
    /// past the threshold the upstream side's next poll takes them, and
    /// the queue gives its room back.
    #[tokio::test]
    async fn a_growing_handoff_releases_the_upstream_side_once_and_shrinks_back() {
        let handoff = Handoff::default();
        let mut batch = describes(HANDOFF_WAKE - 1);
        handoff.put(&mut batch);
        assert!(batch.is_empty(), "put takes the whole batch");
        let quiet = tokio::time::timeout(Duration::from_millis(50), handoff.grown()).await;
        assert!(
            quiet.is_err(),
            "below the threshold nothing wakes the upstream side"
        );

        handoff.put(&mut describes(4 * HANDOFF_WAKE));
        tokio::time::timeout(Duration::from_secs(5), handoff.grown())
            .await
            .expect("passing the threshold releases the upstream side");
        let again = tokio::time::timeout(Duration::from_millis(50), handoff.grown()).await;
        assert!(again.is_err(), "one crossing releases it once");
        let mut tracker = BackendTracker::default();
        handoff.drain_into(&mut tracker);
        assert!(tracker.in_flight(), "the entries reached the tracker");
        let queue = handoff.lock();
        assert!(queue.is_empty());
        assert!(
            queue.capacity() <= HANDOFF_WAKE,
            "capacity {} kept after the burst",
            queue.capacity()
        );
    }

    /// The relay end to end over in-memory sockets: a client far ahead of
    /// a server that answers nothing (as after an extended-protocol error)
    /// still has its entries taken from the handoff. Nothing but the client
    /// side's yield after passing the threshold polls the upstream side
    /// then; the relay runs in its own task, so this test cannot.
    #[tokio::test]
    async fn a_silent_server_still_gets_a_growing_handoff_taken() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = portcullis_store::SqliteStore::open(&dir.path().join("audit.db"))
            .await
            .expect("store");
        let evidence = portcullis_core::EvidenceSettings::new(Arc::new(
            portcullis_core::evidence::Signer::ephemeral().expect("a key"),
        ));
        let (recorder, _writer) = portcullis_core::Recorder::spawn(Arc::new(store), evidence)
            .await
            .expect("recorder");
        let policy = "permit(principal, action, resource);";
        let core = portcullis_core::Core {
            authenticator: Arc::new(portcullis_core::GatewayAuthenticator::new(
                portcullis_core::StaticTokens::new(Vec::new()),
                Vec::new(),
                None,
                Default::default(),
            )),
            policy: Arc::new(
                portcullis_core::PolicyEngine::from_text(
                    policy,
                    &[&portcullis_pg_decide::vocabulary::SQL],
                )
                .expect("policy"),
            ),
            recorder,
            sessions: Default::default(),
            masking: Arc::new(
                portcullis_core::masking::Masking::new(
                    Default::default(),
                    portcullis_core::masking::HashKey::new(vec![7; 32]),
                )
                .expect("masking"),
            ),
            settings: portcullis_core::SessionSettings {
                record_commands: false,
                ..Default::default()
            },
            reviews: std::sync::Arc::new(portcullis_core::approvals::ReviewBoard::in_memory(
                std::sync::Arc::new(portcullis_core::identity::SystemClock),
                Default::default(),
            )),
        };
        let client_info = portcullis_core::ClientInfo {
            address: "127.0.0.1:1".parse().expect("address"),
            encrypted: false,
            claimed_user: None,
            application: None,
        };
        let mut session = core
            .admit("postgres", "db", Default::default(), client_info)
            .expect("admitted")
            .open(tokio_util::sync::CancellationToken::new())
            .await
            .expect("opened");
        let (mut client, gateway_client_side) = tokio::io::duplex(1 << 20);
        let (gateway_upstream_side, mut server) = tokio::io::duplex(1 << 20);
        let handoff = Arc::new(Handoff::default());
        let relay = tokio::spawn({
            let handoff = handoff.clone();
            async move {
                let (client_r, mut client_w) = tokio::io::split(gateway_client_side);
                let (upstream_r, upstream_w) = tokio::io::split(gateway_upstream_side);
                let limits = Limits::default();
                let mut gate = portcullis_pg_decide::gate::test_gate(policy, &["public"]);
                let mut tracker = BackendTracker::default();
                let mut journal = session.journal();
                let mut rec = StatementLog::new(&mut session);
                tokio::select! {
                    r = client_to_upstream(client_r, upstream_w, &handoff, &limits, &mut journal, &mut gate, None) => r,
                    r = upstream_to_client(upstream_r, &mut client_w, BytesMut::new(), &handoff, &mut tracker, &limits, &mut rec) => r,
                }
            }
        });
        let mut flood = BytesMut::new();
        for _ in 0..2 * HANDOFF_WAKE {
            portcullis_pg_wire::encode::describe_portal(&mut flood, "");
        }
        client.write_all(&flood).await.expect("client writes");
        let mut forwarded = vec![0; flood.len()];
        server
            .read_exact(&mut forwarded)
            .await
            .expect("every message reaches the server");
        for _ in 0..500 {
            if handoff.lock().is_empty() {
                relay.abort();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} entries still wait in the handoff", handoff.lock().len());
    }
}
