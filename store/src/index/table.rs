//! A sorted table of fixed-width records, stored in checked blocks under
//! levels of fences: the on-disk shape of each table of a local index
//! cache file (`cache.rs`).
//!
//! Level 0 holds the records, sorted by their first 32 bytes (the key),
//! in blocks of `per_block`. Each level above holds the key of the first
//! record of every block of the level below, in blocks of
//! [`KEYS_PER_BLOCK`], up to the first level with at most
//! [`MAX_TOP_KEYS`] keys: the *top*, read whole when the table is opened
//! and held in memory. Every block is followed by a 16-byte check (blake3
//! of the table's tag, the level, the block's number and its bytes).
//! Opening a table reads and checks its top level, so it costs the top,
//! not the table's size. A lookup descends one block per level below the
//! top: one read up to 2^18 × `per_block` records (16.7 million entries),
//! two up to 2^25 times that. It checks the block of a hit
//! ([`Checks::Hits`]) or every block it reads ([`Checks::All`]); a merge
//! checks every block it reads.
//!
//! Spec (informative): `format-spec/SPEC.md#local-index-cache`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Bytes of the check after every block.
pub const CHECK_LEN: usize = 16;
/// Keys per block of a fence level.
pub const KEYS_PER_BLOCK: usize = 128;
/// The top level holds at most this many keys (8 MiB).
pub const MAX_TOP_KEYS: u64 = 1 << 18;
/// Every record starts with its 32-byte key.
pub const KEY_LEN: usize = 32;

/// How much of a lookup's path it checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checks {
    /// The block a record is found in: a hit is certain, a miss is not.
    Hits,
    /// Every block read: a miss is certain too.
    All,
}

/// What a table holds and how it is cut: the same on both sides.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Told apart in the checks, so one table's block never passes for
    /// another's.
    pub tag: u8,
    /// Bytes per record (the first [`KEY_LEN`] are the key).
    pub width: usize,
    /// Records per level-0 block.
    pub per_block: usize,
}

/// One level as stored: `records` records of `width` bytes from `start`.
#[derive(Clone, Copy, Debug)]
struct Level {
    start: u64,
    records: u64,
    width: usize,
    per_block: usize,
}

impl Level {
    fn blocks(&self) -> u64 {
        self.records.div_ceil(self.per_block as u64)
    }

    fn block_stride(&self) -> u64 {
        (self.per_block * self.width + CHECK_LEN) as u64
    }

    fn stored_len(&self) -> u64 {
        self.records * self.width as u64 + self.blocks() * CHECK_LEN as u64
    }

    /// Records in block `i`.
    fn block_records(&self, i: u64) -> usize {
        let first = i * self.per_block as u64;
        self.records
            .saturating_sub(first)
            .min(self.per_block as u64) as usize
    }
}

/// The levels of a table of `records` records at `start`: level 0, then
/// fence levels up to the top (at least one).
fn levels(shape: Shape, start: u64, records: u64) -> Vec<Level> {
    let mut below = Level {
        start,
        records,
        width: shape.width,
        per_block: shape.per_block,
    };
    let mut out = vec![below];
    loop {
        let level = Level {
            start: below.start + below.stored_len(),
            records: below.blocks(),
            width: KEY_LEN,
            per_block: KEYS_PER_BLOCK,
        };
        out.push(level);
        if level.records <= MAX_TOP_KEYS {
            return out;
        }
        below = level;
    }
}

/// Bytes a table of `records` records takes, all levels.
pub fn stored_len(shape: Shape, records: u64) -> u64 {
    levels(shape, 0, records)
        .iter()
        .map(Level::stored_len)
        .sum()
}

fn check(tag: u8, level: usize, block: u64, bytes: &[u8]) -> [u8; CHECK_LEN] {
    let mut h = blake3::Hasher::new();
    h.update(&[tag, level as u8]);
    h.update(&block.to_le_bytes());
    h.update(bytes);
    let mut out = [0u8; CHECK_LEN];
    h.finalize_xof().fill(&mut out);
    out
}

