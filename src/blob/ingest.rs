//! Receiving a file: bytes go to a temporary blob as they arrive, hashed
//! and counted on the way, with the first bytes kept for type sniffing. A
//! temporary blob that is never committed is removed when its guard drops,
//! so an upload that breaks off (the client goes away, a limit is hit)
//! leaves nothing behind.

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use super::{BlobError, BlobStore};
use crate::domain::file::{SNIFF_BYTES, TextCheck};

/// Removes its temporary blob on drop unless disarmed (committed).
pub struct TempGuard {
    path: Option<std::path::PathBuf>,
}

impl TempGuard {
    pub fn new(path: std::path::PathBuf) -> Self {
        Self { path: Some(path) }
    }

    pub fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What was received.
pub struct Received {
    pub temp_key: String,
    pub size: u64,
    pub sha256: String,
    pub head: Vec<u8>,
    /// Whether all of it is UTF-8 text without NULs.
    pub is_text: bool,
    pub guard: TempGuard,
}

/// The upload would pass its size limit.
#[derive(Debug)]
pub struct TooLarge;

pub struct Ingest {
    temp_key: String,
    file: BufWriter<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
    limit: u64,
    head: Vec<u8>,
    text: TextCheck,
    guard: TempGuard,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Ingest {
    pub async fn start(blobs: &BlobStore, limit: u64) -> Result<Self, BlobError> {
        let (temp_key, file) = blobs.create_temp().await?;
        let guard = TempGuard::new(blobs.temp_path(&temp_key)?);
        Ok(Self {
            temp_key,
            file: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            size: 0,
            limit,
            head: Vec::new(),
            text: TextCheck::default(),
            guard,
        })
    }

    /// Appends `bytes`, or refuses them if the total would pass the limit.
    pub async fn push(&mut self, bytes: &[u8]) -> Result<Result<(), TooLarge>, BlobError> {
        if self.size + bytes.len() as u64 > self.limit {
            return Ok(Err(TooLarge));
        }
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.hasher.update(bytes);
        self.text.push(bytes);
        self.file.write_all(bytes).await?;
        self.size += bytes.len() as u64;
        Ok(Ok(()))
    }

    pub async fn finish(mut self) -> Result<Received, BlobError> {
        self.file.flush().await?;
        self.file.get_mut().sync_all().await?;
        Ok(Received {
            temp_key: self.temp_key,
            size: self.size,
            sha256: hex(&self.hasher.finalize()),
            head: self.head,
            is_text: self.text.finish(),
            guard: self.guard,
        })
    }
}

/// Hashes a temporary blob written in pieces (resumable uploads).
pub async fn hash_temp(
    blobs: &BlobStore,
    temp_key: &str,
    length: u64,
) -> Result<Received, BlobError> {
    let path = blobs.temp_path(temp_key)?;
    let guard = TempGuard::new(path.clone());
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .await?;
    file.set_len(length).await?;
    file.sync_all().await?;
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut text = TextCheck::default();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(n);
            head.extend_from_slice(&buffer[..take]);
        }
        hasher.update(&buffer[..n]);
        text.push(&buffer[..n]);
        size += n as u64;
    }
    Ok(Received {
        temp_key: temp_key.to_owned(),
        size,
        sha256: hex(&hasher.finalize()),
        head,
        is_text: text.finish(),
        guard,
    })
}
