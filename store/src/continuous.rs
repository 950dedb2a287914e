//! Continuous protection: a point every interval, from the changes seen
//! since the last one.
//!
//! A cycle reads the change feed from the position the vault's latest
//! checkpoint recorded, reduces the events to one per key, has the ingest
//! look at exactly those keys, commits the point, then records the feed's
//! new position (`checkpoints/<seq>`) and acknowledges the feed. A crash
//! anywhere leaves either no point (the rerun reads the same events) or a
//! point without a checkpoint (the rerun reads some events again, which
//! only re-checks keys). Without a feed, on a feed's first cycle (the
//! baseline), and every `reconcile_every` cycles, a cycle diffs a full
//! listing instead, which also catches dropped events.
//!
//! Time comes from a [`Clock`], so tests drive a simulated day without
//! sleeping; cycles start on interval boundaries (10:00, 10:15, …).

use std::sync::Arc;

use crate::changes::{ChangeFeed, ChangeSet};
use crate::error::Result;
use crate::ingest::{ingest, IngestOptions, IngestProgress, IngestSummary};
use crate::manifest::checkpoint::{Checkpoint, FeedPosition};
use crate::repo::Repository;
use crate::source::Source;

/// Where cycles get the time and wait for the next boundary.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    /// Now, ns since the epoch.
    fn now_ns(&self) -> i64;
    /// Returns at `t_ns` (at once when it has passed).
    async fn sleep_until(&self, t_ns: i64);
}

/// The host's clock.
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        crate::repo::now_ns()
    }

    async fn sleep_until(&self, t_ns: i64) {
        let wait = t_ns.saturating_sub(self.now_ns());
        if wait > 0 {
            tokio::time::sleep(std::time::Duration::from_nanos(wait.unsigned_abs())).await;
        }
    }
}

/// A clock that moves only when told to; sleeping jumps to the deadline.
/// Tests and benchmarks drive simulated days with it.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock at `t_ns`.
    pub fn at(t_ns: i64) -> Arc<Self> {
        Arc::new(ManualClock(std::sync::atomic::AtomicI64::new(t_ns)))
    }

    /// Moves to `t_ns` (never backwards).
    pub fn set(&self, t_ns: i64) {
        self.0.fetch_max(t_ns, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now_ns(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn sleep_until(&self, t_ns: i64) {
        self.set(t_ns);
    }
}

/// How cycles run.
#[derive(Clone, Debug)]
pub struct CycleOptions {
    /// Time between points, ns (default 15 minutes).
    pub interval_ns: i64,
    /// With a feed, every n-th cycle diffs a full listing instead (0: never).
    pub reconcile_every: u64,
    /// Workers, pack size (its `changes` and `time_ns` are set per cycle).
    pub ingest: IngestOptions,
}

impl Default for CycleOptions {
    fn default() -> Self {
        CycleOptions {
            interval_ns: 15 * 60 * 1_000_000_000,
            reconcile_every: 0,
            ingest: IngestOptions::default(),
        }
    }
}

/// What one cycle did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CycleSummary {
    /// `changes` (from the feed) or `listing` (a full diff).
    pub mode: &'static str,
    /// Events read from the feed (duplicates and superseded included).
    pub events: u64,
    /// Distinct keys they named.
    pub changed_keys: u64,
    /// Events for another bucket or outside the source's prefix.
    pub ignored_events: u64,
    /// The feed position recorded with the point.
    pub feed_position: Option<String>,
    /// The pass itself.
    #[serde(flatten)]
    pub ingest: IngestSummary,
}

/// Continuous ingest of one source into one vault.
pub struct Continuous<'r> {
    repo: &'r Repository,
    source: Arc<dyn Source>,
    feed: Option<Arc<dyn ChangeFeed>>,
    clock: Arc<dyn Clock>,
    opts: CycleOptions,
    cycles: u64,
}