/// The index of the last record of `block` whose key is at most `key`.
fn last_at_most(block: &[u8], width: usize, key: &[u8; KEY_LEN]) -> Option<usize> {
    let key_of = |i: usize| {
        block
            .get(i * width..i * width + KEY_LEN)
            .unwrap_or_default()
    };
    let (mut lo, mut hi) = (0usize, block.len() / width);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key_of(mid) <= key.as_slice() {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

/// A table open for reading: where its levels are and its top in memory.
pub struct Table {
    shape: Shape,
    levels: Vec<Level>,
    top: Vec<[u8; KEY_LEN]>,
}

impl Table {
    /// Opens the table of `records` records at `start` of `file`: reads
    /// and checks its top level.
    pub fn open(file: &File, shape: Shape, start: u64, records: u64) -> Result<Table> {
        let levels = levels(shape, start, records);
        let mut table = Table {
            shape,
            levels,
            top: Vec::new(),
        };
        let top = table.levels.len() - 1;
        let blocks = table.levels.last().map_or(0, Level::blocks);
        let bytes = table.read_blocks(file, top, 0, blocks)?;
        table.top = bytes
            .chunks_exact(KEY_LEN)
            .map(|k| {
                let mut key = [0u8; KEY_LEN];
                key.copy_from_slice(k);
                key
            })
            .collect();
        Ok(table)
    }

    /// Records in the table.
    pub fn records(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.records)
    }

    /// Bytes per record.
    pub fn width(&self) -> usize {
        self.shape.width
    }

    /// Level-0 blocks.
    pub fn blocks(&self) -> u64 {
        self.levels.first().map_or(0, Level::blocks)
    }

    /// Where the table ends in its file.
    pub fn end(&self) -> u64 {
        self.levels.last().map_or(0, |l| l.start + l.stored_len())
    }

    /// Blocks `first..first + n` of `level` as stored: records, then the
    /// check, block after block.
    fn read_raw(
        &self,
        file: &File,
        level: usize,
        first: u64,
        n: u64,
    ) -> Result<(Level, u64, Vec<u8>)> {
        let l = *self
            .levels
            .get(level)
            .ok_or_else(|| Error::corrupt(format!("index cache has no level {level}")))?;
        let n = n.min(l.blocks().saturating_sub(first));
        let records: usize = (first..first + n).map(|i| l.block_records(i)).sum();
        let mut raw = vec![0u8; records * l.width + n as usize * CHECK_LEN];
        file.read_exact_at(&mut raw, l.start + first * l.block_stride())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::corrupt("index cache truncated"),
                _ => Error::from(e),
            })?;
        Ok((l, n, raw))
    }

    /// Fails unless `sum` is the check of block `i` of `level`.
    fn verify(&self, level: usize, i: u64, body: &[u8], sum: &[u8]) -> Result<()> {
        if check(self.shape.tag, level, i, body) == sum {
            return Ok(());
        }
        Err(Error::corrupt(format!(
            "index cache block {i} of level {level} of table {} fails its check",
            self.shape.tag
        )))
    }

    /// Blocks `first..first + n` of `level`, checked, their checks removed.
    fn read_blocks(&self, file: &File, level: usize, first: u64, n: u64) -> Result<Vec<u8>> {
        let (l, n, raw) = self.read_raw(file, level, first, n)?;
        let mut out = Vec::with_capacity(raw.len());
        let mut at = 0;
        for i in first..first + n {
            let len = l.block_records(i) * l.width;
            let (body, sum) = raw
                .get(at..at + len)
                .zip(raw.get(at + len..at + len + CHECK_LEN))
                .ok_or_else(|| Error::corrupt("index cache block out of bounds"))?;
            self.verify(level, i, body, sum)?;
            out.extend_from_slice(body);
            at += len + CHECK_LEN;
        }
        Ok(out)
    }

    /// The record whose key is `key`, if any: one block read per level
    /// below the top. With [`Checks::Hits`] only the block of a hit is
    /// checked, so a miss costs no hashing: damage, fences included, can
    /// then only turn a hit into a miss, never make a record up or move
    /// one. With [`Checks::All`] every block read is checked, so a miss is
    /// certain.
    pub fn find(
        &self,
        file: &File,
        key: &[u8; KEY_LEN],
        checks: Checks,
    ) -> Result<Option<Vec<u8>>> {
        let Some(mut block) = self.top.partition_point(|k| k <= key).checked_sub(1) else {
            return Ok(None);
        };
        let all = checks == Checks::All;
        for level in (1..self.levels.len() - 1).rev() {
            let keys = self.read_for_lookup(file, level, block as u64, all)?;
            let Some(j) = last_at_most(&keys, KEY_LEN, key) else {
                return Ok(None);
            };
            block = block * KEYS_PER_BLOCK + j;
        }
        let width = self.shape.width;
        let (_, n, raw) = self.read_raw(file, 0, block as u64, 1)?;
        let (records, sum) = raw.split_at(raw.len().saturating_sub(CHECK_LEN));
        let found = last_at_most(records, width, key)
            .and_then(|i| records.get(i * width..(i + 1) * width))
            .filter(|r| r.get(..KEY_LEN) == Some(key.as_slice()));
        if found.is_some() || all {
            self.verify_read(0, block as u64, n, records, sum)?;
        }
        Ok(found.map(<[u8]>::to_vec))
    }

    /// Block `i` of fence `level`, its check removed, checked with `check`.
    fn read_for_lookup(&self, file: &File, level: usize, i: u64, check: bool) -> Result<Vec<u8>> {
        let (_, n, mut raw) = self.read_raw(file, level, i, 1)?;
        let body = raw.len().saturating_sub(CHECK_LEN);
        if check {
            let (keys, sum) = raw.split_at(body);
            self.verify_read(level, i, n, keys, sum)?;
        }
        raw.truncate(body);
        Ok(raw)
    }

    /// Fails unless block `i` of `level` was there (`n` is 1) and passes
    /// its check.
    fn verify_read(&self, level: usize, i: u64, n: u64, body: &[u8], sum: &[u8]) -> Result<()> {
        if n == 0 {
            return Err(Error::corrupt(format!(
                "index cache fences lead past the end of level {level} of table {}",
                self.shape.tag
            )));
        }
        self.verify(level, i, body, sum)
    }

    /// Level-0 blocks `first..first + n`, checked: their records' bytes.
    pub fn read_records(&self, file: &File, first: u64, n: u64) -> Result<Vec<u8>> {
        self.read_blocks(file, 0, first, n)
    }
}

