//! The local index cache: a few sorted, fixed-width files.
//!
//! It lives outside the vault (the user's cache dir or `--cache-dir`) and
//! is derived data, rebuilt from the vault when it is missing or damaged.
//! Each file holds two sorted tables in checked blocks under fence levels
//! (`table.rs`): the packs its entries point into and the entries, each
//! with its pack's id. Opening a file checks its header and id lists and
//! reads each table's top fence level (at most 8 MiB), never the whole
//! file. Below the top, a block is checked when a lookup finds its answer
//! there or a merge reads it; an ingest's miss costs one read a level and
//! no hashing (damage can only turn a hit into a miss, which stores a blob
//! again), a reader's miss is checked all the way down.
//! A block that fails its check removes the cache's base file, so the
//! next open rebuilds the cache from the vault. Memory holds no entry and
//! no pack id: the index's pages sit in the kernel's page cache, not in
//! the process, whatever the vault's size.
//!
//! The cache is a stack of *layers*: the base file and newer, smaller
//! files beside it (`<base>.1`, `<base>.2`, …). Adding segments writes a
//! new layer of just their entries; while the newest layer holds at least
//! a quarter as many entries as the one below it, the two are merged
//! (streamed into one file), so there are O(log n) layers and each entry
//! is rewritten O(log n) times — an ingest that indexes as it goes never
//! rewrites the whole cache per segment. A blob in two layers keeps the
//! location of the older one.
//!
//! Spec (informative, not part of the vault): `format-spec/SPEC.md#local-index-cache`.
//!
//! ```text
//! 0   magic "STRACIX1"       8   version u32 = 3, reserved u32
//! 16  segment count u64      24  superseded count u64
//! 32  pack count u64         40  entry count u64
//! 48  reserved (48 zero bytes)
//! 96  blake3 of bytes 0..96 and the segment and superseded ids
//! 128 segment ids, superseded segment ids (32 each); the pack table
//!     (pack ids, sorted); the entry table (84 bytes each, sorted by blob
//!     id: blob id, pack id, offset u64, stored length u32, raw length
//!     u32, compression u8, 3 reserved)
//! ```
//!
//! `segments` are the vault segments whose entries the file holds;
//! `superseded` are those a merged segment replaces (their entries are in
//! the merged one), so the live segments are the difference. Over a stack
//! each is the union of its layers'.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::table::{self, Checks, Shape, Table, TableWriter};
use super::IndexEntry;
use crate::compress::Compression;
use crate::error::{Error, ErrorKind, Result};
use crate::format::{Reader, Writer};
use crate::id::{BlobId, ObjectId};

const MAGIC: [u8; 8] = *b"STRACIX1";
const VERSION: u32 = 3;
const HEADER_LEN: usize = 128;
/// Header bytes the head checksum covers (it follows them).
const HEADER_CHECKED: usize = 96;

/// Sorted pack ids.
const PACKS: Shape = Shape {
    tag: 1,
    width: 32,
    per_block: 128,
};
/// Index entries, each with its pack's id.
const ENTRIES: Shape = Shape {
    tag: 2,
    width: ENTRY_WIDTH,
    per_block: 64,
};
/// Blob id, pack id, offset, stored length, raw length, compression, reserved.
const ENTRY_WIDTH: usize = 32 + 32 + 8 + 4 + 4 + 1 + 3;

fn encode_entry(e: &IndexEntry) -> Vec<u8> {
    let mut w = Writer::with_capacity(ENTRY_WIDTH);
    w.bytes(e.blob.as_bytes());
    w.bytes(e.pack.as_bytes());
    w.u64(e.offset);
    w.u32(e.stored_len);
    w.u32(e.raw_len);
    w.u8(e.compression as u8);
    w.bytes(&[0; 3]);
    w.into_inner()
}

