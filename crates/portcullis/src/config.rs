//! The configuration file: parsing, validation, and resolution of secrets.
//!
//! Relative paths are resolved against the directory holding the config
//! file, so `portcullis serve --config /etc/portcullis/portcullis.toml`
//! behaves the same from any working directory. Every error names the file,
//! the key and what is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_core::{Secret, StaticToken};
use serde::Deserialize;
use thiserror::Error;

/// A configuration problem, naming the file and key.
#[derive(Debug, Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// The key (`connections[0].password_env`, …) or `<file>` for the whole.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The whole file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Store, keys and generated TLS material.
    pub data_dir: PathBuf,
    /// Listener addresses.
    pub listen: Listen,
    /// Static tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Targets.
    #[serde(default)]
    pub connections: Vec<ConnectionConfig>,
    /// Cedar policies.
    pub policy: PolicyConfig,
    /// Client-facing TLS.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Protective limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Recording.
    #[serde(default)]
    pub audit: audit::AuditConfig,
    /// Trusted OpenID Connect issuers.
    #[serde(default)]
    pub oidc: Vec<identity::OidcConfig>,
    /// Token expiry and key refresh.
    #[serde(default)]
    pub auth: identity::AuthConfig,
    /// The gateway's own tokens.
    #[serde(default)]
    pub token_exchange: identity::TokenExchangeConfig,
    /// What `portcullis login` uses.
    pub login: Option<identity::LoginConfig>,
    /// Result masking.
    #[serde(default)]
    pub masking: masking::MaskingConfig,
    /// Threads.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Reviews.
    #[serde(default)]
    pub approvals: approvals::ApprovalsConfig,
    /// Outgoing webhooks for reviews and grants.
    #[serde(default)]
    pub webhooks: Vec<approvals::WebhookConfig>,
    /// `[ssh]`.
    #[serde(default)]
    pub ssh: ssh::SshConfig,
    /// `[console]`.
    #[serde(default)]
    pub console: console::ConsoleConfig,
}

/// `[runtime]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads that run client sessions; 0 means one per CPU.
    pub session_threads: usize,
}

/// `[listen]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// PostgreSQL listener, e.g. `127.0.0.1:15432`.
    pub postgres: Option<String>,
    /// SSH listener, e.g. `127.0.0.1:2222`.
    pub ssh: Option<String>,
    /// REST API, `/healthz` and `/metrics`.
    pub api: Option<String>,
}

/// `[[tokens]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The user the token authenticates.
    pub user: String,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The token in clear.
    pub token: Option<String>,
    /// Or its SHA-256, hex.
    pub token_sha256: Option<String>,
}

/// `[[connections]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Name clients use as their database name (PostgreSQL) or user name
    /// (SSH).
    pub name: String,
    /// `postgres` or `ssh`.
    pub kind: String,
    /// `host:port`.
    pub upstream: String,
    /// Upstream database (PostgreSQL).
    #[serde(default)]
    pub database: String,
    /// Service user.
    pub user: String,
    /// Environment variable holding the service password.
    pub password_env: Option<String>,
    /// File holding the service password (first line).
    pub password_file: Option<PathBuf>,
    /// `disable` (default), `require` or `verify-full`.
    #[serde(default)]
    pub upstream_tls: Option<String>,
    /// CA bundle for `verify-full` (system roots otherwise).
    pub upstream_ca: Option<PathBuf>,
    /// `scram-sha-256` (default), `md5` or `password`: the weakest
    /// password exchange answered.
    #[serde(default)]
    pub upstream_auth: Option<String>,
    /// A role with CREATEROLE that makes a temporary upstream role for
    /// each approved grant; without it grants only reach policies.
    pub grant_admin_user: Option<String>,
    /// Environment variable holding its password.
    pub grant_admin_password_env: Option<String>,
    /// Or a file holding it (first line).
    pub grant_admin_password_file: Option<PathBuf>,
    /// The roles grants may give upstream.
    #[serde(default)]
    pub grant_roles: Vec<String>,
    /// What a grant's role owns when it ends: `drop` (default) or
    /// `reassign:<role>`.
    pub grant_owned: Option<String>,
    /// The prefix of grant roles' names (`portcullis_grant_`); gateways
    /// sharing an upstream need one each.
    pub grant_role_prefix: Option<String>,
    /// SSH: the gateway's private key for `user` on the server.
    pub private_key_file: Option<PathBuf>,
    /// SSH: or an environment variable holding it.
    pub private_key_env: Option<String>,
    /// SSH: the server's host key, pinned (`ssh-ed25519 AAAA…`).
    pub host_key: Option<String>,
}

