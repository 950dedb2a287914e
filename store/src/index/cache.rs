//! The local index cache: a few sorted, fixed-width files.
//!
//! It lives outside the vault (the user's cache dir or `--cache-dir`) and
//! is derived data: every file is checked (length and blake3 checksum)
//! before use and the whole cache is rebuilt from the vault when one is
//! missing or damaged. Lookups are positional reads: memory holds one key
//! per 64 entries or more (at most 8 MiB per file) and a lookup reads one
//! group of entries, so the index's pages sit in the kernel's page cache,
//! not in the process, and nothing is loaded whole into RAM.
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
//! 0   magic "STRACIX1"       8   version u32, reserved u32
//! 16  segment count u64      24  superseded count u64
//! 32  pack count u64         40  entry count u64
//! 48  blake3 of bytes 80..   80  segment ids, superseded segment ids,
//!                                pack ids (32 each), entries (56 each,
//!                                sorted by blob id)
//! ```
//!
//! `segments` are the vault segments whose entries the file holds;
//! `superseded` are those a merged segment replaces (their entries are in
//! the merged one), so the live segments are the difference. Over a stack
//! each is the union of its layers'.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{decode_entry, encode_entry, IndexEntry, ENTRY_LEN};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{Reader, Writer};
use crate::id::{BlobId, ObjectId};

const MAGIC: [u8; 8] = *b"STRACIX1";
const VERSION: u32 = 2;
const HEADER_LEN: usize = 80;

/// Entries between two fences (the first of each group is a fence).
const MIN_FENCE_SPACING: usize = 64;
/// Fences kept per file at most (8 MiB of keys): a larger file spaces
/// them wider, so memory stays bounded whatever the index's size.
const MAX_FENCES: usize = 1 << 18;

/// One layer: a read-only view of one cache file, read with positional
/// reads. Memory holds its id tables and one key per group of entries
/// (the fences); a lookup binary-searches the fences, then reads one group.
/// The file's pages stay in the kernel's page cache, not in the process.
struct CacheFile {
    file: File,
    segments: Vec<ObjectId>,
    superseded: Vec<ObjectId>,
    packs: Vec<ObjectId>,
    entries: usize,
    entries_start: u64,
    spacing: usize,
    fences: Vec<BlobId>,
}

