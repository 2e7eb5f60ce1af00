//! A line protocol over TCP, used only in tests, that proves the core's
//! session seam ([`portcullis_core::session`]) carries a protocol that is
//! not SQL: identity, `connect` policy, per-command policy in the
//! protocol's own vocabulary, recording and kill, with no code of its own
//! for any of them.
//!
//! The client's first line is `<token> <connection>`; the gateway answers
//! `ok <session id>` or `error <refusal>`. Every later line is a command,
//! decided as `Action::"echo"` on the connection with the line in
//! `context.line`, and answered `echo: <line>` or `denied: <reason>`.

use std::sync::Arc;

use portcullis_core::audit::{CommandDetail, Decision};
use portcullis_core::policy::ContextValue;
use portcullis_core::vocabulary::{ActionSpec, ContextSpec, Vocabulary};
use portcullis_core::{Action, ClientInfo, Core, FinishedCommand, Refusal, Resource};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the line protocol adds to the policy language.
pub const ECHO: Vocabulary = Vocabulary {
    owner: "echo (tests only)",
    entities: &[],
    groups: &[],
    actions: &[ActionSpec {
        names: &["echo"],
        group: None,
        resources: &["Connection"],
    }],
    context: &[ContextSpec {
        name: "line",
        cedar_type: "String",
        doc: "The line an echo client sent.",
        per_request: true,
    }],
};

const PROTOCOL: &str = "echo";
const ECHO_ACTION: Action = Action::named("echo");

/// The protocol's own facts about a command, kept in its record.
#[derive(serde::Serialize)]
struct LineDetail {
    bytes: usize,
}

/// Serves clients from `listener` until `shutdown`; every session's kill
/// token is a child of it.
pub async fn serve(core: Core, listener: TcpListener, shutdown: CancellationToken) {
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        tasks.spawn(serve_client(core.clone(), tcp, shutdown.child_token()));
    }
    tasks.close();
    tasks.wait().await;
}

async fn serve_client(core: Core, tcp: TcpStream, kill: CancellationToken) {
    let Ok(address) = tcp.peer_addr() else { return };
    let (read, mut write) = tcp.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(hello)) = lines.next_line().await else {
        return;
    };
    let (token, connection) = hello.split_once(' ').unwrap_or((&hello, ""));
    let client = ClientInfo {
        address,
        encrypted: false,
        claimed_user: None,
        application: None,
    };
    let opened = async {
        let identity = core.authenticate(token).await?;
        core.admit(PROTOCOL, connection, identity, client)?
            .open(kill)
            .await
    };
    let mut session = match opened.await {
        Ok(s) => s,
        Err(refusal) => {
            let _gone = write
                .write_all(format!("error {refusal}\n").as_bytes())
                .await;
            return;
        }
    };
    let stop = session.stop_signal();
    let identity = session.identity().clone();
    let resource = Resource::Connection(session.connection().to_owned());
    let facts = session.request_facts();
    if write
        .write_all(format!("ok {}\n", session.id()).as_bytes())
        .await
        .is_err()
    {
        return session.end("client disconnected").await;
    }
    let reason = loop {
        let line = tokio::select! {
            refusal = stop.stopped() => {
                let _gone = write.write_all(format!("error {refusal}\n").as_bytes()).await;
                break refusal.to_string();
            }
            line = lines.next_line() => match line {
                Ok(Some(line)) => line,
                _ => break "client disconnected".to_owned(),
            },
        };
        if let Err(refusal) = session.check_recording() {
            let _gone = write
                .write_all(format!("error {refusal}\n").as_bytes())
                .await;
            break refusal.to_string();
        }
        let started_at = time::OffsetDateTime::now_utc();
        let facts = facts.clone().with("line", ContextValue::Str(line.clone()));
        let verdict = core
            .policy
            .decide(&identity, ECHO_ACTION, &resource, &facts);
        let answer = if verdict.allowed {
            format!("echo: {line}\n")
        } else {
            format!("denied: {}\n", Refusal::CommandDenied(verdict.reason()))
        };
        let command = FinishedCommand {
            kind: "line",
            text: line.clone(),
            started_at,
            duration_us: 0,
            error: None,
            decision: Decision {
                allowed: verdict.allowed,
                policies: Arc::from(verdict.policies),
            },
            masked: Default::default(),
            detail: CommandDetail::of(&LineDetail { bytes: line.len() }),
        };
        if let Err(refusal) = session.record(|| command).await {
            break refusal.to_string();
        }
        if write.write_all(answer.as_bytes()).await.is_err() {
            break "client disconnected".to_owned();
        }
    };
    session.end(&reason).await;
}