/// `[policy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory of `*.cedar` files.
    pub dir: PathBuf,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM); generated in `data_dir/tls` when absent.
    pub cert: Option<PathBuf>,
    /// Private key (PEM).
    pub key: Option<PathBuf>,
    /// Names for the generated certificate (besides localhost, 127.0.0.1, ::1).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// `loopback` (default): plaintext token login only from loopback
    /// clients; `always`; or `never`.
    pub plaintext_login: Option<String>,
    /// The same for plaintext HTTP on the API port, where bearer tokens
    /// and `/oauth/token` travel.
    pub plaintext_api: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest protocol message in either direction.
    pub max_message_bytes: usize,
    /// Seconds a partly sent client message may stall.
    pub message_timeout_secs: u64,
    /// Seconds from connect to a ready session.
    pub login_timeout_secs: u64,
    /// Seconds to connect and log in upstream.
    pub upstream_connect_timeout_secs: u64,
    /// Named prepared statements per session.
    pub max_prepared_statements: usize,
    /// Messages per session sent upstream and not yet answered.
    pub max_unanswered_messages: usize,
    /// Connections logging in at once, over every listener.
    pub max_unauthenticated: usize,
    /// Connections logging in at once from one source address.
    pub max_unauthenticated_per_address: usize,
    /// API connections open at once.
    pub api_max_connections: usize,
    /// API connections open at once from one source address.
    pub api_max_connections_per_address: usize,
    /// Seconds an API client has to send a request's header.
    pub api_header_timeout_secs: u64,
    /// Seconds an API request may take, body and answer.
    pub api_request_timeout_secs: u64,
    /// Seconds shutdown waits for API requests in flight.
    pub shutdown_deadline_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            message_timeout_secs: 30,
            login_timeout_secs: 15,
            upstream_connect_timeout_secs: 10,
            max_prepared_statements: 10_000,
            max_unanswered_messages: 65_536,
            max_unauthenticated: 2048,
            max_unauthenticated_per_address: 512,
            api_max_connections: 512,
            api_max_connections_per_address: 64,
            api_header_timeout_secs: 10,
            api_request_timeout_secs: 30,
            shutdown_deadline_secs: 10,
        }
    }
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: Option<String>,
    /// A tracing filter such as `info` or `portcullis=debug`.
    pub level: Option<String>,
}

/// A connection with its secret resolved.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Name.
    pub name: String,
    /// `host:port`.
    pub upstream: String,
    /// Database.
    pub database: String,
    /// Service user.
    pub user: String,
    /// Service password.
    pub password: Option<Secret<String>>,
    /// Upstream TLS.
    pub tls: portcullis_proto_pg::UpstreamTls,
    /// The weakest password exchange answered.
    pub auth: portcullis_proto_pg::UpstreamAuth,
    /// CA for verify-full.
    pub ca_file: Option<PathBuf>,
    /// Temporary upstream roles for grants, when configured.
    pub grants: Option<portcullis_proto_pg::GrantProvisioning>,
}

