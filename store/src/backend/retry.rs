//! Retries with capped exponential backoff and full jitter, for every
//! request to the vault, on failures marked `Transient` (timeouts, 5xx,
//! SlowDown, resets). The repository wraps every backend in it.
//!
//! A retried create-only put that finds its name taken compares the stored
//! bytes with its own: equal means the first attempt landed (the reply was
//! lost), so it succeeds; different means another writer won, and the
//! `AlreadyExists` stands.

use std::time::Duration;

use bytes::Bytes;

use super::{get_all, Backend, ByteRange, DynBackend, GetResult, Listed};
use crate::config::LockMode;
use crate::error::{ErrorKind, Result};

/// How often and how long to retry.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// Backoff before the second attempt (doubles each time).
    pub base: Duration,
    /// Longest single backoff.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `n` (n ≥ 2): uniform in [0, min(cap, base·2^(n-2))].
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << (n.saturating_sub(2)).min(20));
        let ceiling = exp.min(self.cap);
        let r: f64 = rand::random();
        ceiling.mul_f64(r)
    }
}

/// A backend whose transient failures are retried.
pub struct Retrying {
    inner: DynBackend,
    policy: RetryPolicy,
}

impl Retrying {
    /// Wraps `inner`.
    pub fn new(inner: DynBackend, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.kind() == ErrorKind::Transient && attempt < self.policy.attempts => {
                    attempt += 1;
                    let wait = self.policy.backoff(attempt);
                    tracing::warn!(what, attempt, wait_ms = wait.as_millis() as u64, error = %e, "transient failure; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for Retrying {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let mut retried = false;
        let r = self
            .run(name, || {
                let first = !retried;
                retried = true;
                let bytes = bytes.clone();
                async move {
                    match self.inner.put(name, bytes.clone()).await {
                        // Our own earlier attempt may have landed.
                        Err(e) if e.kind() == ErrorKind::AlreadyExists && !first => {
                            match get_all(&*self.inner, name).await {
                                Ok(stored) if stored == bytes => Ok(()),
                                _ => Err(e),
                            }
                        }
                        other => other,
                    }
                }
            })
            .await;
        r
    }

    async fn get(&self, name: &str, range: ByteRange) -> Result<GetResult> {
        self.run(name, || self.inner.get(name, range.clone())).await
    }

    async fn head(&self, name: &str) -> Result<u64> {
        self.run(name, || self.inner.head(name)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.run(prefix, || self.inner.list(prefix)).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.run(name, || self.inner.delete(name)).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn request_counts(&self) -> Vec<(&'static str, u64)> {
        self.inner.request_counts()
    }

    fn set_retention(&self, mode: LockMode, days: u32) {
        self.inner.set_retention(mode, days);
    }

    async fn versions(&self, name: &str) -> Result<Vec<String>> {
        self.run(name, || self.inner.versions(name)).await
    }

    async fn get_version(&self, name: &str, version: &str) -> Result<Bytes> {
        self.run(name, || self.inner.get_version(name, version))
            .await
    }

    async fn retention(&self, name: &str) -> Result<Option<(LockMode, i64)>> {
        self.run(name, || self.inner.retention(name)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        for n in 2..12 {
            let d = p.backoff(n);
            let ceiling = (Duration::from_millis(100) * (1 << (n - 2))).min(p.cap);
            assert!(d <= ceiling, "attempt {n}: {d:?} > {ceiling:?}");
        }
        let waits: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(5)).collect();
        assert!(waits.len() > 1, "jitter");
    }
}
