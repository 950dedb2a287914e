//! The TIME arguments of the command line: `latest`, `#SEQ`, or an RFC 3339
//! time (the newest point at or before it).
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::time::UNIX_EPOCH;

use crate::error::{Error, Result};

/// Which point a TIME argument names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointSelector {
    /// The newest point.
    Latest,
    /// The point with this sequence number.
    Seq(u64),
    /// The newest point at or before this time (ns since the epoch).
    AtOrBefore(i64),
}

impl PointSelector {
    /// Parses `latest`, `#SEQ` or an RFC 3339 time.
    pub fn parse(s: &str) -> Result<PointSelector> {
        if s == "latest" {
            return Ok(PointSelector::Latest);
        }
        if let Some(seq) = s.strip_prefix('#') {
            return seq
                .parse()
                .map(PointSelector::Seq)
                .map_err(|_| Error::config(format!("invalid point {s:?} (use #SEQ, e.g. #12)")));
        }
        parse_time(s).map(PointSelector::AtOrBefore)
    }
}

/// Parses an RFC 3339 time (`2026-11-27T10:15:00Z`, fractions and offsets
/// allowed) into ns since the epoch.
pub fn parse_time(s: &str) -> Result<i64> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        Error::config(format!(
            "invalid time {s:?}: {e} (use RFC 3339, e.g. 2026-11-27T10:15:00Z)"
        ))
    })?;
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::config(format!("time {s:?} is before 1970")))?;
    i64::try_from(d.as_nanos()).map_err(|_| Error::config(format!("time {s:?} is too far ahead")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(
            PointSelector::parse("latest").unwrap(),
            PointSelector::Latest
        );
        assert_eq!(PointSelector::parse("#12").unwrap(), PointSelector::Seq(12));
        assert_eq!(
            PointSelector::parse("2026-11-27T10:15:00Z").unwrap(),
            PointSelector::AtOrBefore(1_795_774_500_000_000_000)
        );
        for bad in [
            "#",
            "#-1",
            "#x",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "",
        ] {
            assert!(PointSelector::parse(bad).is_err(), "{bad}");
        }
    }
}
