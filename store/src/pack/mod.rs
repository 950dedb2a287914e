//! Packs: many encrypted blobs in one immutable object, with an
//! authenticated trailer that describes them, so the index can be rebuilt
//! from packs alone. A pack's name is the blake3 hash of its bytes.
//!
//! Spec: `format-spec/SPEC.md#pack`. Layout:
//!
//! ```text
//! +--------------------+ 0
//! | header (40)        |  kind Pack, flags 0, salt
//! +--------------------+ 40
//! | blob record ...    |  AES-GCM(subkey, nonce Blob(offset),
//! |                    |    AAD = header ‖ offset ‖ blob id ‖ compression ‖ raw_len)
//! +--------------------+ trailer_offset
//! | trailer            |  AES-GCM(subkey, nonce Trailer, AAD = header)
//! |                    |    of count:u32 ‖ count × PackEntry (52 bytes)
//! +--------------------+ len - 8
//! | trailer_len: u32   |  ciphertext length of the trailer, tag included
//! | footer magic (4)   |  "STRP"
//! +--------------------+ len
//! ```
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::compress::{self, Compression};
use crate::crypto::{Keys, Nonce, ObjectCipher, TAG_LEN};
use crate::error::{DecodeError, Error, ErrorKind, Result};
use crate::format::{Header, ObjectKind, Reader, Writer, HEADER_LEN};
use crate::id::{BlobId, ObjectId};
use std::borrow::Cow;

/// Magic at the very end of a pack.
pub const FOOTER_MAGIC: [u8; 4] = *b"STRP";
/// Length of the footer (trailer length + magic).
pub const FOOTER_LEN: usize = 8;
/// Length of one trailer entry.
pub const ENTRY_LEN: usize = 32 + 8 + 4 + 4 + 1 + 3;
/// Largest plaintext blob a pack may describe (64 MiB).
pub const MAX_BLOB_LEN: u32 = 64 << 20;

/// One blob's place in a pack, as the trailer records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PackEntry {
    /// Content id of the plaintext.
    pub id: BlobId,
    /// Offset of the blob record from the start of the pack.
    pub offset: u64,
    /// Length of the record (ciphertext and tag).
    pub stored_len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// How the plaintext was compressed before encryption.
    pub compression: Compression,
}

impl PackEntry {
    fn encode(&self, w: &mut Writer) {
        w.bytes(self.id.as_bytes());
        w.u64(self.offset);
        w.u32(self.stored_len);
        w.u32(self.raw_len);
        w.u8(self.compression as u8);
        w.bytes(&[0; 3]);
    }

    fn decode(r: &mut Reader<'_>) -> Result<PackEntry, DecodeError> {
        let at = r.offset();
        let id = BlobId(r.array::<32>("blob id")?);
        let offset = r.u64("offset")?;
        let stored_len = r.u32("stored length")?;
        let raw_len = r.u32("raw length")?;
        let c = r.u8("compression")?;
        let compression = Compression::from_u8(c)
            .ok_or_else(|| DecodeError::unsupported(at + 48, format!("unknown compression {c}")))?;
        let reserved = r.array::<3>("reserved")?;
        if reserved != [0; 3] {
            return Err(DecodeError::new(at + 49, "reserved bytes are not zero"));
        }
        Ok(PackEntry {
            id,
            offset,
            stored_len,
            raw_len,
            compression,
        })
    }

    /// Associated data binding a blob record to its pack, place and id.
    fn aad(&self, header: &[u8; HEADER_LEN]) -> Vec<u8> {
        let mut w = Writer::with_capacity(HEADER_LEN + 45);
        w.bytes(header);
        w.u64(self.offset);
        w.bytes(self.id.as_bytes());
        w.u8(self.compression as u8);
        w.u32(self.raw_len);
        w.into_inner()
    }
}

