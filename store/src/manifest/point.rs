//! Time-index entries ("points"): one sealed object per recorded point,
//! named `points/<seq as 16 hex digits>`, chained by sequence number and
//! the blake3 hash of the previous point's stored bytes, so a replayed,
//! reordered or hidden point is detected.
//!
//! Spec: `format-spec/SPEC.md#point`. Body:
//!
//! ```text
//! seq u64 ‖ time_ns i64 ‖ committed_ns i64 ‖ prev [32]
//! ‖ objects u64 ‖ bytes u64 ‖ puts u64 ‖ deletes u64
//! ‖ new_packs u64 ‖ new_stored_bytes u64
//! ‖ runs: count u32 ‖ count × RunDescriptor (65)
//! ‖ segments: count u32 ‖ count × [32]
//! ‖ source: u16 len ‖ UTF-8
//! ```

use super::run::{RunDescriptor, DESCRIPTOR_LEN};
use crate::error::{DecodeError, Result};
use crate::format::{Reader, Writer};
use crate::id::ObjectId;

/// Counts describing a point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PointStats {
    /// Live objects at this point.
    pub objects: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Objects created or changed since the previous point.
    pub puts: u64,
    /// Objects deleted since the previous point.
    pub deletes: u64,
    /// Packs this commit added.
    pub new_packs: u64,
    /// Bytes this commit stored in packs (after dedup, compression, encryption).
    pub new_stored_bytes: u64,
}

/// One time-index entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Point {
    /// Sequence number: 0 for the first point, then +1.
    pub seq: u64,
    /// When the recorded state was observed (ns since the epoch).
    pub time_ns: i64,
    /// When the point was committed, by the writer's clock (ns, informative).
    pub committed_ns: i64,
    /// blake3 of the previous point's stored bytes (zero for seq 0).
    pub prev: ObjectId,
    /// Counts.
    pub stats: PointStats,
    /// The runs that hold the state at this point (and at every earlier one).
    pub runs: Vec<RunDescriptor>,
    /// Index segments this commit wrote.
    pub segments: Vec<ObjectId>,
    /// What was backed up (a path or URL).
    pub source: String,
}

impl Point {
    /// The object name of point `seq`.
    pub fn name(seq: u64) -> String {
        format!("points/{seq:016x}")
    }

    /// Parses a point's sequence number from its object name.
    pub fn seq_from_name(name: &str) -> Option<u64> {
        let hex = name.strip_prefix("points/")?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    }

    /// The plaintext body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128 + self.runs.len() * DESCRIPTOR_LEN);
        w.u64(self.seq);
        w.i64(self.time_ns);
        w.i64(self.committed_ns);
        w.bytes(self.prev.as_bytes());
        let s = &self.stats;
        for v in [
            s.objects,
            s.bytes,
            s.puts,
            s.deletes,
            s.new_packs,
            s.new_stored_bytes,
        ] {
            w.u64(v);
        }
        w.u32(u32::try_from(self.runs.len()).expect("run count fits u32"));
        for r in &self.runs {
            r.encode(&mut w);
        }
        w.u32(u32::try_from(self.segments.len()).expect("segment count fits u32"));
        for s in &self.segments {
            w.bytes(s.as_bytes());
        }
        w.bytes16(self.source.as_bytes());
        w.into_inner()
    }

    /// Decodes a body.
    pub fn decode(body: &[u8]) -> Result<Point, DecodeError> {
        let mut r = Reader::new(body);
        let seq = r.u64("seq")?;
        let time_ns = r.i64("time")?;
        let committed_ns = r.i64("committed")?;
        let prev = ObjectId(r.array::<32>("prev")?);
        let mut v = [0u64; 6];
        for x in &mut v {
            *x = r.u64("stats")?;
        }
        let [objects, bytes, puts, deletes, new_packs, new_stored_bytes] = v;
        let n = r.count32(DESCRIPTOR_LEN, "runs")?;
        let mut runs = Vec::with_capacity(n);
        for _ in 0..n {
            runs.push(RunDescriptor::decode(&mut r)?);
        }
        let n = r.count32(32, "segments")?;
        let mut segments = Vec::with_capacity(n);
        for _ in 0..n {
            segments.push(ObjectId(r.array::<32>("segment")?));
        }
        let source = r.string16("source")?;
        r.finish("point")?;
        Ok(Point {
            seq,
            time_ns,
            committed_ns,
            prev,
            stats: PointStats {
                objects,
                bytes,
                puts,
                deletes,
                new_packs,
                new_stored_bytes,
            },
            runs,
            segments,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn point_round_trip(seq: u64, time_ns: i64, prev: [u8; 32], stats: [u64; 6], nruns in 0usize..5, source in ".{0,30}") {
            let p = Point {
                seq,
                time_ns,
                committed_ns: time_ns.wrapping_add(1),
                prev: ObjectId(prev),
                stats: PointStats { objects: stats[0], bytes: stats[1], puts: stats[2], deletes: stats[3], new_packs: stats[4], new_stored_bytes: stats[5] },
                runs: (0..nruns).map(|i| RunDescriptor { root: ObjectId([i as u8; 32]), height: i as u8, min_seq: 0, max_seq: seq, entries: stats[0], stored_bytes: stats[1] }).collect(),
                segments: vec![ObjectId(prev); nruns],
                source,
            };
            let body = p.encode();
            prop_assert_eq!(Point::decode(&body).unwrap(), p);
        }
    }

    #[test]
    fn names_and_round_trip() {
        assert_eq!(Point::name(26), "points/000000000000001a");
        assert_eq!(Point::seq_from_name("points/000000000000001a"), Some(26));
        assert_eq!(Point::seq_from_name("points/1a"), None);
        let p = Point {
            seq: 3,
            time_ns: -5,
            committed_ns: 7,
            prev: ObjectId([9; 32]),
            stats: PointStats {
                objects: 1,
                bytes: 2,
                puts: 3,
                deletes: 4,
                new_packs: 5,
                new_stored_bytes: 6,
            },
            runs: vec![RunDescriptor {
                root: ObjectId([1; 32]),
                height: 2,
                min_seq: 0,
                max_seq: 3,
                entries: 10,
                stored_bytes: 99,
            }],
            segments: vec![ObjectId([2; 32])],
            source: "/data".into(),
        };
        let body = p.encode();
        assert_eq!(Point::decode(&body).unwrap(), p);
        assert!(Point::decode(&body[..body.len() - 1]).is_err());
    }
}
