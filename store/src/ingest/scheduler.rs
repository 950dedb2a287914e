//! The adaptive scheduler: how fast the backup may talk to the source.
//!
//! Every request to the source goes through a *lane* — one per partition
//! of the key space, because S3 limits requests per partitioned prefix.
//! A lane has a request rate set by AIMD: it grows while requests succeed
//! and the lane is using what it has (slow start ×1.2 per tick until the
//! first sign of trouble, which halves it; then +0.2% of the rate or
//! 0.05 req/s per tick, up to [`HEADROOM`] of the rate that met
//! back-pressure; past it again only after [`HOLD`], so the bucket's owner
//! keeps headroom and sees a probe every two minutes, not every second),
//! and it is cut to [`BACKOFF`] of itself on back-pressure — a throttled
//! or failed request (503 SlowDown, 5xx, timeouts), or latency rising to
//! three times the lane's baseline. A throttled lane slows only itself:
//! workers take requests from lanes with room, so work moves to the
//! partitions with spare capacity. A `Retry-After` pauses the lane.
//!
//! Above the lanes, a global budget (requests/s, bytes/s) is never
//! exceeded, and each lane has at most a fixed number of requests in
//! flight, so memory stays flat however large the bucket.
//!
//! [`Aimd`] is the sans-I/O controller (tested with a simulated clock);
//! [`Scheduler`] wraps it with waiting, retries and counters.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};

/// Multiplicative decrease on back-pressure.
pub const BACKOFF: f64 = 0.7;
/// How often a lane's rate may grow.
pub const TICK: Duration = Duration::from_millis(100);
/// After back-pressure a lane grows back only to [`HEADROOM`] of the rate
/// that met it, and probes past it again after this long.
pub const HOLD: Duration = Duration::from_secs(120);
/// The share of a rate that met back-pressure a lane settles at. The rate
/// at the first 503 overshoots what is spare (the prefix's burst lets it
/// through for a while), and the application's requests meet the empty
/// bucket more often than the backup's: at 90% the backup still sat above
/// the spare capacity between its own 503s (measured, docs/benchmarks.md).
pub const HEADROOM: f64 = 0.8;

/// Options for the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Adapt lane rates to back-pressure. `false` runs every lane at a
    /// fixed concurrency with no rate limit, as a copy tool would (for
    /// comparison); retries still back off.
    pub adaptive: bool,
    /// A lane's starting rate, requests/s.
    pub initial_rate: f64,
    /// A lane's floor, requests/s.
    pub min_rate: f64,
    /// A lane's ceiling, requests/s (S3 serves 5,500 reads/s per prefix).
    pub max_rate: f64,
    /// Requests in flight per lane at most.
    pub lane_concurrency: usize,
    /// Global request budget, requests/s (`None`: unlimited).
    pub max_requests_per_second: Option<f64>,
    /// Global read bandwidth, bytes/s (`None`: unlimited).
    pub max_bytes_per_second: Option<f64>,
    /// Attempts per request before its error is final.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `max_delay`.
    pub base_delay: Duration,
    /// Longest retry delay.
    pub max_delay: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            adaptive: true,
            initial_rate: 10.0,
            min_rate: 1.0,
            max_rate: 5_500.0,
            lane_concurrency: 32,
            max_requests_per_second: None,
            max_bytes_per_second: None,
            max_attempts: 10,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// What one request's outcome says about the lane.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// Succeeded after this long (to the response headers).
    Ok(Duration),
    /// Throttled or failed transiently; the server may have said how long
    /// to wait.
    Throttled(Option<Duration>),
    /// Failed for a reason that says nothing about load (not found, …).
    Neutral,
}

/// The AIMD rate controller of one lane (sans-I/O: the caller passes the
/// time in).
#[derive(Clone, Debug)]
pub struct Aimd {
    rate: f64,
    min: f64,
    max: f64,
    /// Slow start ends at the first back-pressure.
    slow_start: bool,
    last_tick: Instant,
    last_decrease: Option<Instant>,
    /// The lane had more demand than rate during this tick.
    limited: bool,
    latency_ewma: Option<f64>,
    baseline: Option<f64>,
    /// No requests before this instant (a `Retry-After`).
    paused_until: Option<Instant>,
    /// Growth stops at this rate until the instant (after back-pressure).
    ceiling: Option<(f64, Instant)>,
}

