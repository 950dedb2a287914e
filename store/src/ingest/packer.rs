//! Dedup and packing for one pass: blobs in, packs out to the uploader.
//!
//! Workers call [`Packer::store_blob`] from the blocking pool. A blob the
//! index or this pass already has is skipped; a new one is compressed and
//! encrypted into a pack builder taken from a small pool (as many builders
//! as cores: a pass ends with no more partly filled packs than that, however
//! many workers wait on a remote source), and a full pack goes over a
//! bounded channel to an async uploader, so a slow vault slows the workers
//! instead of filling memory.
//!
//! Memory stays flat however many blobs a pass adds: once the uploaded
//! packs hold [`SEGMENT_ENTRIES`] new blobs, the pass writes their index
//! segment to the vault and into the local index cache
//! ([`Packer::write_segment`]), and forgets them — dedup asks the cache.
//! Only blobs not yet in a written segment are held in memory.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::IngestProgress;
use crate::backend::DynBackend;
use crate::chunk::{ChunkWindow, ChunkerParams};
use crate::crypto::{random_bytes, Keys};
use crate::direct_io::BufferPool;
use crate::error::{Error, ErrorKind, Result};
use crate::id::{BlobId, ObjectId};
use crate::index::cache::IndexCache;
use crate::index::{IndexEntry, Segment};
use crate::pack::{FinishedPack, PackBuilder};
use crate::repo::{pack_name, Repository};

/// Blobs per pack at most. Tiny, compressible objects would otherwise
/// put a few hundred thousand blobs in one pack, and its blob table (56
/// bytes a blob while it is built, 52 in the trailer, twice while it is
/// sealed) made the peak memory of a pass grow with how small and
/// compressible its objects are: 16,384 keeps each under 1 MiB, at one
/// vault PUT per 16,384 such objects.
pub const MAX_PACK_BLOBS: usize = 1 << 14;

/// When the packer closes a pack, and when the pass writes a segment.
pub(super) struct PackLimits {
    /// Pack size (bytes) to close a pack at.
    pub bytes: usize,
    /// Blobs to close a pack at.
    pub blobs: usize,
    /// New blobs in stored packs to write an index segment at.
    pub segment_entries: usize,
    /// Read windows kept for the next object when a worker is done with
    /// one: one per worker that reads at the CPU's pace. A window dropped
    /// is faulted in again, 4 KiB at a time, by the next large object
    /// (large data, 4 workers, means of 8 backups: keeping 2 of them,
    /// 94–106k page faults and 4.80 CPU s; keeping all 4, 23–27k and
    /// 4.58 CPU s).
    pub idle_windows: usize,
    /// Pack builders open at once (the cores).
    pub builders: usize,
}

/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 2;

/// New blobs per index segment written during a pass (3.5 MiB of
/// entries): what a pass holds of its new blobs' index at most, give or
/// take the packs being filled.
pub(super) const SEGMENT_ENTRIES: usize = 1 << 16;

/// What the packer wrote.
#[derive(Debug, Default)]
pub(super) struct Packed {
    /// Entries of packs no segment written during the pass covers.
    pub entries: Vec<IndexEntry>,
    /// Segments written during the pass.
    pub segments: Vec<ObjectId>,
    pub packs: u64,
    pub blobs: u64,
    pub stored_bytes: u64,
}

/// What the uploader is handed.
enum Upload {
    Pack(FinishedPack),
    /// Answer once every pack handed over before is stored (or with the
    /// upload failure); with `drain`, hand over (and forget) the entries
    /// of the packs stored since the last drain.
    Barrier {
        done: tokio::sync::oneshot::Sender<Result<Vec<IndexEntry>>>,
        drain: bool,
    },
}

/// What dedup knows beyond the vault's packs a pass started with.
struct Dedup {
    /// The index as of the last segment this pass wrote.
    index: Arc<IndexCache>,
    /// Blobs this pass stored that `index` does not know yet.
    pending: HashSet<BlobId>,
}

pub(super) struct Packer {
    keys: Keys,
    chunker: ChunkerParams,
    zstd_level: i32,
    target: usize,
    max_blobs: usize,
    /// Blobs in packs an interrupted pass left (this pass indexes them).
    recovered: Arc<std::collections::HashMap<BlobId, crate::index::IndexEntry>>,
    dedup: Mutex<Dedup>,
    /// Signalled when the stored packs hold the configured number of blobs
    /// ([`SEGMENT_ENTRIES`] by default) no segment covers yet.
    pub(super) segment_due: Arc<tokio::sync::Notify>,
    segments: Mutex<Vec<ObjectId>>,
    builders: Builders,
    /// Buffers of stored packs, for the next packs.
    spares: Spares,
    windows: Windows,
    tx: mpsc::Sender<Upload>,
    uploader: JoinHandle<Result<Packed>>,
}

