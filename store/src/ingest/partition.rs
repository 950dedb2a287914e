//! One partition of a pass: its candidates in key order — the source's
//! listing of the range, page by page, merge-joined with the last point's
//! state of the range (or the keys a change set names) — read by jobs
//! that wait on the partition's lane, and their entries in key order into
//! the partition's runs. When the pass asks for a checkpoint, the
//! partition closes its current run and records how far it got.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::packer::Packer;
use super::read::{check_and_store, store_object, unchanged};
use super::scheduled::with_prepaid;
use super::scheduler::{LaneId, LaneMap, Scheduler};
use super::{IngestProgress, Outcome};
use crate::changes::{ChangeEvent, ChangeKind, ChangeSet};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::pass::PartitionState;
use crate::manifest::point::Point;
use crate::manifest::run::RunBuilder;
use crate::manifest::{Entry, ObjectMeta};
use crate::repo::runs::StateCursor;
use crate::repo::Repository;
use crate::source::{KeyRange, ListPage, Source, SourceObject};

/// What every partition of a pass shares.
pub(super) struct PassCtx<'r> {
    pub repo: &'r Repository,
    pub source: Arc<dyn Source>,
    pub scheduler: Arc<Scheduler>,
    pub packer: Arc<Packer>,
    pub workers: Arc<Semaphore>,
    pub seq: u64,
    pub prev: Option<&'r Point>,
    pub progress: Arc<IngestProgress>,
    /// Bumped when the pass wants every partition to record its progress.
    pub epoch: AtomicU64,
    /// Jobs queued per partition at most.
    pub max_queue: usize,
    /// Partition states, as last recorded.
    pub states: Mutex<Vec<PartitionState>>,
    /// Per-object errors (keys keep their previous version).
    pub errors: Mutex<Vec<String>>,
    /// Keys to lanes.
    pub lanes: Arc<LaneMap>,
    /// Partitions split off hot ones: (slot in `states`, lane), for the
    /// pass to run.
    pub splits: tokio::sync::mpsc::UnboundedSender<(usize, LaneId)>,
    /// Partitions at most (splits stop there).
    pub max_partitions: usize,
}

/// Throttles within [`HOT_WINDOW`] that make a lane hot.
const HOT_THROTTLES: u64 = 3;
/// How long a lane's throttles count towards heat, and the least time
/// between splits of one partition.
const HOT_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

enum Pending {
    /// A deletion found without reading: the entry and the size it removes.
    Deleted(Entry, u64),
    /// Listed and unchanged: nothing to record.
    Unchanged(String),
    /// A job reading its keys one after the other, in order.
    Job(JoinHandle<Vec<Done>>),
    /// A job's outcome for one key, waiting its turn.
    Done(Done),
}

/// What a job did with one key: the outcome, the key, and the previous
/// version's size, if it had one.
type Done = (Result<Outcome>, String, Option<u64>);

/// From a source that is not paced (a directory), objects of at most this
/// many bytes are read in batches: one job (one hand-over to the blocking
/// pool and back) per batch instead of per object, which was a fifth of
/// the CPU time of a pass over small files.
const BATCH_OBJECT_MAX: u64 = 64 << 10;
/// Objects in a batch at most.
const BATCH_OBJECTS: usize = 32;
/// Bytes in a batch at most (it is closed when it reaches this).
const BATCH_BYTES: u64 = 1 << 20;

/// Small objects gathered for one job.
#[derive(Default)]
struct Batch {
    reads: Vec<KeyRead>,
    bytes: u64,
}

impl Batch {
    fn is_full(&self) -> bool {
        self.reads.len() >= BATCH_OBJECTS || self.bytes >= BATCH_BYTES
    }
}

/// What the partition looks at for one key.
enum Candidate {
    /// Listed by the source, with the last point's version of the key.
    Listed(SourceObject, Option<ObjectMeta>),
    /// In the last point, absent from the listing.
    Gone(String, ObjectMeta),
    /// Named by a change event: look at what the source holds now.
    Changed(String, ChangeEvent, Option<ObjectMeta>),
}

