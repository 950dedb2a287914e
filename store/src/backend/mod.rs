//! Object stores the vault lives in.
//!
//! The [`Backend`] trait is sized for S3: create-only put, ranged get,
//! head, list, and an admin-only delete. Every vault object is written once
//! under a name it keeps forever; [`Backend::put`] never overwrites.
//! Implementations: [`local::LocalBackend`] (a directory), and
//! [`memory::MemoryBackend`] (tests).

pub mod counting;
pub mod faults;
pub mod local;
pub mod memory;
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::LockMode;
use crate::error::Result;

/// Which bytes of an object to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole object.
    All,
    /// `start..end` (end exclusive, clamped to the object's length).
    Bounded(Range<u64>),
    /// The last `n` bytes (all of it if shorter).
    Suffix(u64),
}

/// The bytes read and the object's full length.
#[derive(Clone, Debug)]
pub struct GetResult {
    /// The requested bytes.
    pub bytes: Bytes,
    /// Length of the whole object.
    pub total_len: u64,
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Full name.
    pub name: String,
    /// Length in bytes.
    pub size: u64,
}

/// An object store holding one vault.
///
/// Contract, for every implementation:
/// - `put` is create-only: if `name` exists it fails with
///   `ErrorKind::AlreadyExists` and leaves the existing object untouched;
///   a successful `put` is durable when it returns. Two concurrent puts of
///   one name: exactly one succeeds.
/// - `get` of a missing name fails with `ErrorKind::NotFound`; ranges past
///   the end are clamped.
/// - `list` returns every object under `prefix`, sorted by name.
/// - Failures worth retrying are `ErrorKind::Transient`.
/// - Methods are safe to call concurrently.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Creates `name` holding `bytes`, unless it exists.
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()>;
    /// Reads `range` of `name`.
    async fn get(&self, name: &str, range: ByteRange) -> Result<GetResult>;
    /// The length of `name`.
    async fn head(&self, name: &str) -> Result<u64>;
    /// Every object under `prefix`, sorted by name.
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>>;
    /// Removes `name` (administration only: key removal; ingest never
    /// deletes). May be refused by the store (Object Lock).
    async fn delete(&self, name: &str) -> Result<()>;
    /// A human description (path or URL), for messages.
    fn describe(&self) -> String;

    /// Requests made so far, by kind (stores that bill per request).
    fn request_counts(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Object Lock retention to apply to every later put (stores without
    /// Object Lock ignore it).
    fn set_retention(&self, _mode: LockMode, _days: u32) {}

    /// Version ids of `name`, oldest first; empty where the store keeps
    /// no versions. Readers fall back to these when the version `get`
    /// returns does not authenticate.
    async fn versions(&self, _name: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Reads one version of `name`.
    async fn get_version(&self, name: &str, _version: &str) -> Result<Bytes> {
        Err(crate::error::Error::not_found(format!(
            "{name}: this store keeps no versions"
        )))
    }

    /// The Object Lock retention of `name` as (mode, retain-until unix
    /// seconds); `None` where the store has no Object Lock.
    async fn retention(&self, _name: &str) -> Result<Option<(LockMode, i64)>> {
        Ok(None)
    }
}

/// A shared backend.
pub type DynBackend = Arc<dyn Backend>;

/// Reads a whole object.
pub async fn get_all(b: &dyn Backend, name: &str) -> Result<Bytes> {
    Ok(b.get(name, ByteRange::All).await?.bytes)
}

/// Applies a [`ByteRange`] to an object's bytes (for stores that hold
/// whole objects).
pub(crate) fn slice_range(all: &[u8], range: &ByteRange) -> (usize, usize) {
    let len = all.len() as u64;
    let (s, e) = match range {
        ByteRange::All => (0, len),
        ByteRange::Bounded(r) => (r.start.min(len), r.end.min(len).max(r.start.min(len))),
        ByteRange::Suffix(n) => (len.saturating_sub(*n), len),
    };
    (
        usize::try_from(s).unwrap_or(0),
        usize::try_from(e).unwrap_or(0),
    )
}

/// Conformance tests every backend must pass; call from each backend's tests.
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;
    use crate::error::ErrorKind;

    /// Runs the whole suite against an empty backend.
    pub async fn run_all(b: &dyn Backend) {
        create_only(b).await;
        ranges(b).await;
        listing(b).await;
        concurrent_create(b).await;
    }

    async fn create_only(b: &dyn Backend) {
        b.put("c/one", Bytes::from_static(b"first")).await.unwrap();
        let err = b
            .put("c/one", Bytes::from_static(b"second"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(&get_all(b, "c/one").await.unwrap()[..], b"first");
        assert_eq!(
            b.get("c/missing", ByteRange::All).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(b.head("c/one").await.unwrap(), 5);
        assert_eq!(
            b.head("c/missing").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    async fn ranges(b: &dyn Backend) {
        b.put("r/x", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let g = b.get("r/x", ByteRange::Bounded(2..5)).await.unwrap();
        assert_eq!((&g.bytes[..], g.total_len), (&b"234"[..], 10));
        assert_eq!(
            &b.get("r/x", ByteRange::Suffix(3)).await.unwrap().bytes[..],
            b"789"
        );
        assert_eq!(
            &b.get("r/x", ByteRange::Suffix(30)).await.unwrap().bytes[..],
            b"0123456789"
        );
        assert_eq!(
            &b.get("r/x", ByteRange::Bounded(8..30)).await.unwrap().bytes[..],
            b"89"
        );
    }

    async fn listing(b: &dyn Backend) {
        for n in ["l/b", "l/a/2", "l/a/1", "lz"] {
            b.put(n, Bytes::from_static(b"x")).await.unwrap();
        }
        let names: Vec<String> = b
            .list("l/")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["l/a/1", "l/a/2", "l/b"]);
        assert!(b.list("nothing/").await.unwrap().is_empty());
        b.delete("l/b").await.unwrap();
        assert_eq!(b.list("l/").await.unwrap().len(), 2);
    }

    async fn concurrent_create(b: &dyn Backend) {
        let results = futures_join(b).await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    }

    async fn futures_join(b: &dyn Backend) -> Vec<Result<()>> {
        let (a, c) = tokio::join!(
            b.put("race", Bytes::from_static(b"a")),
            b.put("race", Bytes::from_static(b"b"))
        );
        vec![a, c]
    }
}
