//! The key behind the `hash` masking strategy: 32 random bytes made once
//! in `data_dir/keys/masking-hmac.key` (mode 0600) and kept, so hashed
//! values stay comparable across restarts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use portcullis_core::masking::HashKey;
use rand::RngCore;

/// Reads the key at `path`, or makes one there.
pub fn load_or_generate(path: &Path) -> anyhow::Result<HashKey> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => return Ok(HashKey::new(bytes)),
        Ok(_) => bail!("{} is shorter than 32 bytes", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        portcullis_core::files::private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut key = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&key)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(HashKey::new(key))
}
