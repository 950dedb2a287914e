//! One backup pass: compare the source with the latest point, store what
//! changed, and commit a new point.
//!
//! Data flow: the [`plan`]ner splits the key space into partitions; each
//! partition ([`partition`]) lists its range page by page and merge-joins
//! it with the latest point's state of the range — or, with a change set
//! from a feed, one partition looks up only the keys it names. Unchanged
//! objects (same size, mtime, mode, ETag, version) cost nothing; changed
//! objects wait for a slot on their partition's lane in the [`scheduler`]
//! (which backs off where the source pushes back) and then for one of a
//! bounded set of blocking workers that read, chunk, hash, dedup, compress
//! and encrypt into packs; full packs go over a bounded channel to the
//! uploader; entries come back in key order into the partition's runs.
//! Then the partitions' runs are concatenated and [`Repository::commit`]
//! writes index segment, run pages and the time-index entry, in that order.
//!
//! Resuming: every checkpoint interval the pass records each partition's
//! progress in the vault (`passes/<seq>/<n>`); a pass that finds a state
//! for the point it is about to commit, made from the same latest point,
//! skips finished partitions and continues the others after their
//! cursors. A pass marks its start (`passes/<seq>/begun`) before its first
//! pack; a pass that finds the mark of its own point lists `packs/` and
//! indexes the packs no segment describes from their trailers, so their
//! blobs are not uploaded again. A pass after a clean commit lists no
//! packs.

mod packer;
mod partition;
pub use packer::MAX_PACK_BLOBS;
pub mod plan;
mod read;
pub mod scheduled;
pub mod scheduler;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use crate::changes::ChangeSet;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::manifest::pass::{PartitionState, PassState, Totals};
use crate::manifest::point::PointStats;
use crate::manifest::ObjectMeta;
use crate::repo::now_ns;
use crate::repo::{CommitRequest, Repository};
use crate::source::Source;
use packer::Packer;
use partition::{lock, PassCtx};
use scheduled::ScheduledSource;
use scheduler::{LaneMap, Scheduler, SchedulerOptions};

/// Options for one pass.
#[derive(Clone, Debug, Default)]
pub struct IngestOptions {
    /// Blocking workers reading and encoding objects (default: the CPU
    /// count plus [`LOCAL_EXTRA_WORKERS`]; for a remote source at least
    /// [`REMOTE_WORKERS`]).
    pub workers: Option<usize>,
    /// Time to stamp the point with, ns since the epoch (default: the
    /// source's clock, else the host's, when the listing finished).
    pub time_ns: Option<i64>,
    /// Override the vault's pack target size (bytes).
    pub pack_target_size: Option<u32>,
    /// Most blobs in one pack (default [`packer::MAX_PACK_BLOBS`]).
    pub pack_max_blobs: Option<usize>,
    /// Only these keys changed (from a change feed). `None`: list the
    /// whole source and diff it against the last point.
    pub changes: Option<ChangeSet>,
    /// How requests to the source are paced.
    pub schedule: SchedulerOptions,
    /// Partitions to split a full pass into (default [`DEFAULT_PARTITIONS`]).
    pub partitions: Option<usize>,
    /// Partitions worked at once (default: 4 per worker, at least 8).
    pub active_partitions: Option<usize>,
    /// How often progress is recorded in the vault (default 30 s).
    pub checkpoint_interval: Option<Duration>,
    /// Partition boundaries to use instead of planning (e.g. sampled from
    /// an S3 Inventory report): sorted keys, each ending a partition.
    pub boundaries: Option<Vec<String>>,
    /// New blobs per index segment written while the pass runs (default
    /// [`packer::SEGMENT_ENTRIES`]): bounds what the pass holds in memory.
    pub segment_entries: Option<usize>,
}

/// Workers for a remote (request-limited) source unless told otherwise:
/// each waits on a GET most of the time. With the CPU count (2 here) an
/// S3 pass read 46 objects/s from the local server; with 32, 618.
pub const REMOTE_WORKERS: usize = 32;

/// Workers beyond the CPU count for a local source: while one waits (on
/// a read from the disk, on the uploader, on a page fault) another keeps
/// its core busy. Large data with 2 CPUs, 2 → 4 workers: 2.18–2.29 →
/// 1.94–2.03 s from the page cache, 3.67–4.19 → 3.22–3.35 s from the disk;
/// each extra worker may hold a read window and a pack buffer (up to
/// ~33 MiB).
pub const LOCAL_EXTRA_WORKERS: usize = 2;

