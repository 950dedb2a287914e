//! Sources: what gets backed up. A source lists its objects in key order
//! and opens each for a streaming read.
//!
//! [`local::LocalSource`] is a directory (the embedded default); the S3
//! bucket source implements the same trait.

pub mod inventory;
pub mod local;
#[cfg(feature = "s3")]
pub mod s3;

use std::io::Read;

use crate::error::Result;

/// One object as the source lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceObject {
    /// Key: a `/`-separated relative path for directories.
    pub key: String,
    /// Length in bytes.
    pub size: u64,
    /// Last modification, ns since the epoch.
    pub mtime_ns: i64,
    /// Unix permission bits (directories); 0 otherwise.
    pub mode: u32,
    /// ETag (object stores); empty otherwise.
    pub etag: String,
    /// Version id (versioned buckets); empty otherwise.
    pub version_id: String,
    /// System metadata (content-type, …).
    pub system: Vec<(String, String)>,
    /// User metadata.
    pub user: Vec<(String, String)>,
    /// Tags.
    pub tags: Vec<(String, String)>,
}

/// A slice of the key space: keys after `after` (exclusive; empty: from
/// the first key) up to and including `until` (`None`: to the last key).
/// Partitions of a pass are consecutive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyRange {
    /// Keys sort strictly after this ("" sorts before every key).
    pub after: String,
    /// Keys sort at or before this.
    pub until: Option<String>,
}

impl KeyRange {
    /// The whole key space.
    pub fn all() -> Self {
        KeyRange::default()
    }

    /// True when `key` falls in the range.
    pub fn contains(&self, key: &str) -> bool {
        key.as_bytes() > self.after.as_bytes()
            && self
                .until
                .as_ref()
                .is_none_or(|u| key.as_bytes() <= u.as_bytes())
    }

    /// True when `key` sorts past the end of the range.
    pub fn is_past(&self, key: &str) -> bool {
        self.until
            .as_ref()
            .is_some_and(|u| key.as_bytes() > u.as_bytes())
    }
}

/// One page of a ranged listing.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// Objects of the range, sorted by key.
    pub objects: Vec<SourceObject>,
    /// Entries the source could not represent.
    pub skipped: u64,
    /// Where the next page starts (exclusive), if there is one.
    pub next: Option<String>,
}

/// A place objects are backed up from.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// A path or URL, recorded in each point.
    fn describe(&self) -> String;
    /// Every object, sorted by key (byte order). Objects the source cannot
    /// represent are skipped with a warning and counted in the second value.
    async fn list(&self) -> Result<(Vec<SourceObject>, u64)>;
    /// One page of the objects of `range` after `after` (exclusive; the
    /// range's start when `None`), in key order. The default lists the
    /// whole source and returns the range as one page: fine for a
    /// directory, which a pass treats as a single partition.
    async fn list_page(&self, range: &KeyRange, after: Option<&str>) -> Result<ListPage> {
        let (all, skipped) = self.list().await?;
        let from = after.unwrap_or(&range.after);
        Ok(ListPage {
            objects: all
                .into_iter()
                .filter(|o| range.contains(&o.key) && o.key.as_str() > from)
                .collect(),
            skipped,
            next: None,
        })
    }
    /// True when the source limits request rates (an S3 bucket: per
    /// prefix, answering 503 SlowDown), so the scheduler paces each
    /// partition; otherwise only concurrency and the global budget apply.
    fn paced(&self) -> bool {
        false
    }
    /// The common prefixes one `/` below `under` (one delimited listing),
    /// for planning partitions; `None` when the source cannot say cheaply.
    async fn common_prefixes(&self, under: &str) -> Result<Option<Vec<String>>> {
        let _ = under;
        Ok(None)
    }
    /// The first key after `after`, for probing the key space; `None` when
    /// there is none or the source cannot say cheaply.
    async fn first_key_after(&self, after: &str) -> Result<Option<String>> {
        let _ = after;
        Ok(None)
    }
    /// Opens an object for a blocking, streaming read (called on the
    /// blocking pool), pinned to the listed version where the source has
    /// versions. Returns the reader and the object's full metadata as of
    /// this read. `NotFound` when it vanished since the listing;
    /// `AlreadyExists` (a failed precondition) when it changed.
    fn open(&self, obj: &SourceObject) -> Result<(Box<dyn Read + Send>, SourceObject)>;
    /// The object's current listing data, to detect a change during the
    /// read; `None` when it is gone.
    fn restat(&self, obj: &SourceObject) -> Result<Option<SourceObject>>;
    /// The source's own clock, ns since the epoch, read now (an S3
    /// server's `Date`), so a point is stamped with the time its state was
    /// observed even when the ingest host's clock is off. `None`: use the
    /// host's clock.
    async fn clock_ns(&self) -> Result<Option<i64>> {
        Ok(None)
    }
    /// The source-relative key a change event in `bucket` names, or
    /// `None` when the event is not about this source. A directory takes
    /// event keys as relative paths.
    fn key_for_event(&self, bucket: &str, key: &str) -> Option<String> {
        let _ = bucket;
        (!key.is_empty()).then(|| key.to_string())
    }
}
