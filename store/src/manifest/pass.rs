//! Pass states: how far an unfinished full pass got, partition by
//! partition, so a killed pass resumes without re-reading what it
//! finished; and the pass marker, which says a pass for a point began. Written as the pass proceeds under
//! `passes/<seq:016x>/<n:08x>` (create-only; the highest `n` that
//! authenticates is the latest), where `seq` is the point the pass will
//! commit. Every run a state names has its pages stored, and its blobs
//! are checked against the index before a resumed pass trusts it.
//!
//! Spec: `format-spec/SPEC.md#pass-state`. Body:
//!
//! ```text
//! seq u64 ‖ prev [32] ‖ time i64 ‖ source str16 ‖ count u32 ‖ count × Partition
//! Partition: after str16 ‖ has_until u8 ‖ [until str16] ‖ done u8 ‖
//!            has_cursor u8 ‖ [cursor str16] ‖ Totals ‖ runs u32 ‖ runs × RunDescriptor
//! Totals:    changed u64 ‖ deleted u64 ‖ unchanged u64 ‖ errors u64 ‖
//!            objects_delta i64 ‖ bytes_delta i64
//! ```
//!
//! The marker (`passes/<seq:016x>/begun`, create-only, spec
//! `format-spec/SPEC.md#pass-marker`) is stored before a pass's first
//! pack: only a pass that finds the marker of the point it is about to
//! commit lists `packs/` for packs an earlier pass left unindexed. Body:
//!
//! ```text
//! seq u64 ‖ began i64
//! ```
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use super::run::{RunDescriptor, DESCRIPTOR_LEN};
use crate::error::DecodeError;
use crate::format::{Reader, Writer};
use crate::id::ObjectId;
use crate::source::KeyRange;

/// What a partition has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Objects new or changed.
    pub changed: u64,
    /// Objects deleted.
    pub deleted: u64,
    /// Objects found unchanged.
    pub unchanged: u64,
    /// Objects that could not be read (they keep their previous version).
    pub errors: u64,
    /// Change in the number of live objects.
    pub objects_delta: i64,
    /// Change in live bytes.
    pub bytes_delta: i64,
}

impl Totals {
    /// Adds `other` in.
    pub fn add(&mut self, other: &Totals) {
        self.changed += other.changed;
        self.deleted += other.deleted;
        self.unchanged += other.unchanged;
        self.errors += other.errors;
        self.objects_delta += other.objects_delta;
        self.bytes_delta += other.bytes_delta;
    }
}

/// One partition's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PartitionState {
    /// Its key range.
    pub range: KeyRange,
    /// True when every key of the range is in `runs`.
    pub done: bool,
    /// The last key whose entry is in `runs` (keys after it are redone).
    pub cursor: Option<String>,
    /// What the keys up to `cursor` added up to.
    pub totals: Totals,
    /// Runs holding the range's entries up to `cursor`, in key order.
    pub runs: Vec<RunDescriptor>,
}

/// The progress of one unfinished pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassState {
    /// The point the pass will commit.
    pub seq: u64,
    /// Hash of the point it started from (zero for the first): a pass
    /// resumes only while that point is still the latest.
    pub prev: ObjectId,
    /// The pass's time (ns since the epoch) when given explicitly, else 0.
    pub time_ns: i64,
    /// The source, as the point will record it.
    pub source: String,
    /// Partitions, in key order; together they cover the key space.
    pub partitions: Vec<PartitionState>,
}

impl PassState {
    /// Prefix of the states of the pass committing point `seq`.
    pub fn prefix(seq: u64) -> String {
        format!("passes/{seq:016x}/")
    }

    /// The name of state number `n` of the pass committing `seq`.
    pub fn name(seq: u64, n: u32) -> String {
        format!("passes/{seq:016x}/{n:08x}")
    }

    /// Parses (seq, n) from a state's name.
    pub fn parse_name(name: &str) -> Option<(u64, u32)> {
        let rest = name.strip_prefix("passes/")?;
        let (seq, n) = rest.split_once('/')?;
        if seq.len() != 16 || n.len() != 8 {
            return None;
        }
        Some((
            u64::from_str_radix(seq, 16).ok()?,
            u32::from_str_radix(n, 16).ok()?,
        ))
    }

    /// The plaintext body; strings longer than 65,535 bytes cannot be
    /// recorded.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut w = Writer::default();
        w.u64(self.seq);
        w.bytes(self.prev.as_bytes());
        w.i64(self.time_ns);
        str16(&mut w, &self.source)?;
        w.u32(u32::try_from(self.partitions.len()).map_err(|_| "too many partitions")?);
        for p in &self.partitions {
            str16(&mut w, &p.range.after)?;
            opt_str16(&mut w, p.range.until.as_deref())?;
            w.u8(u8::from(p.done));
            opt_str16(&mut w, p.cursor.as_deref())?;
            let t = &p.totals;
            for v in [t.changed, t.deleted, t.unchanged, t.errors] {
                w.u64(v);
            }
            w.i64(t.objects_delta);
            w.i64(t.bytes_delta);
            w.u32(u32::try_from(p.runs.len()).map_err(|_| "too many runs")?);
            for r in &p.runs {
                r.encode(&mut w);
            }
        }
        Ok(w.into_inner())
    }

    /// Decodes a body.
    pub fn decode(body: &[u8]) -> Result<PassState, DecodeError> {
        let mut r = Reader::new(body);
        let seq = r.u64("seq")?;
        let prev = ObjectId(r.array::<32>("prev")?);
        let time_ns = r.i64("time")?;
        let source = r.string16("source")?;
        let n = r.count32(2 + 1 + 1 + 1 + 48 + 4, "partitions")?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            let after = r.string16("range start")?;
            let until = opt_string16(&mut r, "range end")?;
            let done = flag(&mut r, "done")?;
            let cursor = opt_string16(&mut r, "cursor")?;
            let totals = Totals {
                changed: r.u64("changed")?,
                deleted: r.u64("deleted")?,
                unchanged: r.u64("unchanged")?,
                errors: r.u64("errors")?,
                objects_delta: r.i64("objects delta")?,
                bytes_delta: r.i64("bytes delta")?,
            };
            let runs_n = r.count32(DESCRIPTOR_LEN, "runs")?;
            let mut runs = Vec::with_capacity(runs_n);
            for _ in 0..runs_n {
                runs.push(RunDescriptor::decode(&mut r)?);
            }
            partitions.push(PartitionState {
                range: KeyRange { after, until },
                done,
                cursor,
                totals,
                runs,
            });
        }
        r.finish("pass state")?;
        Ok(PassState {
            seq,
            prev,
            time_ns,
            source,
            partitions,
        })
    }
}

