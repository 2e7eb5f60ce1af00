//! Relaying one session channel both ways, recording as it goes.
//!
//! Each direction runs as its own future, so a full window one way never
//! stops the other. Bytes are recorded before they are forwarded: if the
//! recording cannot take them (its cap, a write error), they are not
//! forwarded and the session ends.

use std::sync::Mutex;

use bytes::Bytes;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cast::{Cast, CastSummary, Code};
use crate::session::Conn;

/// How a relayed command ended, as its outcome record keeps it.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Relayed {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// Bytes the client sent.
    pub bytes_in: u64,
    /// Bytes sent to the client on stdout.
    pub bytes_out: u64,
    /// Bytes sent to the client on stderr.
    pub bytes_err: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<CastSummary>,
    #[serde(skip_serializing)]
    pub error: Option<String>,
}

impl Relayed {
    /// A command that never ran.
    pub fn failed(error: String) -> Self {
        Self {
            error: Some(error),
            ..Default::default()
        }
    }
}

/// The recording, shared by both directions (each holds it only while it
/// writes one event, never across an await).
struct Recorder<'a> {
    cast: Mutex<Option<Cast>>,
    conn: &'a Conn,
    client: &'a Handle,
}

impl Recorder<'_> {
    /// Records `data`; `false` when it could not be, and the session is
    /// being ended.
    async fn bytes(&self, code: Code, data: &[u8]) -> bool {
        let result = match self.cast.lock() {
            Ok(mut cast) => match cast.as_mut() {
                Some(cast) => cast.bytes(code, data),
                None => return true,
            },
            Err(_) => return false,
        };
        self.settle(result).await
    }

    async fn resize(&self, cols: u32, rows: u32) -> bool {
        let result = match self.cast.lock() {
            Ok(mut cast) => match cast.as_mut() {
                Some(cast) => cast.resize(cols, rows),
                None => return true,
            },
            Err(_) => return false,
        };
        self.settle(result).await
    }

    async fn settle(&self, result: Result<(), crate::cast::CastError>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                let reason = format!("portcullis: {e}; the session ends");
                self.conn.stop(self.client, reason).await;
                false
            }
        }
    }

    fn finish(self) -> (Option<CastSummary>, Option<String>) {
        let cast = self.cast.into_inner().ok().flatten();
        match cast.map(Cast::finish) {
            Some(Ok(summary)) => (Some(summary), None),
            Some(Err(e)) => (None, Some(e.to_string())),
            None => (None, None),
        }
    }
}

/// How a channel is recorded.
pub(crate) struct Recording {
    /// Its asciicast, for a shell or exec.
    pub cast: Option<Cast>,
    /// The client has a terminal: stderr is part of what it showed.
    pub pty: bool,
    /// What the client sends is recorded too.
    pub input: bool,
}

/// Relays `client` and `upstream` until both have closed (or the
/// connection ends), recording as `recording` says.
pub(crate) async fn run(
    conn: &Conn,
    client: Channel<Msg>,
    upstream: Channel<russh::client::Msg>,
    handle: &Handle,
    recording: Recording,
) -> Relayed {
    let id = client.id();
    let Recording {
        cast,
        pty,
        input: record_input,
    } = recording;
    let recorder = Recorder {
        cast: Mutex::new(cast),
        conn,
        client: handle,
    };
    let (mut cl_rx, cl_tx) = client.split();
    let (mut up_rx, up_tx) = upstream.split();
    let upstream_closed = CancellationToken::new();

    let to_upstream = async {
        let mut bytes_in = 0u64;
        loop {
            let msg = tokio::select! {
                m = cl_rx.wait() => m,
                () = conn.done.cancelled() => None,
                () = upstream_closed.cancelled() => None,
            };
            let sent = match msg {
                Some(ChannelMsg::Data { data }) => {
                    bytes_in += data.len() as u64;
                    if record_input && !recorder.bytes(Code::Input, &data).await {
                        break;
                    }
                    up_tx.data_bytes(data).await.is_ok()
                }
                Some(ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                }) => {
                    if !recorder.resize(col_width, row_height).await {
                        break;
                    }
                    up_tx
                        .window_change(col_width, row_height, pix_width, pix_height)
                        .await
                        .is_ok()
                }
                Some(ChannelMsg::Signal { signal }) => up_tx.signal(signal).await.is_ok(),
                Some(ChannelMsg::Eof) => up_tx.eof().await.is_ok(),
                Some(ChannelMsg::Close) | None => break,
                Some(_) => true,
            };
            if !sent {
                break;
            }
        }
        let _ = up_tx.close().await;
        bytes_in
    };

    let to_client = async {
        let mut out = Relayed::default();
        loop {
            let msg = tokio::select! {
                m = up_rx.wait() => m,
                () = conn.done.cancelled() => None,
            };
            let sent = match msg {
                Some(ChannelMsg::Data { data }) => {
                    out.bytes_out += data.len() as u64;
                    forward(&recorder, Code::Output, &data).await
                        && cl_tx.data_bytes(data).await.is_ok()
                }
                Some(ChannelMsg::ExtendedData { data, ext }) => {
                    out.bytes_err += data.len() as u64;
                    let code = if pty { Code::Output } else { Code::Stderr };
                    forward(&recorder, code, &data).await
                        && cl_tx.extended_data_bytes(ext, data).await.is_ok()
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    out.exit_status = Some(exit_status);
                    cl_tx.exit_status(exit_status).await.is_ok()
                }
                Some(ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                }) => {
                    out.exit_signal = Some(format!("{signal_name:?}"));
                    handle
                        .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                        .await
                        .is_ok()
                }
                Some(ChannelMsg::Eof) => cl_tx.eof().await.is_ok(),
                Some(ChannelMsg::Close) | None => break,
                Some(_) => true,
            };
            if !sent {
                break;
            }
        }
        let _ = cl_tx.close().await;
        upstream_closed.cancel();
        out
    };

    let (bytes_in, mut relayed) = tokio::join!(to_upstream, to_client);
    relayed.bytes_in = bytes_in;
    let (recording, error) = recorder.finish();
    relayed.recording = recording;
    if error.is_some() {
        relayed.error = error;
    }
    if let Some(reason) = conn.stopped_because.get() {
        relayed.error.get_or_insert_with(|| reason.clone());
    }
    relayed
}

/// Records `data` before it is forwarded; `false` stops the relay.
async fn forward(recorder: &Recorder<'_>, code: Code, data: &Bytes) -> bool {
    recorder.bytes(code, data).await
}
