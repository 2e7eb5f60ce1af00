//! `data_dir` is the gateway's alone: it holds the audit store (every
//! recorded statement and its parameters), signing keys and TLS keys.
//! Whatever the umask, its directories are 0700 and its files 0600, each
//! made so where it is created (`portcullis-store` for the store).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its parents) if needed, and makes it 0700 whether
/// or not it existed.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
