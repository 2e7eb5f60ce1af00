//! `[listen] ssh`, `[ssh]` and `kind = "ssh"` connections.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_proto_ssh::SshTarget;
use serde::Deserialize;

use super::ConnectionConfig;

/// `[ssh]`: how SSH sessions are recorded.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// Record what clients type as well as what they see (off: typed
    /// passwords would be kept).
    #[serde(default)]
    pub record_input: bool,
    /// The most one session's recordings may take (`256MiB` unless set);
    /// a session that reaches it is ended.
    pub max_recording_size: Option<String>,
    /// Seconds before a session's token-expiry end that its terminals are
    /// warned (60 unless set).
    pub expiry_warning_secs: Option<u64>,
    /// The longest an SSH user certificate from `portcullis login` lives
    /// (3600 s unless set); never longer than the token it was issued for.
    pub certificate_lifetime_secs: Option<u64>,
}

/// The validated `[ssh]`.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// See [`SshConfig::record_input`].
    pub record_input: bool,
    /// See [`SshConfig::max_recording_size`].
    pub max_recording_bytes: u64,
    /// See [`SshConfig::expiry_warning_secs`].
    pub expiry_warning: Duration,
    /// See [`SshConfig::certificate_lifetime_secs`].
    pub certificate_lifetime: Duration,
}

/// Default cap on one session's recordings.
const DEFAULT_RECORDING_CAP: u64 = 256 << 20;

/// Validates `[ssh]`; `Err`: the offending (key, message).
pub fn options(raw: SshConfig) -> Result<SshOptions, (String, String)> {
    let max_recording_bytes = match raw.max_recording_size.as_deref() {
        None => DEFAULT_RECORDING_CAP,
        Some(text) => super::audit::parse_size(text)
            .filter(|n| *n >= 4096)
            .ok_or_else(|| {
                (
                    "ssh.max_recording_size".to_owned(),
                    format!("{text:?} is not a size of at least 4096 bytes, such as 256MiB"),
                )
            })?,
    };
    Ok(SshOptions {
        record_input: raw.record_input,
        max_recording_bytes,
        expiry_warning: Duration::from_secs(raw.expiry_warning_secs.unwrap_or(60)),
        certificate_lifetime: Duration::from_secs(
            raw.certificate_lifetime_secs
                .unwrap_or(3600)
                .clamp(60, 7 * 24 * 3600),
        ),
    })
}

/// The target of a `kind = "ssh"` connection at `key`; paths go through
/// `abs`. `Err`: the offending (key, message).
pub fn target(
    key: &str,
    c: &ConnectionConfig,
    abs: impl Fn(&Path) -> PathBuf,
) -> Result<SshTarget, (String, String)> {
    let field = |f: &str, message: String| (format!("{key}.{f}"), message);
    if c.user.is_empty() {
        return Err(field("user", "must name the account on the server".into()));
    }
    for (set, name) in [
        (!c.database.is_empty(), "database"),
        (c.password_env.is_some(), "password_env"),
        (c.password_file.is_some(), "password_file"),
        (c.upstream_tls.is_some(), "upstream_tls"),
    ] {
        if set {
            return Err(field(name, "does not apply to kind = \"ssh\"".into()));
        }
    }
    let key_text = match (&c.private_key_file, &c.private_key_env) {
        (Some(file), None) => {
            let path = abs(file);
            let mode = std::fs::metadata(&path)
                .map_err(|e| {
                    field(
                        "private_key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(field(
                    "private_key_file",
                    format!(
                        "{} is readable by others (mode {:o}); make it 0600",
                        path.display(),
                        mode & 0o777
                    ),
                ));
            }
            std::fs::read_to_string(&path).map_err(|e| {
                field(
                    "private_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?
        }
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            field(
                "private_key_env",
                format!("environment variable {var} is not set"),
            )
        })?,
        _ => {
            return Err((
                key.to_owned(),
                "set exactly one of private_key_file and private_key_env".into(),
            ))
        }
    };
    let Some(host_key) = c.host_key.as_deref() else {
        return Err(field(
            "host_key",
            "must pin the server's host key (ssh-keyscan prints it); an unpinned server could be anyone".into(),
        ));
    };
    SshTarget::new(&c.name, &c.upstream, &c.user, &key_text, host_key).map_err(|e| {
        let name = match e {
            portcullis_proto_ssh::TargetError::HostKey(_) => "host_key",
            _ if c.private_key_file.is_some() => "private_key_file",
            _ => "private_key_env",
        };
        field(name, e.to_string())
    })
}
