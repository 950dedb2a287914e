//! One backup pass: compare the source with the latest point, store what
//! changed, and commit a new point.
//!
//! Data flow: source listing (sorted) is merge-joined with the state of the
//! latest point; unchanged objects (same size, mtime, mode, ETag) cost
//! nothing; changed objects go to a bounded set of blocking workers that
//! read, chunk, hash, dedup, compress and encrypt into packs; full packs go
//! over a bounded channel to the uploader; entries come back in key order
//! into the point's run. Then [`Repository::commit`] writes index segment,
//! run pages and the time-index entry, in that order.
//!
//! Resuming: packs that an interrupted pass uploaded are found by listing
//! `packs/` and indexed from their trailers, so their blobs are not
//! uploaded again.

mod packer;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::point::PointStats;
use crate::manifest::{Entry, ObjectMeta};
use crate::repo::runs::StateCursor;
use crate::repo::{CommitRequest, Repository};
use crate::source::{Source, SourceObject};
use packer::Packer;

/// Options for one pass.
#[derive(Clone, Debug, Default)]
pub struct IngestOptions {
    /// Blocking workers reading and encoding objects (default: CPU count).
    pub workers: Option<usize>,
    /// Time to stamp the point with, ns since the epoch (default: the time
    /// the source listing finished).
    pub time_ns: Option<i64>,
    /// Override the vault's pack target size (bytes).
    pub pack_target_size: Option<u32>,
}

/// Live counters, for progress display.
#[derive(Debug, Default)]
pub struct IngestProgress {
    /// Objects listed.
    pub listed_objects: AtomicU64,
    /// Bytes listed.
    pub listed_bytes: AtomicU64,
    /// Objects done (stored or found unchanged).
    pub done_objects: AtomicU64,
    /// Bytes done.
    pub done_bytes: AtomicU64,
    /// Bytes read from the source.
    pub read_bytes: AtomicU64,
    /// Bytes stored in new packs.
    pub stored_bytes: AtomicU64,
}

/// What a pass did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IngestSummary {
    /// The point recorded.
    pub seq: u64,
    /// Its time (ns since the epoch).
    pub time_ns: i64,
    /// Live objects at the point.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects new or changed.
    pub changed: u64,
    /// Objects deleted.
    pub deleted: u64,
    /// Objects found unchanged (not read).
    pub unchanged: u64,
    /// Entries the source could not represent.
    pub skipped: u64,
    /// Per-object errors (the object keeps its previous version).
    pub errors: Vec<String>,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// New blobs stored (after dedup).
    pub new_blobs: u64,
    /// Bytes stored in new packs (after compression and encryption).
    pub new_stored_bytes: u64,
    /// Packs written.
    pub packs_written: u64,
    /// Packs from an interrupted pass indexed instead of re-uploaded.
    pub recovered_packs: u64,
    /// Wall time in seconds.
    pub elapsed_s: f64,
}

enum Pending {
    Ready(Option<Entry>),
    Job(JoinHandle<Result<Outcome>>, SourceObject, bool),
}

enum Outcome {
    Stored(ObjectMeta),
    Vanished,
}