/// Writes a table as its records come, in key order: level 0 to the
/// output, the fence levels to unnamed files beside it, appended to the
/// output by [`TableWriter::finish`].
pub struct TableWriter {
    shape: Shape,
    dir: std::path::PathBuf,
    levels: Vec<LevelWriter>,
}

struct LevelWriter {
    tag: u8,
    level: usize,
    width: usize,
    per_block: usize,
    block: Vec<u8>,
    blocks: u64,
    records: u64,
    first_key: Option<[u8; KEY_LEN]>,
    /// Level 0 writes to the output; the others to a spill file.
    spill: Option<BufWriter<File>>,
}

impl LevelWriter {
    /// Adds a record; returns the key of a block it starts beyond the
    /// first (the first's key is `first_key`).
    fn push(&mut self, record: &[u8], out: &mut impl Write) -> Result<Option<[u8; KEY_LEN]>> {
        let starts = self.block.is_empty();
        self.block.extend_from_slice(record);
        self.records += 1;
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(record.get(..KEY_LEN).unwrap_or(&[0; KEY_LEN]));
        if self.block.len() == self.per_block * self.width {
            self.flush(out)?;
        }
        if !starts {
            return Ok(None);
        }
        if self.first_key.is_none() {
            self.first_key = Some(key);
            return Ok(None);
        }
        Ok(Some(key))
    }

    /// Writes the block being filled, with its check.
    fn flush(&mut self, out: &mut impl Write) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let sum = check(self.tag, self.level, self.blocks, &self.block);
        let sink: &mut dyn Write = match self.spill.as_mut() {
            Some(s) => s,
            None => out,
        };
        sink.write_all(&self.block)?;
        sink.write_all(&sum)?;
        self.blocks += 1;
        self.block.clear();
        Ok(())
    }
}

