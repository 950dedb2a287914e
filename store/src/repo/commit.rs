//! Committing a point: the one place that enforces the write ordering.
//!
//! 1. packs (uploaded by the ingest pipeline before it asks to commit),
//! 2. the index segment for those packs,
//! 3. run pages: the point's new run, then any merged runs,
//! 4. the time-index entry `points/<seq>`, create-only.
//!
//! A point exists only once step 4 succeeds; everything before it is
//! immutable, content-addressed and harmless if a crash orphans it.

use bytes::Bytes;
use tokio::task::JoinSet;

use super::runs::MergeCursor;
use super::{page_name, Repository};
use crate::backend::DynBackend;
use crate::crypto::random_bytes;
use crate::error::{Error, ErrorKind, Result};
use crate::format::ObjectKind;
use crate::id::ObjectId;
use crate::index::{IndexEntry, Segment};
use crate::manifest::point::{Point, PointStats};
use crate::manifest::run::{Child, Page, RunBuilder, RunDescriptor, SealedPage};
use crate::sealed;

/// Runs of one size tier that trigger a merge.
pub const MERGE_FANOUT: usize = 8;

/// What a commit adds.
#[derive(Debug, Default)]
pub struct CommitRequest {
    /// Time the recorded state was observed (ns since the epoch).
    pub time_ns: i64,
    /// What was backed up.
    pub source: String,
    /// The run of this point's changes (its pages already stored), if any.
    pub run: Option<RunDescriptor>,
    /// Index entries for packs written since the last commit that no
    /// segment in `segments_written` covers.
    pub index_entries: Vec<IndexEntry>,
    /// Index segments the pass already wrote (and added to the cache).
    pub segments_written: Vec<ObjectId>,
    /// Counts (objects, bytes, puts, deletes, packs, stored bytes).
    pub stats: PointStats,
}