impl CacheFile {
    /// Opens and checks a cache file. `NotFound` when absent, `Corrupt`
    /// when damaged (the caller rebuilds).
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)?;
        Self::check(file).map_err(|e| e.context(format!("index cache {}", path.display())))
    }

    /// Reads the header, streams the body through blake3 (collecting the
    /// id tables and fences), and compares it with the checksum.
    fn check(file: File) -> Result<Self> {
        let len = file.metadata()?.len();
        let mut input = std::io::BufReader::with_capacity(1 << 20, &file);
        let mut header = [0u8; HEADER_LEN];
        read_exact(&mut input, &mut header)?;
        let mut r = Reader::new(&header);
        if r.array::<8>("magic")? != MAGIC {
            return Err(Error::corrupt("not an index cache"));
        }
        if r.u32("version")? != VERSION {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion,
                "index cache version",
            ));
        }
        r.u32("reserved")?;
        let counts = [
            r.u64("segments")?,
            r.u64("superseded")?,
            r.u64("packs")?,
            r.u64("entries")?,
        ];
        let checksum = r.array::<32>("checksum")?;
        let [segments, superseded, packs, entries] =
            counts.map(|c| usize::try_from(c).unwrap_or(usize::MAX));
        let ids = segments
            .checked_add(superseded)
            .and_then(|n| n.checked_add(packs));
        let expected = ids
            .and_then(|n| n.checked_mul(32))
            .and_then(|n| n.checked_add(entries.checked_mul(ENTRY_LEN)?))
            .and_then(|n| n.checked_add(HEADER_LEN));
        if expected.map(|n| n as u64) != Some(len) {
            return Err(Error::corrupt(format!(
                "index cache is {len} bytes, its header says otherwise"
            )));
        }
        let mut hasher = blake3::Hasher::new();
        let mut read_ids = |n: usize| -> Result<Vec<ObjectId>> {
            let mut out = Vec::with_capacity(n);
            let mut id = [0u8; 32];
            for _ in 0..n {
                read_exact(&mut input, &mut id)?;
                hasher.update(&id);
                out.push(ObjectId(id));
            }
            Ok(out)
        };
        let (segments, superseded, packs) =
            (read_ids(segments)?, read_ids(superseded)?, read_ids(packs)?);
        let spacing = MIN_FENCE_SPACING.max(entries.div_ceil(MAX_FENCES));
        let mut fences = Vec::with_capacity(entries.div_ceil(spacing));
        let mut entry = [0u8; ENTRY_LEN];
        for i in 0..entries {
            read_exact(&mut input, &mut entry)?;
            hasher.update(&entry);
            if i % spacing == 0 {
                let mut key = [0u8; 32];
                key.copy_from_slice(entry.get(..32).unwrap_or(&[0; 32]));
                fences.push(BlobId(key));
            }
        }
        if *hasher.finalize().as_bytes() != checksum {
            return Err(Error::corrupt("index cache checksum mismatch"));
        }
        let entries_start =
            (HEADER_LEN + (segments.len() + superseded.len() + packs.len()) * 32) as u64;
        drop(input);
        Ok(CacheFile {
            file,
            segments,
            superseded,
            packs,
            entries,
            entries_start,
            spacing,
            fences,
        })
    }

    /// The segments this file was built from.
    fn segments(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.segments.iter().copied()
    }

    /// Segments whose entries a merged segment holds.
    fn superseded(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.superseded.iter().copied()
    }

    /// The packs its entries point into.
    fn packs(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.packs.iter().copied()
    }

    /// Reads entries `first..first + n` (raw bytes).
    fn read_entries(&self, first: usize, n: usize) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; n * ENTRY_LEN];
        self.file
            .read_exact_at(&mut buf, self.entries_start + (first * ENTRY_LEN) as u64)?;
        Ok(buf)
    }

    fn decode(&self, bytes: &[u8], i: usize) -> Result<IndexEntry> {
        let (mut e, ordinal) = decode_entry(&mut Reader::new(bytes))?;
        e.pack = *self
            .packs
            .get(ordinal as usize)
            .ok_or_else(|| Error::corrupt(format!("index cache entry {i} names pack {ordinal}")))?;
        Ok(e)
    }

    /// Where `blob` is stored, if this file knows it.
    fn lookup(&self, blob: &BlobId) -> Option<IndexEntry> {
        let group = self.fences.partition_point(|f| f <= blob).checked_sub(1)?;
        let first = group * self.spacing;
        let n = self.spacing.min(self.entries - first);
        let bytes = match self.read_entries(first, n) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "index cache read failed");
                return None;
            }
        };
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = mid * ENTRY_LEN;
            let entry = bytes.get(at..at + ENTRY_LEN).unwrap_or_default();
            match entry
                .get(..32)
                .unwrap_or_default()
                .cmp(blob.as_bytes().as_slice())
            {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.decode(entry, first + mid).ok(),
            }
        }
        None
    }

    /// All entries in blob-id order, read a group at a time.
    fn iter(&self) -> impl Iterator<Item = Result<IndexEntry>> + '_ {
        const GROUP: usize = 4096;
        (0..self.entries.div_ceil(GROUP)).flat_map(move |g| {
            let first = g * GROUP;
            let n = GROUP.min(self.entries - first);
            let group: Vec<Result<IndexEntry>> = match self.read_entries(first, n) {
                Ok(bytes) => bytes
                    .chunks_exact(ENTRY_LEN)
                    .enumerate()
                    .map(|(k, e)| self.decode(e, first + k))
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            group
        })
    }
}