fn decode_entry(bytes: &[u8]) -> Result<IndexEntry> {
    let mut r = Reader::new(bytes);
    let blob = BlobId(r.array::<32>("blob id")?);
    let pack = ObjectId(r.array::<32>("pack id")?);
    let offset = r.u64("offset")?;
    let stored_len = r.u32("stored length")?;
    let raw_len = r.u32("raw length")?;
    let c = r.u8("compression")?;
    let compression = Compression::from_u8(c)
        .ok_or_else(|| Error::corrupt(format!("index cache entry has compression {c}")))?;
    Ok(IndexEntry {
        blob,
        pack,
        offset,
        stored_len,
        raw_len,
        compression,
    })
}

/// One layer: a read-only view of one cache file, read with positional
/// reads. Memory holds its segment lists and the top fence level of each
/// table; a lookup descends the fences, reading one checked block a level.
struct CacheFile {
    path: PathBuf,
    file: File,
    segments: Vec<ObjectId>,
    superseded: Vec<ObjectId>,
    packs: Table,
    entries: Table,
}

impl CacheFile {
    /// Opens and checks a cache file. `NotFound` when absent, `Corrupt`
    /// when damaged (the caller rebuilds).
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)?;
        Self::check(path, file).map_err(|e| e.context(format!("index cache {}", path.display())))
    }

    /// Checks the header, its length and id lists, and opens the tables.
    fn check(path: &Path, file: File) -> Result<Self> {
        use std::os::unix::fs::FileExt;
        let len = file.metadata()?.len();
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0).map_err(truncated)?;
        let mut r = Reader::new(&header);
        if r.array::<8>("magic")? != MAGIC {
            return Err(Error::corrupt("not an index cache"));
        }
        let version = r.u32("version")?;
        if version != VERSION {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion,
                format!("index cache version {version}, this build reads {VERSION}"),
            ));
        }
        r.u32("reserved")?;
        let [segments, superseded, packs, entries] = [
            r.u64("segments")?,
            r.u64("superseded")?,
            r.u64("packs")?,
            r.u64("entries")?,
        ];
        let checksum = header.get(HEADER_CHECKED..).unwrap_or_default();
        let ids_len = segments
            .checked_add(superseded)
            .and_then(|n| n.checked_mul(32))
            .filter(|&n| n <= len)
            .ok_or_else(|| Error::corrupt("index cache header counts are out of range"))?;
        // No more records than the file has room for (and so no overflow
        // in the sizes below).
        if packs > len / PACKS.width as u64 || entries > len / ENTRIES.width as u64 {
            return Err(Error::corrupt("index cache header counts are out of range"));
        }
        let packs_start = HEADER_LEN as u64 + ids_len;
        let expected = [
            table::stored_len(PACKS, packs),
            table::stored_len(ENTRIES, entries),
        ]
        .into_iter()
        .try_fold(packs_start, u64::checked_add);
        if expected != Some(len) {
            return Err(Error::corrupt(format!(
                "index cache is {len} bytes, its header says otherwise"
            )));
        }
        let mut ids = vec![0u8; ids_len as usize];
        file.read_exact_at(&mut ids, HEADER_LEN as u64)
            .map_err(truncated)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(header.get(..HEADER_CHECKED).unwrap_or_default());
        hasher.update(&ids);
        if hasher.finalize().as_bytes().as_slice() != checksum {
            return Err(Error::corrupt("index cache header checksum mismatch"));
        }
        let mut ids = ids.chunks_exact(32).map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(c);
            ObjectId(id)
        });
        let segments = ids.by_ref().take(segments as usize).collect();
        let superseded = ids.collect();
        let packs = Table::open(&file, PACKS, packs_start, packs)?;
        let entries = Table::open(&file, ENTRIES, packs.end(), entries)?;
        Ok(CacheFile {
            path: path.to_path_buf(),
            file,
            segments,
            superseded,
            packs,
            entries,
        })
    }

    /// Entries in the file.
    fn len(&self) -> usize {
        usize::try_from(self.entries.records()).unwrap_or(usize::MAX)
    }

    /// Where `blob` is stored, if this file knows it.
    fn lookup(&self, blob: &BlobId, checks: Checks) -> Result<Option<IndexEntry>> {
        self.entries
            .find(&self.file, blob.as_bytes(), checks)?
            .map(|r| decode_entry(&r))
            .transpose()
    }

    /// True when an entry of this file points into `pack`.
    fn knows_pack(&self, pack: &ObjectId) -> Result<bool> {
        Ok(self
            .packs
            .find(&self.file, pack.as_bytes(), Checks::Hits)?
            .is_some())
    }

    /// All records of `table`, a batch of blocks at a time, decoded.
    fn records<'a, T: 'a>(
        &'a self,
        table: &'a Table,
        decode: impl Fn(&[u8]) -> Result<T> + 'a,
    ) -> impl Iterator<Item = Result<T>> + 'a {
        const BLOCKS: u64 = 64;
        let width = table.width();
        (0..table.blocks().div_ceil(BLOCKS)).flat_map(move |b| {
            let batch: Vec<Result<T>> = match table.read_records(&self.file, b * BLOCKS, BLOCKS) {
                Ok(bytes) => bytes.chunks_exact(width).map(&decode).collect(),
                Err(e) => vec![Err(
                    e.context(format!("index cache {}", self.path.display()))
                )],
            };
            batch
        })
    }

    /// All entries in blob-id order.
    fn iter(&self) -> impl Iterator<Item = Result<IndexEntry>> + '_ {
        self.records(&self.entries, decode_entry)
    }

    /// The packs its entries point into, in id order.
    fn packs(&self) -> impl Iterator<Item = Result<ObjectId>> + '_ {
        self.records(&self.packs, |b| {
            let mut id = [0u8; 32];
            id.copy_from_slice(b.get(..32).unwrap_or(&[0; 32]));
            Ok(ObjectId(id))
        })
    }
}