impl Packer {
    /// A packer for the pass committing point `seq`.
    pub(super) fn start(
        repo: &Repository,
        seq: u64,
        limits: PackLimits,
        progress: Arc<IngestProgress>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let segment_due = Arc::new(tokio::sync::Notify::new());
        let chunker = repo.config().chunker;
        let capacity =
            crate::pack::capacity_for(limits.bytes, chunker.largest_blob(), limits.blobs.max(1));
        let spares = Spares::new(capacity);
        let uploader = tokio::spawn(upload_loop(
            repo.backend().clone(),
            repo.pass_marker(seq),
            rx,
            spares.clone(),
            progress,
            segment_due.clone(),
            limits.segment_entries.max(1),
        ));
        Packer {
            keys: repo.keys().clone(),
            chunker,
            zstd_level: repo.config().zstd_level,
            target: limits.bytes,
            max_blobs: limits.blobs.max(1),
            recovered: repo.recovered_blobs(),
            dedup: Mutex::new(Dedup {
                index: repo.index(),
                pending: HashSet::new(),
            }),
            segment_due,
            segments: Mutex::new(Vec::new()),
            builders: Builders::new(limits.builders.max(1)),
            spares,
            windows: Windows::new(limits.idle_windows),
            tx,
            uploader,
        }
    }

    /// Cuts one object's body into blobs, calling `sink` with each, through
    /// a read window from the pool (one per worker, reused).
    pub(super) fn chunk_object(
        &self,
        reader: impl std::io::Read,
        len_hint: u64,
        sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        let mut window = self.windows.take();
        let read = self
            .chunker
            .for_each_chunk(reader, len_hint, &mut window, sink);
        self.windows.give(window);
        read
    }

    /// Stores one blob unless the vault or this pass has it; returns its id.
    /// Called on the blocking pool.
    pub(super) fn store_blob(&self, data: &[u8]) -> Result<BlobId> {
        let id = self.keys.blob_id(data);
        if self.recovered.contains_key(&id) {
            return Ok(id);
        }
        // The index lookup (file reads) runs outside the lock, on the
        // snapshot; should a segment move blobs from pending to a newer
        // index meanwhile, the check is repeated on it under the lock, so
        // a blob is never missed by both.
        let snapshot = self.dedup.lock().expect("dedup lock").index.clone();
        if snapshot.contains(&id) {
            return Ok(id);
        }
        {
            let mut d = self.dedup.lock().expect("dedup lock");
            if !Arc::ptr_eq(&d.index, &snapshot) && d.index.contains(&id) {
                return Ok(id);
            }
            if !d.pending.insert(id) {
                return Ok(id);
            }
        }
        let mut builder = self.builders.take().unwrap_or_else(|| {
            PackBuilder::in_buffer(
                &self.keys,
                random_bytes(),
                self.spares.capacity,
                self.spares.take(),
            )
        });
        if let Err(e) = builder.add(id, data, self.zstd_level) {
            // Not stored, so not pending: a later copy of the blob is
            // stored, not skipped. The builder keeps its other blobs.
            self.dedup.lock().expect("dedup lock").pending.remove(&id);
            self.builders.give(builder);
            return Err(e);
        }
        if builder.len_bytes() >= self.target || builder.blob_count() >= self.max_blobs {
            // Room for a new builder before waiting on the uploader: other
            // workers keep packing while this pack waits for the vault.
            self.builders.retire();
            self.tx
                .blocking_send(Upload::Pack(builder.finish()))
                .map_err(|_| stopped())?;
        } else {
            self.builders.give(builder);
        }
        Ok(id)
    }

    /// Sends partly filled packs to the uploader and waits until every pack
    /// handed over so far is stored: blobs stored before the call (by
    /// calls that have returned and whose pack builder is back in the
    /// pool) are then in the vault. A checkpoint calls this before naming
    /// runs; a resumed pass still checks their blobs.
    pub(super) async fn flush(&self) -> Result<()> {
        for b in self.builders.take_idle() {
            if b.is_empty() {
                self.builders.give(b);
                continue;
            }
            self.builders.retire();
            let pack = crate::blocking::run("pack", move || Ok(b.finish())).await?;
            self.tx
                .send(Upload::Pack(pack))
                .await
                .map_err(|_| stopped())?;
        }
        self.barrier(false).await.map(drop)
    }

