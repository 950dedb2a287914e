//! Keeping the local index cache in step with the vault.
//!
//! The cache records which segments it was built from. A refresh lists
//! `index/`, reads only the segments the cache lacks, and merges them in.
//! A segment that does not decode is reported, and the blobs it would have
//! described are recovered from the trailers of packs no healthy segment
//! covers; the same recovery finds packs an interrupted ingest uploaded
//! but never committed, so they are indexed instead of uploaded again.

use std::collections::HashSet;
use std::sync::Arc;

use super::{pack_id_from_name, pack_name, segment_name, Repository};
use crate::backend::{get_all, ByteRange};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{ObjectKind, HEADER_LEN};
use crate::id::ObjectId;
use crate::index::cache::IndexCache;
use crate::index::{IndexEntry, Segment};
use crate::pack::{trailer_range, PackKey, FOOTER_LEN};
use crate::sealed;

/// What a refresh did.
#[derive(Debug, Default)]
pub struct IndexRefresh {
    /// Segments newly merged into the cache.
    pub segments_added: usize,
    /// Segments that failed to read or decode, with the error.
    pub damaged_segments: Vec<(ObjectId, Error)>,
    /// Entries recovered from the trailers of packs no segment describes.
    pub recovered: Vec<IndexEntry>,
    /// Packs whose trailers were read for recovery.
    pub recovered_packs: Vec<ObjectId>,
    /// Packs whose trailers could not be read.
    pub damaged_packs: Vec<(ObjectId, Error)>,
}

/// Entries per merge batch, so a rebuild never holds the whole index in RAM.
const MERGE_BATCH: usize = 1 << 20;

impl Repository {
    /// Opens the cache file, rebuilding it if damaged.
    fn open_cache(&self) -> Arc<IndexCache> {
        match IndexCache::open(&self.cache_path) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                if e.kind() != ErrorKind::NotFound {
                    tracing::warn!(error = %e, "index cache unusable; rebuilding from the vault");
                }
                Arc::new(IndexCache::empty())
            }
        }
    }

    /// Brings the local index cache up to date with the vault. With
    /// `scan_packs`, also lists every pack and indexes those that no
    /// segment describes (done automatically when a segment is damaged).
    pub async fn refresh_index(&self, scan_packs: bool) -> Result<IndexRefresh> {
        let mut cache = self.open_cache();
        let listed: Vec<ObjectId> = self
            .backend
            .list("index/")
            .await?
            .iter()
            .filter_map(|l| l.name.strip_prefix("index/")?.parse().ok())
            .collect();
        let listed_set: HashSet<ObjectId> = listed.iter().copied().collect();
        let covered: HashSet<ObjectId> = cache.segments().collect();
        if !covered.is_subset(&listed_set) {
            tracing::warn!("index cache names segments the vault lacks; rebuilding");
            cache = Arc::new(IndexCache::empty());
        }
        let covered: HashSet<ObjectId> = cache.segments().collect();
        let mut report = IndexRefresh::default();
        let mut batch: Vec<IndexEntry> = Vec::new();
        let mut batch_segments = Vec::new();
        for seg in listed.iter().filter(|s| !covered.contains(s)) {
            match self.read_segment(seg).await {
                Ok(s) => {
                    batch.extend(s.entries);
                    batch_segments.push(*seg);
                    report.segments_added += 1;
                }
                Err(e) => {
                    tracing::error!(segment = %seg, error = %e, "index segment damaged");
                    report.damaged_segments.push((*seg, e));
                }
            }
            if batch.len() >= MERGE_BATCH {
                cache =
                    self.merge_into_cache(&cache, &batch_segments, std::mem::take(&mut batch))?;
                batch_segments.clear();
            }
        }
        if !batch.is_empty() || !batch_segments.is_empty() {
            cache = self.merge_into_cache(&cache, &batch_segments, std::mem::take(&mut batch))?;
        }
        if scan_packs || !report.damaged_segments.is_empty() {
            let known: HashSet<ObjectId> = cache.packs().collect();
            for l in self.backend.list("packs/").await? {
                let Some(pack) = pack_id_from_name(&l.name) else {
                    continue;
                };
                if known.contains(&pack) {
                    continue;
                }
                match self.read_trailer(&pack).await {
                    Ok(entries) => {
                        report.recovered_packs.push(pack);
                        report.recovered.extend(entries);
                    }
                    Err(e) => {
                        tracing::error!(pack = %pack, error = %e, "pack trailer unreadable");
                        report.damaged_packs.push((pack, e));
                    }
                }
            }
            if !report.recovered.is_empty() {
                let mut entries = report.recovered.clone();
                entries.sort_by_key(|e| e.blob);
                cache = self.merge_into_cache(&cache, &[], entries)?;
            }
        }
        *self.index.write().expect("index lock") = cache;
        Ok(report)
    }

    fn merge_into_cache(
        &self,
        cache: &IndexCache,
        segments: &[ObjectId],
        mut entries: Vec<IndexEntry>,
    ) -> Result<Arc<IndexCache>> {
        entries.sort_by_key(|e| e.blob);
        cache.write_merged(&self.cache_path, segments, &entries)?;
        Ok(Arc::new(IndexCache::open(&self.cache_path)?))
    }

    /// Reads and decodes one index segment, checking its name.
    pub async fn read_segment(&self, id: &ObjectId) -> Result<Segment> {
        let name = segment_name(id);
        let bytes = get_all(&*self.backend, &name)
            .await
            .map_err(|e| e.context(name.clone()))?;
        if ObjectId::of(&bytes) != *id {
            return Err(Error::corrupt(format!(
                "{name}: bytes do not hash to the name"
            )));
        }
        let body = sealed::open(&self.keys, ObjectKind::IndexSegment, &bytes)
            .map_err(|e| e.context(name.clone()))?;
        Segment::decode(&body).map_err(|e| e.context(name))
    }

    /// Reads a pack's header and trailer (ranged reads) and returns its
    /// entries as index entries.
    pub async fn read_trailer(&self, pack: &ObjectId) -> Result<Vec<IndexEntry>> {
        let name = pack_name(pack);
        let footer = self
            .backend
            .get(&name, ByteRange::Suffix(FOOTER_LEN as u64))
            .await
            .map_err(|e| e.context(name.clone()))?;
        let range = trailer_range(&footer.bytes, footer.total_len)
            .map_err(|e| Error::from(e).context(name.clone()))?;
        let head = self
            .backend
            .get(&name, ByteRange::Bounded(0..HEADER_LEN as u64))
            .await?;
        let key = PackKey::open(&self.keys, &head.bytes).map_err(|e| e.context(name.clone()))?;
        let trailer = self
            .backend
            .get(&name, ByteRange::Bounded(range.clone()))
            .await?;
        let entries = key
            .open_trailer(&trailer.bytes, range.start)
            .map_err(|e| e.context(name))?;
        Ok(entries
            .iter()
            .map(|e| IndexEntry::from_pack(*pack, e))
            .collect())
    }

    /// Records a segment this process wrote, without re-reading it.
    pub(crate) fn add_segment_to_cache(
        &self,
        id: ObjectId,
        entries: Vec<IndexEntry>,
    ) -> Result<()> {
        let cache = self.index();
        let merged = self.merge_into_cache(&cache, &[id], entries)?;
        *self.index.write().expect("index lock") = merged;
        Ok(())
    }
}