/// What a job does with one key.
enum Work {
    /// Read and store this listed object.
    Store(SourceObject),
    /// Look at what the source holds now; store it if it differs from the
    /// previous version.
    Check(Option<ObjectMeta>),
}

/// One key of a job.
struct KeyRead {
    key: String,
    /// The previous version's size, if it had one.
    prev_size: Option<u64>,
    work: Work,
}

impl KeyRead {
    fn new(key: String, previous: Option<&ObjectMeta>, work: Work) -> Self {
        KeyRead {
            key,
            prev_size: previous.map(|m| m.size),
            work,
        }
    }

    fn run(self, source: &dyn Source, packer: &Packer) -> Done {
        let outcome = match self.work {
            Work::Store(obj) => store_object(source, packer, obj),
            Work::Check(previous) => {
                check_and_store(source, packer, self.key.clone(), previous.as_ref())
            }
        };
        (outcome, self.key, self.prev_size)
    }
}

/// Runs partition `idx` (state `state`, requests on `lane`) to the end of
/// its range, or over `changes` when given.
pub(super) async fn run(
    ctx: &PassCtx<'_>,
    idx: usize,
    lane: LaneId,
    state: PartitionState,
    changes: Option<&ChangeSet>,
) -> Result<()> {
    let mut candidates = Candidates::new(ctx, &state, changes, lane).await?;
    let mut part = Partition {
        ctx,
        idx,
        builder: ctx.repo.run_builder(),
        queue: VecDeque::new(),
        state,
        epoch: ctx.epoch.load(Ordering::Relaxed),
        batch: Batch::default(),
    };
    let batching = !ctx.source.paced();
    while let Some(candidate) = candidates.next(&mut part.state).await? {
        let candidate = match candidate {
            Candidate::Listed(obj, previous)
                if batching
                    && obj.size <= BATCH_OBJECT_MAX
                    && !previous.as_ref().is_some_and(|m| unchanged(m, &obj)) =>
            {
                part.batch.bytes += obj.size;
                let key = obj.key.clone();
                let read = KeyRead::new(key, previous.as_ref(), Work::Store(obj));
                part.batch.reads.push(read);
                if part.batch.is_full() {
                    part.flush_batch(lane).await?;
                    part.drain_ready().await?;
                    part.maybe_cut().await?;
                }
                continue;
            }
            other => other,
        };
        // Keys go into the queue in order: the gathered batch first.
        part.flush_batch(lane).await?;
        let item = match candidate {
            Candidate::Gone(key, meta) => Pending::Deleted(
                Entry {
                    key,
                    seq: ctx.seq,
                    object: None,
                },
                meta.size,
            ),
            Candidate::Listed(obj, Some(meta)) if unchanged(&meta, &obj) => {
                Pending::Unchanged(obj.key)
            }
            Candidate::Listed(obj, previous) => {
                let key = obj.key.clone();
                let read = KeyRead::new(key, previous.as_ref(), Work::Store(obj));
                part.job(lane, vec![read]).await?
            }
            Candidate::Changed(key, event, Some(meta)) if event_matches(&event, &meta) => {
                // A duplicate or late event of the version already recorded.
                Pending::Unchanged(key)
            }
            Candidate::Changed(key, _, previous) => {
                let read = KeyRead::new(key, previous.as_ref(), Work::Check(previous.clone()));
                part.job(lane, vec![read]).await?
            }
        };
        part.queue.push_back(item);
        part.drain_ready().await?;
        part.maybe_cut().await?;
    }
    part.flush_batch(lane).await?;
    while !part.queue.is_empty() {
        part.drain_one().await?;
        part.maybe_cut().await?;
    }
    part.state.done = true;
    part.cut().await
}

impl Pending {
    /// True when draining it would not wait.
    fn is_ready(&self) -> bool {
        match self {
            Pending::Job(h) => h.is_finished(),
            _ => true,
        }
    }
}

/// One partition's output: the run being built and what it adds up to.
struct Partition<'a, 'r> {
    ctx: &'a PassCtx<'r>,
    idx: usize,
    builder: RunBuilder,
    queue: VecDeque<Pending>,
    state: PartitionState,
    epoch: u64,
    /// Small objects gathered for the next batch job.
    batch: Batch,
}

