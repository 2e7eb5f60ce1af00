//! The gateway's own SSH host key: made once, kept in
//! `data_dir/ssh/host_ed25519` (0600, in a 0700 directory), so clients
//! that pinned it keep trusting the gateway across restarts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

/// Why the host key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// Reading or writing the file.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The file is not an OpenSSH private key.
    #[error("{0} is not an unencrypted OpenSSH private key: {1}")]
    Invalid(String, String),
}

/// Loads the key at `path`, or makes one there.
pub fn load_or_generate(path: &Path) -> Result<PrivateKey, HostKeyError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            return russh::keys::decode_secret_key(&text, None)
                .map_err(|e| HostKeyError::Invalid(shown, e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(HostKeyError::Io(shown, e)),
    }
    if let Some(dir) = path.parent() {
        portcullis_core::files::private_dir(dir).map_err(|e| HostKeyError::Io(shown.clone(), e))?;
    }
    // From a seed: ssh-key's own generator wants a newer rand_core than
    // the workspace's.
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| HostKeyError::Invalid(shown.clone(), e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| HostKeyError::Io(shown.clone(), e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| HostKeyError::Io(shown, e))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh").join("host_ed25519");
        let first = load_or_generate(&path).unwrap();
        let again = load_or_generate(&path).unwrap();
        assert_eq!(first.public_key().key_data(), again.public_key().key_data());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
}
