//! A session channel: what it asks (a terminal, environment, then one
//! shell, exec or subsystem), the decision, an optional hold for review,
//! the command's record, the upstream channel, and the relay.
//!
//! Nothing reaches the upstream before the decision: the terminal and
//! environment requests are kept and replayed on the upstream channel
//! once the request that runs something is allowed.

use std::sync::Arc;

use portcullis_core::audit::{CommandDetail, Decision};
use portcullis_core::{FinishedCommand, Outcome, StartingCommand, Verdict};
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, Pty};
use serde::Serialize;

use crate::cast::{Cast, CastHeader};
use crate::relay::{self, Relayed};
use crate::request::{ChannelRequest, Classified};
use crate::session::{Conn, Live};

/// Exit status a refused request reports (as a shell does for a command
/// it cannot run).
pub(crate) const REFUSED_EXIT: u32 = 126;

/// A terminal the client asked for.
#[derive(Debug, Clone)]
pub(crate) struct Terminal {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub pix: (u32, u32),
    pub modes: Vec<(Pty, u32)>,
}

/// What came before the request that runs something.
#[derive(Default)]
struct Setup {
    terminal: Option<Terminal>,
    env: Vec<(String, String)>,
    agent: bool,
}

/// The command's facts in its records.
#[derive(Serialize)]
struct StartDetail<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    env: &'a [(String, String)],
}

/// Serves one session channel until it closes.
pub(crate) async fn serve(conn: Arc<Conn>, mut client: Channel<Msg>, handle: Handle) {
    let id = client.id();
    let Some(live) = conn.live.get() else { return };
    let Some((setup, request)) = read_setup(&conn, &mut client).await else {
        let _ = handle.close(id).await;
        return;
    };
    let classified = match request.classify() {
        Ok(c) => c,
        Err(message) => {
            let unoffered = Classified {
                action: crate::vocabulary::EXEC,
                kind: "request",
                text: format!("{request:?}"),
                path: None,
            };
            let verdict = Verdict {
                allowed: false,
                policies: Vec::new(),
                errors: Vec::new(),
                reviews: Vec::new(),
            };
            let started_at = time::OffsetDateTime::now_utc();
            record_refused(&conn, &unoffered, &verdict, started_at, &message).await;
            return refuse(&handle, id, &message).await;
        }
    };
    let (verdict, why) = decide(&conn, live, &classified);
    let started_at = time::OffsetDateTime::now_utc();
    if !verdict.allowed {
        let message = format!(
            "portcullis: {} on {} denied for {} ({why}{})",
            describe(&classified),
            live.connection,
            live.identity.describe(),
            verdict.reason()
        );
        record_refused(&conn, &classified, &verdict, started_at, &message).await;
        return refuse(&handle, id, &message).await;
    }
    if !verdict.reviews.is_empty() {
        if let Err(message) =
            crate::review::hold(&conn, live, &classified, &verdict, &mut client, &handle).await
        {
            record_refused(&conn, &classified, &verdict, started_at, &message).await;
            return refuse(&handle, id, &message).await;
        }
    }
    let Some(seq) = journal(&conn, &classified, &verdict, &setup, started_at).await else {
        let message = portcullis_core::Refusal::AuditUnavailable.to_string();
        return refuse(&handle, id, &message).await;
    };
    let clock = std::time::Instant::now();
    let upstream = match open_upstream(&conn, live, &setup, &request).await {
        Ok(up) => up,
        Err(error) => {
            let _ = handle.channel_failure(id).await;
            let _ = handle
                .extended_data(id, 1, format!("portcullis: {error}\r\n").into_bytes())
                .await;
            let _ = handle.close(id).await;
            finish(&conn, seq, clock, Relayed::failed(error)).await;
            return;
        }
    };
    let cast = match start_cast(&conn, live, seq, &classified, setup.terminal.as_ref()) {
        Ok(cast) => cast,
        Err(e) => {
            // Nothing runs unrecorded: the upstream channel is dropped
            // (closed) unused.
            let reason = format!("portcullis: {e}; the session ends");
            let _ = handle.channel_failure(id).await;
            conn.stop(&handle, reason.clone()).await;
            finish(&conn, seq, clock, Relayed::failed(reason)).await;
            return;
        }
    };
    let _ = handle.channel_success(id).await;
    let terminal = cast.is_some();
    if terminal {
        conn.add_terminal(&handle, id).await;
    }
    // Without a terminal nothing echoes what is typed: a shell's input is
    // then the only record of the commands it ran.
    let input = conn.shared.settings.record_input
        || (classified.kind == "shell" && setup.terminal.is_none());
    let recording = relay::Recording {
        cast,
        pty: setup.terminal.is_some(),
        input,
    };
    let relayed = relay::run(&conn, client, upstream, &handle, recording).await;
    if terminal {
        if let Ok(mut t) = conn.terminals.lock() {
            t.retain(|c| *c != id);
        }
    }
    finish(&conn, seq, clock, relayed).await;
}