fn truncated(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::corrupt("index cache truncated")
    } else {
        Error::from(e)
    }
}

/// Writes one cache file at `path` (atomically: temp file, fsync, rename)
/// holding `packs` and `entries`, both sorted (of a pack or blob met twice
/// in a row, the first is kept).
fn write_file(
    path: &Path,
    segments: &[ObjectId],
    superseded: &[ObjectId],
    packs: impl Iterator<Item = Result<ObjectId>>,
    entries: impl Iterator<Item = Result<IndexEntry>>,
) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::config("index cache path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    match write_to(&tmp, dir, segments, superseded, packs, entries) {
        Ok(()) => Ok(std::fs::rename(&tmp, path)?),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Where `path` is written before it is renamed into place: beside it,
/// named after it and this process, so no two layers share one.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp{}", std::process::id()));
    PathBuf::from(name)
}

fn write_to(
    tmp: &Path,
    dir: &Path,
    segments: &[ObjectId],
    superseded: &[ObjectId],
    packs: impl Iterator<Item = Result<ObjectId>>,
    entries: impl Iterator<Item = Result<IndexEntry>>,
) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
    out.write_all(&[0u8; HEADER_LEN])?;
    for id in segments.iter().chain(superseded) {
        out.write_all(id.as_bytes())?;
    }
    let mut pack_table = TableWriter::new(PACKS, dir);
    let mut last: Option<ObjectId> = None;
    for p in packs {
        let p = p?;
        if last == Some(p) {
            continue;
        }
        if last.is_some_and(|l| l > p) {
            return Err(Error::new(
                ErrorKind::Io,
                "index cache packs out of order (a bug)",
            ));
        }
        last = Some(p);
        pack_table.push(p.as_bytes(), &mut out)?;
    }
    let pack_count = pack_table.finish(&mut out)?;
    let mut entry_table = TableWriter::new(ENTRIES, dir);
    let mut last: Option<BlobId> = None;
    for e in entries {
        let e = e?;
        if last == Some(e.blob) {
            continue;
        }
        if last.is_some_and(|l| l > e.blob) {
            return Err(Error::new(
                ErrorKind::Io,
                "index cache entries out of order (a bug)",
            ));
        }
        last = Some(e.blob);
        entry_table.push(&encode_entry(&e), &mut out)?;
    }
    let entry_count = entry_table.finish(&mut out)?;
    let mut file = out.into_inner().map_err(|e| Error::from(e.into_error()))?;
    let mut w = Writer::with_capacity(HEADER_LEN);
    w.bytes(&MAGIC);
    w.u32(VERSION);
    w.u32(0);
    w.u64(segments.len() as u64);
    w.u64(superseded.len() as u64);
    w.u64(pack_count);
    w.u64(entry_count);
    w.bytes(&[0; HEADER_CHECKED - 48]);
    let mut header = w.into_inner();
    let mut head = blake3::Hasher::new();
    head.update(&header);
    for id in segments.iter().chain(superseded) {
        head.update(id.as_bytes());
    }
    header.extend_from_slice(head.finalize().as_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    file.sync_all()?;
    Ok(())
}