impl Aimd {
    /// A controller starting at `rate` requests/s, in slow start: the
    /// capacity is unknown.
    pub fn new(rate: f64, min: f64, max: f64, now: Instant) -> Self {
        Self::starting(rate, min, max, now, true)
    }

    /// A controller starting at `rate` requests/s, a rate known to be
    /// sustainable (another lane's): it grows additively from there.
    pub fn known(rate: f64, min: f64, max: f64, now: Instant) -> Self {
        Self::starting(rate, min, max, now, false)
    }

    fn starting(rate: f64, min: f64, max: f64, now: Instant, slow_start: bool) -> Self {
        Aimd {
            rate: rate.clamp(min, max),
            min,
            max,
            slow_start,
            last_tick: now,
            last_decrease: None,
            limited: false,
            latency_ewma: None,
            baseline: None,
            paused_until: None,
            ceiling: None,
        }
    }

    /// The current rate, requests/s.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Until when the lane is paused, if it is.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|&t| t > now)
    }

    /// Notes that a request had to wait for the rate.
    pub fn note_limited(&mut self) {
        self.limited = true;
    }

    /// Grows the rate once per [`TICK`] in which the lane was limited by it
    /// (a lane with little to do does not grow a rate it cannot test).
    pub fn tick(&mut self, now: Instant) {
        while now.duration_since(self.last_tick) >= TICK {
            self.last_tick += TICK;
            if !std::mem::take(&mut self.limited) {
                continue;
            }
            let cap = match self.ceiling {
                Some((cap, until)) if self.last_tick < until => cap,
                _ => {
                    self.ceiling = None;
                    self.max
                }
            };
            if self.rate >= cap {
                continue;
            }
            self.rate = if self.slow_start {
                self.rate * 1.2
            } else {
                self.rate + (self.rate * 0.002).max(0.05)
            }
            .min(cap);
        }
    }

    /// Takes in one request's outcome.
    pub fn observe(&mut self, signal: Signal, now: Instant) {
        match signal {
            Signal::Ok(latency) => {
                let l = latency.as_secs_f64();
                let ewma = self.latency_ewma.map_or(l, |e| 0.8 * e + 0.2 * l);
                self.latency_ewma = Some(ewma);
                // The baseline follows the lowest latency seen, drifting up
                // slowly so a permanently slower lane gets a new normal.
                let base = self.baseline.map_or(ewma, |b| (b * 1.001).min(ewma));
                self.baseline = Some(base);
                if ewma > 3.0 * base && ewma - base > 0.02 {
                    self.decrease(now, 1.0);
                }
            }
            Signal::Throttled(wait) => {
                self.decrease(now, 0.1);
                if let Some(w) = wait {
                    let until = now + w;
                    self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
                }
            }
            Signal::Neutral => {}
        }
    }

    /// Stops growth at the current rate for [`HOLD`] without cutting:
    /// another lane of the same throttle domain met back-pressure.
    pub fn hold(&mut self, now: Instant) {
        self.slow_start = false;
        let cap = match self.ceiling {
            Some((cap, until)) if now < until => cap.min(self.rate),
            _ => self.rate,
        };
        self.ceiling = Some((cap, now + HOLD));
    }

    /// Splits off `share` of the rate (and the same ceiling, scaled) into
    /// a controller for a lane taking over part of this lane's work.
    pub fn split(&mut self, share: f64) -> Aimd {
        let mut other = self.clone();
        other.rate = (self.rate * share).max(self.min);
        other.ceiling = self.ceiling.map(|(cap, until)| (cap * share, until));
        self.rate = (self.rate * (1.0 - share)).max(self.min);
        self.ceiling = self
            .ceiling
            .map(|(cap, until)| (cap * (1.0 - share), until));
        self.slow_start = false;
        other.slow_start = false;
        other
    }

    /// Cuts the rate, at most once per `spacing` seconds (or twice the
    /// lane's latency, if longer): requests sent before the cut report
    /// back-pressure too and must not cut again.
    fn decrease(&mut self, now: Instant, spacing: f64) {
        let spacing =
            Duration::from_secs_f64(spacing.max(2.0 * self.latency_ewma.unwrap_or(0.0)).min(2.0));
        if self
            .last_decrease
            .is_some_and(|t| now.duration_since(t) < spacing)
        {
            return;
        }
        self.last_decrease = Some(now);
        // Settle below the rate that met back-pressure for a while, so
        // the bucket's owner keeps some headroom between probes.
        self.ceiling = Some((self.rate * HEADROOM, now + HOLD));
        // Leaving slow start overshot by up to a tick's growth: halve.
        let factor = if self.slow_start { 0.5 } else { BACKOFF };
        self.slow_start = false;
        self.rate = (self.rate * factor).max(self.min);
    }
}