/// Says a pass for point `seq` began, and may have stored packs that
/// only its commit would describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PassMarker {
    /// The point the pass was to commit.
    pub seq: u64,
    /// When it began (ns since the epoch, the writer's clock).
    pub began_ns: i64,
}

impl PassMarker {
    /// The object name of the marker of the passes committing `seq`.
    pub fn name(seq: u64) -> String {
        format!("passes/{seq:016x}/begun")
    }

    /// The plaintext body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.seq);
        w.i64(self.began_ns);
        w.into_inner()
    }

    /// Decodes a body.
    pub fn decode(body: &[u8]) -> Result<PassMarker, DecodeError> {
        let mut r = Reader::new(body);
        let seq = r.u64("seq")?;
        let began_ns = r.i64("began")?;
        r.finish("pass marker")?;
        Ok(PassMarker { seq, began_ns })
    }
}

fn str16(w: &mut Writer, s: &str) -> Result<(), String> {
    if s.len() > usize::from(u16::MAX) {
        return Err(format!("string of {} bytes", s.len()));
    }
    w.bytes16(s.as_bytes());
    Ok(())
}

fn opt_str16(w: &mut Writer, s: Option<&str>) -> Result<(), String> {
    match s {
        Some(s) => {
            w.u8(1);
            str16(w, s)
        }
        None => {
            w.u8(0);
            Ok(())
        }
    }
}

fn flag(r: &mut Reader<'_>, what: &str) -> Result<bool, DecodeError> {
    let at = r.offset();
    match r.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::new(at, format!("{what} flag {v}"))),
    }
}

fn opt_string16(r: &mut Reader<'_>, what: &str) -> Result<Option<String>, DecodeError> {
    Ok(if flag(r, what)? {
        Some(r.string16(what)?)
    } else {
        None
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> PassState {
        PassState {
            seq: 3,
            prev: ObjectId([9; 32]),
            time_ns: 0,
            source: "s3://bucket/".into(),
            partitions: vec![
                PartitionState {
                    range: KeyRange {
                        after: String::new(),
                        until: Some("p1".into()),
                    },
                    done: true,
                    cursor: Some("p0/z".into()),
                    totals: Totals {
                        changed: 10,
                        deleted: 1,
                        unchanged: 5,
                        errors: 0,
                        objects_delta: 9,
                        bytes_delta: -300,
                    },
                    runs: vec![RunDescriptor {
                        root: ObjectId([1; 32]),
                        height: 0,
                        min_seq: 3,
                        max_seq: 3,
                        entries: 11,
                        stored_bytes: 900,
                    }],
                },
                PartitionState {
                    range: KeyRange {
                        after: "p1".into(),
                        until: None,
                    },
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn round_trip_names_and_truncation() {
        let s = sample();
        let body = s.encode().unwrap();
        assert_eq!(PassState::decode(&body).unwrap(), s);
        assert_eq!(PassState::name(3, 10), "passes/0000000000000003/0000000a");
        assert_eq!(
            PassState::parse_name(&PassState::name(3, 10)),
            Some((3, 10))
        );
        assert_eq!(PassState::parse_name("passes/3/1"), None);
        for cut in 0..body.len() {
            assert!(PassState::decode(&body[..cut]).is_err());
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(PassState::decode(&longer).is_err());
        // A flag byte other than 0 or 1 is refused.
        let mut bad = body;
        let done_at = 8 + 32 + 8 + 2 + "s3://bucket/".len() + 4 + 2 + 1 + 2 + 2;
        bad[done_at] = 2;
        assert!(PassState::decode(&bad).is_err());
    }

    #[test]
    fn marker_round_trip_name_and_truncation() {
        let m = PassMarker {
            seq: 3,
            began_ns: 1_764_000_000_000_000_000,
        };
        let body = m.encode();
        assert_eq!(body.len(), 16);
        assert_eq!(PassMarker::decode(&body).unwrap(), m);
        assert_eq!(PassMarker::name(3), "passes/0000000000000003/begun");
        // Beside the states, never taken for one.
        assert!(PassMarker::name(3).starts_with(&PassState::prefix(3)));
        assert_eq!(PassState::parse_name(&PassMarker::name(3)), None);
        for cut in 0..body.len() {
            assert!(PassMarker::decode(&body[..cut]).is_err());
        }
        let mut longer = body;
        longer.push(0);
        assert!(PassMarker::decode(&longer).is_err());
    }
}
