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
        Ok(text) => return checked(&path, text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut bytes = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    std::fs::create_dir_all(data_dir)?;
    // Written whole to a private temporary file, then linked into place: a
    // crash never leaves a short key, and of two processes starting at once
    // the first link wins and the other reads it.
    let tmp = data_dir.join(format!(".{FILE_NAME}.{}", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    drop(file);
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return checked(&path, std::fs::read_to_string(&path)?);
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

/// A stored key must be long enough to be one we wrote.
fn checked(path: &Path, text: String) -> std::io::Result<Vec<u8>> {
    let secret = text.trim();
    if secret.len() < 32 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} holds no usable key (under 32 bytes); delete it to generate a new one",
                path.display()
            ),
        ));
    }
    Ok(secret.as_bytes().to_vec())
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
    fn a_truncated_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "").unwrap();
        assert!(load_or_generate(None, dir.path()).is_err());
    }

    #[test]
    fn configured_secret_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_or_generate(Some("s"), dir.path()).unwrap(), b"s");
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