/// The validated configuration, paths absolute and secrets resolved.
#[derive(Debug)]
pub struct Config {
    /// The data directory.
    pub data_dir: PathBuf,
    /// PostgreSQL listener.
    pub postgres_listen: Option<String>,
    /// API listener.
    pub api_listen: Option<String>,
    /// SSH listener.
    pub ssh_listen: Option<String>,
    /// `kind = "ssh"` connections.
    pub ssh_targets: Vec<portcullis_proto_ssh::SshTarget>,
    /// `[ssh]`.
    pub ssh: ssh::SshOptions,
    /// Static tokens (digests only).
    pub tokens: Vec<StaticToken>,
    /// Targets.
    pub connections: Vec<Connection>,
    /// Policy directory.
    pub policy_dir: PathBuf,
    /// Configured certificate and key, if any.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Extra names for the generated certificate.
    pub tls_hostnames: Vec<String>,
    /// Plaintext login rule.
    pub plaintext: portcullis_core::tls::PlaintextLogin,
    /// Limits.
    pub limits: portcullis_proto_pg::Limits,
    /// Seconds for upstream login.
    pub upstream_connect_timeout: Duration,
    /// Caps on connections logging in.
    pub preauth: portcullis_core::preauth::PreAuthLimits,
    /// Where plaintext HTTP is accepted on the API port.
    pub plaintext_api: portcullis_core::tls::PlaintextLogin,
    /// API connections open at once, overall and per address.
    pub api_connections: portcullis_core::preauth::PreAuthLimits,
    /// Time to send an API request's header.
    pub api_header_timeout: Duration,
    /// Time an API request may take.
    pub api_request_timeout: Duration,
    /// How long shutdown waits for API requests in flight.
    pub shutdown_deadline: Duration,
    /// Reviews: waits and validity.
    pub approvals: portcullis_core::approvals::ReviewSettings,
    /// Outgoing webhooks.
    pub webhooks: Vec<crate::webhooks::Webhook>,
    /// Log format is JSON.
    pub log_json: bool,
    /// Log filter.
    pub log_level: String,
    /// Record every statement.
    pub record_statements: bool,
    /// How the evidence is kept.
    pub audit: audit::AuditSettings,
    /// Issuers, token exchange and login.
    pub identity: identity::IdentitySettings,
    /// Result masking.
    pub masking: portcullis_core::masking::MaskingRules,
    /// Threads that run client sessions (at least one).
    pub session_threads: usize,
    /// The web console.
    pub console: console::ConsoleSettings,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "<file>".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Only the policy directory, for the policy tools: they need neither
    /// secrets nor listeners, so a config whose secrets are not in this
    /// environment still works.
    pub fn policy_dir(path: &Path) -> Result<PathBuf, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, message: String| ConfigError {
            file: file.clone(),
            key: key.into(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("<file>", format!("cannot read: {e}")))?;
        let raw: RawConfig =
            toml::from_str(&text).map_err(|e| err("<file>", e.message().to_owned()))?;
        let dir = raw.policy.dir;
        if dir.is_absolute() {
            return Ok(dir);
        }
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok(base.join(dir))
    }

