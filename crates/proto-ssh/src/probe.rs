//! The console's health check of an SSH connection: connect, check the
//! host key against the pin and log in with the gateway's key, as a
//! session would, then disconnect.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::probe::UpstreamProbe;

use crate::upstream::{connect, AgentRoute};
use crate::SshTarget;

/// Probes one connection's upstream.
pub struct SshProbe {
    /// The connection.
    pub target: Arc<SshTarget>,
    /// Time to reach and log in.
    pub timeout: Duration,
}

#[async_trait]
impl UpstreamProbe for SshProbe {
    async fn probe(&self) -> Result<String, String> {
        let cut = tokio_util::sync::CancellationToken::new();
        let upstream = connect(
            &self.target,
            self.timeout,
            Arc::new(AgentRoute::default()),
            cut.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = upstream
            .disconnect(russh::Disconnect::ByApplication, "health check", "en")
            .await;
        cut.cancel();
        Ok("host key matches its pin; logged in with the gateway's key".into())
    }
}