impl<'r> Continuous<'r> {
    /// Cycles of `source` into `repo`, with `feed` naming changed keys
    /// (or full listings when `None`).
    pub fn new(
        repo: &'r Repository,
        source: Arc<dyn Source>,
        feed: Option<Arc<dyn ChangeFeed>>,
        clock: Arc<dyn Clock>,
        opts: CycleOptions,
    ) -> Self {
        Continuous {
            repo,
            source,
            feed,
            clock,
            opts,
            cycles: 0,
        }
    }

    /// Runs one cycle now and commits its point.
    pub async fn cycle(&mut self, progress: Arc<IngestProgress>) -> Result<CycleSummary> {
        self.cycles += 1;
        let mut reconcile =
            self.opts.reconcile_every > 0 && self.cycles.is_multiple_of(self.opts.reconcile_every);
        let mut opts = self.opts.ingest.clone();
        let mut read = None;
        if let Some(feed) = &self.feed {
            let name = feed.describe();
            let position = match self.repo.latest_point().await? {
                Some((p, _)) => self
                    .repo
                    .checkpoint_at(p.seq)
                    .await?
                    .and_then(|c| c.position(&name).map(str::to_string)),
                None => None,
            };
            // A feed this vault has no position for says nothing about
            // what happened before it: the first cycle lists everything
            // (after reading the feed, so its events are covered too).
            reconcile |= position.is_none();
            let (events, next) = feed.read(position.as_deref()).await?;
            let mut set = ChangeSet::default();
            for e in events {
                match self.source.key_for_event(&e.bucket, &e.key) {
                    Some(key) => set.add(key, e),
                    None => set.ignore(),
                }
            }
            read = Some((name, next, set));
        }
        let (mode, events, ignored) = match &read {
            Some((_, _, set)) if !reconcile => {
                opts.changes = Some(set.clone());
                ("changes", set.events, set.ignored)
            }
            Some((_, _, set)) => ("listing", set.events, set.ignored),
            None => ("listing", 0, 0),
        };
        let changed_keys = opts.changes.as_ref().map_or(0, |c| c.len() as u64);
        // The source's clock where it has one (an S3 server's Date).
        opts.time_ns = Some(match self.source.clock_ns().await? {
            Some(t) => t,
            None => self.clock.now_ns(),
        });
        let summary = ingest(self.repo, self.source.clone(), &opts, progress).await?;
        let mut feed_position = None;
        if let (Some((name, next, _)), Some(feed)) = (read, &self.feed) {
            self.repo
                .put_checkpoint(&Checkpoint {
                    seq: summary.seq,
                    feeds: vec![FeedPosition {
                        feed: name,
                        position: next.clone(),
                    }],
                })
                .await?;
            feed.committed(&next).await?;
            feed_position = Some(next);
        }
        tracing::info!(
            seq = summary.seq,
            mode,
            events,
            changed = summary.changed,
            deleted = summary.deleted,
            "cycle committed"
        );
        Ok(CycleSummary {
            mode,
            events,
            changed_keys,
            ignored_events: ignored,
            feed_position,
            ingest: summary,
        })
    }

    /// The next interval boundary strictly after now.
    pub fn next_boundary(&self) -> i64 {
        let now = self.clock.now_ns();
        let i = self.opts.interval_ns.max(1);
        (now.div_euclid(i) + 1).saturating_mul(i)
    }

    /// Runs a cycle now, then one at every interval boundary, until `stop`
    /// turns true. A stop during a cycle lets it finish and commit; a stop
    /// while waiting returns at once. `on_cycle` sees each result; an
    /// error ends the loop.
    pub async fn run(
        &mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut on_cycle: impl FnMut(&CycleSummary),
        progress: Arc<IngestProgress>,
    ) -> Result<u64> {
        let mut done = 0;
        loop {
            if *stop.borrow() {
                return Ok(done);
            }
            let summary = self.cycle(progress.clone()).await?;
            on_cycle(&summary);
            done += 1;
            let boundary = self.next_boundary();
            tokio::select! {
                _ = self.clock.sleep_until(boundary) => {}
                _ = stop.wait_for(|s| *s) => return Ok(done),
            }
        }
    }
}
