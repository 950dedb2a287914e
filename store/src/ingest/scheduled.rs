//! A source seen through the scheduler: every request waits for a slot on
//! its key's lane, reports its outcome, and is retried with backoff on
//! back-pressure; object bodies are charged to the bandwidth budget as
//! they stream.

use std::cell::RefCell;
use std::io::Read;
use std::sync::Arc;

use super::scheduler::{LaneMap, Permit, Scheduler};
use crate::error::Result;
use crate::source::{KeyRange, ListPage, Source, SourceObject};

thread_local! {
    /// A slot taken for this thread's next request before it was handed
    /// to the blocking pool (so a throttled lane waits without holding a
    /// worker).
    static PREPAID: RefCell<Option<Permit>> = const { RefCell::new(None) };
}

/// Runs `f` with `permit` used for the first request it makes.
pub fn with_prepaid<T>(permit: Permit, f: impl FnOnce() -> T) -> T {
    PREPAID.with(|p| *p.borrow_mut() = Some(permit));
    let out = f();
    PREPAID.with(|p| p.borrow_mut().take());
    out
}

/// The source behind the scheduler.
pub struct ScheduledSource {
    inner: Arc<dyn Source>,
    scheduler: Arc<Scheduler>,
    lanes: Arc<LaneMap>,
}

impl ScheduledSource {
    /// Wraps `inner`; keys go to lanes by `lanes`.
    pub fn new(inner: Arc<dyn Source>, scheduler: Arc<Scheduler>, lanes: Arc<LaneMap>) -> Self {
        ScheduledSource {
            inner,
            scheduler,
            lanes,
        }
    }

    fn blocking<T>(&self, key: &str, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let lane = self.lanes.lane_of(key);
        if let Some(permit) = PREPAID.with(|p| p.borrow_mut().take()) {
            // The first attempt uses the slot taken in advance; retries
            // queue like any request.
            let mut first = Some(permit);
            return self.scheduler.call_blocking_with(lane, &mut first, &mut op);
        }
        self.scheduler.call_blocking(lane, op)
    }
}

/// Charges bytes read to the bandwidth budget, pausing when over it.
struct Metered {
    inner: Box<dyn Read + Send>,
    scheduler: Arc<Scheduler>,
}

impl Read for Metered {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let pause = self.scheduler.charge_bytes(n as u64);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        Ok(n)
    }
}

#[async_trait::async_trait]
impl Source for ScheduledSource {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn list(&self) -> Result<(Vec<SourceObject>, u64)> {
        self.scheduler.call(0, || self.inner.list()).await
    }

    fn paced(&self) -> bool {
        self.inner.paced()
    }

    async fn list_page(&self, range: &KeyRange, after: Option<&str>) -> Result<ListPage> {
        let lane = self.lanes.lane_of_range(range);
        self.scheduler
            .call(lane, || self.inner.list_page(range, after))
            .await
    }

    async fn common_prefixes(&self, under: &str) -> Result<Option<Vec<String>>> {
        let lane = self.lanes.lane_of(under);
        self.scheduler
            .call(lane, || self.inner.common_prefixes(under))
            .await
    }

    async fn first_key_after(&self, after: &str) -> Result<Option<String>> {
        let lane = self.lanes.lane_of(after);
        self.scheduler
            .call(lane, || self.inner.first_key_after(after))
            .await
    }

    fn open(&self, obj: &SourceObject) -> Result<(Box<dyn Read + Send>, SourceObject)> {
        let (reader, meta) = self.blocking(&obj.key, || self.inner.open(obj))?;
        let reader = Metered {
            inner: reader,
            scheduler: self.scheduler.clone(),
        };
        Ok((Box::new(reader), meta))
    }

    fn restat(&self, obj: &SourceObject) -> Result<Option<SourceObject>> {
        self.blocking(&obj.key, || self.inner.restat(obj))
    }

    async fn clock_ns(&self) -> Result<Option<i64>> {
        self.scheduler.call(0, || self.inner.clock_ns()).await
    }

    fn key_for_event(&self, bucket: &str, key: &str) -> Option<String> {
        self.inner.key_for_event(bucket, key)
    }
}