    async fn barrier(&self, drain: bool) -> Result<Vec<IndexEntry>> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send(Upload::Barrier { done, drain })
            .await
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }

    /// Writes the index segment of the packs stored so far that no
    /// segment covers, adds it to the local index cache, and lets dedup
    /// find those blobs there instead of in memory. The segment only
    /// restates stored packs, so a pass killed afterwards leaves nothing
    /// a reader trips on: the next refresh reads it like any other.
    pub(super) async fn write_segment(&self, repo: &Repository) -> Result<()> {
        let mut entries = self.barrier(true).await?;
        if entries.is_empty() {
            return Ok(());
        }
        entries.sort_by_key(|e| e.blob);
        entries.dedup_by_key(|e| e.blob);
        let segment = Segment {
            entries,
            supersedes: Vec::new(),
        };
        let id = repo.put_segment(&segment).await?;
        repo.add_segment_to_cache(id, &segment)?;
        let index = repo.index();
        {
            let mut d = self.dedup.lock().expect("dedup lock");
            d.index = index;
            for e in &segment.entries {
                d.pending.remove(&e.blob);
            }
            d.pending.shrink_to(SEGMENT_ENTRIES);
        }
        self.segments.lock().expect("segments lock").push(id);
        tracing::debug!(segment = %id, entries = segment.entries.len(), "pass index segment written");
        Ok(())
    }

    /// Flushes partly filled packs, waits for every upload, and returns
    /// the index entries of all packs written.
    pub(super) async fn finish(self) -> Result<Packed> {
        for b in self
            .builders
            .take_idle()
            .into_iter()
            .filter(|b| !b.is_empty())
        {
            let pack = crate::blocking::run("pack", move || Ok(b.finish())).await?;
            if self.tx.send(Upload::Pack(pack)).await.is_err() {
                break; // the uploader failed; its error is returned below
            }
        }
        drop(self.tx);
        let mut packed = self
            .uploader
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("uploader task: {e}")))??;
        packed.segments = std::mem::take(&mut *self.segments.lock().expect("segments lock"));
        Ok(packed)
    }
}

/// The pack builders of a pass: at most `max` exist at once (idle here or
/// held by a worker adding a blob); a worker finding none idle and the
/// limit reached waits for one. Adding is CPU work, so more builders than
/// cores would only leave more partly filled packs at the end — each an
/// extra PUT, and a small pack for restores to read.
struct Builders {
    state: Mutex<BuilderState>,
    freed: std::sync::Condvar,
    max: usize,
}

struct BuilderState {
    idle: Vec<PackBuilder>,
    /// Builders in existence: idle, or held by a worker.
    live: usize,
}

impl Builders {
    fn new(max: usize) -> Self {
        Builders {
            state: Mutex::new(BuilderState {
                idle: Vec::new(),
                live: 0,
            }),
            freed: std::sync::Condvar::new(),
            max: max.max(1),
        }
    }

    /// An idle builder, or `None` when the caller may make a new one
    /// (counted as live); waits while the limit is reached and none is idle.
    fn take(&self) -> Option<PackBuilder> {
        let mut s = self.state.lock().expect("builders lock");
        loop {
            if let Some(b) = s.idle.pop() {
                return Some(b);
            }
            if s.live < self.max {
                s.live += 1;
                return None;
            }
            s = self.freed.wait(s).expect("builders lock");
        }
    }

    /// Returns a builder for the next blob.
    fn give(&self, b: PackBuilder) {
        self.state.lock().expect("builders lock").idle.push(b);
        self.freed.notify_one();
    }

    /// A builder taken is gone (its pack finished): room for a new one.
    fn retire(&self) {
        let mut s = self.state.lock().expect("builders lock");
        s.live = s.live.saturating_sub(1);
        drop(s);
        self.freed.notify_one();
    }

    /// Every idle builder (each to be given back or retired).
    fn take_idle(&self) -> Vec<PackBuilder> {
        std::mem::take(&mut self.state.lock().expect("builders lock").idle)
    }
}

/// Buffers of stored packs, kept for the next packs: filling a fresh
/// buffer with 16 MiB is 4,096 page faults (or 8 huge ones), each zeroing its page —
/// a tenth of a large backup's samples, more on a VM whose idle memory went
/// back to the host (`docs/benchmarks.md`). Two are kept; a buffer still
/// held elsewhere (an S3 client keeping its body) is not taken back.
#[derive(Clone)]
struct Spares {
    pool: Arc<BufferPool>,
    /// A pack buffer's capacity ([`crate::pack::capacity_for`]).
    capacity: usize,
}

impl Spares {
    fn new(capacity: usize) -> Self {
        let kept = 2 * (capacity + crate::direct_io::PAGE);
        Spares {
            pool: Arc::new(BufferPool::new(kept)),
            capacity,
        }
    }

    fn take(&self) -> Vec<u8> {
        self.pool.take(self.capacity + crate::direct_io::PAGE)
    }

    fn give(&self, bytes: bytes::Bytes) {
        if let Some(buf) = crate::direct_io::reclaim(bytes) {
            self.pool.give(buf);
        }
    }
}

/// Read windows of workers between objects: up to
/// [`PackLimits::idle_windows`] are kept, so the next large object reads
/// into pages already faulted in.
struct Windows {
    idle: Mutex<Vec<ChunkWindow>>,
    keep: usize,
}