impl TableWriter {
    /// A writer of a table shaped `shape`, its spill files in `dir`.
    pub fn new(shape: Shape, dir: &Path) -> TableWriter {
        TableWriter {
            shape,
            dir: dir.to_path_buf(),
            levels: vec![LevelWriter {
                tag: shape.tag,
                level: 0,
                width: shape.width,
                per_block: shape.per_block,
                block: Vec::with_capacity(shape.per_block * shape.width),
                blocks: 0,
                records: 0,
                first_key: None,
                spill: None,
            }],
        }
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.records)
    }

    /// Adds the next record (keys must not decrease).
    pub fn push(&mut self, record: &[u8], out: &mut impl Write) -> Result<()> {
        debug_assert_eq!(record.len(), self.shape.width);
        let Some(records) = self.levels.first_mut() else {
            return Ok(());
        };
        let mut started = records.push(record, out)?;
        let mut level = 0;
        // A block started beyond a level's first adds its key to the level
        // above, which exists from a level's second block on, the first
        // block's key first (a new level's first key starts no block
        // beyond its first).
        while let Some(key) = started {
            if self.levels.len() == level + 1 {
                let first = self.levels.get(level).and_then(|w| w.first_key);
                let mut above = self.spill_level(level + 1)?;
                if let Some(first) = first {
                    above.push(&first, out)?;
                }
                self.levels.push(above);
            }
            level += 1;
            started = match self.levels.get_mut(level) {
                Some(w) => w.push(&key, out)?,
                None => None,
            };
        }
        Ok(())
    }

    fn spill_level(&self, level: usize) -> Result<LevelWriter> {
        // Unnamed once open: nothing is left behind by a crash.
        let path = self.dir.join(format!(
            ".index-cache-fences-{}-{}-{level}",
            std::process::id(),
            unique()
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(LevelWriter {
            tag: self.shape.tag,
            level,
            width: KEY_LEN,
            per_block: KEYS_PER_BLOCK,
            block: Vec::with_capacity(KEYS_PER_BLOCK * KEY_LEN),
            blocks: 0,
            records: 0,
            first_key: None,
            spill: Some(BufWriter::with_capacity(1 << 16, file)),
        })
    }

    /// Writes what is left of every level, then appends the fence levels
    /// up to the top to `out`; returns the number of records.
    pub fn finish(mut self, out: &mut impl Write) -> Result<u64> {
        let records = self.records();
        let wanted = levels(self.shape, 0, records).len();
        // A level with one block has no level above yet: the top may be
        // that one key.
        while self.levels.len() < wanted {
            let below = self.levels.len() - 1;
            let first = self.levels.get(below).and_then(|w| w.first_key);
            let mut above = self.spill_level(below + 1)?;
            if let Some(first) = first {
                above.push(&first, out)?;
            }
            self.levels.push(above);
        }
        for (i, w) in self.levels.iter_mut().enumerate().take(wanted) {
            w.flush(out)?;
            if let Some(spill) = w.spill.take() {
                let mut file = spill
                    .into_inner()
                    .map_err(|e| Error::from(e.into_error()))?;
                file.seek(SeekFrom::Start(0))?;
                let copied = std::io::copy(&mut file, out)?;
                let expected = w.records * KEY_LEN as u64 + w.blocks * CHECK_LEN as u64;
                if copied != expected {
                    return Err(Error::corrupt(format!(
                        "index cache fence level {i} spilled {copied} bytes, not {expected}"
                    )));
                }
            }
        }
        Ok(records)
    }
}

/// A number no other spill file of this process has.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        tag: 7,
        width: 40,
        per_block: 4,
    };

    fn record(i: u64) -> Vec<u8> {
        let mut r = vec![0u8; SHAPE.width];
        r[..KEY_LEN].copy_from_slice(&key(i * 2));
        r[32..].copy_from_slice(&i.to_le_bytes());
        r
    }

    fn key(i: u64) -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        // Sorted as numbers: most significant byte first.
        let mut n = i.to_le_bytes();
        n.reverse();
        k[..8].copy_from_slice(&n);
        k
    }

    fn written(dir: &Path, n: u64) -> (File, Table) {
        let path = dir.join(format!("t{n}"));
        let mut out = BufWriter::new(File::create(&path).unwrap());
        let mut w = TableWriter::new(SHAPE, dir);
        for i in 0..n {
            w.push(&record(i), &mut out).unwrap();
        }
        assert_eq!(w.finish(&mut out).unwrap(), n);
        out.flush().unwrap();
        drop(out);
        let file = File::open(&path).unwrap();
        assert_eq!(file.metadata().unwrap().len(), stored_len(SHAPE, n));
        let table = Table::open(&file, SHAPE, 0, n).unwrap();
        (file, table)
    }

    #[test]
    fn finds_every_record_and_nothing_else_at_any_size() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0, 1, 3, 4, 5, 17, 1000] {
            let (file, table) = written(dir.path(), n);
            assert_eq!(table.end(), stored_len(SHAPE, n));
            for i in 0..n {
                for checks in [Checks::Hits, Checks::All] {
                    let find = |k| table.find(&file, &key(k), checks).unwrap();
                    assert_eq!(find(i * 2), Some(record(i)));
                    assert_eq!(find(i * 2 + 1), None);
                }
            }
            let all = table.read_records(&file, 0, table.blocks()).unwrap();
            let expected: Vec<u8> = (0..n).flat_map(record).collect();
            assert_eq!(all, expected);
        }
        // The spill files are gone.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".index"))
            .collect();
        assert!(left.is_empty());
    }

    #[test]
    fn a_table_beyond_one_fence_level_descends_through_them() {
        // Small blocks and a small top would need many records; instead
        // check the level arithmetic for a large table, and the descent
        // on a table of three levels built with the real writer.
        let big = levels(SHAPE, 0, 4 * MAX_TOP_KEYS * 2);
        assert_eq!(big.len(), 3);
        assert_eq!(big[1].records, 2 * MAX_TOP_KEYS);
        assert_eq!(big[2].records, (2 * MAX_TOP_KEYS).div_ceil(128));
        let n = 4 * MAX_TOP_KEYS + 8; // level 1: 2^18 + 2 keys, so a level 2
        let dir = tempfile::tempdir().unwrap();
        let (file, table) = written(dir.path(), n);
        assert_eq!(table.levels.len(), 3);
        for i in [0, 1, 4 * 128 - 1, 4 * 128, n / 2, n - 2, n - 1] {
            for checks in [Checks::Hits, Checks::All] {
                let find = |k| table.find(&file, &key(k), checks).unwrap();
                assert_eq!(find(i * 2), Some(record(i)));
                assert_eq!(find(i * 2 + 1), None);
            }
        }
    }

    #[test]
    fn a_damaged_block_is_found_when_read_not_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _) = written(dir.path(), 100);
        let path = dir.path().join("t100");
        let mut bytes = std::fs::read(&path).unwrap();
        // A byte of record 9 (block 2 of level 0).
        bytes[9 * SHAPE.width + 2 * CHECK_LEN + 35] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let table = Table::open(&file, SHAPE, 0, 100).unwrap();
        let find = |k, checks| table.find(&file, &key(k), checks);
        assert_eq!(find(0, Checks::Hits).unwrap(), Some(record(0)));
        assert_eq!(find(1, Checks::All).unwrap(), None);
        // A miss in the damaged block passes unless every block is checked.
        assert_eq!(find(19, Checks::Hits).unwrap(), None);
        assert!(find(19, Checks::All).is_err());
        let err = find(18, Checks::Hits).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Corrupt);
        assert!(err.to_string().contains("block 2 of level 0"), "{err}");
        assert!(table.read_records(&file, 0, table.blocks()).is_err());
        // A damaged top fails the open.
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        assert!(Table::open(&file, SHAPE, 0, 100).is_err());
    }
}