/// Runs one pass of `source` into `repo` and commits a point.
pub async fn ingest(
    repo: &Repository,
    source: Arc<dyn Source>,
    opts: &IngestOptions,
    progress: Arc<IngestProgress>,
) -> Result<IngestSummary> {
    let started = Instant::now();
    let refresh = repo.refresh_index(true).await?;
    if !refresh.recovered_packs.is_empty() {
        tracing::info!(
            packs = refresh.recovered_packs.len(),
            "indexed packs left by an interrupted pass"
        );
    }
    let prev = repo.latest_point().await?;
    let seq = prev.as_ref().map_or(0, |(p, _)| p.seq + 1);

    let (listing, skipped) = source.list().await?;
    let time_ns = opts.time_ns.unwrap_or_else(now_ns);
    progress
        .listed_objects
        .store(listing.len() as u64, Ordering::Relaxed);
    progress
        .listed_bytes
        .store(listing.iter().map(|o| o.size).sum(), Ordering::Relaxed);

    let workers = opts
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let target = opts
        .pack_target_size
        .unwrap_or(repo.config().pack_target_size) as usize;
    let packer = Arc::new(Packer::start(repo, target, progress.clone()));
    let semaphore = Arc::new(Semaphore::new(workers));

    let mut summary = IngestSummary {
        seq,
        skipped,
        recovered_packs: refresh.recovered_packs.len() as u64,
        ..Default::default()
    };
    let mut stats = PointStats::default();
    let mut builder = repo.run_builder();
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let max_queue = 64 + workers * 4;

    let mut prev_cursor = match &prev {
        Some((p, _)) => Some(StateCursor::new(repo, &p.runs, p.seq, "").await?),
        None => None,
    };
    let mut prev_head = next_prev(&mut prev_cursor).await?;
    let mut listing = listing.into_iter().peekable();

    loop {
        let src_key = listing.peek().map(|o| o.key.clone());
        let prev_key = prev_head.as_ref().map(|e| e.key.clone());
        let item = match (src_key, prev_key) {
            (None, None) => break,
            (Some(s), Some(p)) if p.as_bytes() < s.as_bytes() => {
                // In the last point, gone from the source: a deletion.
                prev_head = next_prev(&mut prev_cursor).await?;
                summary.deleted += 1;
                Pending::Ready(Some(Entry {
                    key: p,
                    seq,
                    object: None,
                }))
            }
            (None, Some(p)) => {
                prev_head = next_prev(&mut prev_cursor).await?;
                summary.deleted += 1;
                Pending::Ready(Some(Entry {
                    key: p,
                    seq,
                    object: None,
                }))
            }
            (Some(s), p) => {
                let obj = listing.next().expect("peeked");
                let previous = if p.as_deref() == Some(s.as_str()) {
                    let e = prev_head.take();
                    prev_head = next_prev(&mut prev_cursor).await?;
                    e
                } else {
                    None
                };
                match previous.and_then(|e| e.object) {
                    Some(meta) if unchanged(&meta, &obj) => {
                        summary.unchanged += 1;
                        stats.objects += 1;
                        stats.bytes += meta.size;
                        progress.done_objects.fetch_add(1, Ordering::Relaxed);
                        progress.done_bytes.fetch_add(meta.size, Ordering::Relaxed);
                        continue;
                    }
                    previous => {
                        let existed = previous.is_some();
                        let permit =
                            semaphore.clone().acquire_owned().await.map_err(|_| {
                                Error::new(ErrorKind::Cancelled, "worker pool closed")
                            })?;
                        let (src, pk, o) = (source.clone(), packer.clone(), obj.clone());
                        let handle = tokio::task::spawn_blocking(move || {
                            let _permit = permit;
                            store_object(&*src, &pk, o)
                        });
                        Pending::Job(handle, obj, existed)
                    }
                }
            }
        };
        queue.push_back(item);
        while queue.len() >= max_queue {
            drain_one(
                &mut queue,
                &mut builder,
                repo,
                &mut summary,
                &mut stats,
                seq,
                &progress,
            )
            .await?;
        }
    }
    while !queue.is_empty() {
        drain_one(
            &mut queue,
            &mut builder,
            repo,
            &mut summary,
            &mut stats,
            seq,
            &progress,
        )
        .await?;
    }
    drop(prev_cursor);

    // All packs uploaded before anything refers to them.
    let packer =
        Arc::try_unwrap(packer).map_err(|_| Error::new(ErrorKind::Io, "packer still in use"))?;
    let packed = packer.finish().await?;
    let run = builder.finish();
    repo.store_pages(builder.take_ready()).await?;

    let mut index_entries = packed.entries;
    index_entries.extend(refresh.recovered);
    stats.puts = summary.changed;
    stats.deletes = summary.deleted;
    stats.new_packs = packed.packs;
    stats.new_stored_bytes = packed.stored_bytes;
    let point = repo
        .commit(
            prev.as_ref(),
            CommitRequest {
                time_ns,
                source: source.describe(),
                run,
                index_entries,
                stats,
            },
        )
        .await?;
    summary.seq = point.seq;
    summary.time_ns = point.time_ns;
    summary.objects = stats.objects;
    summary.bytes = stats.bytes;
    summary.bytes_read = progress.read_bytes.load(Ordering::Relaxed);
    summary.new_blobs = packed.blobs;
    summary.new_stored_bytes = packed.stored_bytes;
    summary.packs_written = packed.packs;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn next_prev(cursor: &mut Option<StateCursor<'_>>) -> Result<Option<Entry>> {
    match cursor {
        Some(c) => c.next().await,
        None => Ok(None),
    }
}

fn unchanged(meta: &ObjectMeta, obj: &SourceObject) -> bool {
    meta.size == obj.size
        && meta.mtime_ns == obj.mtime_ns
        && meta.mode == obj.mode
        && meta.etag == obj.etag
        && meta.version_id == obj.version_id
}

async fn drain_one(
    queue: &mut VecDeque<Pending>,
    builder: &mut crate::manifest::run::RunBuilder,
    repo: &Repository,
    summary: &mut IngestSummary,
    stats: &mut PointStats,
    seq: u64,
    progress: &IngestProgress,
) -> Result<()> {
    let Some(item) = queue.pop_front() else {
        return Ok(());
    };
    let entry = match item {
        Pending::Ready(e) => e,
        Pending::Job(handle, obj, existed) => {
            let outcome = handle
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("worker failed: {e}")))?;
            progress.done_objects.fetch_add(1, Ordering::Relaxed);
            progress.done_bytes.fetch_add(obj.size, Ordering::Relaxed);
            match outcome {
                Ok(Outcome::Stored(meta)) => {
                    progress.read_bytes.fetch_add(meta.size, Ordering::Relaxed);
                    summary.changed += 1;
                    stats.objects += 1;
                    stats.bytes += meta.size;
                    Some(Entry {
                        key: obj.key,
                        seq,
                        object: Some(meta),
                    })
                }
                Ok(Outcome::Vanished) if existed => {
                    summary.deleted += 1;
                    Some(Entry {
                        key: obj.key,
                        seq,
                        object: None,
                    })
                }
                Ok(Outcome::Vanished) => None,
                Err(e) if matches!(e.kind(), ErrorKind::Io | ErrorKind::NotFound) => {
                    // The object keeps its previous version (if any); the
                    // pass goes on and reports it.
                    tracing::warn!(key = %obj.key, error = %e, "could not read object");
                    summary.errors.push(format!("{}: {e}", obj.key));
                    None
                }
                Err(e) => return Err(e.context(obj.key)),
            }
        }
    };
    if let Some(e) = entry {
        builder.push(e)?;
        let ready = builder.take_ready();
        if !ready.is_empty() {
            repo.store_pages(ready).await?;
        }
    }
    Ok(())
}