/// Accumulates blobs into one pack; bytes in, bytes out.
///
/// A pack of [`ALIGN_FROM`] bytes or more starts on a page boundary of its
/// buffer (`buf[start..]`), so a local vault can write it with direct I/O
/// from where it lies instead of copying it into the page cache, and its
/// buffer asks for huge pages ([`crate::direct_io::page_aligned`]).
pub struct PackBuilder {
    cipher: ObjectCipher,
    header: [u8; HEADER_LEN],
    buf: Vec<u8>,
    /// Where the pack begins in `buf` (the bytes before it are padding).
    start: usize,
    entries: Vec<PackEntry>,
}

/// Buffers of at least this capacity put the pack on a page boundary.
pub const ALIGN_FROM: usize = 1 << 20;

/// The buffer a pack closed at `target` bytes fills at most, so it is
/// never reallocated (a copy of the whole pack, and fresh pages to fault
/// in) while blobs go in: the target, less one byte, then the worst record
/// of the largest blob (zstd's bound, which [`PackBuilder::add`] reserves
/// before compressing, and the tag), then the sealed trailer of
/// `max_blobs` entries and the footer. Pages of it never written are
/// never touched, so they cost address space, not memory.
pub fn capacity_for(target: usize, largest_blob: usize, max_blobs: usize) -> usize {
    let record = zstd::zstd_safe::compress_bound(largest_blob).max(largest_blob) + TAG_LEN;
    let trailer = 4 + max_blobs * ENTRY_LEN + TAG_LEN + FOOTER_LEN;
    target + record + trailer
}

/// A finished pack, ready to upload under `packs/<id>`.
#[derive(Debug)]
pub struct FinishedPack {
    /// blake3 of `bytes`.
    pub id: ObjectId,
    /// The whole pack (page-aligned when it was built in a buffer of
    /// [`ALIGN_FROM`] bytes or more).
    pub bytes: bytes::Bytes,
    /// What it holds.
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// Starts a pack whose subkey derives from `salt` (random in normal use).
    pub fn new(keys: &Keys, salt: [u8; 32], capacity: usize) -> Self {
        Self::in_buffer(keys, salt, capacity, Vec::new())
    }

    /// [`PackBuilder::new`] in `buf`, a finished pack's buffer back from
    /// its upload ([`crate::direct_io::reclaim`]) when it is large enough:
    /// its pages are resident already.
    pub fn in_buffer(keys: &Keys, salt: [u8; 32], capacity: usize, buf: Vec<u8>) -> Self {
        let header = Header {
            kind: ObjectKind::Pack,
            flags: 0,
            salt,
        }
        .encode();
        let (mut buf, start) = if capacity >= ALIGN_FROM {
            crate::direct_io::reuse_aligned(buf, capacity)
        } else {
            (Vec::with_capacity(capacity), 0)
        };
        buf.extend_from_slice(&header);
        PackBuilder {
            cipher: keys.object_cipher(&salt),
            header,
            buf,
            start,
            entries: Vec::new(),
        }
    }

    /// Compresses (when it pays) and encrypts `plaintext` as blob `id`,
    /// in place at the end of the pack (no buffer per blob).
    pub fn add(&mut self, id: BlobId, plaintext: &[u8], zstd_level: i32) -> Result<()> {
        let raw_len = u32::try_from(plaintext.len())
            .ok()
            .filter(|&l| l <= MAX_BLOB_LEN)
            .ok_or_else(|| {
                Error::config(format!(
                    "blob of {} bytes exceeds the maximum of {MAX_BLOB_LEN}",
                    plaintext.len()
                ))
            })?;
        let offset = self.buf.len();
        let compression = if compress::compress_into(plaintext, zstd_level, &mut self.buf) {
            Compression::Zstd
        } else {
            self.buf.extend_from_slice(plaintext);
            Compression::Raw
        };
        self.seal_from(offset, id, raw_len, compression)
    }

