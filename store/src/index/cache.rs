//! The local index cache: one file, sorted and fixed-width, memory-mapped.
//!
//! It lives outside the vault (the user's cache dir or `--cache-dir`) and
//! is derived data: it is checked (length and blake3 checksum) before use
//! and rebuilt from the vault when missing or damaged. Lookups are binary
//! searches over the mapping; nothing is loaded whole into RAM. Updating it
//! streams the old file and the new entries into a new file, then renames.
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
//! the merged one), so the live segments are the difference.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use super::{decode_entry, encode_entry, IndexEntry, ENTRY_LEN};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{Reader, Writer};
use crate::id::{BlobId, ObjectId};

const MAGIC: [u8; 8] = *b"STRACIX1";
const VERSION: u32 = 2;
const HEADER_LEN: usize = 80;

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// Maps a cache file the engine wrote itself.
#[allow(unsafe_code)]
fn map_file(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the file is a private cache under the user's cache directory,
    // written by this engine with write-to-temp-then-rename, so it is never
    // modified in place while mapped; a concurrent writer replaces the
    // directory entry, not these pages. Every access below is bounds-checked,
    // and the contents are verified against their checksum before use.
    unsafe { memmap2::Mmap::map(file) }
}

/// A read-only view of the local index cache.
pub struct IndexCache {
    bytes: Bytes,
    segments: usize,
    superseded: usize,
    packs: usize,
    entries: usize,
}

impl IndexCache {
    /// An empty cache (a new vault, or before the first build).
    pub fn empty() -> Self {
        IndexCache {
            bytes: Bytes::Owned(Vec::new()),
            segments: 0,
            superseded: 0,
            packs: 0,
            entries: 0,
        }
    }