/// Reads one object into packs; re-reads (up to 3 times) if it changed
/// while being read, so the stored bytes always match the stored metadata.
fn store_object(source: &dyn Source, packer: &Packer, mut obj: SourceObject) -> Result<Outcome> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (reader, meta) = match source.open(&obj) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Outcome::Vanished),
            // A failed precondition: the object changed since the listing.
            Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 3 => {
                match source.restat(&SourceObject {
                    version_id: String::new(),
                    etag: String::new(),
                    ..obj.clone()
                })? {
                    Some(now) => {
                        obj = SourceObject {
                            key: obj.key,
                            ..now
                        };
                        continue;
                    }
                    None => return Ok(Outcome::Vanished),
                }
            }
            Err(e) => return Err(e),
        };
        let mut chunks = Vec::new();
        let read = packer.chunker().for_each_chunk(reader, meta.size, |data| {
            chunks.push(packer.store_blob(data)?);
            Ok(())
        })?;
        let Some(now) = source.restat(&meta)? else {
            return Ok(Outcome::Vanished);
        };
        let stable = now.size == read
            && now.mtime_ns == meta.mtime_ns
            && now.etag == meta.etag
            && now.size == meta.size;
        if stable || attempt >= 3 {
            if !stable {
                tracing::warn!(key = %obj.key, "object kept changing while read; recording the last read");
            }
            return Ok(Outcome::Stored(ObjectMeta {
                size: read,
                mtime_ns: now.mtime_ns,
                mode: now.mode,
                version_id: meta.version_id,
                etag: meta.etag,
                system: meta.system,
                user: meta.user,
                tags: meta.tags,
                chunks,
            }));
        }
        tracing::debug!(key = %obj.key, attempt, "object changed while read; reading again");
        obj = SourceObject {
            key: obj.key,
            ..now
        };
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