impl Partition<'_, '_> {
    /// Drains the queue while it is full or its head is finished.
    async fn drain_ready(&mut self) -> Result<()> {
        while self.queue.len() >= self.ctx.max_queue
            || self.queue.front().is_some_and(Pending::is_ready)
        {
            self.drain_one().await?;
        }
        Ok(())
    }

    /// Queues a job for the gathered batch, if any.
    async fn flush_batch(&mut self, lane: LaneId) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        if !batch.reads.is_empty() {
            let job = self.job(lane, batch.reads).await?;
            self.queue.push_back(job);
        }
        Ok(())
    }

    /// Starts a job reading `reads` (in key order) once the lane has a
    /// slot for it (so a throttled lane waits here, holding no worker).
    /// The job holds one worker; the slot pays for its first request.
    async fn job(&self, lane: LaneId, reads: Vec<KeyRead>) -> Result<Pending> {
        let ctx = self.ctx;
        let slot = ctx.scheduler.acquire(lane).await;
        let permit = ctx
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::new(ErrorKind::Cancelled, "worker pool closed"))?;
        let (src, pk) = (ctx.source.clone(), ctx.packer.clone());
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut slot = Some(slot);
            reads
                .into_iter()
                .map(|r| match slot.take() {
                    Some(s) => with_prepaid(s, || r.run(&*src, &pk)),
                    None => r.run(&*src, &pk),
                })
                .collect()
        });
        Ok(Pending::Job(handle))
    }

    async fn drain_one(&mut self) -> Result<()> {
        let Some(item) = self.queue.pop_front() else {
            return Ok(());
        };
        let seq = self.ctx.seq;
        let progress = &self.ctx.progress;
        let t = &mut self.state.totals;
        let (key, entry) = match item {
            Pending::Deleted(entry, size) => {
                t.deleted += 1;
                t.objects_delta -= 1;
                t.bytes_delta -= signed(size);
                (entry.key.clone(), Some(entry))
            }
            Pending::Unchanged(key) => {
                t.unchanged += 1;
                progress.done_objects.fetch_add(1, Ordering::Relaxed);
                (key, None)
            }
            Pending::Job(handle) => {
                let outcomes = handle
                    .await
                    .map_err(|e| Error::new(ErrorKind::Io, format!("worker failed: {e}")))?;
                for done in outcomes.into_iter().rev() {
                    self.queue.push_front(Pending::Done(done));
                }
                return Ok(());
            }
            Pending::Done((outcome, key, prev_size)) => {
                progress.done_objects.fetch_add(1, Ordering::Relaxed);
                let entry = match outcome {
                    Ok(Outcome::Stored(meta)) => {
                        progress.read_bytes.fetch_add(meta.size, Ordering::Relaxed);
                        progress.done_bytes.fetch_add(meta.size, Ordering::Relaxed);
                        t.changed += 1;
                        t.bytes_delta += signed(meta.size) - signed(prev_size.unwrap_or(0));
                        if prev_size.is_none() {
                            t.objects_delta += 1;
                        }
                        Some(Entry {
                            key: key.clone(),
                            seq,
                            object: Some(meta),
                        })
                    }
                    Ok(Outcome::Vanished) => prev_size.map(|old| {
                        t.deleted += 1;
                        t.objects_delta -= 1;
                        t.bytes_delta -= signed(old);
                        Entry {
                            key: key.clone(),
                            seq,
                            object: None,
                        }
                    }),
                    Ok(Outcome::Unchanged) => {
                        t.unchanged += 1;
                        None
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::Io | ErrorKind::NotFound) => {
                        // The object keeps its previous version (if any); the
                        // pass goes on and reports it.
                        tracing::warn!(%key, error = %e, "could not read object");
                        t.errors += 1;
                        lock(&self.ctx.errors).push(format!("{key}: {e}"));
                        None
                    }
                    Err(e) => return Err(e.context(key)),
                };
                (key, entry)
            }
        };
        if let Some(e) = entry {
            self.builder.push(e)?;
            let ready = self.builder.take_ready();
            if !ready.is_empty() {
                self.ctx.repo.store_pages(ready).await?;
            }
        }
        self.state.cursor = Some(key);
        Ok(())
    }

    async fn maybe_cut(&mut self) -> Result<()> {
        if self.ctx.epoch.load(Ordering::Relaxed) != self.epoch {
            self.cut().await?;
        }
        Ok(())
    }

    /// Closes the current run and records the partition's progress.
    async fn cut(&mut self) -> Result<()> {
        self.epoch = self.ctx.epoch.load(Ordering::Relaxed);
        if let Some(run) = self.builder.finish() {
            self.ctx.repo.store_pages(self.builder.take_ready()).await?;
            self.state.runs.push(run);
            self.builder = self.ctx.repo.run_builder();
        }
        if let Some(s) = lock(&self.ctx.states).get_mut(self.idx) {
            *s = self.state.clone();
        }
        Ok(())
    }
}

