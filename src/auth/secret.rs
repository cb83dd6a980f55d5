//! The HS256 signing key: from `UNIO_JWT_SECRET`, or generated once and kept
//! in the data directory so tokens survive restarts.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;

const FILE_NAME: &str = "jwt_secret";

/// Returns the configured secret, or the one stored in `data_dir`, creating
/// it (mode 0600) on first start.
pub fn load_or_generate(configured: Option<&str>, data_dir: &Path) -> std::io::Result<Vec<u8>> {
    if let Some(secret) = configured {
        return Ok(secret.as_bytes().to_vec());
    }
    let path: PathBuf = data_dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut bytes = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    std::fs::create_dir_all(data_dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            file.sync_all()?;
        }
        // Another process created it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Ok(std::fs::read_to_string(&path)?.trim().as_bytes().to_vec());
        }
        Err(err) => return Err(err),
    }
    tracing::warn!(
        path = %path.display(),
        "UNIO_JWT_SECRET is not set: generated a signing key and stored it in the data directory. \
         Set UNIO_JWT_SECRET (the same on every node) in production."
    );
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(None, dir.path()).unwrap();
        let second = load_or_generate(None, dir.path()).unwrap();
        assert_eq!(first, second);
        assert!(first.len() >= 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn configured_secret_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_or_generate(Some("s"), dir.path()).unwrap(), b"s");
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
