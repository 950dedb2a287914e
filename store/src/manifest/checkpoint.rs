//! Checkpoints: where each change feed stood when a point was committed.
//! One sealed object per point that consumed a feed, named
//! `checkpoints/<seq:016x>` after the point it follows, written after that
//! point (so a crash in between only replays events, which is harmless:
//! events name keys to re-read, never content).
//!
//! Spec: `format-spec/SPEC.md#checkpoint`. Body:
//!
//! ```text
//! seq u64 ‖ count u32 ‖ count × (feed str16 ‖ position str16)
//! ```
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::error::DecodeError;
use crate::format::{Reader, Writer};

/// A feed and the position after the last event the point holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FeedPosition {
    /// The feed's description (a directory, a bucket prefix, a queue URL).
    pub feed: String,
    /// Feed-specific position (for batch files: the last file consumed).
    pub position: String,
}

/// The feed positions recorded with point `seq`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    /// The point this checkpoint follows.
    pub seq: u64,
    /// One position per feed.
    pub feeds: Vec<FeedPosition>,
}

impl Checkpoint {
    /// The object name of the checkpoint after point `seq`.
    pub fn name(seq: u64) -> String {
        format!("checkpoints/{seq:016x}")
    }

    /// Parses a checkpoint's point sequence from its object name.
    pub fn seq_from_name(name: &str) -> Option<u64> {
        let hex = name.strip_prefix("checkpoints/")?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    }

    /// The position recorded for `feed`.
    pub fn position(&self, feed: &str) -> Option<&str> {
        self.feeds
            .iter()
            .find(|f| f.feed == feed)
            .map(|f| f.position.as_str())
    }

    /// The plaintext body. Feed names and positions longer than 65,535
    /// bytes cannot be recorded.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut w = Writer::default();
        w.u64(self.seq);
        w.u32(u32::try_from(self.feeds.len()).map_err(|_| "too many feeds")?);
        for f in &self.feeds {
            for s in [&f.feed, &f.position] {
                if s.len() > usize::from(u16::MAX) {
                    return Err(format!("feed name or position of {} bytes", s.len()));
                }
                w.bytes16(s.as_bytes());
            }
        }
        Ok(w.into_inner())
    }

    /// Decodes a body.
    pub fn decode(body: &[u8]) -> Result<Checkpoint, DecodeError> {
        let mut r = Reader::new(body);
        let seq = r.u64("seq")?;
        let n = r.count32(4, "feeds")?;
        let mut feeds = Vec::with_capacity(n);
        for _ in 0..n {
            feeds.push(FeedPosition {
                feed: r.string16("feed")?,
                position: r.string16("position")?,
            });
        }
        r.finish("checkpoint")?;
        Ok(Checkpoint { seq, feeds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_names() {
        let c = Checkpoint {
            seq: 42,
            feeds: vec![FeedPosition {
                feed: "s3://events/feed/".into(),
                position: "2026/11/27/10/stream-1".into(),
            }],
        };
        let body = c.encode().unwrap();
        assert_eq!(Checkpoint::decode(&body).unwrap(), c);
        assert_eq!(Checkpoint::name(42), "checkpoints/000000000000002a");
        assert_eq!(Checkpoint::seq_from_name(&Checkpoint::name(42)), Some(42));
        assert_eq!(
            c.position("s3://events/feed/"),
            Some("2026/11/27/10/stream-1")
        );
        for cut in 0..body.len() {
            assert!(Checkpoint::decode(&body[..cut]).is_err());
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(Checkpoint::decode(&longer).is_err());
    }
}
