//! The user's stored login: the gateway token and what is needed to renew
//! it, kept in the user's config directory with mode 0600.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What `portcullis login` stores.
#[derive(Serialize, Deserialize)]
pub struct Credentials {
    /// The gateway's API base URL.
    pub gateway: String,
    /// Its PostgreSQL address, if it serves PostgreSQL.
    pub postgres: Option<String>,
    /// The identity provider's token endpoint, for refreshing.
    pub token_endpoint: String,
    /// The public client used at the provider.
    pub client_id: String,
    /// The provider's refresh token, if one was issued.
    pub refresh_token: Option<String>,
    /// The gateway token.
    pub access_token: String,
    /// When the gateway token expires, seconds since the epoch.
    pub expires_at: i64,
    /// Who the token is for, for messages.
    pub user: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("gateway", &self.gateway)
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `$XDG_CONFIG_HOME/portcullis`, or `~/.config/portcullis`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("portcullis"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".config").join("portcullis"))
}

fn path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("credentials.json"))
}

impl Credentials {
    /// The stored login, or a message telling the user to log in.
    pub fn load() -> anyhow::Result<Self> {
        let p = path()?;
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "not logged in ({} is missing): run `portcullis login`",
                p.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged: run `portcullis login`", p.display()))
    }

    /// Writes atomically, readable by the user only.
    pub fn save(&self) -> anyhow::Result<()> {
        let p = path()?;
        let dir = p.parent().context("credentials path has no parent")?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".credentials.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
        Ok(())
    }

    /// Seconds the gateway token has left.
    pub fn remaining(&self) -> i64 {
        self.expires_at - portcullis_core::identity::now_secs()
    }
}