    /// Encrypts the payload at `offset..` in place and records its entry.
    fn seal_from(
        &mut self,
        offset: usize,
        id: BlobId,
        raw_len: u32,
        compression: Compression,
    ) -> Result<()> {
        let mut entry = PackEntry {
            id,
            offset: (offset - self.start) as u64,
            stored_len: 0,
            raw_len,
            compression,
        };
        let aad = entry.aad(&self.header);
        self.cipher
            .seal_in_place(Nonce::Blob(entry.offset), &aad, &mut self.buf, offset);
        match u32::try_from(self.buf.len() - offset) {
            Ok(len) => entry.stored_len = len,
            Err(_) => {
                self.buf.truncate(offset);
                return Err(Error::config("blob record over 4 GiB"));
            }
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Bytes so far (header and blob records).
    pub fn len_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Number of blobs added.
    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends trailer and footer and names the pack.
    pub fn finish(self) -> FinishedPack {
        let PackBuilder {
            cipher,
            header,
            mut buf,
            start,
            entries,
        } = self;
        let mut w = Writer::with_capacity(4 + entries.len() * ENTRY_LEN);
        w.u32(u32::try_from(entries.len()).expect("a pack holds far fewer than 2^32 blobs"));
        for e in &entries {
            e.encode(&mut w);
        }
        let trailer = cipher.seal(Nonce::Trailer, &header, &w.into_inner());
        buf.extend_from_slice(&trailer);
        buf.extend_from_slice(
            &u32::try_from(trailer.len())
                .expect("trailer under 4 GiB")
                .to_le_bytes(),
        );
        buf.extend_from_slice(&FOOTER_MAGIC);
        let bytes = bytes::Bytes::from(buf).slice(start..);
        FinishedPack {
            id: ObjectId::of(&bytes),
            bytes,
            entries,
        }
    }
}

/// Decodes the footer (the last [`FOOTER_LEN`] bytes of a pack of
/// `pack_len` bytes) and returns the trailer's byte range.
pub fn trailer_range(footer: &[u8], pack_len: u64) -> Result<std::ops::Range<u64>, DecodeError> {
    let mut r = Reader::new(footer);
    let trailer_len = u64::from(r.u32("trailer length")?);
    let magic = r.array::<4>("footer magic")?;
    r.finish("footer")?;
    if magic != FOOTER_MAGIC {
        return Err(DecodeError::new(
            4,
            "bad pack footer magic (truncated or not a pack)",
        ));
    }
    let min = (HEADER_LEN + FOOTER_LEN) as u64 + trailer_len;
    if trailer_len < (4 + TAG_LEN) as u64 || pack_len < min {
        return Err(DecodeError::new(
            0,
            format!("trailer length {trailer_len} does not fit a pack of {pack_len} bytes"),
        ));
    }
    let end = pack_len - FOOTER_LEN as u64;
    Ok(end - trailer_len..end)
}

/// An opened pack header: the cipher to read its blobs with.
pub struct PackKey {
    header: [u8; HEADER_LEN],
    cipher: ObjectCipher,
}

impl PackKey {
    /// Checks a pack's first [`HEADER_LEN`] bytes and derives its subkey.
    pub fn open(keys: &Keys, header: &[u8]) -> Result<PackKey, Error> {
        let h = Header::decode(header, ObjectKind::Pack)?;
        Ok(PackKey {
            header: h.encode(),
            cipher: keys.object_cipher(&h.salt),
        })
    }

    /// Authenticates and decodes the trailer ciphertext, which ends at
    /// `trailer_offset` + its length; checks every entry lies inside the
    /// blob area, in order and without overlap.
    pub fn open_trailer(
        &self,
        trailer: &[u8],
        trailer_offset: u64,
    ) -> Result<Vec<PackEntry>, Error> {
        let plain = self
            .cipher
            .open(Nonce::Trailer, &self.header, trailer)
            .map_err(|e| e.context("pack trailer"))?;
        let mut r = Reader::new(&plain);
        let count = r.count32(ENTRY_LEN, "trailer entries")?;
        let mut entries = Vec::with_capacity(count);
        let mut next = HEADER_LEN as u64;
        for i in 0..count {
            let e = PackEntry::decode(&mut r)?;
            let end = e.offset.checked_add(u64::from(e.stored_len));
            let bad = e.offset != next
                || e.stored_len < TAG_LEN as u32
                || e.raw_len > MAX_BLOB_LEN
                || end.is_none_or(|end| end > trailer_offset);
            if bad {
                return Err(Error::corrupt(format!(
                    "trailer entry {i} (offset {}, length {}) does not describe the blob area",
                    e.offset, e.stored_len
                )));
            }
            next = end.unwrap_or(next);
            entries.push(e);
        }
        r.finish("trailer")?;
        if next != trailer_offset {
            return Err(Error::corrupt(format!(
                "trailer describes blobs up to byte {next}, but the trailer starts at {trailer_offset}"
            )));
        }
        Ok(entries)
    }

    /// Authenticates, decrypts and decompresses one blob record, and checks
    /// its plaintext hashes to the id the caller expected.
    pub fn open_blob(
        &self,
        keys: &Keys,
        entry: &PackEntry,
        record: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut buf = record.to_vec();
        let raw_len = match self.open_blob_in(keys, entry, &mut buf)? {
            Cow::Owned(plain) => return Ok(plain),
            Cow::Borrowed(plain) => plain.len(),
        };
        buf.truncate(raw_len);
        Ok(buf)
    }

    /// [`PackKey::open_blob`] where the record lies (within a larger read):
    /// decrypted in place; a raw blob is borrowed from `record`.
    pub fn open_blob_in<'a>(
        &self,
        keys: &Keys,
        entry: &PackEntry,
        record: &'a mut [u8],
    ) -> Result<Cow<'a, [u8]>, Error> {
        if record.len() != entry.stored_len as usize {
            return Err(Error::corrupt(format!(
                "blob {} record is {} bytes, expected {}",
                entry.id.short(),
                record.len(),
                entry.stored_len
            )));
        }
        if entry.raw_len > MAX_BLOB_LEN {
            return Err(Error::corrupt(format!(
                "blob {} claims {} bytes",
                entry.id.short(),
                entry.raw_len
            )));
        }
        let payload = self
            .cipher
            .open_in_slice(Nonce::Blob(entry.offset), &entry.aad(&self.header), record)
            .map_err(|e| {
                e.context(format!(
                    "blob {} at offset {}",
                    entry.id.short(),
                    entry.offset
                ))
            })?;
        let plain = match entry.compression {
            Compression::Raw => Cow::Borrowed(payload),
            Compression::Zstd => Cow::Owned(compress::decompress(payload, entry.raw_len as usize)?),
        };
        if plain.len() != entry.raw_len as usize {
            return Err(Error::corrupt(format!(
                "blob {} has the wrong length",
                entry.id.short()
            )));
        }
        if keys.blob_id(&plain) != entry.id {
            return Err(Error::new(
                ErrorKind::Crypto,
                format!("blob {} does not hash to its id", entry.id.short()),
            ));
        }
        Ok(plain)
    }
}