/// The slot of the partition whose range starts where `range` does.
fn state_slot(states: &[PartitionState], range: &KeyRange) -> usize {
    states
        .iter()
        .position(|s| s.range.after == range.after)
        .unwrap_or(usize::MAX)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// True when `event` announces exactly the version `meta` records.
fn event_matches(event: &ChangeEvent, meta: &ObjectMeta) -> bool {
    event.kind == ChangeKind::Created
        && !event.etag.is_empty()
        && event.etag == meta.etag.trim_matches('"')
        && event.version_id == meta.version_id
        && event.size.is_none_or(|s| s == meta.size)
}

/// A partition's candidates, in key order.
struct Candidates<'a, 'r> {
    ctx: &'a PassCtx<'r>,
    range: KeyRange,
    lane: LaneId,
    /// Throttle count and time at the last look for heat.
    heat: (u64, std::time::Instant),
    /// The current listing page.
    listed: VecDeque<SourceObject>,
    /// Where the next listing page starts, when it is not being fetched
    /// yet; `None` when listing is done or the fetch has started.
    next_page: Option<String>,
    /// The next listing page, fetched while this one is worked (listing a
    /// page of a directory costs as much as reading the objects of several
    /// batches; listed in turn, the workers waited for it).
    prefetch: Option<JoinHandle<Result<ListPage>>>,
    prev_cursor: Option<StateCursor<'r>>,
    prev_head: Option<Entry>,
    changes: Option<std::collections::btree_map::Iter<'a, String, ChangeEvent>>,
}

impl Drop for Candidates<'_, '_> {
    fn drop(&mut self) {
        if let Some(fetch) = &self.prefetch {
            fetch.abort();
        }
    }
}

impl<'a, 'r> Candidates<'a, 'r> {
    async fn new(
        ctx: &'a PassCtx<'r>,
        state: &PartitionState,
        changes: Option<&'a ChangeSet>,
        lane: LaneId,
    ) -> Result<Candidates<'a, 'r>> {
        let range = state.range.clone();
        // Keys up to the cursor are in the partition's runs already.
        let from = state.cursor.clone().unwrap_or_else(|| range.after.clone());
        let mut prev_cursor = match (ctx.prev, changes) {
            (Some(p), None) => {
                Some(StateCursor::starting_at(ctx.repo, &p.runs, p.seq, &from, "").await?)
            }
            _ => None,
        };
        let mut prev_head = None;
        if let Some(c) = &mut prev_cursor {
            while let Some(e) = c.next().await? {
                if e.key.as_bytes() > from.as_bytes() {
                    prev_head = Some(e).filter(|e| !range.is_past(&e.key));
                    break;
                }
            }
        }
        Ok(Candidates {
            ctx,
            lane,
            heat: (
                ctx.scheduler.lane_throttled(lane),
                std::time::Instant::now(),
            ),
            listed: VecDeque::new(),
            next_page: changes.is_none().then_some(from),
            prefetch: None,
            range,
            prev_cursor,
            prev_head,
            changes: changes.map(ChangeSet::iter),
        })
    }

    async fn advance_prev(&mut self) -> Result<Option<Entry>> {
        let next = match &mut self.prev_cursor {
            Some(c) => c.next().await?.filter(|e| !self.range.is_past(&e.key)),
            None => None,
        };
        Ok(std::mem::replace(&mut self.prev_head, next))
    }

    /// Splits a hot partition: when its lane has been throttled
    /// [`HOT_THROTTLES`] times within [`HOT_WINDOW`] and pages remain
    /// after `page_end` (the last key of the page just listed), the range
    /// ends there and the keys after it become a new partition with a lane
    /// of its own (taking half the rate, in the same throttle domain), which
    /// may be split again. Where
    /// S3 has split its own partition, the parts then go at their own pace.
    fn maybe_split(&mut self, state: &mut PartitionState, page_end: &str) {
        let ctx = self.ctx;
        let now = std::time::Instant::now();
        let throttled = ctx.scheduler.lane_throttled(self.lane);
        let recent = now.duration_since(self.heat.1) < HOT_WINDOW;
        if !recent || throttled.saturating_sub(self.heat.0) < HOT_THROTTLES {
            if !recent {
                self.heat = (throttled, now);
            }
            return;
        }
        self.heat = (throttled, now);
        if lock(&ctx.states).len() >= ctx.max_partitions || !self.range.contains(page_end) {
            return;
        }
        let upper = KeyRange {
            after: page_end.to_string(),
            until: self.range.until.replace(page_end.to_string()),
        };
        state.range = self.range.clone();
        let lane = ctx.scheduler.split_lane(self.lane, &upper.after);
        ctx.lanes.insert(&upper.after, lane);
        let slot = {
            let mut states = lock(&ctx.states);
            let mine = state_slot(&states, &state.range);
            if let Some(s) = states.get_mut(mine) {
                s.range = state.range.clone();
            }
            states.push(PartitionState {
                range: upper.clone(),
                ..Default::default()
            });
            states.len() - 1
        };
        tracing::info!(range = ?self.range, new = ?upper, "hot partition split");
        let _ = ctx.splits.send((slot, lane));
        self.next_page = None;
        // The previous point's state past the new end belongs to the new
        // partition now.
        if self
            .prev_head
            .as_ref()
            .is_some_and(|e| self.range.is_past(&e.key))
        {
            self.prev_head = None;
            self.prev_cursor = None;
        }
    }

    /// Starts fetching the next listing page, if there is one.
    fn fetch_next_page(&mut self) {
        if let Some(after) = self.next_page.take() {
            let (source, range) = (self.ctx.source.clone(), self.range.clone());
            self.prefetch = Some(tokio::spawn(async move {
                source.list_page(&range, Some(after.as_str())).await
            }));
        }
    }

    async fn next(&mut self, state: &mut PartitionState) -> Result<Option<Candidate>> {
        if let Some(changes) = &mut self.changes {
            let Some((key, event)) = changes.next() else {
                return Ok(None);
            };
            let (key, event) = (key.clone(), event.clone());
            let previous = match self.ctx.prev {
                Some(p) => crate::restore::lookup(self.ctx.repo, p, &key)
                    .await?
                    .and_then(|e| e.object),
                None => None,
            };
            return Ok(Some(Candidate::Changed(key, event, previous)));
        }
        while self.listed.is_empty() {
            if self.prefetch.is_none() {
                self.fetch_next_page();
            }
            let Some(fetch) = self.prefetch.take() else {
                break;
            };
            let page = fetch
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("listing failed: {e}")))??;
            let p = &self.ctx.progress;
            p.listed_objects
                .fetch_add(page.objects.len() as u64, Ordering::Relaxed);
            p.listed_bytes
                .fetch_add(page.objects.iter().map(|o| o.size).sum(), Ordering::Relaxed);
            p.skipped.fetch_add(page.skipped, Ordering::Relaxed);
            self.listed.extend(page.objects);
            self.next_page = page.next;
            if let Some(end) = self.next_page.clone() {
                self.maybe_split(state, &end);
            }
            self.fetch_next_page();
        }
        let listed = self.listed.front().map(|o| o.key.as_bytes());
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
                let obj = self.listed.pop_front().expect("peeked");
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
