//! Copies of the evidence outside the store (`[[audit.sinks]]`): a JSONL
//! file with rotation, stdout, syslog and an HTTP collector.
//!
//! Each sink gets every committed record as its canonical line (the exact
//! bytes its hash covers, so a copy can be checked against the chain) and
//! every checkpoint as `{"kind":"checkpoint","line":…,"signature":…}`. A
//! sink runs on a task of its own behind a bounded queue; when it falls
//! behind, lines are dropped and counted (`portcullis_sink_dropped_total`):
//! the store is the evidence and never waits for a copy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::evidence::{ChainRecord, SignedCheckpoint};
use portcullis_core::EvidenceSink;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Lines a sink may have waiting.
const QUEUE: usize = 65_536;
/// Lines sent to an HTTP collector in one request, at most.
const HTTP_BATCH: usize = 1000;
/// Tries per HTTP batch.
const HTTP_ATTEMPTS: u32 = 5;

/// One configured sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// JSON lines appended to `path`; at `max_bytes` the file is renamed
    /// `path.1` (older ones shift up to `path.<keep>`) and a new one begun.
    Jsonl {
        /// The file.
        path: PathBuf,
        /// Size that starts a new file.
        max_bytes: u64,
        /// Rotated files kept.
        keep: u32,
    },
    /// The gateway's standard output.
    Stdout,
    /// RFC 5424 messages over UDP (`host:port`) or a Unix datagram socket
    /// (an absolute path such as `/dev/log`).
    Syslog {
        /// Where to.
        address: String,
    },
    /// Batches of lines POSTed as `application/x-ndjson`, retried.
    Http {
        /// The collector.
        url: String,
        /// Sent as `Authorization: Bearer …` when set.
        bearer: Option<portcullis_core::Secret<String>>,
    },
}

impl SinkConfig {
    fn label(&self) -> &'static str {
        match self {
            SinkConfig::Jsonl { .. } => "jsonl",
            SinkConfig::Stdout => "stdout",
            SinkConfig::Syslog { .. } => "syslog",
            SinkConfig::Http { .. } => "http",
        }
    }
}

/// A running sink: the queue in front of its task.
#[derive(Debug)]
struct Sink {
    label: &'static str,
    lines: mpsc::Sender<Arc<str>>,
}

impl Sink {
    fn offer(&self, line: Arc<str>) {
        if self.lines.try_send(line).is_err() {
            metrics::counter!("portcullis_sink_dropped_total", "sink" => self.label).increment(1);
        }
    }
}

impl EvidenceSink for Sink {
    fn records(&self, records: &Arc<[ChainRecord]>) {
        for r in records.iter() {
            self.offer(Arc::from(r.line.as_str()));
        }
    }

    fn recovered(&self, lines: &[String]) {
        for line in lines {
            self.offer(Arc::from(line.as_str()));
        }
    }

    fn checkpoint(&self, checkpoint: &SignedCheckpoint) {
        let line = serde_json::json!({
            "kind": "checkpoint",
            "line": checkpoint.line,
            "signature": checkpoint.signature,
        });
        self.offer(Arc::from(line.to_string()));
    }
}

/// The sinks' tasks, to drain at shutdown.
pub struct SinkTasks(Vec<tokio::task::JoinHandle<()>>);

impl SinkTasks {
    /// Waits (up to `deadline`) for every sink to write what it was given.
    /// Call it once the recorder has finished: its end closes the queues.
    pub async fn drain(self, deadline: Duration) {
        let all = async {
            for task in self.0 {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!("evidence sinks did not finish writing before shutdown");
        }
    }
}

/// Starts every configured sink's task.
pub fn start(configs: &[SinkConfig]) -> (Vec<Arc<dyn EvidenceSink>>, SinkTasks) {
    let mut tasks = Vec::new();
    let sinks = configs
        .iter()
        .map(|config| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let config = config.clone();
            let label = config.label();
            tasks.push(tokio::spawn(async move {
                let outcome = match config {
                    SinkConfig::Jsonl {
                        path,
                        max_bytes,
                        keep,
                    } => jsonl(rx, path, max_bytes, keep).await,
                    SinkConfig::Stdout => stdout(rx).await,
                    SinkConfig::Syslog { address } => syslog(rx, &address).await,
                    SinkConfig::Http { url, bearer } => http(rx, &url, bearer).await,
                };
                if let Err(e) = outcome {
                    tracing::error!(sink = label, error = %e, "an evidence sink stopped");
                }
            }));
            Arc::new(Sink { label, lines: tx }) as Arc<dyn EvidenceSink>
        })
        .collect();
    (sinks, SinkTasks(tasks))
}

