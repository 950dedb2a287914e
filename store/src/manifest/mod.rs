//! Time-indexed manifests: the state of a source at every recorded point.
//!
//! A log-structured design (see `docs/capacity.md` and
//! `format-spec/SPEC.md#manifests`): each point writes one immutable
//! sorted *run* of the changes it saw — entries keyed by (object key,
//! sequence number), where a version is valid from its point until the next
//! version of the key. Runs of similar size are merged (all versions kept)
//! into larger runs, so a point costs bytes in proportion to its changes,
//! and the state at any point is read from the few runs its time-index
//! entry lists, each a small B-tree of pages: O(log) objects per lookup.
//!
//! This module holds the sans-I/O parts: the [`Entry`] codec, run pages and
//! the [`run::RunBuilder`]; [`point::Point`] is the time-index entry.
//! Reading runs (which fetches pages) lives in `repo::runs`.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

pub mod checkpoint;
pub mod pass;
pub mod point;
pub mod run;

use std::cmp::Ordering;

use crate::error::DecodeError;
use crate::format::{Reader, Writer};
use crate::id::BlobId;

/// Largest key accepted (S3 allows 1,024 bytes).
pub const MAX_KEY_LEN: usize = 4096;

/// One version of one source object, or its deletion, as of point `seq`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// The object's key (a `/`-separated relative path for directories).
    pub key: String,
    /// Sequence number of the point at which this version became current.
    pub seq: u64,
    /// The object, or `None` when this version is a deletion.
    pub object: Option<ObjectMeta>,
}

/// What is known about one version of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ObjectMeta {
    /// Length in bytes.
    pub size: u64,
    /// Last modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Unix permission bits for files from a directory (0 for S3 objects).
    pub mode: u32,
    /// Source version id (empty when unversioned).
    pub version_id: String,
    /// Source ETag (empty for directory sources).
    pub etag: String,
    /// System metadata: content-type, content-encoding, cache-control, storage-class…
    pub system: Vec<(String, String)>,
    /// User metadata (`x-amz-meta-*`).
    pub user: Vec<(String, String)>,
    /// Object tags.
    pub tags: Vec<(String, String)>,
    /// The content, in order, as blob ids.
    pub chunks: Vec<BlobId>,
}

impl Entry {
    /// Run order: key ascending, then sequence descending (newest first).
    pub fn order(&self, other: &Entry) -> Ordering {
        cmp_pos(&self.key, self.seq, &other.key, other.seq)
    }

    /// Appends the encoding of this entry.
    pub fn encode(&self, w: &mut Writer) {
        w.bytes16(self.key.as_bytes());
        w.u64(self.seq);
        match &self.object {
            None => w.u8(2),
            Some(o) => {
                w.u8(1);
                w.u64(o.size);
                w.i64(o.mtime_ns);
                w.u32(o.mode);
                w.bytes16(o.version_id.as_bytes());
                w.bytes16(o.etag.as_bytes());
                for list in [&o.system, &o.user, &o.tags] {
                    w.u16(u16::try_from(list.len()).unwrap_or(u16::MAX));
                    for (k, v) in list.iter().take(usize::from(u16::MAX)) {
                        w.bytes16(k.as_bytes());
                        w.bytes16(v.as_bytes());
                    }
                }
                w.u32(u32::try_from(o.chunks.len()).unwrap_or(u32::MAX));
                for c in &o.chunks {
                    w.bytes(c.as_bytes());
                }
            }
        }
    }

    /// Decodes one entry.
    pub fn decode(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
        let key = r.string16("key")?;
        let seq = r.u64("seq")?;
        let at = r.offset();
        let object = match r.u8("entry kind")? {
            2 => None,
            1 => {
                let size = r.u64("size")?;
                let mtime_ns = r.i64("mtime")?;
                let mode = r.u32("mode")?;
                let version_id = r.string16("version id")?;
                let etag = r.string16("etag")?;
                let mut lists: [Vec<(String, String)>; 3] = Default::default();
                for list in &mut lists {
                    let n = r.count16(4, "metadata")?;
                    for _ in 0..n {
                        list.push((r.string16("metadata name")?, r.string16("metadata value")?));
                    }
                }
                let [system, user, tags] = lists;
                let n = r.count32(32, "chunks")?;
                let mut chunks = Vec::with_capacity(n);
                for _ in 0..n {
                    chunks.push(BlobId(r.array::<32>("chunk id")?));
                }
                Some(ObjectMeta {
                    size,
                    mtime_ns,
                    mode,
                    version_id,
                    etag,
                    system,
                    user,
                    tags,
                    chunks,
                })
            }
            k => {
                return Err(DecodeError::unsupported(
                    at,
                    format!("unknown entry kind {k}"),
                ))
            }
        };
        Ok(Entry { key, seq, object })
    }

    /// Checks the limits an encodable entry must respect.
    pub fn validate(&self) -> Result<(), String> {
        if self.key.len() > MAX_KEY_LEN {
            return Err(format!(
                "key of {} bytes exceeds {MAX_KEY_LEN}",
                self.key.len()
            ));
        }
        if let Some(o) = &self.object {
            let too_long = |s: &str| s.len() > usize::from(u16::MAX);
            if too_long(&o.version_id) || too_long(&o.etag) {
                return Err("version id or etag too long".into());
            }
            for list in [&o.system, &o.user, &o.tags] {
                if list.len() > usize::from(u16::MAX)
                    || list.iter().any(|(k, v)| too_long(k) || too_long(v))
                {
                    return Err("metadata too long".into());
                }
            }
        }
        Ok(())
    }
}

/// Compares run positions: key ascending, then sequence descending.
pub fn cmp_pos(key_a: &str, seq_a: u64, key_b: &str, seq_b: u64) -> Ordering {
    key_a
        .as_bytes()
        .cmp(key_b.as_bytes())
        .then(seq_b.cmp(&seq_a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_entry() -> impl Strategy<Value = Entry> {
        let meta = (
            any::<u64>(),
            any::<i64>(),
            any::<u32>(),
            ".{0,8}",
            "[a-f0-9]{0,32}",
            proptest::collection::vec((".{0,5}", ".{0,5}"), 0..3),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
        )
            .prop_map(|(size, mtime_ns, mode, version_id, etag, user, chunks)| {
                ObjectMeta {
                    size,
                    mtime_ns,
                    mode,
                    version_id,
                    etag,
                    system: vec![("content-type".into(), "text/plain".into())],
                    user,
                    tags: vec![],
                    chunks: chunks.into_iter().map(BlobId).collect(),
                }
            });
        (".{0,40}", any::<u64>(), proptest::option::of(meta)).prop_map(|(key, seq, object)| Entry {
            key,
            seq,
            object,
        })
    }

    proptest! {
        #[test]
        fn entry_round_trip(e in arb_entry()) {
            let mut w = Writer::default();
            e.encode(&mut w);
            let bytes = w.into_inner();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(Entry::decode(&mut r).unwrap(), e);
            prop_assert_eq!(r.remaining(), 0);
        }
    }
}