    /// Opens and checks a cache file. `NotFound` when absent, `Corrupt`
    /// when damaged (the caller rebuilds).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            Bytes::Mapped(map_file(&file)?)
        };
        Self::from_bytes(bytes).map_err(|e| e.context(format!("index cache {}", path.display())))
    }

    /// Checks `bytes` as a cache image and wraps them.
    fn from_bytes(bytes: Bytes) -> Result<Self> {
        let b = bytes.as_ref();
        let mut r = Reader::new(b);
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
        let expected = segments
            .checked_add(superseded)
            .and_then(|n| n.checked_add(packs))
            .and_then(|n| n.checked_mul(32))
            .and_then(|n| n.checked_add(entries.checked_mul(ENTRY_LEN)?))
            .and_then(|n| n.checked_add(HEADER_LEN));
        if expected != Some(b.len()) {
            return Err(Error::corrupt(format!(
                "index cache is {} bytes, its header says otherwise",
                b.len()
            )));
        }
        let body = b.get(HEADER_LEN..).unwrap_or_default();
        if *blake3::hash(body).as_bytes() != checksum {
            return Err(Error::corrupt("index cache checksum mismatch"));
        }
        Ok(IndexCache {
            bytes,
            segments,
            superseded,
            packs,
            entries,
        })
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True when it knows no blob.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    fn id_at(&self, region_start: usize, i: usize) -> ObjectId {
        let at = region_start + i * 32;
        let mut id = [0u8; 32];
        if let Some(s) = self.bytes.as_ref().get(at..at + 32) {
            id.copy_from_slice(s);
        }
        ObjectId(id)
    }

    /// The segments this cache was built from.
    pub fn segments(&self) -> impl Iterator<Item = ObjectId> + '_ {
        (0..self.segments).map(|i| self.id_at(HEADER_LEN, i))
    }

    /// Segments whose entries a merged segment holds.
    pub fn superseded(&self) -> impl Iterator<Item = ObjectId> + '_ {
        (0..self.superseded).map(|i| self.id_at(HEADER_LEN + self.segments * 32, i))
    }

    fn packs_start(&self) -> usize {
        HEADER_LEN + (self.segments + self.superseded) * 32
    }

    /// The packs its entries point into.
    pub fn packs(&self) -> impl Iterator<Item = ObjectId> + '_ {
        (0..self.packs).map(|i| self.id_at(self.packs_start(), i))
    }

    fn entries_start(&self) -> usize {
        self.packs_start() + self.packs * 32
    }

    fn entry_bytes(&self, i: usize) -> &[u8] {
        let at = self.entries_start() + i * ENTRY_LEN;
        self.bytes
            .as_ref()
            .get(at..at + ENTRY_LEN)
            .unwrap_or_default()
    }

    fn entry(&self, i: usize) -> Result<IndexEntry> {
        let (mut e, ordinal) = decode_entry(&mut Reader::new(self.entry_bytes(i)))?;
        if ordinal as usize >= self.packs {
            return Err(Error::corrupt(format!(
                "index cache entry {i} names pack {ordinal}"
            )));
        }
        e.pack = self.id_at(self.packs_start(), ordinal as usize);
        Ok(e)
    }

    /// Where `blob` is stored, if known.
    pub fn lookup(&self, blob: &BlobId) -> Option<IndexEntry> {
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let key = self.entry_bytes(mid).get(..32).unwrap_or_default();
            match key.cmp(blob.as_bytes().as_slice()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.entry(mid).ok(),
            }
        }
        None
    }

    /// True when `blob` is known.
    pub fn contains(&self, blob: &BlobId) -> bool {
        self.lookup(blob).is_some()
    }

    /// All entries in blob-id order.
    pub fn iter(&self) -> impl Iterator<Item = Result<IndexEntry>> + '_ {
        (0..self.entries).map(|i| self.entry(i))
    }

    /// Writes a new cache at `path`: this cache's segments and entries plus
    /// `new_segments`, `new_superseded` and `new_entries` (sorted by blob
    /// id; a blob already known keeps its first location). Atomic: temp
    /// file, fsync, rename.
    pub fn write_merged(
        &self,
        path: &Path,
        new_segments: &[ObjectId],
        new_superseded: &[ObjectId],
        new_entries: &[IndexEntry],
    ) -> Result<()> {
        let dir = path
            .parent()
            .ok_or_else(|| Error::config("index cache path has no parent"))?;
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = self.write_to(&tmp, new_segments, new_superseded, new_entries);
        match result {
            Ok(()) => Ok(std::fs::rename(&tmp, path)?),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write_to(
        &self,
        tmp: &Path,
        new_segments: &[ObjectId],
        new_superseded: &[ObjectId],
        new_entries: &[IndexEntry],
    ) -> Result<()> {
        let mut packs: Vec<ObjectId> = self.packs().collect();
        let mut pack_ordinal: std::collections::HashMap<ObjectId, u32> = packs
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        for e in new_entries {
            if let std::collections::hash_map::Entry::Vacant(slot) = pack_ordinal.entry(e.pack) {
                let ordinal =
                    u32::try_from(packs.len()).map_err(|_| Error::config("too many packs"))?;
                slot.insert(ordinal);
                packs.push(e.pack);
            }
        }
        let union = |old: Vec<ObjectId>, new: &[ObjectId]| {
            let mut set: std::collections::BTreeSet<ObjectId> = old.into_iter().collect();
            set.extend(new.iter().copied());
            set.into_iter().collect::<Vec<_>>()
        };
        let segments = union(self.segments().collect(), new_segments);
        let superseded = union(self.superseded().collect(), new_superseded);

        let file = File::create(tmp)?;
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
        };
        out.inner.write_all(&[0u8; HEADER_LEN])?;
        for id in segments.iter().chain(superseded.iter()).chain(packs.iter()) {
            out.write_all(id.as_bytes())?;
        }
        // Merge the existing entries (mapped) with the new ones.
        let mut count = 0u64;
        let mut new_iter = new_entries.iter().peekable();
        let mut buf = Writer::with_capacity(ENTRY_LEN);
        let mut emit = |out: &mut HashingWriter,
                        e: &IndexEntry,
                        ordinal: u32,
                        buf: &mut Writer|
         -> Result<()> {
            *buf = Writer::with_capacity(ENTRY_LEN);
            encode_entry(buf, e, ordinal);
            out.write_all(&std::mem::take(buf).into_inner())?;
            count += 1;
            Ok(())
        };
        let mut last: Option<BlobId> = None;
        for i in 0..self.entries {
            let old = self.entry(i)?;
            while let Some(n) = new_iter.next_if(|n| n.blob < old.blob) {
                if last != Some(n.blob) {
                    emit(&mut out, n, ordinal_of(&pack_ordinal, &n.pack)?, &mut buf)?;
                    last = Some(n.blob);
                }
            }
            while new_iter.next_if(|n| n.blob == old.blob).is_some() {}
            emit(
                &mut out,
                &old,
                ordinal_of(&pack_ordinal, &old.pack)?,
                &mut buf,
            )?;
            last = Some(old.blob);
        }
        for n in new_iter {
            if last != Some(n.blob) {
                emit(&mut out, n, ordinal_of(&pack_ordinal, &n.pack)?, &mut buf)?;
                last = Some(n.blob);
            }
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
    fn merge_lookup_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.cache");
        IndexCache::empty()
            .write_merged(&path, &[ObjectId([1; 32])], &[], &[e(2, 1), e(4, 1)])
            .unwrap();
        let c1 = IndexCache::open(&path).unwrap();
        assert_eq!(c1.len(), 2);
        c1.write_merged(
            &path,
            &[ObjectId([2; 32])],
            &[ObjectId([1; 32])],
            &[e(1, 2), e(3, 2), e(4, 9)],
        )
        .unwrap();
        let c2 = IndexCache::open(&path).unwrap();
        assert_eq!(c2.len(), 4);
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
}