/// Identifies a lane.
pub type LaneId = usize;

/// Totals over all lanes (atomics: read any time).
#[derive(Debug, Default)]
pub struct ScheduleCounters {
    /// Requests sent to the source.
    pub requests: AtomicU64,
    /// Requests answered with back-pressure (503 SlowDown, 5xx, timeouts).
    pub throttled: AtomicU64,
    /// Requests sent again after back-pressure.
    pub retries: AtomicU64,
    /// Bytes read from the source through the scheduler.
    pub bytes: AtomicU64,
}

struct Lane {
    aimd: Aimd,
    /// Lanes of one domain share the source's capacity (a lane and the
    /// lanes split off it): back-pressure on one holds the others.
    domain: LaneId,
    /// Rate tokens (at most a tenth of a second's worth).
    tokens: f64,
    refilled: Instant,
    in_flight: usize,
    requests: u64,
    throttled: u64,
}

impl Lane {
    fn new(aimd: Aimd, domain: LaneId, now: Instant) -> Self {
        Lane {
            aimd,
            domain,
            tokens: 1.0,
            refilled: now,
            in_flight: 0,
            requests: 0,
            throttled: 0,
        }
    }
}

/// A token bucket that may go into debt (bytes are charged after a read),
/// so its long-run rate never exceeds `rate`.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: burst(rate),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(burst(self.rate));
    }

    /// How long until `n` tokens are there (zero: take them now).
    fn wait_for(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= n.min(burst(self.rate)) {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n.min(burst(self.rate)) - self.tokens) / self.rate)
        }
    }
}

/// Bucket depth: a tenth of a second's worth, at least one token.
fn burst(rate: f64) -> f64 {
    (rate / 10.0).max(1.0)
}

struct State {
    lanes: Vec<Lane>,
    requests: Option<Bucket>,
    bytes: Option<Bucket>,
}

