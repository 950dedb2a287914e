//! Keeping the local index cache in step with the vault.
//!
//! The cache records which segments it was built from. A refresh lists
//! `index/`, reads only the segments the cache lacks, and merges them in.
//! A segment that does not decode is reported, and the blobs it would have
//! described are recovered from the trailers of packs no healthy segment
//! covers; the same recovery finds packs an interrupted ingest uploaded
//! but never committed, so they are indexed instead of uploaded again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::{stream, StreamExt};

use super::{pack_id_from_name, pack_name, segment_name, Repository};
use crate::backend::ByteRange;
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
const MERGE_BATCH: usize = 1 << 18;

/// Pack shards listed ahead of the one being checked.
const SHARDS_AHEAD: usize = 8;

/// The prefixes packs are stored under, `packs/00/` to `packs/ff/` (see
/// [`pack_name`]).
pub fn pack_shards() -> impl Iterator<Item = String> {
    (0..=u8::MAX).map(|b| format!("packs/{b:02x}/"))
}

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
    /// `scan_packs`, also lists every pack and reads the trailers of those
    /// that no segment describes (done automatically when a segment is
    /// damaged); their entries are held in memory, never in the cache file,
    /// until a commit writes them into a segment.
    pub async fn refresh_index(&self, scan_packs: bool) -> Result<IndexRefresh> {
        let _one_at_a_time = self.refreshing.lock().await;
        let mut cache = self.open_cache();
        let mut listed = self.list_segments().await?;
        let listed_set: HashSet<ObjectId> = listed.iter().map(|(id, _)| *id).collect();
        let covered: HashSet<ObjectId> = cache.segments().collect();
        if !covered.is_subset(&listed_set) {
            tracing::warn!("index cache names segments the vault lacks; rebuilding");
            cache = Arc::new(IndexCache::empty());
        }
        let covered: HashSet<ObjectId> = cache.segments().collect();
        let mut superseded: HashSet<ObjectId> = cache.superseded().collect();
        let mut report = IndexRefresh::default();
        let mut batch: Vec<IndexEntry> = Vec::new();
        let mut batch_segments = Vec::new();
        let mut batch_superseded = Vec::new();
        // Largest first: merged segments come before the ones they replace,
        // which then need not be read at all.
        listed.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (seg, _) in listed.iter().filter(|(s, _)| !covered.contains(s)) {
            if superseded.contains(seg) {
                batch_segments.push(*seg);
                continue;
            }
            match self.read_segment(seg).await {
                Ok(s) => {
                    batch.extend(s.entries);
                    batch_segments.push(*seg);
                    for old in s.supersedes {
                        if superseded.insert(old) {
                            batch_superseded.push(old);
                        }
                    }
                    report.segments_added += 1;
                }
                Err(e) => {
                    tracing::error!(segment = %seg, error = %e, "index segment damaged");
                    report.damaged_segments.push((*seg, e));
                }
            }
            if batch.len() >= MERGE_BATCH {
                cache = self.merge_into_cache(
                    &cache,
                    &std::mem::take(&mut batch_segments),
                    &std::mem::take(&mut batch_superseded),
                    std::mem::take(&mut batch),
                )?;
            }
        }
        if !batch.is_empty() || !batch_segments.is_empty() || !batch_superseded.is_empty() {
            cache = self.merge_into_cache(
                &cache,
                &batch_segments,
                &batch_superseded,
                std::mem::take(&mut batch),
            )?;
        }
        // A damaged segment some other segment supersedes lost nothing.
        report
            .damaged_segments
            .retain(|(seg, _)| !superseded.contains(seg));
        if scan_packs || !report.damaged_segments.is_empty() {
            // A shard at a time (a few listed ahead), so memory holds a
            // 256th of the vault's pack names, not all of them.
            let mut shards = stream::iter(pack_shards())
                .map(|prefix| async move { self.list_pack_shard(&prefix).await })
                .buffered(SHARDS_AHEAD);
            let mut unknown = Vec::new();
            while let Some(shard) = shards.next().await {
                unknown.extend(shard?.into_iter().filter(|p| !cache.knows_pack(p)));
            }
            for pack in unknown {
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
            // In memory only (see `Repository::recovered`): the cache file
            // never holds an entry no vault segment holds.
            let overlay: HashMap<_, _> = report.recovered.iter().map(|e| (e.blob, *e)).collect();
            *self.recovered.write().expect("recovered lock") = Arc::new(overlay);
        }
        *self.index.write().expect("index lock") = cache;
        Ok(report)
    }

    fn merge_into_cache(
        &self,
        cache: &IndexCache,
        segments: &[ObjectId],
        superseded: &[ObjectId],
        mut entries: Vec<IndexEntry>,
    ) -> Result<Arc<IndexCache>> {
        entries.sort_by_key(|e| e.blob);
        Ok(Arc::new(cache.add_layer(
            &self.cache_path,
            segments,
            superseded,
            &entries,
        )?))
    }

    /// Index segments in the vault, with their stored sizes.
    pub async fn list_segments(&self) -> Result<Vec<(ObjectId, u64)>> {
        Ok(self
            .backend
            .list("index/")
            .await?
            .iter()
            .filter_map(|l| Some((l.name.strip_prefix("index/")?.parse().ok()?, l.size)))
            .collect())
    }

    /// Packs in the vault under `prefix` (`packs/` or one of
    /// [`pack_shards`]).
    pub async fn list_pack_shard(&self, prefix: &str) -> Result<Vec<ObjectId>> {
        Ok(self
            .backend
            .list(prefix)
            .await?
            .iter()
            .filter_map(|l| pack_id_from_name(&l.name))
            .collect())
    }

    /// Packs in the vault.
    pub async fn list_packs(&self) -> Result<Vec<ObjectId>> {
        self.list_pack_shard("packs/").await
    }

    /// Reads and decodes one index segment, checking its name.
    pub async fn read_segment(&self, id: &ObjectId) -> Result<Segment> {
        let name = segment_name(id);
        let keys = &self.keys;
        let (segment, _) = self
            .get_authentic(&name, |bytes| {
                if ObjectId::of(bytes) != *id {
                    return Err(Error::corrupt("bytes do not hash to the name"));
                }
                let body = sealed::open(keys, ObjectKind::IndexSegment, bytes)?;
                Segment::decode(&body)
            })
            .await
            .map_err(|e| e.context(name))?;
        Ok(segment)
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
    pub(crate) fn add_segment_to_cache(&self, id: ObjectId, segment: &Segment) -> Result<()> {
        let cache = self.index();
        let merged = if segment.entries.is_sorted_by_key(|e| e.blob) {
            // As written (segments are stored sorted): no copy to sort.
            let layer = cache.add_layer(
                &self.cache_path,
                &[id],
                &segment.supersedes,
                &segment.entries,
            );
            Arc::new(layer?)
        } else {
            self.merge_into_cache(&cache, &[id], &segment.supersedes, segment.entries.clone())?
        };
        *self.index.write().expect("index lock") = merged;
        Ok(())
    }

    /// Merges live index segments of similar size once
    /// [`SEGMENT_MERGE_FANOUT`] of them pile up (below
    /// [`SEGMENT_MERGE_MAX_TIER`]), so a cold reader fetches few segments. The merged segment names the ones it supersedes; they
    /// stay in the vault (immutable) and readers skip them.
    pub(crate) async fn compact_segments(&self) -> Result<usize> {
        let mut merged = 0;
        loop {
            let sizes: HashMap<ObjectId, u64> = self.list_segments().await?.into_iter().collect();
            let cache = self.index();
            let superseded: HashSet<ObjectId> = cache.superseded().collect();
            let mut tiers: BTreeMap<u32, Vec<ObjectId>> = BTreeMap::new();
            for seg in cache.segments().filter(|s| !superseded.contains(s)) {
                if let Some(&size) = sizes.get(&seg) {
                    tiers.entry(segment_tier(size)).or_default().push(seg);
                }
            }
            let Some(group) = tiers
                .into_iter()
                .find(|(tier, g)| *tier < SEGMENT_MERGE_MAX_TIER && g.len() >= SEGMENT_MERGE_FANOUT)
                .map(|(_, g)| g)
            else {
                return Ok(merged);
            };
            let mut entries = Vec::new();
            for seg in &group {
                entries.extend(self.read_segment(seg).await?.entries);
            }
            entries.sort_by_key(|e| e.blob);
            entries.dedup_by_key(|e| e.blob);
            let segment = Segment {
                entries,
                supersedes: group,
            };
            let id = self.put_segment(&segment).await?;
            self.add_segment_to_cache(id, &segment)?;
            tracing::info!(segment = %id, replaced = segment.supersedes.len(), "index segments merged");
            merged += 1;
        }
    }

    /// Seals and stores a segment; returns its id.
    pub(crate) async fn put_segment(&self, segment: &Segment) -> Result<ObjectId> {
        let bytes = self.seal(ObjectKind::IndexSegment, &segment.encode());
        let id = ObjectId::of(&bytes);
        match self
            .backend
            .put(&segment_name(&id), bytes::Bytes::from(bytes))
            .await
        {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(id),
            other => other.map(|()| id),
        }
    }
}

/// Live segments merged at once.
pub const SEGMENT_MERGE_FANOUT: usize = 16;

/// Segments of this tier (1 MiB stored) and above are not merged: a merge
/// holds its inputs in memory, so it stays under 16 MiB of segments. A
/// pass writes its segments at about 3.5 MiB as it goes; merging exists
/// for the many small segments of small passes.
pub const SEGMENT_MERGE_MAX_TIER: u32 = 2;

/// Size tier of a stored segment: how many times size/64 KiB divides by 16.
fn segment_tier(size: u64) -> u32 {
    let mut n = size / (64 << 10);
    let mut t = 0;
    while n > 0 {
        n /= 16;
        t += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::compress::Compression;
    use crate::id::BlobId;
    use crate::repo::{CommitRequest, InitOptions, OpenOptions};

    fn entry(i: u8) -> IndexEntry {
        IndexEntry {
            blob: BlobId([i; 32]),
            pack: ObjectId([i; 32]),
            offset: 40,
            stored_len: 17,
            raw_len: 1,
            compression: Compression::Raw,
        }
    }

    #[tokio::test]
    async fn segments_pile_up_then_merge_and_a_cold_reader_skips_the_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let backend: crate::backend::DynBackend = Arc::new(MemoryBackend::new());
        let open = OpenOptions {
            cache_dir: Some(dir.path().join("a")),
        };
        let repo = Repository::init(backend.clone(), b"pw", InitOptions::default(), open)
            .await
            .unwrap();
        let mut prev = None;
        for i in 0..20u8 {
            let req = CommitRequest {
                index_entries: vec![entry(i)],
                ..Default::default()
            };
            let p = repo.commit(prev.as_ref(), req).await.unwrap();
            prev = Some(repo.load_point(p.seq).await.unwrap());
        }
        let listed = backend.list("index/").await.unwrap();
        assert_eq!(listed.len(), 21, "20 segments and one merge of 16");
        assert_eq!(repo.index().superseded().count(), SEGMENT_MERGE_FANOUT);

        // A reader with an empty cache reads the merged segment and the 4
        // newer ones, not the 16 it replaces.
        let cold = Repository::open(
            backend,
            b"pw",
            OpenOptions {
                cache_dir: Some(dir.path().join("b")),
            },
        )
        .await
        .unwrap();
        let r = cold.refresh_index(false).await.unwrap();
        assert_eq!(r.segments_added, 5);
        for i in 0..20u8 {
            assert_eq!(cold.index().lookup(&BlobId([i; 32])), Some(entry(i)));
        }
    }

    #[test]
    fn every_pack_name_falls_in_exactly_one_shard() {
        let shards: Vec<String> = pack_shards().collect();
        assert_eq!(shards.len(), 256);
        for b in [0u8, 1, 0x7f, 0xa5, 0xff] {
            let name = pack_name(&ObjectId([b; 32]));
            assert_eq!(
                shards.iter().filter(|s| name.starts_with(*s)).count(),
                1,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn a_damaged_cache_block_makes_the_next_refresh_rebuild() {
        // A flipped byte in blob 7's location (a hit that fails its
        // check), then in its id (a miss the reader checks).
        for (flip, what) in [(70, "offset"), (5, "blob id")] {
            let dir = tempfile::tempdir().unwrap();
            let backend: crate::backend::DynBackend = Arc::new(MemoryBackend::new());
            let open = || OpenOptions {
                cache_dir: Some(dir.path().to_path_buf()),
            };
            let repo = Repository::init(backend.clone(), b"pw", InitOptions::default(), open())
                .await
                .unwrap();
            let req = CommitRequest {
                index_entries: (0..50u8).map(entry).collect(),
                ..Default::default()
            };
            repo.commit(None, req).await.unwrap();
            drop(repo);

            let repo = Repository::open(backend, b"pw", open()).await.unwrap();
            let path = repo.cache_path().to_path_buf();
            let mut bytes = std::fs::read(&path).unwrap();
            // Blob 7's entry: its blob and pack ids, both sevens.
            let at = bytes.windows(64).position(|w| w == [7u8; 64]).unwrap();
            bytes[at + flip] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            let r = repo.refresh_index(false).await.unwrap();
            assert_eq!(
                r.segments_added, 0,
                "{what}: the damage is not read at open"
            );
            assert!(!repo.index().contains(&BlobId([200; 32])), "{what}");
            assert!(
                !repo.index().is_damaged(),
                "{what}: an ingest's miss checks nothing"
            );
            assert_eq!(repo.blob_entry(&BlobId([7; 32])), None, "{what}");
            assert!(repo.index().is_damaged(), "{what}");
            let r = repo.refresh_index(false).await.unwrap();
            assert_eq!(r.segments_added, 1, "{what}: rebuilt from the vault");
            for i in 0..50u8 {
                assert_eq!(repo.blob_entry(&BlobId([i; 32])), Some(entry(i)), "{what}");
            }
            assert!(!repo.index().is_damaged(), "{what}");
        }
    }
}