/// Partitions a full pass is split into unless told otherwise.
pub const DEFAULT_PARTITIONS: usize = 64;
/// Progress is recorded this often unless told otherwise.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);

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
    /// Entries the source could not represent.
    pub skipped: AtomicU64,
    /// Partitions in the pass.
    pub partitions: AtomicU64,
    /// Partitions finished.
    pub partitions_done: AtomicU64,
    /// Partitions being worked.
    pub partitions_active: AtomicU64,
    /// The pass's scheduler (requests, throttling, lanes), once it runs.
    pub scheduler: Mutex<Option<Arc<Scheduler>>>,
}

impl IngestProgress {
    /// The running pass's scheduler, if any.
    pub fn scheduler(&self) -> Option<Arc<Scheduler>> {
        lock(&self.scheduler).clone()
    }
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
    /// Partitions the pass was split into.
    pub partitions: u64,
    /// Partitions finished by an earlier, interrupted run of this pass.
    pub resumed_partitions: u64,
    /// Requests sent to the source.
    pub requests: u64,
    /// Requests the source pushed back on (503 SlowDown, 5xx, timeouts).
    pub throttled: u64,
    /// Requests sent again after back-pressure.
    pub retries: u64,
    /// Wall time in seconds.
    pub elapsed_s: f64,
}

/// What reading one object came to.
pub(crate) enum Outcome {
    Stored(ObjectMeta),
    Vanished,
    Unchanged,
}

