//! Change feeds: which keys changed since the last point.
//!
//! An event only says *which* key to look at; the ingest then reads what
//! the source really holds for that key (a HEAD, then a pinned GET). So
//! late, duplicated and reordered events are harmless: an older event can
//! never write an older state over a newer one, because its content is
//! never recorded. Within one cycle the events of a key are reduced to
//! the one with the greatest `sequencer` ([`ChangeSet`]); a duplicate of
//! what the last point already holds (same version id and ETag) costs no
//! request at all.
//!
//! Feeds: [`eventbridge`] parses S3's EventBridge events; [`files`] reads
//! batches of them from a directory or a bucket prefix (as a delivery
//! stream writes them); [`sqs`] receives them from a queue. Without a feed, the ingest diffs a full listing
//! against the last point, which doubles as reconciliation for dropped
//! events.

pub mod eventbridge;
pub mod files;
#[cfg(feature = "s3")]
pub mod sqs;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::error::Result;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ChangeKind {
    /// Created or overwritten.
    Created,
    /// Deleted (a delete marker or a permanent deletion).
    Deleted,
}

/// One change notification for one key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChangeEvent {
    /// The bucket it happened in.
    pub bucket: String,
    /// The object key, as the bucket names it.
    pub key: String,
    /// Created or deleted.
    pub kind: ChangeKind,
    /// Size in bytes (created objects).
    pub size: Option<u64>,
    /// ETag without quotes (created objects).
    pub etag: String,
    /// Version id, when the bucket is versioned.
    pub version_id: String,
    /// S3's per-key ordering token (hex); empty when the feed has none.
    pub sequencer: String,
    /// When it happened, ns since the epoch (0 when unknown).
    pub time_ns: i64,
}

/// Orders two sequencers of the same key: hex strings of possibly
/// different lengths, compared after right-padding the shorter with zeros.
pub fn cmp_sequencer(a: &str, b: &str) -> Ordering {
    let n = a.len().max(b.len());
    let pad = |s: &str| {
        let mut v: Vec<u8> = s.bytes().map(|c| c.to_ascii_uppercase()).collect();
        v.resize(n, b'0');
        v
    };
    pad(a).cmp(&pad(b))
}

/// The keys that changed in one cycle, each with its newest event.
#[derive(Clone, Debug, Default)]
pub struct ChangeSet {
    by_key: BTreeMap<String, ChangeEvent>,
    /// Events seen, including duplicates and superseded ones.
    pub events: u64,
    /// Events that named another bucket or a key outside the source.
    pub ignored: u64,
    /// The newest event time seen (ns since the epoch; 0 when none).
    pub newest_ns: i64,
}

impl ChangeSet {
    /// Adds an event under the source-relative `key`. An event with a
    /// smaller sequencer than the one kept is older and is dropped; equal
    /// sequencers are duplicates. Without sequencers, the later-arriving
    /// event wins.
    pub fn add(&mut self, key: String, event: ChangeEvent) {
        self.events += 1;
        self.newest_ns = self.newest_ns.max(event.time_ns);
        match self.by_key.get(&key) {
            Some(kept)
                if !kept.sequencer.is_empty()
                    && !event.sequencer.is_empty()
                    && cmp_sequencer(&event.sequencer, &kept.sequencer) != Ordering::Greater => {}
            _ => {
                self.by_key.insert(key, event);
            }
        }
    }

    /// Counts an event the source does not cover.
    pub fn ignore(&mut self) {
        self.events += 1;
        self.ignored += 1;
    }

    /// Distinct keys changed.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no key changed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The keys in byte order, with their newest event.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, String, ChangeEvent> {
        self.by_key.iter()
    }
}

/// Where a feed stopped: an opaque, feed-specific position, recorded in
/// the vault with each point (see [`crate::checkpoint`]).
pub type FeedPosition = String;

/// A source of change events.
#[async_trait::async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Names the feed (recorded with its position, so a position is never
    /// applied to a different feed).
    fn describe(&self) -> String;
    /// Events after `position` (from the start when `None`), and the
    /// position to resume from once they are committed. Reading must not
    /// consume anything: until the caller commits, a rerun sees the same
    /// events again.
    async fn read(&self, position: Option<&str>) -> Result<(Vec<ChangeEvent>, FeedPosition)>;
    /// Called after the point holding the events is committed; a feed that
    /// must acknowledge (a queue) does it here.
    async fn committed(&self, _position: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, kind: ChangeKind, seq: &str) -> ChangeEvent {
        ChangeEvent {
            bucket: "b".into(),
            key: key.into(),
            kind,
            size: None,
            etag: String::new(),
            version_id: String::new(),
            sequencer: seq.into(),
            time_ns: 0,
        }
    }

    #[test]
    fn sequencers_compare_after_right_padding() {
        assert_eq!(cmp_sequencer("0055", "0055"), Ordering::Equal);
        assert_eq!(cmp_sequencer("0055", "005500"), Ordering::Equal);
        assert_eq!(cmp_sequencer("0056", "005500FF"), Ordering::Greater);
        assert_eq!(cmp_sequencer("00550001", "0056"), Ordering::Less);
        assert_eq!(cmp_sequencer("00af", "00AE"), Ordering::Greater);
    }

    #[test]
    fn newest_event_per_key_wins_whatever_the_arrival_order() {
        let mut set = ChangeSet::default();
        set.add("k".into(), ev("k", ChangeKind::Deleted, "0003"));
        set.add("k".into(), ev("k", ChangeKind::Created, "0002")); // late
        set.add("k".into(), ev("k", ChangeKind::Deleted, "0003")); // duplicate
        set.add("j".into(), ev("j", ChangeKind::Created, "0001"));
        let kept: Vec<_> = set.iter().map(|(k, e)| (k.clone(), e.kind)).collect();
        assert_eq!(
            kept,
            [
                ("j".to_string(), ChangeKind::Created),
                ("k".to_string(), ChangeKind::Deleted)
            ]
        );
        assert_eq!(set.events, 4);
    }
}
