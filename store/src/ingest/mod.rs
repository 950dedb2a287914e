//! One backup pass: compare the source with the latest point, store what
//! changed, and commit a new point.
//!
//! Data flow: source listing (sorted) is merge-joined with the state of the
//! latest point — or, with a change set from a feed, only the keys it
//! names are looked up there and at the source; unchanged objects (same
//! size, mtime, mode, ETag, version) cost nothing; changed objects go to a bounded set of blocking workers that
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

use crate::changes::{ChangeEvent, ChangeKind, ChangeSet};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::point::PointStats;
use crate::manifest::{Entry, ObjectMeta};
use crate::repo::now_ns;
use crate::repo::runs::StateCursor;
use crate::repo::{CommitRequest, Repository};
use crate::source::{Source, SourceObject};
use packer::Packer;

/// Options for one pass.
#[derive(Clone, Debug, Default)]
pub struct IngestOptions {
    /// Blocking workers reading and encoding objects (default: CPU count).
    pub workers: Option<usize>,
    /// Time to stamp the point with, ns since the epoch (default: the
    /// source's clock, else the host's, when the listing finished).
    pub time_ns: Option<i64>,
    /// Override the vault's pack target size (bytes).
    pub pack_target_size: Option<u32>,
    /// Only these keys changed (from a change feed). `None`: list the
    /// whole source and diff it against the last point.
    pub changes: Option<ChangeSet>,
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
    /// A deletion found without reading: the entry and the size it removes.
    Deleted(Entry, u64),
    /// A job reading the key; the previous version's size, if it had one.
    Job(JoinHandle<Result<Outcome>>, String, Option<u64>),
}

enum Outcome {
    Stored(ObjectMeta),
    Vanished,
    Unchanged,
}

/// What the pass looks at for one key.
enum Candidate {
    /// Listed by the source, with the last point's version of the key.
    Listed(SourceObject, Option<ObjectMeta>),
    /// In the last point, absent from the listing.
    Gone(String, ObjectMeta),
    /// Named by a change event: look at what the source holds now.
    Changed(String, ChangeEvent, Option<ObjectMeta>),
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

    let (listing, skipped) = match &opts.changes {
        Some(changes) => {
            progress
                .listed_objects
                .store(changes.len() as u64, Ordering::Relaxed);
            (Vec::new(), 0)
        }
        None => {
            let (listing, skipped) = source.list().await?;
            progress
                .listed_objects
                .store(listing.len() as u64, Ordering::Relaxed);
            progress
                .listed_bytes
                .store(listing.iter().map(|o| o.size).sum(), Ordering::Relaxed);
            (listing, skipped)
        }
    };
    // The state is observed from now on, by the source's clock where it
    // has one (an S3 server's Date), else the host's; events carry the
    // source's clock too, so a point never predates a change it holds.
    // Whole milliseconds, as times print.
    let observed = match opts.time_ns {
        Some(t) => t,
        None => source.clock_ns().await?.unwrap_or_else(now_ns),
    };
    let time_ns = (observed - observed.rem_euclid(1_000_000))
        .max(opts.changes.as_ref().map_or(0, |c| c.newest_ns));

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
    // Totals move by the changes: a pass costs what changed, not the bucket.
    let mut stats = PointStats {
        objects: prev.as_ref().map_or(0, |(p, _)| p.stats.objects),
        bytes: prev.as_ref().map_or(0, |(p, _)| p.stats.bytes),
        ..Default::default()
    };
    let mut pass = Pass {
        repo,
        builder: repo.run_builder(),
        queue: VecDeque::new(),
        summary: &mut summary,
        stats: &mut stats,
        seq,
        progress: &progress,
    };
    let max_queue = 64 + workers * 4;
    let mut candidates = Candidates::new(
        repo,
        prev.as_ref().map(|(p, _)| p),
        listing,
        opts.changes.as_ref(),
    )
    .await?;
    while let Some(candidate) = candidates.next().await? {
        let job = |key: String, previous: Option<&ObjectMeta>, work: Work| {
            let (src, pk, sem) = (source.clone(), packer.clone(), semaphore.clone());
            let prev_size = previous.map(|m| m.size);
            let previous = previous.cloned();
            async move {
                let permit = sem
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::new(ErrorKind::Cancelled, "worker pool closed"))?;
                let k = key.clone();
                let handle = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    match work {
                        Work::Store(obj) => store_object(&*src, &pk, obj),
                        Work::Check => check_and_store(&*src, &pk, k, previous.as_ref()),
                    }
                });
                Ok::<_, Error>(Pending::Job(handle, key, prev_size))
            }
        };
        let item = match candidate {
            Candidate::Gone(key, meta) => Pending::Deleted(
                Entry {
                    key,
                    seq,
                    object: None,
                },
                meta.size,
            ),
            Candidate::Listed(obj, Some(meta)) if unchanged(&meta, &obj) => {
                pass.summary.unchanged += 1;
                progress.done_objects.fetch_add(1, Ordering::Relaxed);
                progress.done_bytes.fetch_add(meta.size, Ordering::Relaxed);
                continue;
            }
            Candidate::Listed(obj, previous) => {
                job(obj.key.clone(), previous.as_ref(), Work::Store(obj)).await?
            }
            Candidate::Changed(_, event, Some(meta)) if event_matches(&event, &meta) => {
                // A duplicate or late event of the version already recorded.
                pass.summary.unchanged += 1;
                progress.done_objects.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Candidate::Changed(key, _, previous) => {
                job(key, previous.as_ref(), Work::Check).await?
            }
        };
        pass.queue.push_back(item);
        while pass.queue.len() >= max_queue {
            pass.drain_one().await?;
        }
    }
    while !pass.queue.is_empty() {
        pass.drain_one().await?;
    }
    drop(candidates);
    let mut builder = pass.builder;

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

