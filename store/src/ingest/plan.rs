//! The planner: splits the source's key space into partitions (key
//! ranges) that a pass works in parallel, each with its own lane in the
//! scheduler.
//!
//! Boundaries come from the source's prefixes one and two `/` levels down
//! (one delimited listing each) or, where it has none, start-after probes
//! that bisect the widest ranges (one one-key listing each); or the caller
//! gives them (keys sampled from an S3 Inventory report). A source that can
//! do none of these (a directory) is one partition. A range's lower bound
//! is exclusive, so a boundary need not be a key: a prefix `p/` becomes
//! the boundary `p`, and keys under `p/` start the next range.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::source::{KeyRange, Source};

/// Most partitions a plan makes.
pub const MAX_PARTITIONS: usize = 4096;

/// Splits the key space into about `target` ranges.
pub async fn plan(source: &dyn Source, target: usize) -> Result<Vec<KeyRange>> {
    let target = target.clamp(1, MAX_PARTITIONS);
    let mut bounds: BTreeSet<String> = BTreeSet::new();
    if target > 1 {
        // Prefixes match how S3 partitions a bucket: where there are
        // any, partitions follow them and are not cut finer.
        if let Some(top) = source.common_prefixes("").await? {
            add_prefix_bounds(&mut bounds, &top);
            // One level deeper where the top is too coarse.
            if bounds.len() + 1 < target {
                for p in top.iter().take(target) {
                    if let Some(sub) = source.common_prefixes(p).await? {
                        add_prefix_bounds(&mut bounds, &sub);
                    }
                    if bounds.len() + 1 >= target {
                        break;
                    }
                }
            }
        }
        if bounds.is_empty() {
            bisect(source, &mut bounds, target).await?;
        }
    }
    Ok(ranges_from(thin(bounds, target)))
}

