//! Dedup and packing for one pass: blobs in, packs out to the uploader.
//!
//! Workers call [`Packer::store_blob`] from the blocking pool. A blob the
//! index or this pass already has is skipped; a new one is compressed and
//! encrypted into a pack builder taken from a small pool (one per worker),
//! and a full pack goes over a bounded channel to an async uploader, so a
//! slow vault slows the workers instead of filling memory.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::IngestProgress;
use crate::backend::DynBackend;
use crate::chunk::ChunkerParams;
use crate::crypto::{random_bytes, Keys};
use crate::error::{Error, ErrorKind, Result};
use crate::id::BlobId;
use crate::index::cache::IndexCache;
use crate::index::IndexEntry;
use crate::pack::{FinishedPack, PackBuilder};
use crate::repo::{pack_name, Repository};

/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 2;

/// What the packer wrote.
#[derive(Debug, Default)]
pub(super) struct Packed {
    pub entries: Vec<IndexEntry>,
    pub packs: u64,
    pub blobs: u64,
    pub stored_bytes: u64,
}

/// What the uploader is handed.
enum Upload {
    Pack(FinishedPack),
    /// Answer once every pack handed over before is stored (or with the
    /// upload failure).
    Barrier(tokio::sync::oneshot::Sender<Result<()>>),
}

pub(super) struct Packer {
    keys: Keys,
    chunker: ChunkerParams,
    zstd_level: i32,
    target: usize,
    index: Arc<IndexCache>,
    /// Blobs in packs an interrupted pass left (this pass indexes them).
    recovered: Arc<std::collections::HashMap<BlobId, crate::index::IndexEntry>>,
    session: Mutex<HashSet<BlobId>>,
    pool: Mutex<Vec<PackBuilder>>,
    tx: mpsc::Sender<Upload>,
    uploader: JoinHandle<Result<Packed>>,
}

impl Packer {
    pub(super) fn start(repo: &Repository, target: usize, progress: Arc<IngestProgress>) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let uploader = tokio::spawn(upload_loop(repo.backend().clone(), rx, progress));
        Packer {
            keys: repo.keys().clone(),
            chunker: repo.config().chunker,
            zstd_level: repo.config().zstd_level,
            target,
            index: repo.index(),
            recovered: repo.recovered_blobs(),
            session: Mutex::new(HashSet::new()),
            pool: Mutex::new(Vec::new()),
            tx,
            uploader,
        }
    }

    pub(super) fn chunker(&self) -> &ChunkerParams {
        &self.chunker
    }

    /// Stores one blob unless the vault or this pass has it; returns its id.
    /// Called on the blocking pool.
    pub(super) fn store_blob(&self, data: &[u8]) -> Result<BlobId> {
        let id = self.keys.blob_id(data);
        if self.index.contains(&id)
            || self.recovered.contains_key(&id)
            || !self.session.lock().expect("session lock").insert(id)
        {
            return Ok(id);
        }
        let builder = self.pool.lock().expect("pool lock").pop();
        let mut builder = builder.unwrap_or_else(|| {
            PackBuilder::new(&self.keys, random_bytes(), self.target + (1 << 20))
        });
        builder.add(id, data, self.zstd_level)?;
        if builder.len_bytes() >= self.target {
            self.tx
                .blocking_send(Upload::Pack(builder.finish()))
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Io,
                        "pack uploader stopped after an upload failure (see the log)",
                    )
                })?;
        } else {
            self.pool.lock().expect("pool lock").push(builder);
        }
        Ok(id)
    }

    /// Sends partly filled packs to the uploader and waits until every pack
    /// handed over so far is stored: blobs stored before the call (by
    /// calls that have returned and whose pack builder is back in the
    /// pool) are then in the vault. A checkpoint calls this before naming
    /// runs; a resumed pass still checks their blobs.
    pub(super) async fn flush(&self) -> Result<()> {
        let builders = std::mem::take(&mut *self.pool.lock().expect("pool lock"));
        for b in builders {
            if b.is_empty() {
                self.pool.lock().expect("pool lock").push(b);
                continue;
            }
            let pack = tokio::task::spawn_blocking(move || b.finish())
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("pack task: {e}")))?;
            self.tx
                .send(Upload::Pack(pack))
                .await
                .map_err(|_| stopped())?;
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send(Upload::Barrier(done))
            .await
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }

    /// Flushes partly filled packs, waits for every upload, and returns
    /// the index entries of all packs written.
    pub(super) async fn finish(self) -> Result<Packed> {
        let builders = std::mem::take(&mut *self.pool.lock().expect("pool lock"));
        for b in builders.into_iter().filter(|b| !b.is_empty()) {
            let pack = tokio::task::spawn_blocking(move || b.finish())
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("pack task: {e}")))?;
            if self.tx.send(Upload::Pack(pack)).await.is_err() {
                break; // the uploader failed; its error is returned below
            }
        }
        drop(self.tx);
        self.uploader
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("uploader task: {e}")))?
    }
}

fn stopped() -> Error {
    Error::new(
        ErrorKind::Io,
        "pack uploader stopped after an upload failure (see the log)",
    )
}

async fn upload_loop(
    backend: DynBackend,
    mut rx: mpsc::Receiver<Upload>,
    progress: Arc<IngestProgress>,
) -> Result<Packed> {
    let mut packed = Packed::default();
    let mut set: JoinSet<Result<(usize, u64)>> = JoinSet::new();
    let mut result = Ok(());
    while let Some(upload) = rx.recv().await {
        let pack = match upload {
            Upload::Pack(pack) => pack,
            Upload::Barrier(done) => {
                while let Some(j) = set.join_next().await {
                    if let Err(e) = joined(Some(j), &progress) {
                        result = Err(e);
                    }
                }
                // The failure goes to the waiter, which fails the pass with it.
                let outcome = std::mem::replace(&mut result, Ok(()));
                let failed = outcome.is_err();
                let _ = done.send(outcome);
                if failed {
                    result = Err(stopped());
                    break;
                }
                continue;
            }
        };
        let len = pack.bytes.len() as u64;
        packed.packs += 1;
        packed.blobs += pack.entries.len() as u64;
        packed.stored_bytes += len;
        packed.entries.extend(
            pack.entries
                .iter()
                .map(|e| IndexEntry::from_pack(pack.id, e)),
        );
        let b = backend.clone();
        set.spawn(async move {
            let name = pack_name(&pack.id);
            b.put(&name, Bytes::from(pack.bytes))
                .await
                .map_err(|e| e.context(name))?;
            tracing::debug!(pack = %pack.id, bytes = len, "pack uploaded");
            Ok((0, len))
        });
        while set.len() >= UPLOAD_CONCURRENCY {
            if let Err(e) = joined(set.join_next().await, &progress) {
                result = Err(e);
                break;
            }
        }
        if result.is_err() {
            break;
        }
    }
    drop(rx);
    while let Some(j) = set.join_next().await {
        if let Err(e) = joined(Some(j), &progress) {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    if let Err(e) = result {
        tracing::error!(error = %e, "pack upload failed");
        return Err(e);
    }
    Ok(packed)
}

fn joined(
    j: Option<std::result::Result<Result<(usize, u64)>, tokio::task::JoinError>>,
    progress: &IngestProgress,
) -> Result<()> {
    match j {
        Some(Ok(Ok((_, len)))) => {
            progress.stored_bytes.fetch_add(len, Ordering::Relaxed);
            Ok(())
        }
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(Error::new(ErrorKind::Io, format!("upload task: {e}"))),
        None => Ok(()),
    }
}