/// Runs one pass of `source` into `repo` and commits a point.
pub async fn ingest(
    repo: &Repository,
    source: Arc<dyn Source>,
    opts: &IngestOptions,
    progress: Arc<IngestProgress>,
) -> Result<IngestSummary> {
    let started = Instant::now();
    let prev = repo.latest_point().await?;
    let seq = prev.as_ref().map_or(0, |(p, _)| p.seq + 1);
    let prev_hash = prev.as_ref().map(|(_, h)| *h).unwrap_or_default();
    // Packs no segment describes are left only by a pass for this point
    // that stopped (it marked its start before its first pack): listing
    // every pack of a vault of millions each pass is what this spares.
    let interrupted = repo.pass_marked(seq).await?;
    let refresh = repo.refresh_index(interrupted).await?;
    if !refresh.recovered_packs.is_empty() {
        tracing::info!(
            packs = refresh.recovered_packs.len(),
            "indexed packs left by an interrupted pass"
        );
    }

    // Only a source with request limits gets per-partition pacing.
    let mut schedule = opts.schedule.clone();
    schedule.adaptive &= source.paced();
    let scheduler = Arc::new(Scheduler::new(schedule));
    *lock(&progress.scheduler) = Some(scheduler.clone());
    let lanes = Arc::new(LaneMap::default());
    lanes.insert("", scheduler.add_lane("planning", None));
    let scheduled: Arc<dyn Source> = Arc::new(ScheduledSource::new(
        source.clone(),
        scheduler.clone(),
        lanes.clone(),
    ));

    // The partitions: one for a change set; else resumed or planned.
    let described = source.describe();
    let mut state_n = 0;
    let mut fixed_time = opts.time_ns;
    let partitions = match &opts.changes {
        Some(changes) => {
            progress
                .listed_objects
                .store(changes.len() as u64, Ordering::Relaxed);
            vec![PartitionState::default()]
        }
        None => match resume(repo, seq, prev_hash, &described).await? {
            Some((state, n)) => {
                state_n = n + 1;
                if state.time_ns != 0 {
                    fixed_time = Some(state.time_ns);
                }
                state.partitions
            }
            None => {
                let ranges = match &opts.boundaries {
                    Some(b) => plan::ranges_from(plan::thin(
                        b.iter().cloned().collect(),
                        opts.partitions.unwrap_or(DEFAULT_PARTITIONS),
                    )),
                    None => {
                        plan::plan(&*scheduled, opts.partitions.unwrap_or(DEFAULT_PARTITIONS))
                            .await?
                    }
                };
                ranges
                    .into_iter()
                    .map(|range| PartitionState {
                        range,
                        ..Default::default()
                    })
                    .collect()
            }
        },
    };
    let resumed = partitions.iter().filter(|p| p.done).count() as u64;
    progress
        .partitions
        .store(partitions.len() as u64, Ordering::Relaxed);
    progress.partitions_done.store(resumed, Ordering::Relaxed);
    tracing::info!(partitions = partitions.len(), resumed, "pass planned");
    // A change set is stamped when its events are known; a full pass when
    // it ends (below). Whole milliseconds, as times print.
    let change_time = match (&opts.changes, fixed_time) {
        (Some(changes), None) => {
            let observed = scheduled.clock_ns().await?.unwrap_or_else(now_ns);
            Some((observed - observed.rem_euclid(1_000_000)).max(changes.newest_ns))
        }
        _ => None,
    };

    // Asked once: it reads cgroup files.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = opts
        .workers
        .unwrap_or(
            // A remote source's reads wait on the network, not the CPU.
            if source.paced() {
                cpus.max(REMOTE_WORKERS)
            } else {
                cpus + LOCAL_EXTRA_WORKERS
            },
        )
        .max(1);
    let target = opts
        .pack_target_size
        .unwrap_or(repo.config().pack_target_size) as usize;
    let (split_tx, mut split_rx) = tokio::sync::mpsc::unbounded_channel();
    // Lanes of split-off partitions; the others get theirs when they
    // start, at the rate the last finished lane reached (a new partition
    // of the same bucket likely has the same room).
    let mut lane_of: std::collections::HashMap<usize, usize> = Default::default();
    let mut rate_hint: Option<f64> = None;
    let ctx = PassCtx {
        repo,
        source: scheduled.clone(),
        scheduler: scheduler.clone(),
        packer: Arc::new(Packer::start(
            repo,
            seq,
            packer::PackLimits {
                bytes: target,
                blobs: opts.pack_max_blobs.unwrap_or(packer::MAX_PACK_BLOBS),
                segment_entries: opts.segment_entries.unwrap_or(packer::SEGMENT_ENTRIES),
                // A remote source's extra workers wait on the network
                // and do not each keep a window.
                idle_windows: if source.paced() {
                    cpus.min(workers)
                } else {
                    workers
                },
                builders: cpus,
            },
            progress.clone(),
        )),
        workers: Arc::new(Semaphore::new(workers)),
        seq,
        prev: prev.as_ref().map(|(p, _)| p),
        progress: progress.clone(),
        epoch: AtomicU64::new(0),
        max_queue: 64 + workers * 4,
        states: Mutex::new(partitions.clone()),
        errors: Mutex::new(Vec::new()),
        lanes: lanes.clone(),
        splits: split_tx,
        max_partitions: plan::MAX_PARTITIONS,
    };
    let record = opts.changes.is_none();
    let mut recorded = PassState {
        seq,
        prev: prev_hash,
        time_ns: fixed_time.unwrap_or(0),
        source: described.clone(),
        partitions: Vec::new(),
    };
    let mut todo: std::collections::VecDeque<usize> = (0..partitions.len())
        .filter(|&i| !partitions[i].done)
        .collect();
    let active = opts
        .active_partitions
        .unwrap_or((workers * 4).max(8))
        .max(1);
    let interval = opts
        .checkpoint_interval
        .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL)
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut running = FuturesUnordered::new();
    loop {
        while let Ok((slot, lane)) = split_rx.try_recv() {
            lane_of.insert(slot, lane);
            todo.push_back(slot);
            progress.partitions.fetch_add(1, Ordering::Relaxed);
        }
        while running.len() < active {
            let Some(i) = todo.pop_front() else { break };
            let changes = opts.changes.as_ref();
            let state = lock(&ctx.states).get(i).cloned().unwrap_or_default();
            let lane = *lane_of.entry(i).or_insert_with(|| {
                let lane = scheduler.add_lane(&state.range.after, rate_hint);
                lanes.insert(&state.range.after, lane);
                lane
            });
            let ctx = &ctx;
            running.push(async move {
                partition::run(ctx, i, lane, state, changes)
                    .await
                    .map(|()| lane)
            });
        }
        progress
            .partitions_active
            .store(running.len() as u64, Ordering::Relaxed);
        if running.is_empty() {
            break;
        }
        tokio::select! {
            done = running.next() => {
                if let Some(r) = done {
                    let lane = r?;
                    rate_hint = Some(scheduler.lane_rate(lane));
                }
                // Recorded at the next tick: a short pass writes no state.
                progress.partitions_done.fetch_add(1, Ordering::Relaxed);
            }
            Some((slot, lane)) = split_rx.recv() => {
                lane_of.insert(slot, lane);
                todo.push_back(slot);
                progress.partitions.fetch_add(1, Ordering::Relaxed);
            }
            () = ctx.packer.segment_due.notified() => {
                ctx.packer.write_segment(repo).await?;
            }
            _ = tick.tick() => {
                if record {
                    checkpoint(&ctx, &mut recorded, &mut state_n).await?;
                }
                log_progress(&progress, &scheduler);
            }
        }
    }
    drop(running);
    let PassCtx {
        packer,
        states,
        errors,
        ..
    } = ctx;
    let states = states
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);

    // All packs uploaded before anything refers to them.
    let packer =
        Arc::try_unwrap(packer).map_err(|_| Error::new(ErrorKind::Io, "packer still in use"))?;
    let packed = packer.finish().await?;
    let mut totals = Totals::default();
    let mut runs = Vec::new();
    for p in &states {
        totals.add(&p.totals);
        runs.extend(p.runs.iter().cloned());
    }
    let run = repo.concat_runs(&runs).await?;

    let time_ns = match (fixed_time, change_time) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => {
            let t = scheduled.clock_ns().await?.unwrap_or_else(now_ns);
            t - t.rem_euclid(1_000_000)
        }
    };
    let mut index_entries = packed.entries;
    index_entries.extend(refresh.recovered);
    let base = prev.as_ref().map(|(p, _)| p.stats).unwrap_or_default();
    let stats = PointStats {
        objects: add_signed(base.objects, totals.objects_delta),
        bytes: add_signed(base.bytes, totals.bytes_delta),
        puts: totals.changed,
        deletes: totals.deleted,
        new_packs: packed.packs,
        new_stored_bytes: packed.stored_bytes,
    };
    let point = repo
        .commit(
            prev.as_ref(),
            CommitRequest {
                time_ns,
                source: described,
                run,
                index_entries,
                segments_written: packed.segments,
                stats,
            },
        )
        .await?;
    let counters = &scheduler.counters;
    Ok(IngestSummary {
        seq: point.seq,
        time_ns: point.time_ns,
        objects: stats.objects,
        bytes: stats.bytes,
        changed: totals.changed,
        deleted: totals.deleted,
        unchanged: totals.unchanged,
        skipped: progress.skipped.load(Ordering::Relaxed),
        errors: errors
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        bytes_read: progress.read_bytes.load(Ordering::Relaxed),
        new_blobs: packed.blobs,
        new_stored_bytes: packed.stored_bytes,
        packs_written: packed.packs,
        recovered_packs: refresh.recovered_packs.len() as u64,
        partitions: states.len() as u64,
        resumed_partitions: resumed,
        requests: counters.requests.load(Ordering::Relaxed),
        throttled: counters.throttled.load(Ordering::Relaxed),
        retries: counters.retries.load(Ordering::Relaxed),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

fn add_signed(base: u64, delta: i64) -> u64 {
    if delta >= 0 {
        base.saturating_add(delta.unsigned_abs())
    } else {
        base.saturating_sub(delta.unsigned_abs())
    }
}

/// Records the partitions' progress: the states as last cut, once the
/// blobs their runs name are uploaded; then asks partitions to cut again.
async fn checkpoint(ctx: &PassCtx<'_>, recorded: &mut PassState, n: &mut u32) -> Result<()> {
    let mut snapshot = lock(&ctx.states).clone();
    snapshot.sort_by(|a, b| a.range.after.as_bytes().cmp(b.range.after.as_bytes()));
    if snapshot == recorded.partitions {
        ctx.epoch.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    ctx.packer.flush().await?;
    recorded.partitions = snapshot;
    ctx.repo.put_pass_state(recorded, *n).await?;
    tracing::debug!(seq = recorded.seq, n = *n, "pass progress recorded");
    *n += 1;
    ctx.epoch.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn log_progress(progress: &IngestProgress, scheduler: &Scheduler) {
    let c = &scheduler.counters;
    tracing::info!(
        partitions = progress.partitions.load(Ordering::Relaxed),
        done = progress.partitions_done.load(Ordering::Relaxed),
        active = progress.partitions_active.load(Ordering::Relaxed),
        objects = progress.done_objects.load(Ordering::Relaxed),
        requests = c.requests.load(Ordering::Relaxed),
        throttled = c.throttled.load(Ordering::Relaxed),
        bytes = c.bytes.load(Ordering::Relaxed),
        "pass progress"
    );
}

/// The latest recorded state of the pass that would commit `seq` from the
/// point `prev`, with each partition's runs checked: a run naming a blob
/// the vault does not hold (its pack never finished uploading) sends its
/// partition back to the start of its range.
async fn resume(
    repo: &Repository,
    seq: u64,
    prev: ObjectId,
    source: &str,
) -> Result<Option<(PassState, u32)>> {
    let Some((mut state, n)) = repo.latest_pass_state(seq).await? else {
        return Ok(None);
    };
    if state.prev != prev || state.source != source {
        tracing::info!(
            seq,
            "an interrupted pass of another source or base is not resumed"
        );
        return Ok(None);
    }
    for p in &mut state.partitions {
        let mut whole = true;
        'runs: for run in &p.runs {
            let mut c = crate::repo::runs::RunCursor::start(repo, run).await?;
            while let Some(e) = c.next().await? {
                let chunks = e.object.iter().flat_map(|o| o.chunks.iter());
                if chunks.into_iter().any(|b| repo.blob_entry(b).is_none()) {
                    whole = false;
                    break 'runs;
                }
            }
        }
        if !whole {
            tracing::warn!(range = ?p.range, "recorded progress names blobs the vault lacks; redoing the partition");
            *p = PartitionState {
                range: p.range.clone(),
                ..Default::default()
            };
        }
    }
    tracing::info!(
        seq,
        done = state.partitions.iter().filter(|p| p.done).count(),
        partitions = state.partitions.len(),
        "resuming an interrupted pass"
    );
    Ok(Some((state, n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::Backend;
    use crate::repo::{InitOptions, OpenOptions};
    use crate::source::{KeyRange, ListPage, SourceObject};
    use std::collections::BTreeMap;
    use std::io::Read;

    /// A source listed in small pages that throttles every third read,
    /// and fails every read of the `broken` keys.
    struct Throttling {
        objects: BTreeMap<String, Vec<u8>>,
        reads: AtomicU64,
        broken: std::collections::HashSet<String>,
    }

    impl Throttling {
        fn obj(&self, k: &str) -> SourceObject {
            SourceObject {
                key: k.to_string(),
                size: self.objects[k].len() as u64,
                etag: format!("\"{k}\""),
                ..Default::default()
            }
        }
    }

    #[async_trait::async_trait]
    impl Source for Throttling {
        fn describe(&self) -> String {
            "throttling".into()
        }
        async fn list(&self) -> Result<(Vec<SourceObject>, u64)> {
            Ok((self.objects.keys().map(|k| self.obj(k)).collect(), 0))
        }
        async fn list_page(&self, range: &KeyRange, after: Option<&str>) -> Result<ListPage> {
            let from = after.unwrap_or(&range.after);
            let page: Vec<SourceObject> = self
                .objects
                .keys()
                .filter(|k| k.as_str() > from && range.contains(k))
                .take(20)
                .map(|k| self.obj(k))
                .collect();
            let next = (page.len() == 20)
                .then(|| page.last().map(|o| o.key.clone()))
                .flatten();
            Ok(ListPage {
                objects: page,
                skipped: 0,
                next,
            })
        }
        async fn first_key_after(&self, after: &str) -> Result<Option<String>> {
            Ok(self.objects.keys().find(|k| k.as_str() > after).cloned())
        }
        fn open(&self, obj: &SourceObject) -> Result<(Box<dyn Read + Send>, SourceObject)> {
            if self.broken.contains(&obj.key) {
                return Err(Error::new(ErrorKind::Io, "input/output error"));
            }
            if self.reads.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                return Err(Error::new(ErrorKind::Transient, "SlowDown"));
            }
            let data = self.objects[&obj.key].clone();
            Ok((Box::new(std::io::Cursor::new(data)), self.obj(&obj.key)))
        }
        fn restat(&self, obj: &SourceObject) -> Result<Option<SourceObject>> {
            Ok(self
                .objects
                .contains_key(&obj.key)
                .then(|| self.obj(&obj.key)))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hot_partition_is_split_and_every_object_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = new_repo(Arc::new(MemoryBackend::new()), dir.path()).await;
        let objects: BTreeMap<String, Vec<u8>> = (0..400)
            .map(|i| (format!("k/{i:04}"), format!("object {i}").into_bytes()))
            .collect();
        let source = Arc::new(Throttling {
            objects: objects.clone(),
            reads: AtomicU64::new(0),
            broken: Default::default(),
        });
        let opts = IngestOptions {
            partitions: Some(1),
            schedule: SchedulerOptions {
                base_delay: Duration::from_millis(1),
                initial_rate: 2_000.0,
                min_rate: 500.0,
                ..Default::default()
            },
            ..Default::default()
        };
        let s = ingest(&repo, source, &opts, Arc::default()).await.unwrap();
        assert!(s.partitions > 1, "no split: {s:?}");
        assert!(s.throttled > 0 && s.errors.is_empty(), "{s:?}");
        assert_eq!(s.objects, 400);
        let mut seen = Vec::new();
        for (key, bytes) in restored(&repo, &repo).await {
            assert_eq!(bytes, objects[&key]);
            seen.push(key);
        }
        assert_eq!(seen, objects.keys().cloned().collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_small_objects_keep_their_order_and_their_own_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let repo = new_repo(Arc::new(MemoryBackend::new()), dir.path()).await;
        // Small objects in runs, broken up by large ones (read alone) and
        // by keys whose every read fails.
        let objects: BTreeMap<String, Vec<u8>> = (0..300u32)
            .map(|i| {
                let body = if i % 37 == 5 {
                    vec![i as u8; 200 << 10]
                } else {
                    format!("small object {i}").into_bytes()
                };
                (format!("k/{i:04}"), body)
            })
            .collect();
        let broken: std::collections::HashSet<String> = ["k/0003", "k/0100", "k/0101", "k/0299"]
            .map(String::from)
            .into();
        let source = Arc::new(Throttling {
            objects: objects.clone(),
            reads: AtomicU64::new(0),
            broken: broken.clone(),
        });
        let opts = IngestOptions {
            partitions: Some(1),
            schedule: SchedulerOptions {
                base_delay: Duration::from_millis(1),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = ingest(&repo, source, &opts, Arc::default()).await.unwrap();
        let mut failed: Vec<&str> = s.errors.iter().map(|e| &e[..6]).collect();
        failed.sort();
        assert_eq!(failed, ["k/0003", "k/0100", "k/0101", "k/0299"]);
        let mut seen = Vec::new();
        for (key, bytes) in restored(&repo, &repo).await {
            assert_eq!(bytes, objects[&key], "{key}");
            seen.push(key);
        }
        let want: Vec<String> = objects
            .keys()
            .filter(|k| !broken.contains(*k))
            .cloned()
            .collect();
        assert_eq!(seen, want);
    }

    /// Every entry of the latest point of `repo`, in run order, with the
    /// bytes `reader` (the same vault, possibly opened afresh) restores.
    async fn restored(repo: &Repository, reader: &Repository) -> Vec<(String, Vec<u8>)> {
        let (point, _) = repo.latest_point().await.unwrap().unwrap();
        let mut out = Vec::new();
        for run in &point.runs {
            let mut c = crate::repo::runs::RunCursor::start(reader, run)
                .await
                .unwrap();
            while let Some(e) = c.next().await.unwrap() {
                let mut bytes = Vec::new();
                crate::restore::read_object(reader, e.object.as_ref().unwrap(), &mut bytes)
                    .await
                    .unwrap();
                out.push((e.key, bytes));
            }
        }
        out
    }

    /// A new vault on `backend`, its index cache under `dir`.
    async fn new_repo(backend: crate::backend::DynBackend, dir: &std::path::Path) -> Repository {
        let open = OpenOptions {
            cache_dir: Some(dir.join("cache")),
        };
        Repository::init(backend, b"pw", InitOptions::default(), open)
            .await
            .unwrap()
    }

    /// Every listing of `packs/` fails from now on.
    fn fail_pack_listing(faulty: &crate::backend::faults::Faulty) {
        use crate::backend::faults::{Fault, Op, Rule};
        faulty.add(Rule {
            op: Op::List,
            prefix: "packs/".into(),
            skip: 0,
            times: u32::MAX,
            fault: Fault::Error(ErrorKind::Io),
        });
    }

    /// A directory of `n` distinct small files.
    fn tree(n: usize) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for i in 0..n {
            std::fs::write(d.path().join(format!("f{i:04}")), format!("file {i} body")).unwrap();
        }
        d
    }

    /// Tiny blobs fill a pack by count before they fill it by size.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn packs_hold_no_more_blobs_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = new_repo(Arc::new(MemoryBackend::new()), dir.path()).await;
        let data = tree(300);
        let opts = IngestOptions {
            pack_max_blobs: Some(50),
            ..Default::default()
        };
        let source = Arc::new(crate::source::local::LocalSource::new(data.path()).unwrap());
        let s = ingest(&repo, source, &opts, Arc::default()).await.unwrap();
        assert_eq!(s.new_blobs, 300);
        let mut per_pack = std::collections::HashMap::<_, usize>::new();
        for e in repo.index().iter() {
            *per_pack.entry(e.unwrap().pack).or_default() += 1;
        }
        assert_eq!(per_pack.values().sum::<usize>(), 300);
        assert!(per_pack.values().all(|&n| n <= 50), "{per_pack:?}");
        assert_eq!(per_pack.len() as u64, s.packs_written);
        assert!(s.packs_written >= 6, "{} packs", s.packs_written);
        for (key, bytes) in restored(&repo, &repo).await {
            assert_eq!(bytes, std::fs::read(data.path().join(key)).unwrap());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_writes_index_segments_as_it_goes_and_dedups_against_them() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::new());
        let open = OpenOptions {
            cache_dir: Some(dir.path().join("cache")),
        };
        let repo = Repository::init(backend.clone(), b"pw", InitOptions::default(), open.clone())
            .await
            .unwrap();
        let data = tree(300);
        let opts = IngestOptions {
            // Small packs and segments: many of each in one pass.
            pack_target_size: Some(2_000),
            segment_entries: Some(40),
            ..Default::default()
        };
        let source: Arc<dyn Source> =
            Arc::new(crate::source::local::LocalSource::new(data.path()).unwrap());
        let s = ingest(&repo, source.clone(), &opts, Arc::default())
            .await
            .unwrap();
        assert_eq!((s.objects, s.new_blobs), (300, 300));
        let (point, _) = repo.latest_point().await.unwrap().unwrap();
        let listed = backend.list("index/").await.unwrap();
        // How many depends on how soon the pass answers each "segment due"
        // (several may fold into one); one per 40 blobs at most.
        assert!(
            point.segments.len() >= 2,
            "{} segments",
            point.segments.len()
        );
        assert_eq!(listed.len(), point.segments.len());
        // A reader with no cache finds every blob and restores every byte.
        let cold = Repository::open(
            backend.clone(),
            b"pw",
            OpenOptions {
                cache_dir: Some(dir.path().join("cold")),
            },
        )
        .await
        .unwrap();
        cold.refresh_index(false).await.unwrap();
        let all = restored(&repo, &cold).await;
        for (key, bytes) in &all {
            assert_eq!(*bytes, std::fs::read(data.path().join(key)).unwrap());
        }
        assert_eq!(all.len(), 300);
        // The same bytes under new names: every blob found in the cache
        // layers the pass wrote, nothing stored again.
        let copy = tempfile::tempdir().unwrap();
        for i in 0..300 {
            std::fs::copy(
                data.path().join(format!("f{i:04}")),
                copy.path().join(format!("g{i:04}")),
            )
            .unwrap();
        }
        let again = Repository::open(backend.clone(), b"pw", open)
            .await
            .unwrap();
        let s = ingest(
            &again,
            Arc::new(crate::source::local::LocalSource::new(copy.path()).unwrap()),
            &opts,
            Arc::default(),
        )
        .await
        .unwrap();
        assert_eq!((s.objects, s.new_blobs, s.packs_written), (300, 0, 0));
    }

    /// Passes after clean commits never list `packs/` (here they could
    /// not: listing it fails), and each marks its start before its first
    /// pack.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_after_a_clean_commit_lists_no_packs() {
        use crate::backend::faults::Faulty;
        use crate::manifest::pass::PassMarker;
        let dir = tempfile::tempdir().unwrap();
        let faulty = Arc::new(Faulty::new(Arc::new(MemoryBackend::new())));
        fail_pack_listing(&faulty);
        let repo = new_repo(faulty.clone(), dir.path()).await;
        let data = tree(50);
        let opts = IngestOptions {
            pack_max_blobs: Some(10),
            ..Default::default()
        };
        let source: Arc<dyn Source> =
            Arc::new(crate::source::local::LocalSource::new(data.path()).unwrap());
        for (seq, change) in [(0, None), (1, Some("f0001")), (2, None)] {
            if let Some(name) = change {
                std::fs::write(data.path().join(name), "changed").unwrap();
            }
            let before = faulty.attempted_puts.lock().unwrap().len();
            let s = ingest(&repo, source.clone(), &opts, Arc::default())
                .await
                .unwrap();
            assert_eq!((s.seq, s.recovered_packs), (seq, 0));
            // A pass that stores packs marks its start first; one that
            // stores none leaves no mark.
            let puts = faulty.attempted_puts.lock().unwrap()[before..].to_vec();
            let marker = puts.iter().position(|n| *n == PassMarker::name(seq));
            let first_pack = puts.iter().position(|n| n.starts_with("packs/"));
            assert_eq!(marker.is_some(), s.packs_written > 0, "{puts:?}");
            assert_eq!(first_pack.is_some(), s.packs_written > 0, "{puts:?}");
            assert!(marker <= first_pack, "{puts:?}");
        }
        assert_eq!(faulty.injected(), 0);
    }

    /// A pass that stops after storing packs leaves its mark; the next
    /// pass for the same point finds it, indexes those packs from their
    /// trailers instead of storing their blobs again, and the pass after
    /// that (a clean commit behind it) lists no packs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_for_a_marked_point_indexes_the_packs_left_behind() {
        use crate::backend::faults::{Fault, Faulty, Op, Rule};
        let dir = tempfile::tempdir().unwrap();
        let faulty = Arc::new(Faulty::new(Arc::new(MemoryBackend::new())));
        let repo = new_repo(faulty.clone(), dir.path()).await;
        let data = tree(50);
        let opts = IngestOptions {
            pack_max_blobs: Some(10),
            ..Default::default()
        };
        let source: Arc<dyn Source> =
            Arc::new(crate::source::local::LocalSource::new(data.path()).unwrap());
        // The commit's index segment fails: the packs (ten blobs each at
        // most) are stored, none indexed.
        faulty.add(Rule {
            op: Op::Put,
            prefix: "index/".into(),
            skip: 0,
            times: 1,
            fault: Fault::Error(ErrorKind::Io),
        });
        assert!(ingest(&repo, source.clone(), &opts, Arc::default())
            .await
            .is_err());
        let left = faulty.list("packs/").await.unwrap().len();
        assert!(left >= 5, "{left} packs");
        assert!(repo.pass_marked(0).await.unwrap());
        let marker = repo.load_pass_marker(0).await.unwrap().unwrap();
        assert_eq!(marker.seq, 0);
        assert!(marker.began_ns > 0);
        let s = ingest(&repo, source.clone(), &opts, Arc::default())
            .await
            .unwrap();
        assert_eq!(
            (s.seq, s.recovered_packs, s.packs_written, s.new_blobs),
            (0, left as u64, 0, 0)
        );
        assert_eq!(faulty.list("packs/").await.unwrap().len(), left);
        let cold = Repository::open(
            faulty.clone(),
            b"pw",
            OpenOptions {
                cache_dir: Some(dir.path().join("cold")),
            },
        )
        .await
        .unwrap();
        cold.refresh_index(false).await.unwrap();
        let all = restored(&repo, &cold).await;
        assert_eq!(all.len(), 50);
        for (key, bytes) in &all {
            assert_eq!(*bytes, std::fs::read(data.path().join(key)).unwrap());
        }
        // Point 0 committed: the next pass has no mark to find.
        assert!(!repo.pass_marked(1).await.unwrap());
        fail_pack_listing(&faulty);
        std::fs::write(data.path().join("f0007"), "changed").unwrap();
        let s = ingest(&repo, source, &opts, Arc::default()).await.unwrap();
        assert_eq!((s.seq, s.recovered_packs, s.packs_written), (1, 0, 1));
    }

    /// Many workers (a remote source's) end a pass with no more partly
    /// filled packs than cores, not one each: fewer PUTs, fewer small packs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_workers_leave_no_more_partial_packs_than_cores() {
        let dir = tempfile::tempdir().unwrap();
        let repo = new_repo(Arc::new(MemoryBackend::new()), dir.path()).await;
        // Incompressible 32 KiB files: adding one takes long enough for
        // the workers to overlap.
        let data = tempfile::tempdir().unwrap();
        for i in 0..400 {
            let body = crate::chunk::tests::pattern(32 << 10, 0x2545_f491_4f6c_dd1d + i);
            std::fs::write(data.path().join(format!("f{i:04}")), body).unwrap();
        }
        let opts = IngestOptions {
            workers: Some(16),
            ..Default::default()
        };
        let source = Arc::new(crate::source::local::LocalSource::new(data.path()).unwrap());
        let s = ingest(&repo, source, &opts, Arc::default()).await.unwrap();
        assert_eq!(s.new_blobs, 400);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert!(
            (1..=cores as u64).contains(&s.packs_written),
            "{} packs for 13 MB on {cores} cores",
            s.packs_written
        );
        for (key, bytes) in restored(&repo, &repo).await {
            assert_eq!(bytes, std::fs::read(data.path().join(key)).unwrap());
        }
    }
}