/// Reads the channel's requests up to the one that runs something. The
/// handler answered the others (`server.rs`), in order: russh keeps one
/// want-reply flag per channel, so an answer given here, later, could
/// land on the wrong request. `None`: the channel closed first.
async fn read_setup(conn: &Conn, client: &mut Channel<Msg>) -> Option<(Setup, ChannelRequest)> {
    let mut setup = Setup::default();
    loop {
        let msg = tokio::select! {
            m = client.wait() => m?,
            () = conn.done.cancelled() => return None,
        };
        match msg {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                setup.terminal = Some(Terminal {
                    term,
                    cols: col_width,
                    rows: row_height,
                    pix: (pix_width, pix_height),
                    modes: terminal_modes_passed(terminal_modes),
                });
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            } => {
                if let Some(t) = setup.terminal.as_mut() {
                    (t.cols, t.rows) = (col_width, row_height);
                }
            }
            // Only the locale passes: a server that accepted more
            // (BASH_ENV, LD_PRELOAD, PATH) would let the client change
            // what an allowed command runs.
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } if passes_env(&variable_name, &variable_value) && setup.env.len() < 16 => {
                setup.env.push((variable_name, variable_value));
            }
            ChannelMsg::AgentForward { .. } => setup.agent = true,
            ChannelMsg::RequestShell { .. } => return Some((setup, ChannelRequest::Shell)),
            ChannelMsg::Exec { command, .. } => {
                let request = match String::from_utf8(command) {
                    Ok(command) => ChannelRequest::Exec(command),
                    Err(_) => ChannelRequest::NotUtf8Exec,
                };
                return Some((setup, request));
            }
            ChannelMsg::RequestSubsystem { name, .. } => {
                return Some((setup, ChannelRequest::Subsystem(name)))
            }
            ChannelMsg::Eof | ChannelMsg::Close => return None,
            _ => {}
        }
    }
}

/// Decides `classified`, with a note for a refusal. Legacy scp is an exec
/// through the login shell (sshd runs `~/.ssh/rc` and the shell's startup
/// files for it), so it needs `ssh_exec` as well as `ssh_sftp`: a
/// file-transfer permit alone must not run what a transferred file says.
fn decide(conn: &Conn, live: &Live, classified: &Classified) -> (Verdict, &'static str) {
    let policy = &conn.shared.core.policy;
    let facts = classified.facts(&live.facts);
    let verdict = policy.decide(&live.identity, classified.action, &live.resource, &facts);
    if !verdict.allowed || classified.kind != "scp" {
        return (verdict, "");
    }
    let exec = policy.decide(
        &live.identity,
        crate::vocabulary::EXEC,
        &live.resource,
        &facts,
    );
    if !exec.allowed {
        let why = "legacy scp (-O) runs a command through the login shell, so it needs ssh_exec as well as ssh_sftp; ";
        return (exec, why);
    }
    let mut both = verdict;
    both.policies.extend(exec.policies);
    both.reviews.extend(exec.reviews);
    (both, "")
}

/// The terminal modes passed to the server. russh hands over its
/// fixed-size table, padded with TTY_OP_END, which would end the server's
/// parse early. And the terminal starts with echo on whatever the client
/// asked: with `ECHO 0` a client's commands would be in no recording
/// (unless `record_input`); turning echo off later takes a command the
/// recording shows (`stty -echo`).
fn terminal_modes_passed(modes: Vec<(Pty, u32)>) -> Vec<(Pty, u32)> {
    modes
        .into_iter()
        .filter(|(mode, _)| *mode != Pty::TTY_OP_END)
        .map(|(mode, value)| match mode {
            Pty::ECHO => (mode, 1),
            _ => (mode, value),
        })
        .collect()
}

/// Whether the client's environment variable `name` is passed on: the
/// locale, with a value of a locale's length.
fn passes_env(name: &str, value: &str) -> bool {
    (name == "LANG" || name.starts_with("LC_")) && name.len() <= 32 && value.len() <= 64
}

/// What a request is, in a refusal.
fn describe(c: &Classified) -> String {
    match c.kind {
        "shell" => "a shell".into(),
        "sftp" => "sftp".into(),
        "scp" => format!("scp of {}", c.path.as_deref().unwrap_or("?")),
        _ => format!("exec of {:?}", c.text),
    }
}

/// Answers a refused request: accepted, so the client shows the reason on
/// its stderr, then exit status [`REFUSED_EXIT`] and close.
pub(crate) async fn refuse(handle: &Handle, id: ChannelId, message: &str) {
    let _ = handle.channel_success(id).await;
    let line = format!("{}\r\n", message.replace(['\r', '\n'], " "));
    let _ = handle.extended_data(id, 1, line.into_bytes()).await;
    let _ = handle.exit_status_request(id, REFUSED_EXIT).await;
    let _ = handle.eof(id).await;
    let _ = handle.close(id).await;
}