/// A whole pack in memory, opened and its trailer checked.
pub struct PackView<'a> {
    bytes: &'a [u8],
    key: PackKey,
    /// The blobs, in the order stored.
    pub entries: Vec<PackEntry>,
}

impl<'a> PackView<'a> {
    /// Opens a pack's bytes. When `expected` is given, the bytes must hash to it.
    pub fn open(keys: &Keys, bytes: &'a [u8], expected: Option<ObjectId>) -> Result<Self> {
        if let Some(id) = expected {
            let actual = ObjectId::of(bytes);
            if actual != id {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("pack bytes hash to {}, not to its name", actual.short()),
                ));
            }
        }
        let len = bytes.len() as u64;
        let footer = bytes
            .get(bytes.len().saturating_sub(FOOTER_LEN)..)
            .ok_or_else(|| Error::corrupt("pack shorter than its footer"))?;
        let range = trailer_range(footer, len)?;
        let key = PackKey::open(keys, bytes)?;
        let trailer = slice(bytes, range.clone())?;
        let entries = key.open_trailer(trailer, range.start)?;
        Ok(PackView {
            bytes,
            key,
            entries,
        })
    }

    /// Reads, authenticates and re-hashes one blob.
    pub fn blob(&self, keys: &Keys, entry: &PackEntry) -> Result<Vec<u8>> {
        let end = entry.offset.saturating_add(u64::from(entry.stored_len));
        let record = slice(self.bytes, entry.offset..end)?;
        self.key.open_blob(keys, entry, record)
    }
}