/// The distinct `ids`, sorted.
fn union(ids: impl Iterator<Item = ObjectId>) -> Vec<ObjectId> {
    let set: std::collections::BTreeSet<ObjectId> = ids.collect();
    set.into_iter().collect()
}

/// Items of several sorted sources merged in key order; of a key in
/// several, the first source's.
struct MergeIter<T, K: Ord + Copy, I: Iterator<Item = Result<T>>> {
    heads: Vec<std::iter::Peekable<I>>,
    key: fn(&T) -> K,
}

impl<T, K: Ord + Copy, I: Iterator<Item = Result<T>>> Iterator for MergeIter<T, K, I> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        let key = self.key;
        let mut best: Option<(usize, K)> = None;
        for (i, h) in self.heads.iter_mut().enumerate() {
            match h.peek() {
                Some(Err(_)) => return h.next(),
                Some(Ok(t)) if best.is_none_or(|(_, b)| key(t) < b) => best = Some((i, key(t))),
                _ => {}
            }
        }
        let (i, k) = best?;
        let out = self.heads.get_mut(i)?.next();
        for h in &mut self.heads {
            while h.next_if(|t| matches!(t, Ok(t) if key(t) == k)).is_some() {}
        }
        out
    }
}

/// The local index cache: its layers, oldest (and largest) first.
#[derive(Clone)]
pub struct IndexCache {
    layers: Vec<Arc<CacheFile>>,
    /// Set once a block failed its check (the base file is then removed).
    damaged: Arc<AtomicBool>,
}

/// Layers beyond this are merged whatever their sizes.
const MAX_LAYERS: usize = 16;

/// The file of layer `i` of the cache at `base`.
fn layer_path(base: &Path, i: usize) -> PathBuf {
    if i == 0 {
        base.to_path_buf()
    } else {
        let mut name = base.as_os_str().to_owned();
        name.push(format!(".{i}"));
        PathBuf::from(name)
    }
}

impl IndexCache {
    /// An empty cache (a new vault, or before the first build).
    pub fn empty() -> Self {
        IndexCache {
            layers: Vec::new(),
            damaged: Arc::default(),
        }
    }