async fn record_refused(
    conn: &Conn,
    classified: &Classified,
    verdict: &Verdict,
    started_at: time::OffsetDateTime,
    message: &str,
) {
    let command = FinishedCommand {
        kind: classified.kind,
        text: classified.text.clone(),
        started_at,
        duration_us: 0,
        error: Some(message.to_owned()),
        decision: Decision {
            allowed: false,
            policies: Arc::from(verdict.policies.clone()),
        },
        masked: Default::default(),
        detail: CommandDetail::of(&StartDetail {
            term: None,
            path: classified.path.as_deref(),
            env: &[],
        }),
    };
    if let Some(session) = conn.session.lock().await.as_mut() {
        let _ = session.record(|| command).await;
    }
}

/// Journals the allowed command before anything is forwarded; `None` when
/// it cannot be recorded (then it must not run).
async fn journal(
    conn: &Conn,
    classified: &Classified,
    verdict: &Verdict,
    setup: &Setup,
    started_at: time::OffsetDateTime,
) -> Option<u64> {
    let mut journal = {
        let session = conn.session.lock().await;
        let session = session.as_ref()?;
        session.check_recording().ok()?;
        session.journal()
    };
    let seq = journal.started(|| StartingCommand {
        kind: classified.kind,
        text: classified.text.clone(),
        started_at,
        decision: Decision {
            allowed: true,
            policies: Arc::from(verdict.policies.clone()),
        },
        detail: CommandDetail::of(&StartDetail {
            term: setup.terminal.as_ref().map(|t| t.term.as_str()),
            path: classified.path.as_deref(),
            env: &setup.env,
        }),
    });
    journal.durable().await.ok()?;
    Some(seq)
}

/// Opens the upstream channel and replays the terminal, environment and
/// agent requests, then the request itself, waiting for its answer.
async fn open_upstream(
    conn: &Conn,
    live: &Live,
    setup: &Setup,
    request: &ChannelRequest,
) -> Result<Channel<russh::client::Msg>, String> {
    let mut up = live
        .upstream
        .channel_open_session()
        .await
        .map_err(|e| format!("the server refused a session channel ({e})"))?;
    let failed = |e: russh::Error| format!("the server's channel failed ({e})");
    if let Some(t) = &setup.terminal {
        up.request_pty(false, &t.term, t.cols, t.rows, t.pix.0, t.pix.1, &t.modes)
            .await
            .map_err(failed)?;
    }
    for (name, value) in &setup.env {
        up.set_env(false, name.as_str(), value.as_str())
            .await
            .map_err(failed)?;
    }
    if setup.agent
        && conn
            .agent
            .allowed
            .load(std::sync::atomic::Ordering::Relaxed)
    {
        up.agent_forward(false).await.map_err(failed)?;
    }
    match request {
        ChannelRequest::Shell => up.request_shell(true).await,
        ChannelRequest::Exec(command) => up.exec(true, command.as_bytes()).await,
        ChannelRequest::Subsystem(name) => up.request_subsystem(true, name.as_str()).await,
        ChannelRequest::NotUtf8Exec => return Err("the command is not UTF-8".into()),
    }
    .map_err(failed)?;
    loop {
        match up.wait().await {
            Some(ChannelMsg::Success) => return Ok(up),
            Some(ChannelMsg::Failure) => return Err("the server refused the request".into()),
            Some(ChannelMsg::Close) | None => return Err("the server closed the channel".into()),
            Some(_) => {}
        }
    }
}

/// The recording of a shell or exec (sftp and scp carry files, not a
/// terminal: their bytes are counted, not kept).
fn start_cast(
    conn: &Conn,
    live: &Live,
    seq: u64,
    classified: &Classified,
    terminal: Option<&Terminal>,
) -> Result<Option<Cast>, crate::cast::CastError> {
    if classified.kind != "shell" && classified.kind != "exec" {
        return Ok(None);
    }
    let header = CastHeader {
        version: 2,
        width: terminal.map_or(80, |t| t.cols),
        height: terminal.map_or(24, |t| t.rows),
        timestamp: time::OffsetDateTime::now_utc().unix_timestamp(),
        title: classified.text.clone(),
        env: terminal.map(|t| serde_json::json!({ "TERM": t.term })),
    };
    let relative = format!("{}/{seq}.cast", live.session_id);
    Cast::create(
        &conn.shared.settings.recordings_dir,
        relative,
        &header,
        conn.budget.clone(),
    )
    .map(Some)
}

/// Records how the command `seq` ended.
async fn finish(conn: &Conn, seq: u64, clock: std::time::Instant, relayed: Relayed) {
    let outcome = Outcome {
        duration_us: clock.elapsed().as_micros() as u64,
        error: relayed.error.clone(),
        masked: Default::default(),
        detail: CommandDetail::of(&relayed),
    };
    if let Some(session) = conn.session.lock().await.as_mut() {
        let _ = session.record_outcome(seq, || outcome).await;
    }
}
