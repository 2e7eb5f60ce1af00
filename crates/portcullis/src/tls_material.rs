//! The client-facing certificate: configured files, or a CA and server
//! certificate generated once into `data_dir/tls`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;

/// Where the generated CA certificate lives, for `sslrootcert`.
pub fn ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("ca.pem")
}

/// Loads the configured certificate, or generates (once) and loads ours.
pub fn load_or_generate(
    files: Option<&(PathBuf, PathBuf)>,
    data_dir: &Path,
    hostnames: &[String],
) -> anyhow::Result<Arc<ServerConfig>> {
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
    let cert_pem = std::fs::read(&cert)
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?;
    let key_pem =
        std::fs::read(&key).with_context(|| format!("reading TLS key {}", key.display()))?;
    Ok(portcullis_proto_pg::tls::server_config(
        &cert_pem,
        &key_pem,
        &cert.display().to_string(),
    )?)
}

fn generate(dir: &Path, extra: &[String]) -> anyhow::Result<()> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(extra.iter().cloned());
    let g = portcullis_proto_pg::tls::generate_ca_and_server(&names)
        .context("generating TLS certificates")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(&dir.join("ca.key"), &g.ca_key_pem)?;
    write_private(&dir.join("server.key"), &g.key_pem)?;
    std::fs::write(dir.join("ca.pem"), &g.ca_cert_pem)?;
    std::fs::write(dir.join("server.pem"), &g.cert_pem)?;
    tracing::info!(ca = %dir.join("ca.pem").display(), names = ?names, "generated TLS certificate");
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