    /// Only `data_dir` and `[audit]`, for the audit tools: an auditor
    /// verifying evidence has neither the connections' secrets nor needs
    /// them.
    pub fn audit_only(path: &Path) -> Result<(PathBuf, audit::AuditSettings), ConfigError> {
        let file = path.display().to_string();
        let err = |key: String, message: String| ConfigError {
            file: file.clone(),
            key,
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("<file>".into(), format!("cannot read: {e}")))?;
        let raw: RawConfig =
            toml::from_str(&text).map_err(|e| err("<file>".into(), e.message().to_owned()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let settings = audit::validate(raw.audit, abs).map_err(|(k, m)| err(k, m))?;
        Ok((abs(&raw.data_dir), settings))
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let err = |key: String, message: String| ConfigError {
            file: file.clone(),
            key,
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map(|s| {
                    format!(
                        "line {}",
                        text[..s.start.min(text.len())].lines().count().max(1)
                    )
                })
                .unwrap_or_else(|| "<file>".into());
            err(key, e.message().to_owned())
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                // Drop `.` components so logs show clean paths.
                base.join(
                    p.components()
                        .filter(|c| !matches!(c, std::path::Component::CurDir))
                        .collect::<PathBuf>(),
                )
            }
        };

        if raw.listen.postgres.is_none() && raw.listen.ssh.is_none() && raw.listen.api.is_none() {
            return Err(err(
                "listen".into(),
                "set at least one of postgres, ssh or api".into(),
            ));
        }
        for (key, addr) in [
            ("listen.postgres", &raw.listen.postgres),
            ("listen.ssh", &raw.listen.ssh),
            ("listen.api", &raw.listen.api),
        ] {
            if let Some(a) = addr {
                a.parse::<std::net::SocketAddr>()
                    .map_err(|e| err(key.into(), format!("{a:?} is not an address:port ({e})")))?;
            }
        }

        let mut tokens = Vec::new();
        for (i, t) in raw.tokens.iter().enumerate() {
            let key = format!("tokens[{i}]");
            if t.user.is_empty() {
                return Err(err(format!("{key}.user"), "must not be empty".into()));
            }
            let entry = match (&t.token, &t.token_sha256) {
                (Some(clear), None) => {
                    if clear.len() < 8 {
                        return Err(err(
                            format!("{key}.token"),
                            "must be at least 8 characters".into(),
                        ));
                    }
                    StaticToken::from_clear(&t.user, t.groups.clone(), clear)
                }
                (None, Some(hexed)) => {
                    let bytes = hex::decode(hexed.trim())
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or_else(|| {
                            err(
                                format!("{key}.token_sha256"),
                                "must be 64 hex digits".into(),
                            )
                        })?;
                    StaticToken {
                        user: t.user.clone(),
                        groups: t.groups.clone(),
                        sha256: bytes,
                    }
                }
                _ => {
                    return Err(err(key, "set exactly one of token or token_sha256".into()));
                }
            };
            tokens.push(entry);
        }

        let mut connections: Vec<Connection> = Vec::new();
        let mut ssh_targets = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, c) in raw.connections.iter().enumerate() {
            let key = format!("connections[{i}]");
            if c.name.is_empty() || !names.insert(c.name.as_str()) {
                return Err(err(
                    format!("{key}.name"),
                    format!("{:?} is empty or used twice", c.name),
                ));
            }
            if !c.upstream.contains(':') {
                return Err(err(
                    format!("{key}.upstream"),
                    format!("{:?} must be host:port", c.upstream),
                ));
            }
            match c.kind.as_str() {
                "postgres" => {}
                "ssh" => {
                    ssh_targets.push(ssh::target(&key, c, abs).map_err(|(k, m)| err(k, m))?);
                    continue;
                }
                other => {
                    return Err(err(
                        format!("{key}.kind"),
                        format!("unsupported kind {other:?} (supported: postgres, ssh)"),
                    ))
                }
            }
            if c.database.is_empty() {
                return Err(err(format!("{key}.database"), "must be set".into()));
            }
            for (set, name) in [
                (c.private_key_file.is_some(), "private_key_file"),
                (c.private_key_env.is_some(), "private_key_env"),
                (c.host_key.is_some(), "host_key"),
            ] {
                if set {
                    return Err(err(
                        format!("{key}.{name}"),
                        "does not apply to kind = \"postgres\"".into(),
                    ));
                }
            }
            let password_file = c.password_file.as_deref().map(abs);
            let fields = ("password_env", "password_file");
            let password = read_secret(&key, fields, &c.password_env, &password_file)
                .map_err(|(key, message)| err(key, message))?;
            let grants = approvals::grant_provisioning(&key, c, abs)
                .map_err(|(key, message)| err(key, message))?;
            let tls = match c.upstream_tls.as_deref().unwrap_or("disable") {
                "disable" => portcullis_proto_pg::UpstreamTls::Disable,
                "require" => portcullis_proto_pg::UpstreamTls::Require,
                "verify-full" => portcullis_proto_pg::UpstreamTls::VerifyFull,
                other => {
                    return Err(err(
                        format!("{key}.upstream_tls"),
                        format!("{other:?} is not one of disable, require, verify-full"),
                    ))
                }
            };
            let auth = match c.upstream_auth.as_deref().unwrap_or("scram-sha-256") {
                "scram-sha-256" => portcullis_proto_pg::UpstreamAuth::ScramSha256,
                "md5" => portcullis_proto_pg::UpstreamAuth::Md5,
                "password" if tls == portcullis_proto_pg::UpstreamTls::VerifyFull => {
                    portcullis_proto_pg::UpstreamAuth::Password
                }
                "password" => {
                    return Err(err(
                        format!("{key}.upstream_auth"),
                        "\"password\" sends the service password in clear: it needs upstream_tls = \"verify-full\"".into(),
                    ))
                }
                other => {
                    return Err(err(
                        format!("{key}.upstream_auth"),
                        format!("{other:?} is not one of scram-sha-256, md5, password"),
                    ))
                }
            };
            connections.push(Connection {
                name: c.name.clone(),
                upstream: c.upstream.clone(),
                database: c.database.clone(),
                user: c.user.clone(),
                password,
                tls,
                auth,
                ca_file: c.upstream_ca.as_deref().map(abs),
                grants,
            });
        }

        let tls_files = match (&raw.tls.cert, &raw.tls.key) {
            (Some(c), Some(k)) => Some((abs(c), abs(k))),
            (None, None) => None,
            _ => {
                return Err(err(
                    "tls".into(),
                    "set both cert and key, or neither".into(),
                ))
            }
        };
        let plaintext = plaintext_rule("tls.plaintext_login", raw.tls.plaintext_login.as_deref())
            .map_err(|(k, m)| err(k, m))?;
        let plaintext_api = plaintext_rule("tls.plaintext_api", raw.tls.plaintext_api.as_deref())
            .map_err(|(k, m)| err(k, m))?;
        let l = &raw.limits;
        if l.max_message_bytes < 8192 || l.max_message_bytes > (1 << 30) {
            return Err(err(
                "limits.max_message_bytes".into(),
                "must be between 8192 and 1073741824".into(),
            ));
        }
        if l.max_unauthenticated == 0 || l.max_unauthenticated_per_address == 0 {
            return Err(err(
                "limits.max_unauthenticated".into(),
                "the caps on connections logging in must be at least 1".into(),
            ));
        }
        if l.max_unanswered_messages < 64 {
            return Err(err(
                "limits.max_unanswered_messages".into(),
                "must be at least 64".into(),
            ));
        }
        if raw.runtime.session_threads > 1024 {
            return Err(err(
                "runtime.session_threads".into(),
                "must be at most 1024 (0 means one per CPU)".into(),
            ));
        }
        let session_threads = match raw.runtime.session_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let log_json = match raw.log.format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => {
                return Err(err(
                    "log.format".into(),
                    format!("{other:?} is not one of text, json"),
                ))
            }
        };
        let mut identity = identity::validate(
            raw.oidc,
            raw.auth,
            raw.token_exchange,
            raw.login,
            raw.listen.postgres.as_deref(),
        )
        .map_err(|(key, message)| err(key, message))?;
        if let Some(login) = identity.login.as_mut() {
            login.ssh = raw.listen.ssh.is_some();
        }
        let names: Vec<String> = connections.iter().map(|c| c.name.clone()).collect();
        let masking =
            masking::validate(raw.masking, &names).map_err(|(key, message)| err(key, message))?;
        let approvals =
            approvals::validate(raw.approvals).map_err(|(key, message)| err(key, message))?;
        let webhooks =
            approvals::webhooks(&raw.webhooks, abs).map_err(|(key, message)| err(key, message))?;
        let record_statements = raw.audit.record_statements;
        let ssh = ssh::options(raw.ssh).map_err(|(key, message)| err(key, message))?;
        let console = console::validate(raw.console).map_err(|(key, message)| err(key, message))?;
        let audit = audit::validate(raw.audit, abs).map_err(|(key, message)| err(key, message))?;
        Ok(Config {
            console,
            approvals,
            webhooks,
            identity,
            masking,
            data_dir: abs(&raw.data_dir),
            postgres_listen: raw.listen.postgres,
            api_listen: raw.listen.api,
            ssh_listen: raw.listen.ssh,
            ssh_targets,
            ssh,
            tokens,
            connections,
            policy_dir: abs(&raw.policy.dir),
            tls_files,
            tls_hostnames: raw.tls.hostnames,
            plaintext,
            limits: portcullis_proto_pg::Limits {
                max_message_bytes: l.max_message_bytes,
                message_timeout: Duration::from_secs(l.message_timeout_secs.max(1)),
                login_timeout: Duration::from_secs(l.login_timeout_secs.max(1)),
                max_prepared_statements: l.max_prepared_statements,
                max_unanswered_messages: l.max_unanswered_messages,
            },
            upstream_connect_timeout: Duration::from_secs(l.upstream_connect_timeout_secs.max(1)),
            preauth: portcullis_core::preauth::PreAuthLimits {
                global: l.max_unauthenticated,
                per_address: l.max_unauthenticated_per_address,
            },
            plaintext_api,
            api_connections: portcullis_core::preauth::PreAuthLimits {
                global: l.api_max_connections.max(1),
                per_address: l.api_max_connections_per_address.max(1),
            },
            api_header_timeout: Duration::from_secs(l.api_header_timeout_secs.max(1)),
            api_request_timeout: Duration::from_secs(l.api_request_timeout_secs.max(1)),
            shutdown_deadline: Duration::from_secs(l.shutdown_deadline_secs),
            log_json,
            log_level: raw.log.level.unwrap_or_else(|| "info".into()),
            record_statements,
            audit,
            session_threads,
        })
    }
}