impl Windows {
    fn new(keep: usize) -> Self {
        Windows {
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A kept window, or a new (empty) one.
    fn take(&self) -> ChunkWindow {
        self.idle
            .lock()
            .expect("window lock")
            .pop()
            .unwrap_or_default()
    }

    /// Keeps `window` for the next object, unless enough are kept.
    fn give(&self, window: ChunkWindow) {
        let mut idle = self.idle.lock().expect("window lock");
        if idle.len() < self.keep {
            idle.push(window);
        }
    }
}

fn stopped() -> Error {
    Error::new(
        ErrorKind::Io,
        "pack uploader stopped after an upload failure (see the log)",
    )
}

/// Stores the packs handed over, [`UPLOAD_CONCURRENCY`] at a time, after
/// the pass's marker (`marker`: name and sealed bytes) before the first:
/// the next pass for the same point then knows to look for packs this
/// one leaves unindexed, and a pass that stores no pack leaves no marker.
async fn upload_loop(
    backend: DynBackend,
    marker: (String, bytes::Bytes),
    mut rx: mpsc::Receiver<Upload>,
    spares: Spares,
    progress: Arc<IngestProgress>,
    segment_due: Arc<tokio::sync::Notify>,
    segment_entries: usize,
) -> Result<Packed> {
    let mut packed = Packed::default();
    let mut set: JoinSet<Result<(usize, u64)>> = JoinSet::new();
    let mut result = Ok(());
    let mut marker = Some(marker);
    while let Some(upload) = rx.recv().await {
        let pack = match upload {
            Upload::Pack(pack) => pack,
            Upload::Barrier { done, drain } => {
                while let Some(j) = set.join_next().await {
                    if let Err(e) = joined(Some(j), &progress) {
                        result = Err(e);
                    }
                }
                // The failure goes to the waiter, which fails the pass with it.
                let outcome = std::mem::replace(&mut result, Ok(()));
                let failed = outcome.is_err();
                let entries = if drain {
                    std::mem::take(&mut packed.entries)
                } else {
                    Vec::new()
                };
                let _ = done.send(outcome.map(|()| entries));
                if failed {
                    result = Err(stopped());
                    break;
                }
                continue;
            }
        };
        if let Some((name, bytes)) = marker.take() {
            match backend.put(&name, bytes).await {
                // An earlier run of this pass left it.
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => {
                    result = Err(e.context(name));
                    break;
                }
            }
        }
        let len = pack.bytes.len() as u64;
        packed.packs += 1;
        packed.blobs += pack.entries.len() as u64;
        packed.stored_bytes += len;
        packed.entries.extend(
            pack.entries
                .iter()
                .map(|e| IndexEntry::from_pack(pack.id, e)),
        );
        if packed.entries.len() >= segment_entries {
            segment_due.notify_one();
        }
        let b = backend.clone();
        let spares = spares.clone();
        set.spawn(async move {
            let name = pack_name(&pack.id);
            b.put(&name, pack.bytes.clone())
                .await
                .map_err(|e| e.context(name))?;
            tracing::debug!(pack = %pack.id, bytes = len, "pack uploaded");
            spares.give(pack.bytes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Keys, MasterKey};
    use std::sync::atomic::AtomicUsize;

    /// However many threads add blobs, no more builders than the limit
    /// exist at once, and every thread gets one in the end.
    #[test]
    fn builders_never_exceed_the_limit() {
        let keys = Keys::derive(&MasterKey::from_bytes([7; 32]));
        let builders = Builders::new(2);
        let (held, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let (builders, keys, held, most) = (&builders, &keys, &held, &most);
                s.spawn(move || {
                    for i in 0..200u32 {
                        let mut b = builders.take().unwrap_or_else(|| {
                            PackBuilder::in_buffer(keys, random_bytes(), 1 << 16, Vec::new())
                        });
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let data = [t, (i % 256) as u8, (i / 256) as u8];
                        b.add(keys.blob_id(&data), &data, 1).unwrap();
                        held.fetch_sub(1, Ordering::SeqCst);
                        if i % 50 == 49 {
                            drop(b.finish());
                            builders.retire();
                        } else {
                            builders.give(b);
                        }
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert!(builders.take_idle().len() <= 2);
    }

    /// Workers that read at once all get a window, and as many as the
    /// pool keeps come back for the next objects.
    #[test]
    fn windows_of_idle_workers_are_kept_up_to_the_limit() {
        for keep in [0, 2, 4] {
            let windows = Windows::new(keep);
            let together = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        let window = windows.take();
                        // All four hold a window at once.
                        together.wait();
                        windows.give(window);
                    });
                }
            });
            assert_eq!(windows.idle.lock().unwrap().len(), keep);
        }
    }
}