fn slice(bytes: &[u8], range: std::ops::Range<u64>) -> Result<&[u8]> {
    let start = usize::try_from(range.start).map_err(|_| Error::corrupt("offset overflows"))?;
    let end = usize::try_from(range.end).map_err(|_| Error::corrupt("offset overflows"))?;
    bytes
        .get(start..end)
        .ok_or_else(|| Error::corrupt(format!("range {start}..{end} lies outside the pack")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn keys() -> Keys {
        Keys::derive(&MasterKey::from_bytes([5; 32]))
    }

    #[test]
    fn build_open_read() {
        let keys = keys();
        let mut b = PackBuilder::new(&keys, [1; 32], 1024);
        let blobs: Vec<Vec<u8>> = vec![b"hello".to_vec(), b"x".repeat(10_000), vec![]];
        for blob in &blobs {
            b.add(keys.blob_id(blob), blob, 3).unwrap();
        }
        let p = b.finish();
        assert_eq!(ObjectId::of(&p.bytes), p.id);
        let view = PackView::open(&keys, &p.bytes, Some(p.id)).unwrap();
        assert_eq!(view.entries, p.entries);
        for (e, blob) in view.entries.iter().zip(&blobs) {
            assert_eq!(&view.blob(&keys, e).unwrap(), blob);
        }
        assert_eq!(view.entries[1].compression, Compression::Zstd);
    }

    /// The worst a pack closed at its target can come to — one byte short
    /// of it, then the largest blob, then a trailer of the most blobs —
    /// fits the buffer [`capacity_for`] sizes: the pack is never moved.
    #[test]
    fn a_pack_never_outgrows_the_capacity_for_its_limits() {
        let keys = keys();
        let (target, largest, max_blobs) = (1 << 20, 256 << 10, 300);
        let capacity = capacity_for(target, largest, max_blobs);
        let random = crate::chunk::tests::pattern(largest, 9);
        // Incompressible (stored raw, the largest record) and compressible
        // (zstd's bound reserved before compressing) last blobs.
        for last in [random.clone(), vec![0u8; largest]] {
            let mut b = PackBuilder::new(&keys, [1; 32], capacity);
            let at = b.buf.as_ptr().wrapping_add(b.start);
            let full = 3;
            for i in 0..max_blobs - 2 - full {
                let tiny = [i.to_le_bytes()[0]];
                b.add(keys.blob_id(&tiny), &tiny, 3).unwrap();
            }
            // Raw records (random bytes) up to one byte short of the target.
            for _ in 0..full {
                b.add(keys.blob_id(&random), &random, 3).unwrap();
            }
            let short = target - 1 - b.len_bytes() - TAG_LEN;
            assert!(short <= largest);
            b.add(keys.blob_id(&random[..short]), &random[..short], 3)
                .unwrap();
            assert_eq!(b.len_bytes(), target - 1);
            b.add(keys.blob_id(&last), &last, 3).unwrap();
            assert_eq!(b.blob_count(), max_blobs);
            let p = b.finish();
            assert_eq!(p.bytes.as_ptr(), at, "the pack moved to a larger buffer");
            let view = PackView::open(&keys, &p.bytes, Some(p.id)).unwrap();
            assert_eq!(
                view.blob(&keys, &view.entries[max_blobs - 1]).unwrap(),
                last
            );
        }
    }

    /// A large buffer puts the pack on a page boundary; the bytes (and so
    /// the name) are the same as a small buffer's.
    #[test]
    fn large_buffers_align_the_pack_without_changing_it() {
        let keys = keys();
        let build = |capacity| {
            let mut b = PackBuilder::new(&keys, [1; 32], capacity);
            for blob in [&b"hello"[..], &[7; 5000][..]] {
                b.add(keys.blob_id(blob), blob, 3).unwrap();
            }
            b.finish()
        };
        let (small, large) = (build(64), build(ALIGN_FROM));
        assert_eq!(large.bytes.as_ptr().align_offset(crate::direct_io::PAGE), 0);
        assert_eq!(
            (small.id, &small.bytes, &small.entries),
            (large.id, &large.bytes, &large.entries)
        );
        // A stored pack's buffer, reclaimed (and so holding its old
        // bytes), builds the same pack again, in place and aligned.
        let held = large.bytes.clone();
        assert!(crate::direct_io::reclaim(held).is_none(), "still shared");
        let at = large.bytes.as_ptr();
        let spare = crate::direct_io::reclaim(large.bytes).expect("unique");
        let mut b = PackBuilder::in_buffer(&keys, [1; 32], ALIGN_FROM, spare);
        for blob in [&b"hello"[..], &[7; 5000][..]] {
            b.add(keys.blob_id(blob), blob, 3).unwrap();
        }
        let again = b.finish();
        assert_eq!(again.bytes.as_ptr(), at, "the same pages");
        assert_eq!(
            (small.id, &small.bytes, &small.entries),
            (again.id, &again.bytes, &again.entries)
        );
    }

    proptest::proptest! {
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3000), 0..8), level in 0i32..4) {
            let keys = keys();
            let mut b = PackBuilder::new(&keys, [2; 32], 64);
            for blob in &blobs {
                b.add(keys.blob_id(blob), blob, level).unwrap();
            }
            let p = b.finish();
            let view = PackView::open(&keys, &p.bytes, Some(p.id)).unwrap();
            proptest::prop_assert_eq!(view.entries.len(), blobs.len());
            for (e, blob) in view.entries.iter().zip(&blobs) {
                proptest::prop_assert_eq!(&view.blob(&keys, e).unwrap(), blob);
            }
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let keys = keys();
        let mut b = PackBuilder::new(&keys, [1; 32], 1024);
        b.add(keys.blob_id(b"abc"), b"abc", 0).unwrap();
        let p = b.finish();
        for i in 0..p.bytes.len() {
            let mut bad = p.bytes.to_vec();
            bad[i] ^= 1;
            let res = PackView::open(&keys, &bad, None).and_then(|v| {
                let e = v.entries[0];
                v.blob(&keys, &e)
            });
            assert!(res.is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn lying_trailer_lengths_are_errors() {
        let keys = keys();
        let p = PackBuilder::new(&keys, [1; 32], 64).finish();
        for lie in [0u32, u32::MAX, p.bytes.len() as u32] {
            let mut bad = p.bytes.to_vec();
            let at = bad.len() - FOOTER_LEN;
            bad[at..at + 4].copy_from_slice(&lie.to_le_bytes());
            assert!(PackView::open(&keys, &bad, None).is_err());
        }
        assert!(PackView::open(&keys, &p.bytes[..5], None).is_err());
    }

    #[test]
    fn blob_moved_to_other_offset_or_id_is_rejected() {
        let keys = keys();
        let mut b = PackBuilder::new(&keys, [1; 32], 64);
        b.add(keys.blob_id(b"one"), b"one", 0).unwrap();
        b.add(keys.blob_id(b"two"), b"two", 0).unwrap();
        let p = b.finish();
        let view = PackView::open(&keys, &p.bytes, None).unwrap();
        let mut e = view.entries[0];
        e.id = view.entries[1].id;
        assert!(view.blob(&keys, &e).is_err());
    }
}
