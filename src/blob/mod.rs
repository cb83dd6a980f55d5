//! Bytes of avatars (and, later, shared files) on the local disk.
//!
//! Names are server-generated UUIDs, never derived from user input, fanned
//! out over 256 directories. Writes go to a temporary file that is synced and
//! renamed into place, so a crash leaves either the whole blob or nothing.

pub mod ingest;

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob key {0:?} is malformed")]
    BadKey(String),
    #[error("blob {0} is missing")]
    Missing(String),
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
}

impl BlobStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Stores `bytes` under a new key and returns it.
    pub async fn put(&self, bytes: &[u8]) -> Result<String, BlobError> {
        let key = uuid::Uuid::new_v4().to_string();
        let path = self.path(&key)?;
        let dir = path.parent().unwrap_or(&self.root);
        tokio::fs::create_dir_all(dir).await?;
        let tmp = dir.join(format!(".{key}.tmp"));
        let mut file = tokio::fs::File::create(&tmp).await?;
        let written = async {
            file.write_all(bytes).await?;
            file.sync_all().await
        }
        .await;
        if let Err(err) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(err.into());
        }
        tokio::fs::rename(&tmp, &path).await?;
        Ok(key)
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(bytes) => Ok(bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(BlobError::Missing(key.to_owned()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Removes a blob; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    /// A new, empty temporary blob (an upload in progress).
    pub async fn create_temp(&self) -> Result<(String, tokio::fs::File), BlobError> {
        let key = uuid::Uuid::new_v4().to_string();
        let path = self.temp_path(&key)?;
        tokio::fs::create_dir_all(self.root.join("tmp")).await?;
        let file = tokio::fs::File::create(&path).await?;
        Ok((key, file))
    }

    pub fn temp_path(&self, key: &str) -> Result<PathBuf, BlobError> {
        let id = uuid::Uuid::try_parse(key).map_err(|_| BlobError::BadKey(key.to_owned()))?;
        Ok(self.root.join("tmp").join(id.hyphenated().to_string()))
    }

    /// Writes `bytes` at `offset` of a temporary blob.
    pub async fn write_temp_at(
        &self,
        key: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), BlobError> {
        use tokio::io::AsyncSeekExt;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.temp_path(key)?)
            .await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        file.write_all(bytes).await?;
        file.flush().await?;
        Ok(())
    }

    /// Gives a finished temporary blob a permanent key of its own while the
    /// temporary one stays (a hard link; a copy where links fail), so the
    /// upload it belongs to survives until its file is committed.
    pub async fn link_temp(&self, key: &str) -> Result<String, BlobError> {
        let from = self.temp_path(key)?;
        let new_key = uuid::Uuid::now_v7().to_string();
        let to = self.path(&new_key)?;
        if let Some(dir) = to.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        if tokio::fs::hard_link(&from, &to).await.is_err() {
            tokio::fs::copy(&from, &to).await?;
            tokio::fs::File::open(&to).await?.sync_all().await?;
        }
        Ok(new_key)
    }

    /// Makes a finished temporary blob permanent under the same key.
    pub async fn commit_temp(&self, key: &str) -> Result<String, BlobError> {
        let from = self.temp_path(key)?;
        let to = self.path(key)?;
        if let Some(dir) = to.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(&from, &to).await?;
        Ok(key.to_owned())
    }

    pub async fn delete_temp(&self, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.temp_path(key)?).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    /// Keys of temporary blobs last written more than `age` ago.
    pub async fn temp_keys_older_than(&self, age: std::time::Duration) -> Vec<String> {
        let Ok(mut entries) = tokio::fs::read_dir(self.root.join("tmp")).await else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let old = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            let name = entry.file_name().to_string_lossy().into_owned();
            if old && uuid::Uuid::try_parse(&name).is_ok() {
                keys.push(name);
            }
        }
        keys
    }

    /// Opens a stored blob for streaming.
    pub async fn open(&self, key: &str) -> Result<tokio::fs::File, BlobError> {
        match tokio::fs::File::open(self.path(key)?).await {
            Ok(file) => Ok(file),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(BlobError::Missing(key.to_owned()))
            }
            Err(err) => Err(err.into()),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        let id = uuid::Uuid::try_parse(key).map_err(|_| BlobError::BadKey(key.to_owned()))?;
        let name = id.hyphenated().to_string();
        Ok(self.root.join(&name[..2]).join(name))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_delete() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(dir.path());
        let key = blobs.put(b"hello").await.unwrap();
        assert_eq!(blobs.get(&key).await.unwrap(), b"hello");
        blobs.delete(&key).await.unwrap();
        assert!(matches!(blobs.get(&key).await, Err(BlobError::Missing(_))));
        blobs.delete(&key).await.unwrap();
    }

    #[tokio::test]
    async fn keys_never_become_paths() {
        let blobs = BlobStore::new("/tmp/none");
        assert!(matches!(
            blobs.get("../../etc/passwd").await,
            Err(BlobError::BadKey(_))
        ));
    }
}