/// A secret from the environment variable `env` names or the first line
/// of `file` (its path already resolved); `fields` are the two keys'
/// names for messages. `Err`: the offending (key, message).
pub(crate) fn read_secret(
    key: &str,
    fields: (&str, &str),
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret<String>>, (String, String)> {
    let (env_field, file_field) = fields;
    match (env, file) {
        (Some(_), Some(_)) => Err((
            key.to_owned(),
            format!("set at most one of {env_field} and {file_field}"),
        )),
        (Some(var), None) => std::env::var(var)
            .map(|v| Some(Secret::new(v)))
            .map_err(|_| {
                (
                    format!("{key}.{env_field}"),
                    format!("environment variable {var} is not set"),
                )
            }),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).map_err(|e| {
                (
                    format!("{key}.{file_field}"),
                    format!("cannot read {}: {e}", f.display()),
                )
            })?;
            Ok(Some(Secret::new(
                text.lines().next().unwrap_or_default().to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

pub mod approvals;
pub mod audit;
pub mod console;
pub mod identity;
pub mod masking;
pub mod ssh;

#[cfg(test)]
mod tests;

/// A `loopback | always | never` rule for plaintext, or the offending
/// (key, message).
fn plaintext_rule(
    key: &str,
    value: Option<&str>,
) -> Result<portcullis_core::tls::PlaintextLogin, (String, String)> {
    Ok(match value.unwrap_or("loopback") {
        "loopback" => portcullis_core::tls::PlaintextLogin::LoopbackOnly,
        "always" => portcullis_core::tls::PlaintextLogin::Allow,
        "never" => portcullis_core::tls::PlaintextLogin::Never,
        other => {
            return Err((
                key.into(),
                format!("{other:?} is not one of loopback, always, never"),
            ))
        }
    })
}