/// Keeps about `target - 1` boundaries, evenly spaced among those found.
pub fn thin(bounds: BTreeSet<String>, target: usize) -> Vec<String> {
    let all: Vec<String> = bounds.into_iter().filter(|b| !b.is_empty()).collect();
    let want = target.saturating_sub(1);
    if all.len() <= want {
        return all;
    }
    (1..=want)
        .filter_map(|i| all.get(i * all.len() / (want + 1)).cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Consecutive ranges cut at `bounds` (sorted, unique, non-empty).
pub fn ranges_from(bounds: Vec<String>) -> Vec<KeyRange> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut after = String::new();
    for b in bounds {
        out.push(KeyRange {
            after: std::mem::replace(&mut after, b.clone()),
            until: Some(b),
        });
    }
    out.push(KeyRange { after, until: None });
    out
}

fn add_prefix_bounds(bounds: &mut BTreeSet<String>, prefixes: &[String]) {
    for p in prefixes {
        // Keys under `p` sort after `p` without its last `/`.
        let b = p.strip_suffix('/').unwrap_or(p);
        if !b.is_empty() {
            bounds.insert(b.to_string());
        }
    }
}

/// Bisects the key space by probing the first key after a midpoint,
/// until there are `target` ranges or probes stop finding new boundaries
/// (at most `2 × target` probes). A probe that finds no key in the upper
/// half of an interval narrows the search to the lower half.
async fn bisect(source: &dyn Source, bounds: &mut BTreeSet<String>, target: usize) -> Result<()> {
    let ranges = ranges_from(bounds.iter().cloned().collect());
    let mut intervals: Vec<(String, Option<String>)> =
        ranges.into_iter().map(|r| (r.after, r.until)).collect();
    let mut probes = 0;
    while bounds.len() + 1 < target && probes < 2 * target {
        // The widest interval first.
        let Some(i) =
            (0..intervals.len()).max_by_key(|&i| width(&intervals[i].0, intervals[i].1.as_deref()))
        else {
            break;
        };
        let (lo, hi) = intervals.swap_remove(i);
        let Some(mid) = midpoint(&lo, hi.as_deref()) else {
            continue;
        };
        probes += 1;
        match source.first_key_after(&mid).await? {
            Some(k) if hi.as_deref().is_none_or(|h| k.as_str() < h) => {
                bounds.insert(k.clone());
                intervals.push((lo, Some(k.clone())));
                intervals.push((k, hi));
            }
            _ => intervals.push((lo, Some(mid))),
        }
    }
    Ok(())
}

/// Printable ASCII: the alphabet midpoints are drawn from.
const LOW: u8 = 0x20;
const HIGH: u8 = 0x7e;
const DIGITS: usize = 6;

/// The range's first `DIGITS` bytes after its common prefix, as a number
/// in base 95 (bytes outside printable ASCII clamped).
fn digits(s: &[u8], from: usize) -> u64 {
    let mut v = 0u64;
    for i in 0..DIGITS {
        let b = s.get(from + i).copied().unwrap_or(LOW - 1);
        let d = if b < LOW {
            0
        } else {
            u64::from(b.min(HIGH) - LOW) + 1
        };
        v = v * 96 + d;
    }
    v
}

fn common_len(a: &str, b: &str) -> usize {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    (0..=n).rev().find(|&i| a.is_char_boundary(i)).unwrap_or(0)
}

fn width(after: &str, until: Option<&str>) -> u64 {
    let c = until.map_or(0, |u| common_len(after, u));
    let hi = until.map_or(96u64.pow(DIGITS as u32), |u| digits(u.as_bytes(), c));
    // Longer shared prefixes mean narrower ranges.
    hi.saturating_sub(digits(after.as_bytes(), c)) >> (c.min(40))
}

/// A string between `after` and `until` (exclusive), if one can be drawn
/// from printable ASCII after their common prefix.
pub fn midpoint(after: &str, until: Option<&str>) -> Option<String> {
    let c = until.map_or(0, |u| common_len(after, u));
    let lo = digits(after.as_bytes(), c);
    let hi = until.map_or(96u64.pow(DIGITS as u32), |u| digits(u.as_bytes(), c));
    if hi <= lo + 1 {
        return None;
    }
    let mut m = lo + (hi - lo) / 2;
    let mut tail = Vec::with_capacity(DIGITS);
    for _ in 0..DIGITS {
        tail.push(u8::try_from(m % 96).unwrap_or(0));
        m /= 96;
    }
    let mut s = after.get(..c)?.to_string();
    for d in tail.into_iter().rev() {
        if d == 0 {
            break;
        }
        s.push(char::from(LOW + d - 1));
    }
    let fits = s.as_str() > after && until.is_none_or(|u| s.as_str() < u);
    fits.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{ListPage, SourceObject};

    #[test]
    fn ranges_cover_the_key_space_without_overlap() {
        let r = ranges_from(vec!["b".into(), "m".into()]);
        assert_eq!(r.len(), 3);
        for key in ["a", "b", "b/1", "c", "m", "m0", "zzz"] {
            assert_eq!(r.iter().filter(|x| x.contains(key)).count(), 1, "{key}");
        }
        assert!(r[0].contains("b") && r[1].contains("b/1") && r[2].contains("m0"));
    }

    #[test]
    fn midpoints_fall_strictly_inside() {
        for (a, b) in [
            ("", Some("z")),
            ("a", Some("b")),
            ("tenant/1", Some("tenant/9")),
            ("k", None),
            ("", None),
            ("a", Some("é")),
        ] {
            let m = midpoint(a, b).unwrap_or_else(|| panic!("{a} {b:?}"));
            assert!(
                m.as_str() > a && b.is_none_or(|b| m.as_str() < b),
                "{a} {m} {b:?}"
            );
        }
        assert_eq!(midpoint("a", Some("a ")), None);
        // Past printable ASCII, midpoints cannot be drawn.
        assert_eq!(midpoint("é", Some("ü")), None);
    }

    #[test]
    fn thinning_keeps_evenly_spaced_bounds() {
        let bounds: BTreeSet<String> = (0..100).map(|i| format!("k{i:03}")).collect();
        let t = thin(bounds, 5);
        assert_eq!(t.len(), 4);
        assert_eq!(t, ["k020", "k040", "k060", "k080"]);
    }

    /// A source of sorted keys that answers delimiter listings and probes.
    struct Keys(Vec<String>, bool);

    #[async_trait::async_trait]
    impl Source for Keys {
        fn describe(&self) -> String {
            "keys".into()
        }
        async fn list(&self) -> Result<(Vec<SourceObject>, u64)> {
            let objects = self
                .0
                .iter()
                .map(|k| SourceObject {
                    key: k.clone(),
                    ..Default::default()
                })
                .collect();
            Ok((objects, 0))
        }
        async fn list_page(&self, range: &KeyRange, after: Option<&str>) -> Result<ListPage> {
            let _ = (range, after);
            unreachable!("the planner does not list pages")
        }
        async fn common_prefixes(&self, under: &str) -> Result<Option<Vec<String>>> {
            if !self.1 {
                return Ok(None);
            }
            let set: BTreeSet<String> = self
                .0
                .iter()
                .filter_map(|k| k.strip_prefix(under))
                .filter_map(|rest| rest.find('/').map(|i| format!("{under}{}", &rest[..=i])))
                .collect();
            Ok(Some(set.into_iter().collect()))
        }
        async fn first_key_after(&self, after: &str) -> Result<Option<String>> {
            Ok(self.0.iter().find(|k| k.as_str() > after).cloned())
        }
        fn open(&self, _: &SourceObject) -> Result<(Box<dyn std::io::Read + Send>, SourceObject)> {
            unreachable!()
        }
        fn restat(&self, _: &SourceObject) -> Result<Option<SourceObject>> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn plans_follow_prefixes_then_probes() {
        let keys: Vec<String> = (0..8)
            .flat_map(|p| (0..50).map(move |i| format!("p{p}/obj{i:04}")))
            .collect();
        let ranges = plan(&Keys(keys.clone(), true), 8).await.unwrap();
        assert_eq!(ranges.len(), 8);
        // Each prefix is one partition.
        for (i, r) in ranges.iter().enumerate() {
            let n = keys.iter().filter(|k| r.contains(k)).count();
            assert_eq!(n, 50, "range {i} {r:?}");
        }
        // Without delimiters, probes bisect the key space.
        let flat: Vec<String> = (0..1000)
            .map(|i| format!("{:08x}", i * 4_000_000u64))
            .collect();
        let ranges = plan(&Keys(flat.clone(), false), 4).await.unwrap();
        assert_eq!(ranges.len(), 4, "{ranges:?}");
        let counts: Vec<usize> = ranges
            .iter()
            .map(|r| flat.iter().filter(|k| r.contains(k)).count())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), flat.len());
        assert!(counts.iter().all(|&n| n < 750), "{counts:?}");
        assert_eq!(
            plan(&Keys(flat, false), 1).await.unwrap(),
            vec![KeyRange::all()]
        );
    }
}
