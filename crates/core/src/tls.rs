//! The certificate every client-facing listener presents (PostgreSQL
//! today, the API and other protocols next): configured files, or a CA and
//! server certificate generated once into `data_dir/tls`, and when a
//! credential may travel without TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;

/// When a credential may be sent without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlaintextLogin {
    /// Only from loopback clients (the default).
    #[default]
    LoopbackOnly,
    /// From anywhere (explicit opt-in).
    Allow,
    /// Never: TLS always.
    Never,
}

impl PlaintextLogin {
    /// Whether a client at `peer` may present a credential in plaintext.
    pub fn permits(self, peer: std::net::SocketAddr) -> bool {
        match self {
            PlaintextLogin::Allow => true,
            PlaintextLogin::Never => false,
            PlaintextLogin::LoopbackOnly => is_loopback(peer),
        }
    }
}

/// Whether `peer` is this machine (IPv4-mapped IPv6 included).
pub fn is_loopback(peer: std::net::SocketAddr) -> bool {
    match peer {
        std::net::SocketAddr::V4(a) => a.ip().is_loopback(),
        std::net::SocketAddr::V6(a) => {
            a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The rustls crypto provider every TLS configuration of the gateway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificates could not be generated.
    #[error("generating TLS certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A server configuration from PEM certificate chain and private key bytes.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    origin: &str,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let pem_err = |message: String| TlsError::Pem {
        path: origin.to_owned(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err("no certificate found".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_err(format!("private key: {e}")))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// PEM material for a private CA and a server certificate it issued.
pub struct GeneratedTls {
    /// The CA certificate (give this to clients as `sslrootcert`).
    pub ca_cert_pem: String,
    /// The CA's private key.
    pub ca_key_pem: String,
    /// The server certificate.
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
}

/// Generates a CA and a server certificate for `hostnames` (DNS names or IP
/// addresses), so `sslmode=verify-full` works without an outside CA.
pub fn generate_ca_and_server(hostnames: &[String]) -> Result<GeneratedTls, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis local CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(hostnames.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "portcullis");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(GeneratedTls {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Where the generated CA certificate lives, for `sslrootcert`.
pub fn ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("ca.pem")
}

/// Loads the configured certificate, or generates (once) and loads ours.
/// `alpn` names the protocols the listener speaks (ALPN), first preferred.
pub fn load_or_generate(
    files: Option<&(PathBuf, PathBuf)>,
    data_dir: &Path,
    hostnames: &[String],
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = match files {
        Some((c, k)) => (c.clone(), k.clone()),
        None => {
            let dir = data_dir.join("tls");
            let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
            if !cert.exists() || !key.exists() {
                generate(&dir, hostnames)?;
            }
            (cert, key)
        }
    };
    let cert_pem = std::fs::read(&cert).map_err(|e| io_error(&cert, e))?;
    let key_pem = std::fs::read(&key).map_err(|e| io_error(&key, e))?;
    server_config(&cert_pem, &key_pem, &cert.display().to_string(), alpn)
}

fn io_error(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn generate(dir: &Path, extra: &[String]) -> Result<(), TlsError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(extra.iter().cloned());
    let g = generate_ca_and_server(&names)?;
    crate::files::private_dir(dir).map_err(|e| io_error(dir, e))?;
    write_private(&dir.join("ca.key"), &g.ca_key_pem)?;
    write_private(&dir.join("server.key"), &g.key_pem)?;
    write_private(&dir.join("ca.pem"), &g.ca_cert_pem)?;
    write_private(&dir.join("server.pem"), &g.cert_pem)?;
    tracing::info!(ca = %dir.join("ca.pem").display(), names = ?names, "generated TLS certificate");
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| io_error(path, e))
}
