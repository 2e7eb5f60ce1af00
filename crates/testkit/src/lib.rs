//! Test-only helpers: throwaway PostgreSQL clusters, gateway processes, and
//! the real clients (`psql`, tokio-postgres) to drive them.
//!
//! Everything runs on loopback with ports picked at run time. Clusters are
//! started with `initdb`/`pg_ctl` (as the `postgres` user when the tests run
//! as root, since initdb refuses root) and are stopped by a watchdog when the
//! test process exits, however it exits.

mod browser;
mod cluster;
mod gateway;
mod net;
mod oidc;
mod psql;
mod sshd;

pub use browser::{screenshot_dir, Browser};
pub use cluster::{ClusterOptions, PgCluster};
pub use gateway::{Gateway, GatewayBuilder, ADMIN_TOKEN, ALICE_TOKEN, EVE_TOKEN};
pub use net::{free_port, wait_for_port};
pub use oidc::{base64url, curl, OidcProvider, TokenSet};
pub use psql::{psql, PsqlOutput};
pub use sshd::{keygen, SshLogin, Sshd};

/// Password of the `portcullis_reader` service role in every cluster.
pub const READER_PASSWORD: &str = "reader-secret-9f2c";
/// Password of the `md5_user` role (stored as MD5).
pub const MD5_PASSWORD: &str = "md5-secret-77ab";
