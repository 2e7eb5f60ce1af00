//! Local forwarding (`ssh -L`): each forwarded connection is a
//! `direct-tcpip` channel, decided as `ssh_forward` with the host and port
//! the client named, opened from the server (as plain `ssh -L` would), and
//! recorded with its target, bytes and duration. Its payload is not kept.

use std::sync::Arc;

use portcullis_core::audit::{CommandDetail, Decision};
use portcullis_core::policy::ContextValue;
use portcullis_core::{FinishedCommand, Outcome, StartingCommand};
use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use serde::Serialize;

use crate::session::Conn;
use crate::vocabulary::{FORWARD, HOST, PORT};

/// A forwarded connection the client asked for.
pub(crate) struct Forward {
    pub host: String,
    pub port: u32,
    /// Where the client says the connection came from (recorded only).
    pub originator: (String, u32),
}

#[derive(Serialize)]
struct ForwardDetail<'a> {
    host: &'a str,
    port: u32,
    originator: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_out: Option<u64>,
}

/// Decides, opens and relays one forwarded connection.
pub(crate) async fn serve(
    conn: Arc<Conn>,
    forward: Forward,
    client: Channel<Msg>,
    reply: ChannelOpenHandle,
    handle: Handle,
) {
    let Some(live) = conn.live.get() else { return };
    let target = format!("{}:{}", forward.host, forward.port);
    let facts = live
        .facts
        .clone()
        .with(HOST, ContextValue::Str(forward.host.clone()))
        .with(PORT, ContextValue::Long(i64::from(forward.port)));
    let verdict = conn
        .shared
        .core
        .policy
        .decide(&live.identity, FORWARD, &live.resource, &facts);
    let started_at = time::OffsetDateTime::now_utc();
    let detail = |bytes: Option<(u64, u64)>| {
        CommandDetail::of(&ForwardDetail {
            host: &forward.host,
            port: forward.port,
            originator: format!("{}:{}", forward.originator.0, forward.originator.1),
            bytes_in: bytes.map(|b| b.0),
            bytes_out: bytes.map(|b| b.1),
        })
    };
    let decision = Decision {
        allowed: verdict.allowed,
        policies: Arc::from(verdict.policies.clone()),
    };
    if !verdict.allowed {
        let message = format!(
            "portcullis: forwarding to {target} denied for {} ({})",
            live.identity.describe(),
            verdict.reason()
        );
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        conn.tell_terminals(&handle, &message).await;
        let command = FinishedCommand {
            kind: "forward",
            text: target,
            started_at,
            duration_us: 0,
            error: Some(message),
            decision,
            masked: Default::default(),
            detail: detail(None),
        };
        if let Some(session) = conn.session.lock().await.as_mut() {
            let _ = session.record(|| command).await;
        }
        return;
    }
    let mut journal = {
        let session = conn.session.lock().await;
        match session.as_ref().filter(|s| s.check_recording().is_ok()) {
            Some(s) => s.journal(),
            None => {
                return reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await
            }
        }
    };
    let seq = journal.started(|| StartingCommand {
        kind: "forward",
        text: target.clone(),
        started_at,
        decision,
        detail: detail(None),
    });
    if journal.durable().await.is_err() {
        return reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
    }
    let clock = std::time::Instant::now();
    let opened = live
        .upstream
        .channel_open_direct_tcpip(
            forward.host.as_str(),
            forward.port,
            forward.originator.0.as_str(),
            forward.originator.1,
        )
        .await;
    let (error, bytes) = match opened {
        Ok(upstream) => {
            reply.accept().await;
            (None, Some(pump(&conn, client, upstream).await))
        }
        Err(e) => {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            (
                Some(format!("the server could not open {target}: {e}")),
                None,
            )
        }
    };
    let outcome = Outcome {
        duration_us: clock.elapsed().as_micros() as u64,
        error,
        masked: Default::default(),
        detail: detail(bytes),
    };
    if let Some(session) = conn.session.lock().await.as_mut() {
        let _ = session.record_outcome(seq, || outcome).await;
    }
}

/// Copies both ways until either side closes; the bytes each way.
async fn pump(
    conn: &Conn,
    client: Channel<Msg>,
    upstream: Channel<russh::client::Msg>,
) -> (u64, u64) {
    let (mut cl_rx, cl_tx) = client.split();
    let (mut up_rx, up_tx) = upstream.split();
    let to_upstream = async {
        let mut n = 0u64;
        loop {
            match tokio::select! { m = cl_rx.wait() => m, () = conn.done.cancelled() => None } {
                Some(ChannelMsg::Data { data }) => {
                    n += data.len() as u64;
                    if up_tx.data_bytes(data).await.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = up_tx.eof().await;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        let _ = up_tx.close().await;
        n
    };
    let to_client = async {
        let mut n = 0u64;
        loop {
            match tokio::select! { m = up_rx.wait() => m, () = conn.done.cancelled() => None } {
                Some(ChannelMsg::Data { data }) => {
                    n += data.len() as u64;
                    if cl_tx.data_bytes(data).await.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = cl_tx.eof().await;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        let _ = cl_tx.close().await;
        n
    };
    tokio::join!(to_upstream, to_client)
}
