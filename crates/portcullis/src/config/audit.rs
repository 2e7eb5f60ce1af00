//! `[audit]`: what is recorded, how strictly, and how the evidence is
//! sealed and kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_core::approvals::rule::parse_duration;

use crate::sinks::SinkConfig;
use serde::Deserialize;

/// `[audit]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record every statement; sessions are recorded regardless.
    pub record_statements: bool,
    /// `strict` (the default): no statement is forwarded before its
    /// record is committed. `buffered`: records are committed after the
    /// statement ran, and a killed gateway can lose the last ~10 ms.
    pub mode: String,
    /// A signed checkpoint after this many records (10000)…
    pub checkpoint_every: u64,
    /// …or this long (60s), even when nothing happened.
    pub checkpoint_interval: Option<String>,
    /// A file each checkpoint is also appended to, on storage the store's
    /// administrators do not control.
    pub checkpoint_file: Option<PathBuf>,
    /// Prune evidence older than this (`90d`), whole segments behind a
    /// checkpoint only. Unset: keep everything.
    pub retention: Option<String>,
    /// Prune the oldest segments while the store is larger than this
    /// (`10GiB`, `500MiB`). Unset: no size limit.
    pub retention_max_size: Option<String>,
    /// Copies of the evidence outside the store.
    pub sinks: Vec<RawSink>,
}

/// `[[audit.sinks]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    /// `jsonl`, `stdout`, `syslog` or `http`.
    pub kind: String,
    /// jsonl: the file.
    pub path: Option<PathBuf>,
    /// jsonl: size that starts a new file (100MiB).
    pub max_size: Option<String>,
    /// jsonl: rotated files kept (5).
    pub keep: Option<u32>,
    /// syslog: `host:port` (UDP) or a socket path (`/dev/log`).
    pub address: Option<String>,
    /// http: the collector's URL.
    pub url: Option<String>,
    /// http: a bearer token from this environment variable…
    pub bearer_env: Option<String>,
    /// …or the first line of this file.
    pub bearer_file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            record_statements: true,
            mode: "strict".into(),
            checkpoint_every: 10_000,
            checkpoint_interval: None,
            checkpoint_file: None,
            retention: None,
            retention_max_size: None,
            sinks: Vec::new(),
        }
    }
}

/// `[audit]`, validated.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Statements wait for their records before they are forwarded.
    pub strict: bool,
    /// Records between checkpoints.
    pub checkpoint_every: u64,
    /// Time between checkpoints.
    pub checkpoint_interval: Duration,
    /// Where checkpoints are exported, absolute.
    pub checkpoint_file: Option<PathBuf>,
    /// Age past which evidence is pruned.
    pub retention: Option<Duration>,
    /// Size past which the oldest evidence is pruned.
    pub retention_max_bytes: Option<u64>,
    /// Copies of the evidence outside the store.
    pub sinks: Vec<SinkConfig>,
}

/// The settings, or the offending (key, message).
pub fn validate(
    raw: AuditConfig,
    abs: impl Fn(&Path) -> PathBuf,
) -> Result<AuditSettings, (String, String)> {
    let strict = match raw.mode.as_str() {
        "strict" => true,
        "buffered" => false,
        other => {
            return Err((
                "audit.mode".into(),
                format!("{other:?} is not a mode: use \"strict\" or \"buffered\""),
            ))
        }
    };
    if raw.checkpoint_every == 0 {
        return Err(("audit.checkpoint_every".into(), "must be at least 1".into()));
    }
    let duration = |key: &str, value: Option<String>| {
        value
            .map(|text| parse_duration(&text).map_err(|e| (format!("audit.{key}"), e)))
            .transpose()
    };
    let sinks = raw
        .sinks
        .iter()
        .enumerate()
        .map(|(i, sink)| validate_sink(&format!("audit.sinks[{i}]"), sink, &abs))
        .collect::<Result<_, _>>()?;
    Ok(AuditSettings {
        sinks,
        strict,
        checkpoint_every: raw.checkpoint_every,
        checkpoint_interval: duration("checkpoint_interval", raw.checkpoint_interval)?
            .unwrap_or(Duration::from_secs(60)),
        checkpoint_file: raw.checkpoint_file.as_deref().map(abs),
        retention: duration("retention", raw.retention)?,
        retention_max_bytes: raw
            .retention_max_size
            .map(|text| {
                parse_size(&text).ok_or_else(|| {
                    (
                        "audit.retention_max_size".into(),
                        format!("{text:?} is not a size such as 500MiB or 10GiB"),
                    )
                })
            })
            .transpose()?,
    })
}

fn validate_sink(
    key: &str,
    raw: &RawSink,
    abs: &impl Fn(&Path) -> PathBuf,
) -> Result<SinkConfig, (String, String)> {
    let missing = |field: &str| {
        (
            format!("{key}.{field}"),
            format!("a {} sink needs {field}", raw.kind),
        )
    };
    match raw.kind.as_str() {
        "jsonl" => Ok(SinkConfig::Jsonl {
            path: abs(raw.path.as_deref().ok_or_else(|| missing("path"))?),
            max_bytes: match &raw.max_size {
                None => 100 << 20,
                Some(text) => parse_size(text).ok_or_else(|| {
                    (
                        format!("{key}.max_size"),
                        format!("{text:?} is not a size such as 100MiB"),
                    )
                })?,
            },
            keep: raw.keep.unwrap_or(5),
        }),
        "stdout" => Ok(SinkConfig::Stdout),
        "syslog" => Ok(SinkConfig::Syslog {
            address: raw.address.clone().ok_or_else(|| missing("address"))?,
        }),
        "http" => {
            let url = raw.url.clone().ok_or_else(|| missing("url"))?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err((format!("{key}.url"), "must be an http(s) URL".into()));
            }
            let file = raw.bearer_file.as_deref().map(abs);
            let bearer = crate::config::read_secret(
                key,
                ("bearer_env", "bearer_file"),
                &raw.bearer_env,
                &file,
            )?;
            Ok(SinkConfig::Http { url, bearer })
        }
        other => Err((
            format!("{key}.kind"),
            format!("{other:?} is not a sink: use jsonl, stdout, syslog or http"),
        )),
    }
}

/// `500MiB`, `10GiB`, `4096` (bytes).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        "TiB" | "TB" | "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(scale).filter(|b| *b > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_binary_units_and_bad_ones_are_named() {
        assert_eq!(parse_size("500MiB"), Some(500 << 20));
        assert_eq!(parse_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("0"), None);
        let raw = AuditConfig {
            mode: "lax".into(),
            ..Default::default()
        };
        let (key, message) = validate(raw, Path::to_path_buf).unwrap_err();
        assert_eq!(key, "audit.mode");
        assert!(message.contains("lax"));
    }
}
