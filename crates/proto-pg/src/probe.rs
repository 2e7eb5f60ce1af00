//! The console's health check of a PostgreSQL connection: log in upstream
//! with the service credential, as a session would, then say goodbye.

use std::sync::Arc;

use async_trait::async_trait;
use portcullis_core::probe::UpstreamProbe;
use tokio::io::AsyncWriteExt;

use crate::upstream::Upstream;

/// Probes one connection's upstream.
pub struct PgProbe(pub Arc<Upstream>);

#[async_trait]
impl UpstreamProbe for PgProbe {
    async fn probe(&self) -> Result<String, String> {
        let mut session = self.0.login(&[]).await.map_err(|e| e.to_string())?;
        // Terminate, so the server logs a clean disconnection.
        let _ = session.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = session.stream.shutdown().await;
        let version = session
            .params
            .iter()
            .find(|(k, _)| k == "server_version")
            .map(|(_, v)| format!(" (PostgreSQL {v})"))
            .unwrap_or_default();
        Ok(format!("logged in as the service user{version}"))
    }
}
