//! A backend layer that counts requests and bytes by kind, for benchmarks
//! and for reporting what a command cost on stores that do not count
//! themselves (a local directory).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{Backend, ByteRange, DynBackend, GetResult, Listed};
use crate::config::LockMode;
use crate::error::Result;

/// Counts what passes through to the wrapped backend.
pub struct Counting {
    inner: DynBackend,
    puts: AtomicU64,
    gets: AtomicU64,
    heads: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    bytes_put: AtomicU64,
    bytes_got: AtomicU64,
}

impl Counting {
    /// Wraps `inner`.
    pub fn new(inner: DynBackend) -> Self {
        Counting {
            inner,
            puts: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            bytes_put: AtomicU64::new(0),
            bytes_got: AtomicU64::new(0),
        }
    }

    /// GET requests so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }

    /// PUT requests so far.
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }

    /// Bytes written by PUTs so far.
    pub fn bytes_put(&self) -> u64 {
        self.bytes_put.load(Ordering::Relaxed)
    }

    /// Bytes read by GETs so far.
    pub fn bytes_got(&self) -> u64 {
        self.bytes_got.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl Backend for Counting {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.bytes_put
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.inner.put(name, bytes).await
    }

    async fn get(&self, name: &str, range: ByteRange) -> Result<GetResult> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.get(name, range).await?;
        self.bytes_got
            .fetch_add(r.bytes.len() as u64, Ordering::Relaxed);
        Ok(r)
    }

    async fn head(&self, name: &str) -> Result<u64> {
        self.heads.fetch_add(1, Ordering::Relaxed);
        self.inner.head(name).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.deletes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(name).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn request_counts(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("put", self.puts.load(Ordering::Relaxed)),
            ("get", self.gets.load(Ordering::Relaxed)),
            ("head", self.heads.load(Ordering::Relaxed)),
            ("list", self.lists.load(Ordering::Relaxed)),
            ("delete", self.deletes.load(Ordering::Relaxed)),
        ]
    }

    fn set_retention(&self, mode: LockMode, days: u32) {
        self.inner.set_retention(mode, days);
    }

    async fn versions(&self, name: &str) -> Result<Vec<String>> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.versions(name).await
    }

    async fn get_version(&self, name: &str, version: &str) -> Result<Bytes> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get_version(name, version).await
    }

    async fn retention(&self, name: &str) -> Result<Option<(LockMode, i64)>> {
        self.heads.fetch_add(1, Ordering::Relaxed);
        self.inner.retention(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn counts_requests_and_bytes_and_passes_the_contract() {
        let c = Counting::new(Arc::new(super::super::memory::MemoryBackend::new()));
        super::super::conformance::run_all(&c).await;
        assert!(c.puts() > 0 && c.gets() > 0 && c.bytes_put() > 0);
    }
}