    /// Opens the cache at `base` and the layers beside it, checking their
    /// headers and top fences (the blocks below are checked when used).
    /// `NotFound` when absent, `Corrupt` when a layer is damaged (the
    /// caller rebuilds).
    pub fn open(base: &Path) -> Result<Self> {
        let mut layers = vec![Arc::new(CacheFile::open(base)?)];
        loop {
            let path = layer_path(base, layers.len());
            match CacheFile::open(&path) {
                Ok(f) => layers.push(Arc::new(f)),
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        Ok(IndexCache {
            layers,
            damaged: Arc::default(),
        })
    }

    /// Number of layers (files) the cache has.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Number of entries over all layers (a blob two layers know counts
    /// twice; merges drop such repeats).
    pub fn len(&self) -> usize {
        self.layers.iter().map(|l| l.len()).sum()
    }

    /// True when it knows no blob.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once a block of it failed its check: its base file is gone,
    /// so the next open rebuilds it from the vault.
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// The segments this cache was built from.
    pub fn segments(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.layers.iter().flat_map(|l| l.segments.iter().copied())
    }

    /// Segments whose entries a merged segment holds.
    pub fn superseded(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.layers
            .iter()
            .flat_map(|l| l.superseded.iter().copied())
    }

    /// Where `blob` is stored, if known (the oldest layer's answer). A
    /// damaged block answers "not known" (see [`IndexCache::is_damaged`]),
    /// and only the block of a hit is checked: a miss reads one block per
    /// level and hashes nothing, and may come from damage (an ingest then
    /// stores the blob again; a reader asks [`IndexCache::lookup_checked`]).
    pub fn lookup(&self, blob: &BlobId) -> Option<IndexEntry> {
        self.find(blob, Checks::Hits)
    }

    /// [`IndexCache::lookup`], every block it reads checked: a miss is
    /// certain, or the damage that caused it is found (and the cache
    /// removed, so the next refresh rebuilds it).
    pub fn lookup_checked(&self, blob: &BlobId) -> Option<IndexEntry> {
        self.find(blob, Checks::All)
    }

    fn find(&self, blob: &BlobId, checks: Checks) -> Option<IndexEntry> {
        self.layers.iter().find_map(|l| {
            l.lookup(blob, checks)
                .unwrap_or_else(|e| self.damage(l, &e))
        })
    }

    /// True when `blob` is known.
    pub fn contains(&self, blob: &BlobId) -> bool {
        self.lookup(blob).is_some()
    }

    /// True when an entry points into `pack` (a damaged block: false, and
    /// the pack's trailer is read again).
    pub fn knows_pack(&self, pack: &ObjectId) -> bool {
        self.layers.iter().any(|l| {
            l.knows_pack(pack)
                .unwrap_or_else(|e| self.damage::<()>(l, &e).is_some())
        })
    }

    /// Records that `layer` has a damaged block: removes the base file so
    /// that the next open rebuilds the cache, and says so once.
    fn damage<T>(&self, layer: &CacheFile, e: &Error) -> Option<T> {
        if !self.damaged.swap(true, Ordering::Relaxed) {
            let base = self.layers.first().map(|l| l.path.clone());
            if let Some(base) = &base {
                let _ = std::fs::remove_file(base);
            }
            tracing::error!(
                file = %layer.path.display(),
                error = %e,
                "index cache damaged: removed, the next open rebuilds it from the vault"
            );
        }
        None
    }

    /// All entries in blob-id order, each blob once.
    pub fn iter(&self) -> impl Iterator<Item = Result<IndexEntry>> + '_ {
        MergeIter {
            heads: self.layers.iter().map(|l| l.iter().peekable()).collect(),
            key: |e: &IndexEntry| e.blob,
        }
    }

    /// Adds a layer at `base` holding `segments`, `superseded` and
    /// `entries` (sorted by blob id), merges layers as the sizes call for,
    /// and returns the cache with it. An empty cache writes the base file
    /// and removes any layers a previous cache left beside it. A merge
    /// that meets a damaged block leaves the layers unmerged (the cache is
    /// then marked damaged and rebuilt at the next open).
    pub fn add_layer(
        &self,
        base: &Path,
        segments: &[ObjectId],
        superseded: &[ObjectId],
        entries: &[IndexEntry],
    ) -> Result<IndexCache> {
        let n = self.layers.len();
        let path = layer_path(base, n);
        write_file(
            &path,
            segments,
            superseded,
            union(entries.iter().map(|e| e.pack)).into_iter().map(Ok),
            entries.iter().map(|e| Ok(*e)),
        )?;
        if n == 0 {
            let mut i = 1;
            while std::fs::remove_file(layer_path(base, i)).is_ok() {
                i += 1;
            }
        }
        let mut cache = IndexCache {
            layers: self.layers.clone(),
            damaged: self.damaged.clone(),
        };
        cache.layers.push(Arc::new(CacheFile::open(&path)?));
        while let [.., older, newer] = cache.layers.as_slice() {
            if newer.len() * 4 < older.len() && cache.layers.len() <= MAX_LAYERS {
                break;
            }
            if cache.is_damaged() {
                break;
            }
            let (older, newer) = (older.clone(), newer.clone());
            let i = cache.layers.len() - 2;
            let path = layer_path(base, i);
            let merged = write_file(
                &path,
                &union(older.segments.iter().chain(&newer.segments).copied()),
                &union(older.superseded.iter().chain(&newer.superseded).copied()),
                MergeIter {
                    heads: vec![older.packs().peekable(), newer.packs().peekable()],
                    key: |p: &ObjectId| *p,
                },
                MergeIter {
                    heads: vec![older.iter().peekable(), newer.iter().peekable()],
                    key: |e: &IndexEntry| e.blob,
                },
            );
            match merged {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    cache.damage::<()>(&newer, &e);
                    break;
                }
                Err(e) => return Err(e),
            }
            // A crash before this removal leaves the newer layer's entries
            // twice: harmless, the next merge drops them.
            std::fs::remove_file(layer_path(base, i + 1))?;
            cache.layers.truncate(i);
            cache.layers.push(Arc::new(CacheFile::open(&path)?));
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;

    fn e(b: u8, p: u8) -> IndexEntry {
        IndexEntry {
            blob: BlobId([b; 32]),
            pack: ObjectId([p; 32]),
            offset: u64::from(b),
            stored_len: 17,
            raw_len: 1,
            compression: Compression::Raw,
        }
    }

    #[test]
    fn layers_merge_lookup_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.cache");
        let c1 = IndexCache::empty()
            .add_layer(&path, &[ObjectId([1; 32])], &[], &[e(2, 1), e(4, 1)])
            .unwrap();
        assert_eq!(c1.len(), 2);
        // Three entries on two: a quarter or more, so the layers merge.
        let c2 = c1
            .add_layer(
                &path,
                &[ObjectId([2; 32])],
                &[ObjectId([1; 32])],
                &[e(1, 2), e(3, 2), e(4, 9)],
            )
            .unwrap();
        assert_eq!(c2.layers(), 1);
        let c2 = IndexCache::open(&path).unwrap();
        assert_eq!((c2.layers(), c2.len()), (1, 4));
        assert_eq!(c2.lookup(&BlobId([4; 32])).unwrap().pack, ObjectId([1; 32]));
        assert_eq!(c2.lookup(&BlobId([3; 32])).unwrap(), e(3, 2));
        assert!(c2.lookup(&BlobId([5; 32])).is_none());
        assert_eq!(c2.segments().count(), 2);
        assert_eq!(c2.superseded().collect::<Vec<_>>(), [ObjectId([1; 32])]);
        let blobs: Vec<u8> = c2.iter().map(|x| x.unwrap().blob.0[0]).collect();
        assert_eq!(blobs, vec![1, 2, 3, 4]);
        drop((c1, c2));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            IndexCache::open(&path).err().unwrap().kind(),
            ErrorKind::Corrupt
        );
        std::fs::write(&path, &bytes[..50]).unwrap();
        assert!(IndexCache::open(&path).is_err());
    }

