//! The index: where each blob lives (pack, offset, length).
//!
//! Every commit writes one immutable, sealed [`Segment`] (`index/<id>`)
//! for the packs it added. Readers keep a local, sorted, fixed-width
//! [`cache::IndexCache`] built from all segments, so a lookup is a binary
//! search over a few keys in memory and one small read per fence level
//! below them, and never loads the whole index.
//!
//! Spec: `format-spec/SPEC.md#index-segment`.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

pub mod cache;
mod table;

use crate::compress::Compression;
use crate::error::{DecodeError, Error, Result};
use crate::format::{Reader, Writer};
use crate::id::{BlobId, ObjectId};
use crate::pack::PackEntry;

/// Length of one index entry in a segment (the local cache's carry their
/// pack's id instead of an ordinal: `cache.rs`).
pub const ENTRY_LEN: usize = 32 + 4 + 8 + 4 + 4 + 1 + 3;

/// Where one blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IndexEntry {
    /// The blob.
    pub blob: BlobId,
    /// The pack holding it.
    pub pack: ObjectId,
    /// Its record in that pack.
    pub offset: u64,
    /// Record length (ciphertext and tag).
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Compression before encryption.
    pub compression: Compression,
}

impl IndexEntry {
    /// The entry of a blob described by a pack trailer.
    pub fn from_pack(pack: ObjectId, e: &PackEntry) -> Self {
        IndexEntry {
            blob: e.id,
            pack,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            compression: e.compression,
        }
    }

    /// The pack-trailer view of this entry (to open the blob record).
    pub fn pack_entry(&self) -> PackEntry {
        PackEntry {
            id: self.blob,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
            compression: self.compression,
        }
    }
}

/// Encodes an entry whose pack is number `pack_ordinal` of a pack table.
pub(crate) fn encode_entry(w: &mut Writer, e: &IndexEntry, pack_ordinal: u32) {
    w.bytes(e.blob.as_bytes());
    w.u32(pack_ordinal);
    w.u64(e.offset);
    w.u32(e.stored_len);
    w.u32(e.raw_len);
    w.u8(e.compression as u8);
    w.bytes(&[0; 3]);
}

/// Decodes an entry; returns it with its pack ordinal (the pack id is
/// filled in by the caller from its pack table).
pub(crate) fn decode_entry(r: &mut Reader<'_>) -> Result<(IndexEntry, u32), DecodeError> {
    let at = r.offset();
    let blob = BlobId(r.array::<32>("blob id")?);
    let ordinal = r.u32("pack ordinal")?;
    let offset = r.u64("offset")?;
    let stored_len = r.u32("stored length")?;
    let raw_len = r.u32("raw length")?;
    let c = r.u8("compression")?;
    let compression = Compression::from_u8(c)
        .ok_or_else(|| DecodeError::unsupported(at + 52, format!("unknown compression {c}")))?;
    r.array::<3>("reserved")?;
    Ok((
        IndexEntry {
            blob,
            pack: ObjectId::default(),
            offset,
            stored_len,
            raw_len,
            compression,
        },
        ordinal,
    ))
}

/// One index segment: the blobs of the packs one commit added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Entries sorted by blob id, ids unique.
    pub entries: Vec<IndexEntry>,
    /// Segments this one replaces (written by index compaction).
    pub supersedes: Vec<ObjectId>,
}

impl Segment {
    /// The plaintext body: pack table, superseded segments, entries.
    pub fn encode(&self) -> Vec<u8> {
        let mut packs: Vec<ObjectId> = self.entries.iter().map(|e| e.pack).collect();
        packs.sort_unstable();
        packs.dedup();
        let mut w = Writer::with_capacity(12 + packs.len() * 32 + self.entries.len() * ENTRY_LEN);
        w.u32(u32::try_from(packs.len()).expect("fewer than 2^32 packs per segment"));
        for p in &packs {
            w.bytes(p.as_bytes());
        }
        w.u32(u32::try_from(self.supersedes.len()).expect("fewer than 2^32 segments"));
        for s in &self.supersedes {
            w.bytes(s.as_bytes());
        }
        w.u32(u32::try_from(self.entries.len()).expect("fewer than 2^32 entries per segment"));
        for e in &self.entries {
            let ordinal = packs
                .binary_search(&e.pack)
                .expect("pack table holds every entry's pack");
            encode_entry(&mut w, e, u32::try_from(ordinal).expect("checked above"));
        }
        w.into_inner()
    }

    /// Decodes a body; checks ordering, uniqueness and pack ordinals.
    pub fn decode(body: &[u8]) -> Result<Segment, Error> {
        let mut r = Reader::new(body);
        let npacks = r.count32(32, "pack table")?;
        let mut packs = Vec::with_capacity(npacks);
        for _ in 0..npacks {
            packs.push(ObjectId(r.array::<32>("pack id")?));
        }
        let nsup = r.count32(32, "superseded segments")?;
        let mut supersedes = Vec::with_capacity(nsup);
        for _ in 0..nsup {
            supersedes.push(ObjectId(r.array::<32>("segment id")?));
        }
        let n = r.count32(ENTRY_LEN, "entries")?;
        let mut entries: Vec<IndexEntry> = Vec::with_capacity(n);
        for i in 0..n {
            let at = r.offset();
            let (mut e, ordinal) = decode_entry(&mut r)?;
            e.pack = *packs.get(ordinal as usize).ok_or_else(|| {
                DecodeError::new(at, format!("entry {i} names pack {ordinal} of {npacks}"))
            })?;
            if entries.last().is_some_and(|prev| prev.blob >= e.blob) {
                return Err(DecodeError::new(at, format!("entry {i} is out of order")).into());
            }
            entries.push(e);
        }
        r.finish("index segment")?;
        Ok(Segment {
            entries,
            supersedes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(b: u8, p: u8) -> IndexEntry {
        IndexEntry {
            blob: BlobId([b; 32]),
            pack: ObjectId([p; 32]),
            offset: 40 + u64::from(b),
            stored_len: 20,
            raw_len: 4,
            compression: Compression::Raw,
        }
    }

    #[test]
    fn rejects_unsorted_and_bad_ordinals() {
        let seg = Segment {
            entries: vec![entry(1, 9), entry(2, 8)],
            supersedes: vec![],
        };
        let mut body = seg.encode();
        assert_eq!(Segment::decode(&body).unwrap(), seg);
        // Pack ordinal of the first entry -> 7.
        let first_entry = 4 + 64 + 4 + 4;
        body[first_entry + 32] = 7;
        assert!(Segment::decode(&body).is_err());
    }

    proptest! {
        #[test]
        fn segment_round_trip(blobs in proptest::collection::btree_set(any::<u8>(), 0..50), pack in any::<u8>()) {
            let seg = Segment {
                entries: blobs.iter().map(|&b| entry(b, pack ^ (b & 3))).collect(),
                supersedes: vec![ObjectId([3; 32])],
            };
            let body = seg.encode();
            prop_assert_eq!(Segment::decode(&body).unwrap(), seg.clone());
            prop_assert_eq!(Segment::decode(&body).unwrap().encode(), body);
        }
    }
}