/// Takes what is queued now, at least one line; `None` once closed.
async fn next_lines(rx: &mut mpsc::Receiver<Arc<str>>, most: usize) -> Option<Vec<Arc<str>>> {
    let mut lines = Vec::new();
    (rx.recv_many(&mut lines, most).await > 0).then_some(lines)
}

async fn jsonl(
    mut rx: mpsc::Receiver<Arc<str>>,
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
) -> std::io::Result<()> {
    let mut file = open_append(&path).await?;
    let mut size = file.metadata().await?.len();
    while let Some(lines) = next_lines(&mut rx, 4096).await {
        let mut buf = Vec::new();
        for line in &lines {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        if size > 0 && size + buf.len() as u64 > max_bytes {
            file.sync_data().await?;
            rotate(&path, keep).await?;
            file = open_append(&path).await?;
            size = 0;
        }
        file.write_all(&buf).await?;
        file.flush().await?;
        size += buf.len() as u64;
    }
    file.sync_data().await
}

async fn open_append(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .await
}

/// `path` → `path.1` → … → `path.<keep>` (the oldest is dropped).
async fn rotate(path: &std::path::Path, keep: u32) -> std::io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    for n in (1..keep).rev() {
        let from = numbered(n);
        if tokio::fs::try_exists(&from).await? {
            tokio::fs::rename(&from, numbered(n + 1)).await?;
        }
    }
    if keep == 0 {
        return tokio::fs::remove_file(path).await;
    }
    tokio::fs::rename(path, numbered(1)).await
}

async fn stdout(mut rx: mpsc::Receiver<Arc<str>>) -> std::io::Result<()> {
    while let Some(lines) = next_lines(&mut rx, 4096).await {
        let mut buf = Vec::new();
        for line in &lines {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        // A blocking write on a thread of the blocking pool: a slow reader
        // of the pipe holds that thread, not a session's.
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)?;
            out.flush()
        })
        .await
        .map_err(std::io::Error::other)??;
    }
    Ok(())
}

/// RFC 5424: facility local0, severity info, one line per message.
fn syslog_message(line: &str) -> String {
    let now = portcullis_core::evidence::rfc3339(time::OffsetDateTime::now_utc());
    let host = hostname();
    format!(
        "<134>1 {now} {host} portcullis {} evidence - {line}",
        std::process::id()
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(' '))
        .unwrap_or_else(|| "-".into())
}

async fn syslog(mut rx: mpsc::Receiver<Arc<str>>, address: &str) -> std::io::Result<()> {
    if address.starts_with('/') {
        let socket = tokio::net::UnixDatagram::unbound()?;
        while let Some(lines) = next_lines(&mut rx, 256).await {
            for line in lines {
                if let Err(e) = socket
                    .send_to(syslog_message(&line).as_bytes(), address)
                    .await
                {
                    metrics::counter!("portcullis_sink_dropped_total", "sink" => "syslog")
                        .increment(1);
                    tracing::warn!(error = %e, "a syslog message was not sent");
                }
            }
        }
        return Ok(());
    }
    let socket = tokio::net::UdpSocket::bind(if address.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })
    .await?;
    socket.connect(address).await?;
    while let Some(lines) = next_lines(&mut rx, 256).await {
        for line in lines {
            if let Err(e) = socket.send(syslog_message(&line).as_bytes()).await {
                metrics::counter!("portcullis_sink_dropped_total", "sink" => "syslog").increment(1);
                tracing::warn!(error = %e, "a syslog message was not sent");
            }
        }
    }
    Ok(())
}

async fn http(
    mut rx: mpsc::Receiver<Arc<str>>,
    url: &str,
    bearer: Option<portcullis_core::Secret<String>>,
) -> std::io::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(std::io::Error::other)?;
    while let Some(lines) = next_lines(&mut rx, HTTP_BATCH).await {
        let mut body = String::new();
        for line in &lines {
            body.push_str(line);
            body.push('\n');
        }
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=HTTP_ATTEMPTS {
            let mut request = client
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(body.clone());
            if let Some(token) = &bearer {
                request = request.bearer_auth(token.expose());
            }
            let failure = match request.send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("answered {}", r.status())),
                // Without the URL: it may hold a token.
                Err(e) => Some(e.without_url().to_string()),
            };
            let Some(why) = failure else { break };
            tracing::warn!(attempt, error = %why, lines = lines.len(), "the evidence collector did not take a batch");
            if attempt == HTTP_ATTEMPTS {
                metrics::counter!("portcullis_sink_dropped_total", "sink" => "http")
                    .increment(lines.len() as u64);
                break;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    Ok(())
}
