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

/// The weakest password exchange the gateway answers for its service
/// credential, like libpq's `require_auth`: anything that can pose as the
/// upstream (with `upstream_tls` below `verify-full`) could otherwise ask
/// for the password in a form it can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamAuth {
    /// SCRAM-SHA-256 only: the server proves it knows the password too,
    /// and nothing reusable crosses the wire.
    #[default]
    ScramSha256,
    /// SCRAM, or md5 (a hash an impostor can replay to the real server).
    Md5,
    /// SCRAM, md5, or the password in clear, which is answered only over
    /// verified TLS (`upstream_tls = "verify-full"`).
    Password,
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
    /// The weakest password exchange answered.
    pub auth: UpstreamAuth,
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