/// What a job does with its key.
enum Work {
    /// Read and store this listed object.
    Store(SourceObject),
    /// Look at what the source holds now; store it if it differs.
    Check,
}

/// The candidates of one pass, in key order: a merge-join of the listing
/// with the last point's state, or the keys of a change set each looked
/// up in the last point.
struct Candidates<'r> {
    repo: &'r Repository,
    prev: Option<&'r crate::manifest::point::Point>,
    listing: std::iter::Peekable<std::vec::IntoIter<SourceObject>>,
    prev_cursor: Option<StateCursor<'r>>,
    prev_head: Option<Entry>,
    changes: Option<std::collections::btree_map::Iter<'r, String, ChangeEvent>>,
}

impl<'r> Candidates<'r> {
    async fn new(
        repo: &'r Repository,
        prev: Option<&'r crate::manifest::point::Point>,
        listing: Vec<SourceObject>,
        changes: Option<&'r ChangeSet>,
    ) -> Result<Candidates<'r>> {
        let changes = changes.map(ChangeSet::iter);
        let mut prev_cursor = match (prev, &changes) {
            (Some(p), None) => Some(StateCursor::new(repo, &p.runs, p.seq, "").await?),
            _ => None,
        };
        let prev_head = match &mut prev_cursor {
            Some(c) => c.next().await?,
            None => None,
        };
        Ok(Candidates {
            repo,
            prev,
            listing: listing.into_iter().peekable(),
            prev_cursor,
            prev_head,
            changes,
        })
    }

    async fn advance_prev(&mut self) -> Result<Option<Entry>> {
        let next = match &mut self.prev_cursor {
            Some(c) => c.next().await?,
            None => None,
        };
        Ok(std::mem::replace(&mut self.prev_head, next))
    }

    async fn next(&mut self) -> Result<Option<Candidate>> {
        if let Some(changes) = &mut self.changes {
            let Some((key, event)) = changes.next() else {
                return Ok(None);
            };
            let (key, event) = (key.clone(), event.clone());
            let previous = match self.prev {
                Some(p) => crate::restore::lookup(self.repo, p, &key)
                    .await?
                    .and_then(|e| e.object),
                None => None,
            };
            return Ok(Some(Candidate::Changed(key, event, previous)));
        }
        let listed = self.listing.peek().map(|o| o.key.as_bytes());
        let recorded = self.prev_head.as_ref().map(|e| e.key.as_bytes());
        match (listed, recorded) {
            (None, None) => Ok(None),
            // In the last point, gone from the source: a deletion.
            (l, Some(r)) if l.is_none_or(|l| r < l) => {
                let e = self.advance_prev().await?.expect("peeked");
                let meta = e.object.expect("state cursors yield live entries");
                Ok(Some(Candidate::Gone(e.key, meta)))
            }
            (_, r) => {
                let obj = self.listing.next().expect("peeked");
                let previous = if r == Some(obj.key.as_bytes()) {
                    self.advance_prev().await?.and_then(|e| e.object)
                } else {
                    None
                };
                Ok(Some(Candidate::Listed(obj, previous)))
            }
        }
    }
}

fn unchanged(meta: &ObjectMeta, obj: &SourceObject) -> bool {
    meta.size == obj.size
        && meta.mtime_ns == obj.mtime_ns
        && meta.mode == obj.mode
        && meta.etag == obj.etag
        && meta.version_id == obj.version_id
}

/// True when `event` announces exactly the version `meta` records.
fn event_matches(event: &ChangeEvent, meta: &ObjectMeta) -> bool {
    event.kind == ChangeKind::Created
        && !event.etag.is_empty()
        && event.etag == meta.etag.trim_matches('"')
        && event.version_id == meta.version_id
        && event.size.is_none_or(|s| s == meta.size)
}

/// The state of one pass's output: the run being built and the totals.
struct Pass<'a> {
    repo: &'a Repository,
    builder: crate::manifest::run::RunBuilder,
    queue: VecDeque<Pending>,
    summary: &'a mut IngestSummary,
    stats: &'a mut PointStats,
    seq: u64,
    progress: &'a IngestProgress,
}