fn read_exact(input: &mut impl std::io::Read, buf: &mut [u8]) -> Result<()> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt("index cache truncated")
        } else {
            Error::from(e)
        }
    })
}

/// The id tables at the head of a cache file.
struct IdTables {
    segments: Vec<ObjectId>,
    superseded: Vec<ObjectId>,
    /// Sorted; entries name their pack by its place here.
    packs: Vec<ObjectId>,
}

impl IdTables {
    /// The tables of a file holding both `older`'s entries and `newer`'s.
    fn merged(older: &CacheFile, newer: &CacheFile) -> IdTables {
        IdTables {
            segments: union(older.segments().chain(newer.segments())),
            superseded: union(older.superseded().chain(newer.superseded())),
            packs: union(older.packs().chain(newer.packs())),
        }
    }
}

/// Writes one cache file at `path` (atomically: temp file, fsync, rename)
/// holding `entries`, which come sorted by blob id (of a blob met twice
/// in a row, the first is kept) and point only into `ids.packs`.
fn write_file(
    path: &Path,
    ids: &IdTables,
    entries: impl Iterator<Item = Result<IndexEntry>>,
) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::config("index cache path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    match write_to(&tmp, ids, entries) {
        Ok(()) => Ok(std::fs::rename(&tmp, path)?),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_to(
    tmp: &Path,
    ids: &IdTables,
    entries: impl Iterator<Item = Result<IndexEntry>>,
) -> Result<()> {
    let IdTables {
        segments,
        superseded,
        packs,
    } = ids;
    let mut ordinals = std::collections::HashMap::with_capacity(packs.len());
    for (i, p) in packs.iter().enumerate() {
        ordinals.insert(
            *p,
            u32::try_from(i).map_err(|_| Error::config("too many packs"))?,
        );
    }
    let file = File::create(tmp)?;
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
    };
    out.inner.write_all(&[0u8; HEADER_LEN])?;
    for id in segments.iter().chain(superseded.iter()).chain(packs.iter()) {
        out.write_all(id.as_bytes())?;
    }
    let mut count = 0u64;
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
        let mut buf = Writer::with_capacity(ENTRY_LEN);
        encode_entry(&mut buf, &e, ordinal_of(&ordinals, &e.pack)?);
        out.write_all(&buf.into_inner())?;
        count += 1;
    }
    let checksum = out.hasher.finalize();
    let mut file = out
        .inner
        .into_inner()
        .map_err(|e| Error::from(e.into_error()))?;
    let mut w = Writer::with_capacity(HEADER_LEN);
    w.bytes(&MAGIC);
    w.u32(VERSION);
    w.u32(0);
    w.u64(segments.len() as u64);
    w.u64(superseded.len() as u64);
    w.u64(packs.len() as u64);
    w.u64(count);
    w.bytes(checksum.as_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&w.into_inner())?;
    file.sync_all()?;
    Ok(())
}

/// The distinct `ids`, sorted.
fn union(ids: impl Iterator<Item = ObjectId>) -> Vec<ObjectId> {
    let set: std::collections::BTreeSet<ObjectId> = ids.collect();
    set.into_iter().collect()
}

/// Entries of several sorted sources merged in blob order; of a blob in
/// several, the first source's.
struct MergeIter<I: Iterator<Item = Result<IndexEntry>>> {
    heads: Vec<std::iter::Peekable<I>>,
}

impl<I: Iterator<Item = Result<IndexEntry>>> Iterator for MergeIter<I> {
    type Item = Result<IndexEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, BlobId)> = None;
        for (i, h) in self.heads.iter_mut().enumerate() {
            match h.peek() {
                Some(Err(_)) => return h.next(),
                Some(Ok(e)) if best.is_none_or(|(_, b)| e.blob < b) => best = Some((i, e.blob)),
                _ => {}
            }
        }
        let (i, blob) = best?;
        let out = self.heads.get_mut(i)?.next();
        for h in &mut self.heads {
            while h
                .next_if(|e| matches!(e, Ok(e) if e.blob == blob))
                .is_some()
            {}
        }
        out
    }
}

