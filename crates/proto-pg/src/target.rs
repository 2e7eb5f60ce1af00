//! How the adapter reaches one upstream PostgreSQL server.

use std::path::PathBuf;

use portcullis_core::Secret;

/// TLS towards the upstream, as in libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamTls {
    /// Plain TCP.
    #[default]
    Disable,
    /// Encrypt, but do not verify the server's certificate.
    Require,
    /// Encrypt and verify the certificate chain and host name.
    VerifyFull,
}

/// A configured PostgreSQL connection (target).
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// The name clients use as their database name.
    pub name: String,
    /// `host:port` of the upstream.
    pub upstream: String,
    /// The upstream database.
    pub database: String,
    /// The service user the gateway logs in as.
    pub user: String,
    /// The service user's password, if the upstream asks for one.
    pub password: Option<Secret<String>>,
    /// TLS towards the upstream.
    pub tls: UpstreamTls,
    /// CA bundle for `VerifyFull`; the system roots when absent.
    pub ca_file: Option<PathBuf>,
}

impl PgTarget {
    /// The host part of `upstream`, for TLS name checks.
    pub fn host(&self) -> &str {
        let s = self
            .upstream
            .rsplit_once(':')
            .map_or(self.upstream.as_str(), |(h, _)| h);
        s.trim_start_matches('[').trim_end_matches(']')
    }
}