/// Stores `pages` under `runs/`, several at a time.
pub(crate) async fn put_pages(backend: &DynBackend, pages: Vec<SealedPage>) -> Result<()> {
    let mut set = JoinSet::new();
    for p in pages {
        let b = backend.clone();
        set.spawn(async move {
            match b.put(&page_name(&p.id), Bytes::from(p.bytes)).await {
                // Content-addressed: an existing page has these very bytes.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        });
        while set.len() >= 8 {
            join_one(&mut set).await?;
        }
    }
    while !set.is_empty() {
        join_one(&mut set).await?;
    }
    Ok(())
}

async fn join_one(set: &mut JoinSet<Result<()>>) -> Result<()> {
    match set.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(Error::new(
            ErrorKind::Io,
            format!("upload task failed: {e}"),
        )),
        None => Ok(()),
    }
}

impl Repository {
    /// A run builder with this vault's keys and compression, random salts.
    pub fn run_builder(&self) -> RunBuilder {
        RunBuilder::new(
            self.keys(),
            self.config().zstd_level,
            Box::new(random_bytes),
        )
    }

    /// Stores pages a run builder finished.
    pub async fn store_pages(&self, pages: Vec<SealedPage>) -> Result<()> {
        put_pages(&self.backend, pages).await
    }

    /// Commits a point after `prev` (the latest point when the ingest
    /// started, or `None` for the first point). Fails with `AlreadyExists`
    /// if another writer committed that sequence number first.
    pub async fn commit(
        &self,
        prev: Option<&(Point, ObjectId)>,
        req: CommitRequest,
    ) -> Result<Point> {
        let seq = prev.map_or(0, |(p, _)| p.seq + 1);
        // 2. Index segment.
        let mut segments = req.segments_written;
        let mut entries = req.index_entries;
        entries.sort_by_key(|e| e.blob);
        entries.dedup_by(|a, b| a.blob == b.blob);
        if !entries.is_empty() {
            let segment = Segment {
                entries,
                supersedes: Vec::new(),
            };
            let id = self.put_segment(&segment).await?;
            segments.push(id);
            self.add_segment_to_cache(id, &segment)?;
            // Merged segments are written before the point too: they only
            // restate entries of segments already stored.
            self.compact_segments().await?;
        }
        // 3. Runs: previous set plus this point's run, then merges.
        let mut runs: Vec<RunDescriptor> = prev.map(|(p, _)| p.runs.clone()).unwrap_or_default();
        if let Some(r) = req.run {
            runs.push(r);
        }
        let runs = self.compact_runs(runs).await?;
        // 4. The time-index entry.
        let mut time_ns = req.time_ns;
        if let Some((p, _)) = prev {
            // Strictly increasing, so a time names at most one point.
            if time_ns <= p.time_ns {
                tracing::warn!(
                    prev = p.time_ns,
                    now = time_ns,
                    "time not after the previous point's; using the previous point's + 1 ms"
                );
                time_ns = p.time_ns.saturating_add(1_000_000);
            }
        }
        let point = Point {
            seq,
            time_ns,
            committed_ns: now_ns(),
            prev: prev.map(|(_, h)| *h).unwrap_or_default(),
            stats: req.stats,
            runs,
            segments,
            source: req.source,
        };
        let bytes = sealed::seal(
            self.keys(),
            ObjectKind::Point,
            random_bytes(),
            &point.encode(),
            0,
        );
        self.backend
            .put(&Point::name(seq), Bytes::from(bytes))
            .await
            .map_err(|e| {
                if e.kind() == ErrorKind::AlreadyExists {
                    Error::new(
                        ErrorKind::AlreadyExists,
                        format!("point {seq} was committed by another writer meanwhile; rerun to record a new point"),
                    )
                } else {
                    e.context(format!("committing point {seq}"))
                }
            })?;
        tracing::info!(seq, runs = point.runs.len(), "point committed");
        Ok(point)
    }

    /// Merges runs of the same size tier while any tier holds
    /// [`MERGE_FANOUT`] of them; all versions are kept.
    async fn compact_runs(&self, mut runs: Vec<RunDescriptor>) -> Result<Vec<RunDescriptor>> {
        loop {
            let fanout = MERGE_FANOUT as u64;
            let mut tiers: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
            for (i, r) in runs.iter().enumerate() {
                tiers.entry(r.tier(fanout)).or_default().push(i);
            }
            let Some(group) = tiers.into_values().find(|g| g.len() >= MERGE_FANOUT) else {
                return Ok(runs);
            };
            let inputs: Vec<RunDescriptor> = group.iter().map(|&i| runs[i].clone()).collect();
            let merged = self.merge_runs(&inputs).await?;
            let mut rest: Vec<RunDescriptor> = runs
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !group.contains(i))
                .map(|(_, r)| r)
                .collect();
            rest.extend(merged);
            runs = rest;
        }
    }

    /// One run holding the entries of `runs`, which cover disjoint key
    /// ranges in order (a pass's partitions): their leaves are kept, only
    /// new inner pages are written.
    pub async fn concat_runs(&self, runs: &[RunDescriptor]) -> Result<Option<RunDescriptor>> {
        if let [one] = runs {
            return Ok(Some(one.clone()));
        }
        let mut builder = self.run_builder();
        for run in runs {
            let leaves = self.run_leaves(run).await?;
            builder.append_leaves(run, leaves)?;
            let ready = builder.take_ready();
            if !ready.is_empty() {
                self.store_pages(ready).await?;
            }
        }
        let d = builder.finish();
        self.store_pages(builder.take_ready()).await?;
        Ok(d)
    }

    /// The leaves of `run`, in order (reads its inner pages, or the root
    /// when it is a leaf).
    async fn run_leaves(&self, run: &RunDescriptor) -> Result<Vec<Child>> {
        if run.height == 0 {
            let page = self.load_page(&run.root).await?;
            let Page::Leaf { entries } = &*page else {
                return Err(Error::corrupt(format!(
                    "run root {} is not a leaf",
                    run.root
                )));
            };
            let first = entries
                .first()
                .ok_or_else(|| Error::corrupt(format!("run page {} is empty", run.root)))?;
            return Ok(vec![Child {
                first_key: first.key.clone(),
                first_seq: first.seq,
                page: run.root,
                entries: entries.len() as u64,
            }]);
        }
        let mut out = Vec::new();
        let mut stack = vec![run.root];
        while let Some(id) = stack.pop() {
            match &*self.load_page(&id).await? {
                Page::Inner {
                    height: 1,
                    children,
                } => out.extend(children.iter().cloned()),
                Page::Inner { children, .. } => {
                    stack.extend(children.iter().rev().map(|c| c.page));
                }
                Page::Leaf { .. } => {
                    return Err(Error::corrupt(format!(
                        "run page {id} is a leaf above height 0"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Writes one run holding every entry of `inputs`.
    pub async fn merge_runs(&self, inputs: &[RunDescriptor]) -> Result<Option<RunDescriptor>> {
        let mut cursor = MergeCursor::new(self, inputs).await?;
        let mut builder = self.run_builder();
        while let Some(e) = cursor.next().await? {
            builder.push(e)?;
            let ready = builder.take_ready();
            if !ready.is_empty() {
                self.store_pages(ready).await?;
            }
        }
        let d = builder.finish();
        self.store_pages(builder.take_ready()).await?;
        tracing::debug!(
            inputs = inputs.len(),
            entries = d.as_ref().map_or(0, |d| d.entries),
            "runs merged"
        );
        Ok(d)
    }
}

/// Now, in ns since the epoch.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
