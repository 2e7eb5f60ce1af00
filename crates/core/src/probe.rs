//! Whether the gateway can reach a connection's upstream and log in to it
//! with the credential it holds, asked by the console's connections page.
//! Each adapter answers for its own connections.

use async_trait::async_trait;

/// Checks one connection's upstream.
#[async_trait]
pub trait UpstreamProbe: Send + Sync {
    /// Connects and authenticates as a session would, then hangs up.
    /// `Ok` says what was checked; `Err` why it failed, without secrets.
    async fn probe(&self) -> Result<String, String>;
}