/// The local index cache: its layers, oldest (and largest) first.
#[derive(Clone)]
pub struct IndexCache {
    layers: Vec<Arc<CacheFile>>,
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
        IndexCache { layers: Vec::new() }
    }

    /// Opens and checks the cache at `base` and the layers beside it.
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
        Ok(IndexCache { layers })
    }

    /// Number of layers (files) the cache has.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Number of entries over all layers (a blob two layers know counts
    /// twice; merges drop such repeats).
    pub fn len(&self) -> usize {
        self.layers.iter().map(|l| l.entries).sum()
    }

    /// True when it knows no blob.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments this cache was built from.
    pub fn segments(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.layers.iter().flat_map(|l| l.segments())
    }

    /// Segments whose entries a merged segment holds.
    pub fn superseded(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.layers.iter().flat_map(|l| l.superseded())
    }

    /// The packs its entries point into.
    pub fn packs(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.layers.iter().flat_map(|l| l.packs())
    }

    /// Where `blob` is stored, if known (the oldest layer's answer).
    pub fn lookup(&self, blob: &BlobId) -> Option<IndexEntry> {
        self.layers.iter().find_map(|l| l.lookup(blob))
    }

    /// True when `blob` is known.
    pub fn contains(&self, blob: &BlobId) -> bool {
        self.lookup(blob).is_some()
    }

    /// All entries in blob-id order, each blob once.
    pub fn iter(&self) -> impl Iterator<Item = Result<IndexEntry>> + '_ {
        MergeIter {
            heads: self.layers.iter().map(|l| l.iter().peekable()).collect(),
        }
    }

    /// Adds a layer at `base` holding `segments`, `superseded` and
    /// `entries` (sorted by blob id), merges layers as the sizes call for,
    /// and returns the cache with it. An empty cache writes the base file
    /// and removes any layers a previous cache left beside it.
    pub fn add_layer(
        &self,
        base: &Path,
        segments: &[ObjectId],
        superseded: &[ObjectId],
        entries: &[IndexEntry],
    ) -> Result<IndexCache> {
        let n = self.layers.len();
        let ids = IdTables {
            segments: segments.to_vec(),
            superseded: superseded.to_vec(),
            packs: union(entries.iter().map(|e| e.pack)),
        };
        let path = layer_path(base, n);
        write_file(&path, &ids, entries.iter().map(|e| Ok(*e)))?;
        if n == 0 {
            let mut i = 1;
            while std::fs::remove_file(layer_path(base, i)).is_ok() {
                i += 1;
            }
        }
        let mut layers = self.layers.clone();
        layers.push(Arc::new(CacheFile::open(&path)?));
        while let [.., older, newer] = layers.as_slice() {
            if newer.entries * 4 < older.entries && layers.len() <= MAX_LAYERS {
                break;
            }
            let (older, newer) = (older.clone(), newer.clone());
            let i = layers.len() - 2;
            let path = layer_path(base, i);
            write_file(
                &path,
                &IdTables::merged(&older, &newer),
                MergeIter {
                    heads: vec![older.iter().peekable(), newer.iter().peekable()],
                },
            )?;
            // A crash before this removal leaves the newer layer's entries
            // twice: harmless, the next merge drops them.
            std::fs::remove_file(layer_path(base, i + 1))?;
            layers.truncate(i);
            layers.push(Arc::new(CacheFile::open(&path)?));
        }
        Ok(IndexCache { layers })
    }
}

fn ordinal_of(map: &std::collections::HashMap<ObjectId, u32>, pack: &ObjectId) -> Result<u32> {
    map.get(pack).copied().ok_or_else(|| {
        Error::corrupt(format!(
            "pack {} missing from the cache's pack table",
            pack.short()
        ))
    })
}

struct HashingWriter {
    inner: BufWriter<File>,
    hasher: blake3::Hasher,
}

impl HashingWriter {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hasher.update(b);
        self.inner.write_all(b)
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