    /// Entry `i` of a large layer: distinct blobs spread over the id space.
    fn spread(i: u32) -> IndexEntry {
        let mut blob = [0u8; 32];
        let mut n = i.to_le_bytes();
        n.reverse(); // sorted as numbers
        blob[..4].copy_from_slice(&n);
        IndexEntry {
            blob: BlobId(blob),
            pack: ObjectId([(i % 7) as u8; 32]),
            ..e(0, 0)
        }
    }

    /// Flips a byte inside the entry of `blob` in the file at `path`.
    fn damage_entry(path: &Path, blob: &BlobId) {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes
            .windows(32)
            .position(|w| w == blob.as_bytes())
            .unwrap();
        bytes[at + 40] ^= 1;
        std::fs::write(path, &bytes).unwrap();
    }

    /// A one-layer cache of `entries` in `dir` whose entry 500 has a
    /// flipped byte in its pack id.
    fn damaged_layer(dir: &Path, entries: &[IndexEntry]) -> PathBuf {
        let path = dir.join("index.cache");
        IndexCache::empty()
            .add_layer(&path, &[ObjectId([1; 32])], &[], entries)
            .unwrap();
        damage_entry(&path, &spread(500).blob);
        path
    }

    #[test]
    fn a_damaged_block_is_caught_by_the_lookup_that_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<IndexEntry> = (0..1000).map(spread).collect();
        let path = damaged_layer(dir.path(), &entries);
        // Opening reads the header and the top fences, not the block.
        let c = IndexCache::open(&path).unwrap();
        assert_eq!(c.lookup(&spread(10).blob), Some(spread(10)));
        assert!(!c.is_damaged());
        assert_eq!(c.lookup(&spread(500).blob), None);
        assert!(c.is_damaged());
        // The base is gone, so the next open rebuilds from the vault.
        assert_eq!(
            IndexCache::open(&path).err().unwrap().kind(),
            ErrorKind::NotFound
        );
        // Blocks that pass their check still answer.
        assert_eq!(c.lookup(&spread(999).blob), Some(spread(999)));
        assert!(c.knows_pack(&ObjectId([3; 32])));
        assert!(!c.knows_pack(&ObjectId([9; 32])));
        assert!(c.iter().any(|r| r.is_err()));
    }

    #[test]
    fn a_merge_that_meets_a_damaged_block_keeps_the_layers_apart() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<IndexEntry> = (0..1000).map(spread).collect();
        let path = damaged_layer(dir.path(), &entries);
        let c = IndexCache::open(&path).unwrap();
        // 400 new entries on 1000: a merge, which reads the damaged block.
        let newer: Vec<IndexEntry> = (1000..1400).map(spread).collect();
        let c = c
            .add_layer(&path, &[ObjectId([2; 32])], &[], &newer)
            .unwrap();
        assert!(c.is_damaged());
        assert_eq!(c.layers(), 2);
        assert_eq!(c.lookup(&spread(1300).blob), Some(spread(1300)));
        assert_eq!(c.lookup(&spread(3).blob), Some(spread(3)));
        assert_eq!(
            IndexCache::open(&path).err().unwrap().kind(),
            ErrorKind::NotFound
        );
        // Rebuilt from scratch: the layer left beside the old base goes.
        let fresh = IndexCache::empty()
            .add_layer(&path, &[ObjectId([1; 32])], &[], &entries)
            .unwrap();
        assert_eq!(fresh.layers(), 1);
        assert_eq!(IndexCache::open(&path).unwrap().layers(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever bytes are flipped, the cache refuses to open, or each
        /// lookup answers the written entry or nothing: damage never makes
        /// an entry up or moves one.
        #[test]
        fn damage_never_invents_or_moves_an_entry(
            n in 0u32..700,
            flips in proptest::collection::vec((proptest::prelude::any::<u64>(), 1u8..=255), 1..6),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("index.cache");
            let entries: Vec<IndexEntry> = (0..n).map(spread).collect();
            IndexCache::empty()
                .add_layer(&path, &[ObjectId([1; 32])], &[], &entries)
                .unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            let len = bytes.len() as u64;
            for (at, x) in flips {
                bytes[(at % len) as usize] ^= x;
            }
            std::fs::write(&path, &bytes).unwrap();
            let Ok(c) = IndexCache::open(&path) else {
                return Ok(());
            };
            for i in 0..n + 100 {
                let found = c.lookup(&spread(i).blob);
                proptest::prop_assert!(found.is_none() || (i < n && found == Some(spread(i))));
            }
            for p in 0..10u8 {
                proptest::prop_assert!(!c.knows_pack(&ObjectId([p; 32])) || (u32::from(p) < n.min(7)));
            }
            for e in c.iter().flatten() {
                proptest::prop_assert!(entries.binary_search_by_key(&e.blob, |x| x.blob).is_ok_and(|i| entries[i] == e));
            }
        }
    }

    #[test]
    fn counts_larger_than_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.cache");
        IndexCache::empty()
            .add_layer(&path, &[], &[], &[e(1, 1)])
            .unwrap();
        let good = std::fs::read(&path).unwrap();
        for field in [16, 24, 32, 40] {
            let mut bytes = good.clone();
            bytes[field + 7] ^= 0x2f;
            std::fs::write(&path, &bytes).unwrap();
            let err = IndexCache::open(&path).err().unwrap();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        }
    }

    #[test]
    fn every_layer_is_written_under_a_temp_name_of_its_own() {
        let base = Path::new("/c/index.cache");
        let names: std::collections::BTreeSet<PathBuf> =
            (0..4).map(|i| temp_path(&layer_path(base, i))).collect();
        assert_eq!(names.len(), 4);
        assert!(names.iter().all(|n| n.parent() == base.parent()));
    }

    #[test]
    fn an_older_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.cache");
        IndexCache::empty()
            .add_layer(&path, &[], &[], &[e(1, 1)])
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8] = 2;
        std::fs::write(&path, &bytes).unwrap();
        let err = IndexCache::open(&path).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::UnsupportedVersion);
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn small_additions_stack_as_layers_and_stay_logarithmic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.cache");
        let big: Vec<IndexEntry> = (0..=200u8).map(|b| e(b, 1)).collect();
        let mut c = IndexCache::empty()
            .add_layer(&path, &[ObjectId([1; 32])], &[], &big)
            .unwrap();
        let mut max_layers = 0;
        for i in 0..200u32 {
            let mut blob = [0xffu8; 32];
            blob[..4].copy_from_slice(&i.to_le_bytes());
            let entry = IndexEntry {
                blob: BlobId(blob),
                ..e(0, 2)
            };
            let mut seg = [2u8; 32];
            seg[..4].copy_from_slice(&i.to_le_bytes());
            c = c.add_layer(&path, &[ObjectId(seg)], &[], &[entry]).unwrap();
            max_layers = max_layers.max(c.layers());
            assert!(c.contains(&BlobId(blob)));
        }
        assert!(max_layers > 1 && max_layers <= 8, "{max_layers} layers");
        // Reopened from disk: the same blobs, each once, in order.
        let reopened = IndexCache::open(&path).unwrap();
        assert_eq!(reopened.layers(), c.layers());
        let all: Vec<IndexEntry> = reopened.iter().map(|x| x.unwrap()).collect();
        assert_eq!(all.len(), 401);
        assert!(all.windows(2).all(|w| w[0].blob < w[1].blob));
        assert_eq!(reopened.segments().count(), 201);
        assert!(reopened.contains(&BlobId([7; 32])));
        // A fresh base removes the layers beside the old one.
        let fresh = IndexCache::empty()
            .add_layer(&path, &[ObjectId([9; 32])], &[], &[e(9, 9)])
            .unwrap();
        assert_eq!(fresh.layers(), 1);
        let reopened = IndexCache::open(&path).unwrap();
        assert_eq!((reopened.layers(), reopened.len()), (1, 1));
    }
}