impl Pass<'_> {
    async fn drain_one(&mut self) -> Result<()> {
        let Some(item) = self.queue.pop_front() else {
            return Ok(());
        };
        let seq = self.seq;
        let entry = match item {
            Pending::Deleted(entry, size) => {
                self.remove(size);
                Some(entry)
            }
            Pending::Job(handle, key, prev_size) => {
                let outcome = handle
                    .await
                    .map_err(|e| Error::new(ErrorKind::Io, format!("worker failed: {e}")))?;
                self.progress.done_objects.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    Ok(Outcome::Stored(meta)) => {
                        let p = self.progress;
                        p.read_bytes.fetch_add(meta.size, Ordering::Relaxed);
                        p.done_bytes.fetch_add(meta.size, Ordering::Relaxed);
                        self.summary.changed += 1;
                        match prev_size {
                            Some(old) => {
                                self.stats.bytes = self.stats.bytes.saturating_sub(old) + meta.size;
                            }
                            None => {
                                self.stats.objects += 1;
                                self.stats.bytes += meta.size;
                            }
                        }
                        Some(Entry {
                            key,
                            seq,
                            object: Some(meta),
                        })
                    }
                    Ok(Outcome::Vanished) => prev_size.map(|old| {
                        self.remove(old);
                        Entry {
                            key,
                            seq,
                            object: None,
                        }
                    }),
                    Ok(Outcome::Unchanged) => {
                        self.summary.unchanged += 1;
                        None
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::Io | ErrorKind::NotFound) => {
                        // The object keeps its previous version (if any); the
                        // pass goes on and reports it.
                        tracing::warn!(%key, error = %e, "could not read object");
                        self.summary.errors.push(format!("{key}: {e}"));
                        None
                    }
                    Err(e) => return Err(e.context(key)),
                }
            }
        };
        if let Some(e) = entry {
            self.builder.push(e)?;
            let ready = self.builder.take_ready();
            if !ready.is_empty() {
                self.repo.store_pages(ready).await?;
            }
        }
        Ok(())
    }

    /// Counts a deletion of an object of `size` bytes.
    fn remove(&mut self, size: u64) {
        self.summary.deleted += 1;
        self.stats.objects = self.stats.objects.saturating_sub(1);
        self.stats.bytes = self.stats.bytes.saturating_sub(size);
    }
}

/// Looks at what the source holds for `key` now: gone, the version
/// `previous` records, or something to store.
fn check_and_store(
    source: &dyn Source,
    packer: &Packer,
    key: String,
    previous: Option<&ObjectMeta>,
) -> Result<Outcome> {
    let probe = SourceObject {
        key,
        ..Default::default()
    };
    match source.restat(&probe)? {
        None => Ok(Outcome::Vanished),
        Some(now) if previous.is_some_and(|m| unchanged(m, &now)) => Ok(Outcome::Unchanged),
        Some(now) => store_object(source, packer, now),
    }
}

/// Reads of one object before giving up on it for this pass.
const MAX_READS: u32 = 3;

/// Reads one object into packs; re-reads (up to [`MAX_READS`] times) if it
/// changed while being read, the read failed, or a pinned read came back
/// short, so the stored bytes always match the stored metadata.
fn store_object(source: &dyn Source, packer: &Packer, mut obj: SourceObject) -> Result<Outcome> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (reader, meta) = match source.open(&obj) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Outcome::Vanished),
            // A failed precondition: the object changed since the listing.
            Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < MAX_READS => {
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
        let read = match packer.chunker().for_each_chunk(reader, meta.size, |data| {
            chunks.push(packer.store_blob(data)?);
            Ok(())
        }) {
            Ok(n) => n,
            // A reset connection or a failing read mid-object: read again.
            Err(e)
                if matches!(e.kind(), ErrorKind::Io | ErrorKind::Transient)
                    && attempt < MAX_READS =>
            {
                tracing::warn!(key = %obj.key, attempt, error = %e, "read failed; reading again");
                continue;
            }
            Err(e) => return Err(e),
        };
        // A pinned read (version id or ETag) promised exactly `meta.size`
        // bytes: fewer is a truncated body, never stored.
        let pinned = !meta.version_id.is_empty() || !meta.etag.is_empty();
        if pinned && read != meta.size {
            if attempt < MAX_READS {
                tracing::warn!(key = %obj.key, read, size = meta.size, "short read; reading again");
                continue;
            }
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "read {read} of {} bytes {MAX_READS} times (truncated bodies); not recorded",
                    meta.size
                ),
            ));
        }
        let Some(now) = source.restat(&meta)? else {
            return Ok(Outcome::Vanished);
        };
        let stable = now.size == read
            && now.mtime_ns == meta.mtime_ns
            && now.etag == meta.etag
            && now.size == meta.size;
        if stable || attempt >= MAX_READS {
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