/// Hands out permission to send requests, lane by lane.
pub struct Scheduler {
    opts: SchedulerOptions,
    state: Mutex<State>,
    /// Totals, shared with the progress display.
    pub counters: Arc<ScheduleCounters>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("opts", &self.opts)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Longest single sleep while waiting, so a changed rate is seen soon.
const MAX_NAP: Duration = Duration::from_millis(20);

impl Scheduler {
    /// A scheduler with no lanes yet.
    pub fn new(opts: SchedulerOptions) -> Self {
        let now = Instant::now();
        Scheduler {
            state: Mutex::new(State {
                lanes: Vec::new(),
                requests: opts.max_requests_per_second.map(|r| Bucket::new(r, now)),
                bytes: opts.max_bytes_per_second.map(|r| Bucket::new(r, now)),
            }),
            opts,
            counters: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a lane, a throttle domain of its own. With `rate` (another
    /// lane's, known to be sustainable) it starts there and grows
    /// additively; without, it slow-starts from the initial rate.
    pub fn add_lane(&self, name: &str, rate: Option<f64>) -> LaneId {
        let now = Instant::now();
        let o = &self.opts;
        let aimd = match rate {
            Some(r) => Aimd::known(r, o.min_rate, o.max_rate, now),
            None => Aimd::new(o.initial_rate, o.min_rate, o.max_rate, now),
        };
        let mut st = self.state();
        let id = st.lanes.len();
        st.lanes.push(Lane::new(aimd, id, now));
        tracing::debug!(
            lane = id,
            after = name,
            rate = st.lanes[id].aimd.rate(),
            "lane added"
        );
        id
    }

    /// Adds a lane that takes over part of `parent`'s range: it takes half
    /// the parent's rate and ceiling, and joins its throttle domain.
    pub fn split_lane(&self, parent: LaneId, name: &str) -> LaneId {
        let now = Instant::now();
        let mut st = self.state();
        let id = st.lanes.len();
        let Some(p) = st.lanes.get_mut(parent) else {
            drop(st);
            return self.add_lane(name, None);
        };
        let (aimd, domain) = (p.aimd.split(0.5), p.domain);
        st.lanes.push(Lane::new(aimd, domain, now));
        tracing::debug!(
            lane = id,
            parent,
            after = name,
            rate = st.lanes[id].aimd.rate(),
            "lane split off"
        );
        id
    }

    /// Requests on `lane` answered with back-pressure so far.
    pub fn lane_throttled(&self, lane: LaneId) -> u64 {
        self.state().lanes.get(lane).map_or(0, |l| l.throttled)
    }

    /// A lane's current rate.
    pub fn lane_rate(&self, lane: LaneId) -> f64 {
        self.state().lanes.get(lane).map_or(0.0, |l| l.aimd.rate())
    }

    /// Tries to take a slot on `lane` now; otherwise says how long to wait.
    fn try_acquire(&self, lane: LaneId) -> std::result::Result<(), Duration> {
        let now = Instant::now();
        let adaptive = self.opts.adaptive;
        let max_in_flight = self.opts.lane_concurrency.max(1);
        let mut guard = self.state();
        let st = &mut *guard;
        let Some(l) = st.lanes.get_mut(lane) else {
            return Ok(());
        };
        if l.in_flight >= max_in_flight {
            return Err(MAX_NAP);
        }
        if adaptive {
            l.aimd.tick(now);
            if let Some(until) = l.aimd.paused_until(now) {
                return Err(until - now);
            }
            let rate = l.aimd.rate();
            let dt = now.duration_since(l.refilled).as_secs_f64();
            l.refilled = now;
            l.tokens = (l.tokens + dt * rate).min(burst(rate));
            if l.tokens < 1.0 {
                l.aimd.note_limited();
                return Err(Duration::from_secs_f64((1.0 - l.tokens) / rate));
            }
        }
        if let Some(b) = &mut st.requests {
            let wait = b.wait_for(1.0, now);
            if !wait.is_zero() {
                return Err(wait);
            }
            b.tokens -= 1.0;
        }
        if let Some(b) = &mut st.bytes {
            // Reads charge their bytes afterwards; wait out any debt first.
            let wait = b.wait_for(0.0, now);
            if b.tokens < 0.0 || !wait.is_zero() {
                return Err(Duration::from_secs_f64(-b.tokens / b.rate).max(wait));
            }
        }
        if adaptive {
            l.tokens -= 1.0;
        }
        l.in_flight += 1;
        l.requests += 1;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits for a slot on `lane`.
    pub async fn acquire(self: &Arc<Self>, lane: LaneId) -> Permit {
        loop {
            match self.try_acquire(lane) {
                Ok(()) => return self.permit(lane),
                Err(wait) => {
                    tokio::time::sleep(wait.clamp(Duration::from_millis(1), MAX_NAP)).await
                }
            }
        }
    }

    /// Waits for a slot on `lane` from a blocking thread.
    pub fn acquire_blocking(self: &Arc<Self>, lane: LaneId) -> Permit {
        loop {
            match self.try_acquire(lane) {
                Ok(()) => return self.permit(lane),
                Err(wait) => std::thread::sleep(wait.clamp(Duration::from_millis(1), MAX_NAP)),
            }
        }
    }

    fn permit(self: &Arc<Self>, lane: LaneId) -> Permit {
        Permit {
            scheduler: self.clone(),
            lane,
            started: Instant::now(),
            signal: Signal::Neutral,
        }
    }

    /// Charges `n` bytes read to the bandwidth budget and returns how long
    /// the reader should pause so the budget holds.
    pub fn charge_bytes(&self, n: u64) -> Duration {
        self.counters.bytes.fetch_add(n, Ordering::Relaxed);
        let now = Instant::now();
        let mut st = self.state();
        let Some(b) = &mut st.bytes else {
            return Duration::ZERO;
        };
        b.refill(now);
        #[allow(clippy::cast_precision_loss)]
        {
            b.tokens -= n as f64;
        }
        if b.tokens < 0.0 {
            Duration::from_secs_f64(-b.tokens / b.rate)
        } else {
            Duration::ZERO
        }
    }

    fn release(&self, lane: LaneId, signal: Signal) {
        let now = Instant::now();
        let throttled = matches!(signal, Signal::Throttled(_));
        let mut st = self.state();
        let Some(l) = st.lanes.get_mut(lane) else {
            return;
        };
        l.in_flight = l.in_flight.saturating_sub(1);
        if throttled {
            l.throttled += 1;
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if !self.opts.adaptive {
            return;
        }
        l.aimd.observe(signal, now);
        if throttled {
            // A cut takes effect at once: no saved-up burst.
            l.tokens = l.tokens.min(0.0);
            // The rest of the domain stops growing: one probe of the
            // shared capacity at a time.
            let domain = l.domain;
            for (i, other) in st.lanes.iter_mut().enumerate() {
                if i != lane && other.domain == domain {
                    other.aimd.hold(now);
                }
            }
        }
    }

    /// The delay before retry `attempt` (1-based): capped exponential
    /// backoff with full jitter, at least what the server asked for.
    pub fn backoff(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let exp = self
            .opts
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.opts.max_delay);
        let jittered = exp.mul_f64(rand::random::<f64>());
        jittered.max(asked.unwrap_or(Duration::ZERO))
    }

    /// Runs `op` on `lane`, retrying back-pressure and transient failures
    /// with backoff.
    pub async fn call<T, F, Fut>(self: &Arc<Self>, lane: LaneId, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut permit = self.acquire(lane).await;
            permit.started = Instant::now();
            let result = op().await;
            match self.judge(&mut permit, result, attempt) {
                Verdict::Done(r) => return r,
                Verdict::Retry(wait) => {
                    drop(permit);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// [`Scheduler::call`] for blocking operations (on the blocking pool).
    pub fn call_blocking<T>(
        self: &Arc<Self>,
        lane: LaneId,
        mut op: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        self.call_blocking_with(lane, &mut None, &mut op)
    }

    /// [`Scheduler::call_blocking`] whose first attempt uses `first`, a
    /// slot taken in advance.
    pub fn call_blocking_with<T>(
        self: &Arc<Self>,
        lane: LaneId,
        first: &mut Option<Permit>,
        op: &mut dyn FnMut() -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut permit = match first.take() {
                Some(p) => p,
                None => self.acquire_blocking(lane),
            };
            // Latency is the request's own, not the wait for a worker.
            permit.started = Instant::now();
            let result = op();
            match self.judge(&mut permit, result, attempt) {
                Verdict::Done(r) => return r,
                Verdict::Retry(wait) => {
                    drop(permit);
                    std::thread::sleep(wait);
                }
            }
        }
    }

    fn judge<T>(&self, permit: &mut Permit, result: Result<T>, attempt: u32) -> Verdict<T> {
        match result {
            Ok(v) => {
                permit.signal = Signal::Ok(permit.started.elapsed());
                Verdict::Done(Ok(v))
            }
            Err(e) if e.kind() == ErrorKind::Transient => {
                permit.signal = Signal::Throttled(e.retry_after());
                if attempt >= self.opts.max_attempts {
                    // No longer worth retrying now: an I/O failure of this
                    // request (a read fails its object, not the pass).
                    return Verdict::Done(Err(Error::new(
                        ErrorKind::Io,
                        format!("{e} (still failing after {attempt} attempts)"),
                    )));
                }
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                Verdict::Retry(self.backoff(attempt, e.retry_after()))
            }
            Err(e) => Verdict::Done(Err(e)),
        }
    }
}

enum Verdict<T> {
    Done(Result<T>),
    Retry(Duration),
}

/// A slot on a lane; reports the request's outcome when dropped.
pub struct Permit {
    scheduler: Arc<Scheduler>,
    lane: LaneId,
    started: Instant,
    signal: Signal,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.scheduler.release(self.lane, self.signal);
    }
}

/// Lanes by the first key of their range; finds the lane of a key.
#[derive(Debug, Default)]
pub struct LaneMap {
    starts: Mutex<std::collections::BTreeMap<String, LaneId>>,
}

impl LaneMap {
    /// Routes keys after `after` (up to the next boundary) to `lane`.
    pub fn insert(&self, after: &str, lane: LaneId) {
        self.starts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(after.to_string(), lane);
    }

    /// The lane of the range starting after `range.after`.
    pub fn lane_of_range(&self, range: &crate::source::KeyRange) -> LaneId {
        self.starts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .range::<str, _>((
                std::ops::Bound::Unbounded,
                std::ops::Bound::Included(range.after.as_str()),
            ))
            .next_back()
            .map_or(0, |(_, &l)| l)
    }

    /// The lane of `key`: that of the last boundary before it (lane 0
    /// when there is none).
    pub fn lane_of(&self, key: &str) -> LaneId {
        use std::ops::Bound;
        self.starts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(key)))
            .next_back()
            .map_or(0, |(_, &l)| l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Advances `n` ticks in each of which the lane had more work than rate.
    fn busy_ticks(a: &mut Aimd, now: &mut Instant, n: usize) {
        for _ in 0..n {
            a.note_limited();
            *now += TICK;
            a.tick(*now);
        }
    }

    #[test]
    fn slow_start_grows_until_throttled_then_backs_off_and_grows_slowly() {
        let t0 = Instant::now();
        let mut a = Aimd::new(10.0, 1.0, 5_500.0, t0);
        let mut now = t0;
        busy_ticks(&mut a, &mut now, 10);
        let grown = a.rate();
        assert!(grown > 50.0, "slow start reached {grown}");
        a.observe(Signal::Throttled(None), now);
        assert!(
            (a.rate() - grown * 0.5).abs() < 1e-9,
            "slow start ends halved"
        );
        // Requests already in flight report too: one cut per spacing.
        a.observe(Signal::Throttled(None), now + Duration::from_millis(10));
        assert!((a.rate() - grown * 0.5).abs() < 1e-9);
        let after_cut = a.rate();
        busy_ticks(&mut a, &mut now, 10);
        assert!(a.rate() > after_cut && a.rate() < after_cut + 10.0);
    }

    #[test]
    fn after_back_pressure_growth_holds_below_the_rate_that_met_it() {
        let t0 = Instant::now();
        let mut a = Aimd::new(100.0, 1.0, 5_500.0, t0);
        a.observe(Signal::Throttled(None), t0);
        a.observe(Signal::Throttled(None), t0 + Duration::from_secs(1));
        // 50 after slow start's halving, then 35 at the second cut, whose
        // ceiling is HEADROOM of 50.
        assert!((a.rate() - 35.0).abs() < 1e-9);
        let mut now = t0 + Duration::from_secs(1);
        busy_ticks(&mut a, &mut now, 250);
        let cap = 50.0 * HEADROOM;
        assert!((a.rate() - cap).abs() < 1e-9, "{}", a.rate());
        // Past the hold it probes higher.
        while now < t0 + Duration::from_secs(1) + HOLD + Duration::from_secs(5) {
            a.note_limited();
            now += TICK;
            a.tick(now);
        }
        assert!(a.rate() > cap);
    }

    #[test]
    fn a_lane_started_at_a_known_rate_grows_additively() {
        let t0 = Instant::now();
        let mut a = Aimd::known(40.0, 1.0, 5_500.0, t0);
        let mut now = t0;
        busy_ticks(&mut a, &mut now, 10);
        assert!(a.rate() > 40.0 && a.rate() < 41.0, "{}", a.rate());
        a.observe(Signal::Throttled(None), now);
        assert!(a.rate() < 40.0 * BACKOFF + 1.0, "a cut, not a halving");
    }

    /// Drives `lanes` as if they always had work: takes every slot it
    /// may for `secs` and reports success.
    fn drive(s: &Arc<Scheduler>, lanes: &[LaneId], secs: f64) {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            for &l in lanes {
                if s.try_acquire(l).is_ok() {
                    let mut p = s.permit(l);
                    p.signal = Signal::Ok(Duration::from_millis(1));
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_split_lane_shares_the_rate_and_back_pressure_holds_its_domain() {
        let s = Arc::new(Scheduler::new(SchedulerOptions::default()));
        let a = s.add_lane("a", Some(40.0));
        let other = s.add_lane("z", Some(40.0));
        let b = s.split_lane(a, "m");
        assert!((s.lane_rate(a) - 20.0).abs() < 1e-9);
        assert!((s.lane_rate(b) - 20.0).abs() < 1e-9);
        // Back-pressure on `a` cuts it and stops `b` growing; the lane of
        // another domain keeps growing.
        let mut p = s.permit(a);
        p.signal = Signal::Throttled(None);
        drop(p);
        assert!((s.lane_rate(a) - 20.0 * BACKOFF).abs() < 1e-9);
        let (b0, o0) = (s.lane_rate(b), s.lane_rate(other));
        drive(&s, &[a, b, other], 1.0);
        assert!((s.lane_rate(b) - b0).abs() < 1e-9, "b held at {b0}");
        assert!(s.lane_rate(other) > o0, "other domain grows");
        assert!(s.lane_rate(a) > 20.0 * BACKOFF, "the cut lane regrows");
        assert!(s.lane_rate(a) <= 20.0 * HEADROOM + 1e-9);
    }

    #[test]
    fn a_lane_without_demand_does_not_grow() {
        let t0 = Instant::now();
        let mut a = Aimd::new(10.0, 1.0, 100.0, t0);
        a.tick(t0 + Duration::from_secs(5));
        assert!((a.rate() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn rising_latency_cuts_the_rate_and_retry_after_pauses() {
        let t0 = Instant::now();
        let mut a = Aimd::new(100.0, 1.0, 1_000.0, t0);
        for i in 0..20 {
            a.observe(
                Signal::Ok(Duration::from_millis(5)),
                t0 + Duration::from_millis(i),
            );
        }
        assert!((a.rate() - 100.0).abs() < 1e-9);
        let mut now = t0 + Duration::from_millis(100);
        for _ in 0..20 {
            now += Duration::from_millis(5);
            a.observe(Signal::Ok(Duration::from_millis(200)), now);
        }
        assert!(a.rate() < 100.0);
        a.observe(Signal::Throttled(Some(Duration::from_secs(2))), now);
        assert!(a.paused_until(now).is_some());
        assert!(a.paused_until(now + Duration::from_secs(3)).is_none());
    }

    #[test]
    fn the_floor_holds() {
        let t0 = Instant::now();
        let mut a = Aimd::new(2.0, 1.0, 100.0, t0);
        for i in 0..50 {
            a.observe(Signal::Throttled(None), t0 + Duration::from_secs(i));
        }
        assert!((a.rate() - 1.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn global_budget_is_never_exceeded() {
        let s = Arc::new(Scheduler::new(SchedulerOptions {
            max_requests_per_second: Some(200.0),
            initial_rate: 5_000.0,
            ..Default::default()
        }));
        let lanes: Vec<LaneId> = (0..4).map(|i| s.add_lane(&format!("p{i}"), None)).collect();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for lane in lanes {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    drop(s.acquire(lane).await);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 200 requests at 200/s with a burst of 20: at least 0.9 s.
        assert!(
            started.elapsed() >= Duration::from_millis(850),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(s.counters.requests.load(Ordering::Relaxed), 200);
    }

    #[tokio::test]
    async fn call_retries_transient_errors_and_honours_retry_after() {
        let s = Arc::new(Scheduler::new(SchedulerOptions {
            base_delay: Duration::from_millis(1),
            ..Default::default()
        }));
        let lane = s.add_lane("", None);
        let mut n = 0;
        let started = Instant::now();
        let v = s
            .call(lane, || {
                n += 1;
                let n = n;
                async move {
                    if n < 3 {
                        Err(Error::new(ErrorKind::Transient, "SlowDown")
                            .with_retry_after(Duration::from_millis(150)))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(v, 3);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(s.counters.throttled.load(Ordering::Relaxed), 2);
        let err = s
            .call(lane, || async { Err::<(), _>(Error::not_found("gone")) })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let err = s
            .call(lane, || async {
                Err::<(), _>(Error::new(ErrorKind::Transient, "SlowDown"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(
            err.to_string().contains("still failing after 10 attempts"),
            "{err}"
        );
    }

    #[test]
    fn keys_find_their_lanes() {
        let m = LaneMap::default();
        m.insert("", 0);
        m.insert("m", 1);
        m.insert("t/", 2);
        assert_eq!(m.lane_of("a"), 0);
        assert_eq!(m.lane_of("m"), 0);
        assert_eq!(m.lane_of("m/1"), 1);
        assert_eq!(m.lane_of("s/zzz"), 1);
        assert_eq!(m.lane_of("t/"), 1);
        assert_eq!(m.lane_of("t/1"), 2);
    }
}
