//! Checking a vault: structure always, data on request.
//!
//! Structure: every point decodes and authenticates, the chain of points
//! is unbroken (sequence numbers contiguous, each `prev` the hash of the
//! one before, times monotonic), every change-feed checkpoint
//! authenticates, every run page of every point decodes and
//! hashes to its name, every index segment decodes, every blob an entry
//! references is in the index, every indexed pack exists with a trailer
//! that authenticates and agrees with the index. Data (`read_data`): every
//! pack (or a [`Subset`] of them) is downloaded, hashed against its name,
//! and every blob decrypted and re-hashed. Retention (`retention`): every
//! object is under Object Lock in the config's mode. The report names each damaged object and the object keys
//! (at which points) it affects.

use std::collections::{BTreeSet, HashMap, HashSet};

use futures::StreamExt;
use serde::Serialize;

use crate::backend::get_all;
use crate::error::{Error, Result};
use crate::id::{BlobId, ObjectId};
use crate::index::IndexEntry;
use crate::manifest::point::Point;
use crate::manifest::run::{Page, RunDescriptor};
use crate::pack::PackView;
use crate::repo::{pack_name, page_name, segment_name, Repository};

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Download packs and check every blob in them (which packs: `subset`).
    pub read_data: bool,
    /// With `read_data`, only this share of the packs (the others get the
    /// trailer check), so a large vault is read fully over several runs.
    pub subset: Option<Subset>,
    /// Check that every vault object is locked as the config requires.
    pub retention: bool,
}

/// A share of the packs to read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Part `n` of `m` (1-based): packs whose id, as a number, is `n - 1`
    /// modulo `m`. Runs with 1/m … m/m together read every pack once.
    Slice {
        /// Which part.
        n: u64,
        /// Of how many.
        m: u64,
    },
    /// A random sample of about this percentage of the packs.
    Percent(f64),
}

impl Subset {
    /// Parses `N/M` or `P%`.
    pub fn parse(s: &str) -> std::result::Result<Subset, String> {
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("bad percentage {s:?}"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("percentage {s:?} must be in (0, 100]"));
            }
            return Ok(Subset::Percent(p));
        }
        let (n, m) = s
            .split_once('/')
            .ok_or_else(|| format!("subset {s:?}: use N/M (e.g. 3/7) or P% (e.g. 5%)"))?;
        let (n, m): (u64, u64) = (
            n.trim().parse().map_err(|_| format!("bad N in {s:?}"))?,
            m.trim().parse().map_err(|_| format!("bad M in {s:?}"))?,
        );
        if m == 0 || n == 0 || n > m {
            return Err(format!("subset {s:?}: need 1 <= N <= M"));
        }
        Ok(Subset::Slice { n, m })
    }

    /// True when `pack` is in this share.
    pub fn contains(&self, pack: &ObjectId) -> bool {
        match *self {
            Subset::Slice { n, m } => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&pack.as_bytes()[..8]);
                u64::from_le_bytes(b) % m == n - 1
            }
            Subset::Percent(p) => rand::random::<f64>() * 100.0 < p,
        }
    }
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing, nothing lost (e.g. packs an interrupted ingest left).
    Notice,
    /// Damage: some data or history cannot be restored.
    Damage,
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// How bad.
    pub severity: Severity,
    /// The vault object concerned.
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// The outcome of a verify.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Points checked.
    pub points: u64,
    /// Distinct run pages checked.
    pub pages: u64,
    /// Index segments checked.
    pub segments: u64,
    /// Packs checked.
    pub packs: u64,
    /// Packs downloaded whole.
    pub packs_read: u64,
    /// Blobs whose data was read and re-hashed.
    pub blobs_read: u64,
    /// Objects whose Object Lock retention was checked.
    pub retention_checked: u64,
    /// Findings.
    pub problems: Vec<Problem>,
    /// Object keys whose content is damaged, as `key@seq`.
    pub affected_keys: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.problems.iter().all(|p| p.severity < Severity::Damage)
    }

    fn notice(&mut self, object: impl Into<String>, message: impl std::fmt::Display) {
        self.problems.push(Problem {
            severity: Severity::Notice,
            object: object.into(),
            message: message.to_string(),
        });
    }

    fn damage(&mut self, object: impl Into<String>, message: impl std::fmt::Display) {
        self.problems.push(Problem {
            severity: Severity::Damage,
            object: object.into(),
            message: message.to_string(),
        });
    }
}

/// Every change-feed checkpoint authenticates, names its own point, and
/// follows a point that exists. A damaged checkpoint loses no data (the
/// next cycle replays the feed from an older one), so it is a notice.
async fn check_checkpoints(
    repo: &Repository,
    points: u64,
    report: &mut VerifyReport,
) -> Result<()> {
    for l in repo.backend().list("checkpoints/").await? {
        let Some(seq) = crate::manifest::checkpoint::Checkpoint::seq_from_name(&l.name) else {
            report.notice(&l.name, "not a checkpoint name");
            continue;
        };
        match repo.load_checkpoint(seq).await {
            Ok(Some(_)) if seq < points => {}
            Ok(Some(_)) => report.notice(
                &l.name,
                format!("follows point {seq}, which does not exist"),
            ),
            Ok(None) => {}
            Err(e) => report.notice(
                &l.name,
                format!("{e}; continuous ingest will re-read its feed from an earlier checkpoint"),
            ),
        }
    }
    Ok(())
}

/// Every vault object is locked in the config's mode; an expired lock is
/// a notice (the object can now be deleted by anyone with the right).
async fn check_retention(repo: &Repository, report: &mut VerifyReport) -> Result<()> {
    let config = repo.config();
    if config.lock_mode == crate::config::LockMode::None {
        report.notice(
            "config",
            "the vault has no Object Lock policy; retention not checked",
        );
        return Ok(());
    }
    let now_s = crate::repo::now_ns() / 1_000_000_000;
    let mut names = vec!["config".to_string()];
    for prefix in [
        "keys/",
        "index/",
        "runs/",
        "points/",
        "checkpoints/",
        "passes/",
        "packs/",
    ] {
        names.extend(
            repo.backend()
                .list(prefix)
                .await?
                .into_iter()
                .map(|l| l.name),
        );
    }
    for name in names {
        report.retention_checked += 1;
        match repo.backend().retention(&name).await {
            Ok(None) => report.damage(&name, "not under Object Lock"),
            Ok(Some((mode, _))) if mode != config.lock_mode => report.damage(
                &name,
                format!(
                    "locked in {mode:?} mode; the policy is {:?}",
                    config.lock_mode
                ),
            ),
            Ok(Some((_, until))) if until < now_s => report.notice(
                &name,
                format!(
                    "its lock expired {} days ago; it can be deleted",
                    (now_s - until) / 86_400
                ),
            ),
            Ok(Some(_)) => {}
            Err(e) => report.damage(&name, format!("retention unreadable: {e}")),
        }
    }
    Ok(())
}

/// Checks the vault.
pub async fn verify(repo: &Repository, opts: &VerifyOptions) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let points = check_points(repo, &mut report).await?;
    check_checkpoints(repo, points.len() as u64, &mut report).await?;
    if opts.retention {
        check_retention(repo, &mut report).await?;
    }

    // Index: every segment, then the local cache from the vault.
    let mut index: HashMap<BlobId, IndexEntry> = HashMap::new();
    let mut superseded: HashSet<ObjectId> = HashSet::new();
    let mut damaged_segments = Vec::new();
    for l in repo.backend().list("index/").await? {
        let Some(id) = l
            .name
            .strip_prefix("index/")
            .and_then(|s| s.parse::<ObjectId>().ok())
        else {
            report.damage(l.name.clone(), "unexpected object name under index/");
            continue;
        };
        report.segments += 1;
        match repo.read_segment(&id).await {
            Ok(seg) => {
                superseded.extend(seg.supersedes);
                for e in seg.entries {
                    index.entry(e.blob).or_insert(e);
                }
            }
            Err(e) => damaged_segments.push((id, e)),
        }
    }
    // A damaged segment that a later one restates (a merge, or `repair
    // index`) loses nothing.
    for (id, e) in damaged_segments {
        if superseded.contains(&id) {
            report.notice(
                segment_name(&id),
                format!("{e} (superseded: a later segment restates its entries)"),
            );
        } else {
            report.damage(segment_name(&id), e);
        }
    }

    // Runs: walk every page of every run any point lists.
    let mut referenced: HashSet<BlobId> = HashSet::new();
    let mut runs: Vec<RunDescriptor> = Vec::new();
    let mut seen_roots = HashSet::new();
    for p in &points {
        for r in &p.runs {
            if seen_roots.insert(r.root) {
                runs.push(r.clone());
            }
        }
    }
    let mut seen_pages = HashSet::new();
    for run in &runs {
        walk_run(repo, run, &mut seen_pages, &mut report, &mut |e| {
            if let Some(o) = &e.object {
                referenced.extend(o.chunks.iter().copied());
            }
        })
        .await;
    }
    let mut damaged_blobs: HashSet<BlobId> = referenced
        .iter()
        .filter(|b| !index.contains_key(b))
        .copied()
        .collect();
    if !damaged_blobs.is_empty() {
        report.damage(
            "index",
            format!(
                "{} referenced blobs are in no index segment",
                damaged_blobs.len()
            ),
        );
    }

    // Packs.
    let mut by_pack: HashMap<ObjectId, Vec<IndexEntry>> = HashMap::new();
    for e in index.values() {
        by_pack.entry(e.pack).or_default().push(*e);
    }
    let listed: HashSet<ObjectId> = repo.list_packs().await?.into_iter().collect();
    for pack in listed.iter().filter(|p| !by_pack.contains_key(p)) {
        report.notice(
            pack_name(pack),
            "pack not in any index segment (left by an interrupted ingest; the next ingest indexes it)",
        );
    }
    let mut packs: Vec<_> = by_pack.into_iter().collect();
    packs.sort_by_key(|(p, _)| *p);
    // Packs are read and checked a few at a time (reads overlap checks,
    // checks use every core); their outcomes are reported in pack order.
    let at_once = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let listed = &listed;
    let mut checks = futures::stream::iter(packs.into_iter().map(|(pack, entries)| {
        let read = opts.read_data && opts.subset.is_none_or(|s| s.contains(&pack));
        async move {
            let outcome = if !listed.contains(&pack) {
                PackOutcome::Missing
            } else if read {
                PackOutcome::Read(read_pack_data(repo, pack).await)
            } else {
                PackOutcome::Trailer(repo.read_trailer(&pack).await)
            };
            (pack, entries, outcome)
        }
    }))
    .buffered(at_once);
    while let Some((pack, entries, outcome)) = checks.next().await {
        report.packs += 1;
        let name = pack_name(&pack);
        let bad = |report: &mut VerifyReport, damaged: &mut HashSet<BlobId>, msg: String| {
            report.damage(name.clone(), msg);
            damaged.extend(entries.iter().map(|e| e.blob));
        };
        if matches!(outcome, PackOutcome::Read(_)) {
            report.packs_read += 1;
        }
        match outcome {
            PackOutcome::Missing => bad(&mut report, &mut damaged_blobs, "pack is missing".into()),
            PackOutcome::Read(Err(e)) => bad(&mut report, &mut damaged_blobs, e.to_string()),
            PackOutcome::Read(Ok((checked, pack_report))) => {
                report.problems.extend(pack_report.problems);
                match checked {
                    Err(e) => bad(&mut report, &mut damaged_blobs, e.to_string()),
                    Ok((trailer, blob_errors)) => {
                        report.blobs_read += trailer.len() as u64;
                        compare_trailer(&mut report, &name, &trailer, &entries);
                        for (blob, err) in blob_errors {
                            report.damage(name.clone(), format!("blob {}: {err}", blob.short()));
                            damaged_blobs.insert(blob);
                        }
                    }
                }
            }
            PackOutcome::Trailer(Ok(trailer)) => {
                compare_trailer(&mut report, &name, &trailer, &entries)
            }
            PackOutcome::Trailer(Err(e)) => bad(&mut report, &mut damaged_blobs, e.to_string()),
        }
    }
    drop(checks);

    // Which keys the damage reaches.
    if !damaged_blobs.is_empty() {
        let mut affected = BTreeSet::new();
        let mut seen = HashSet::new();
        let mut scratch = VerifyReport::default();
        for run in &runs {
            walk_run(repo, run, &mut seen, &mut scratch, &mut |e| {
                if e.object
                    .as_ref()
                    .is_some_and(|o| o.chunks.iter().any(|c| damaged_blobs.contains(c)))
                {
                    affected.insert(format!("{}@{}", e.key, e.seq));
                }
            })
            .await;
        }
        report.affected_keys = affected.into_iter().collect();
    }
    Ok(report)
}

/// A pack's trailer as index entries, and the blobs that failed to read.
type PackCheck = (Vec<IndexEntry>, Vec<(BlobId, Error)>);

/// What looking at one indexed pack found.
enum PackOutcome {
    /// Not in the vault's listing.
    Missing,
    /// Read whole and checked (with the problems the check noted), or the
    /// read failed.
    Read(Result<(Result<PackCheck>, VerifyReport)>),
    /// Only its trailer read.
    Trailer(Result<Vec<IndexEntry>>),
}

/// Reads pack `pack` whole and checks every blob in it (on the blocking
/// pool).
async fn read_pack_data(
    repo: &Repository,
    pack: ObjectId,
) -> Result<(Result<PackCheck>, VerifyReport)> {
    let bytes = get_all(&**repo.backend(), &pack_name(&pack)).await?;
    let keys = repo.keys().clone();
    crate::blocking::run("verify", move || {
        let mut r = VerifyReport::default();
        Ok((check_pack_data(&keys, &bytes, pack, &mut r), r))
    })
    .await
}

/// Checks a whole pack: its name, its trailer, every blob. A pack whose
/// bytes do not hash to its name is damage, but its blobs are still
/// checked one by one, so the report names exactly the blobs lost.
fn check_pack_data(
    keys: &crate::crypto::Keys,
    bytes: &[u8],
    pack: ObjectId,
    report: &mut VerifyReport,
) -> Result<PackCheck> {
    let actual = ObjectId::of(bytes);
    if actual != pack {
        report.damage(
            pack_name(&pack),
            format!("pack bytes hash to {}, not to its name", actual.short()),
        );
    }
    let view = PackView::open(keys, bytes, None)?;
    let mut errors = Vec::new();
    for e in &view.entries {
        if let Err(err) = view.blob(keys, e) {
            errors.push((e.id, err));
        }
    }
    Ok((
        view.entries
            .iter()
            .map(|e| IndexEntry::from_pack(pack, e))
            .collect(),
        errors,
    ))
}

fn compare_trailer(
    report: &mut VerifyReport,
    name: &str,
    trailer: &[IndexEntry],
    indexed: &[IndexEntry],
) {
    let in_pack: HashMap<BlobId, &IndexEntry> = trailer.iter().map(|e| (e.blob, e)).collect();
    for e in indexed {
        if in_pack.get(&e.blob).is_none_or(|t| *t != e) {
            report.damage(
                name,
                format!(
                    "index entry for blob {} disagrees with the pack trailer",
                    e.blob.short()
                ),
            );
        }
    }
}

async fn check_points(repo: &Repository, report: &mut VerifyReport) -> Result<Vec<Point>> {
    let seqs = repo.list_points().await?;
    let mut points = Vec::new();
    let mut prev: Option<(u64, Option<(Point, ObjectId)>)> = None;
    for seq in seqs {
        report.points += 1;
        let expected = prev.as_ref().map_or(0, |(s, _)| s + 1);
        if seq != expected {
            report.damage(
                Point::name(expected),
                format!("points {expected}..{seq} are missing (removed or hidden)"),
            );
        }
        let loaded = match repo.load_point(seq).await {
            Ok(p) => Some(p),
            Err(e) => {
                report.damage(
                    Point::name(seq),
                    format!("{e} (this point in time cannot be restored)"),
                );
                None
            }
        };
        if let (Some((p, _)), Some((pseq, Some((pp, phash))))) = (&loaded, &prev) {
            if *pseq + 1 == seq && p.prev != *phash {
                report.damage(
                    Point::name(seq),
                    "does not chain to the previous point (replayed or reordered)",
                );
            }
            if p.time_ns < pp.time_ns {
                report.damage(Point::name(seq), "time goes backwards");
            }
        }
        if let Some((p, _)) = &loaded {
            if p.seq == 0 && p.prev != ObjectId::default() {
                report.damage(Point::name(seq), "first point names a predecessor");
            }
            points.push(p.clone());
        }
        prev = Some((seq, loaded));
    }
    Ok(points)
}

/// Visits every entry of a run; damaged pages are reported with the key
/// range they hold, and their subtree is skipped.
async fn walk_run(
    repo: &Repository,
    run: &RunDescriptor,
    seen: &mut HashSet<ObjectId>,
    report: &mut VerifyReport,
    visit: &mut (dyn FnMut(&crate::manifest::Entry) + Send),
) {
    let mut stack: Vec<(ObjectId, String)> = vec![(run.root, "start of run".into())];
    while let Some((id, from)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        report.pages += 1;
        match repo.load_page(&id).await {
            Ok(page) => match &*page {
                Page::Leaf { entries } => entries.iter().for_each(&mut *visit),
                Page::Inner { children, .. } => {
                    stack.extend(
                        children
                            .iter()
                            .rev()
                            .map(|c| (c.page, format!("key {:?}", c.first_key))),
                    );
                }
            },
            Err(e) => report.damage(
                page_name(&id),
                format!("{e}; entries from {from} onward in this page are unreadable"),
            ),
        }
    }
}

#[cfg(test)]
mod subset_tests {
    use super::*;

    #[test]
    fn slices_partition_the_packs() {
        let ids: Vec<ObjectId> = (0..200u32)
            .map(|i| ObjectId::of(&i.to_le_bytes()))
            .collect();
        for m in [1, 3, 7] {
            for id in &ids {
                let owners = (1..=m)
                    .filter(|&n| Subset::Slice { n, m }.contains(id))
                    .count();
                assert_eq!(owners, 1);
            }
        }
        assert!(ids.iter().all(|id| Subset::Percent(100.0).contains(id)));
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(Subset::parse("2/5"), Ok(Subset::Slice { n: 2, m: 5 }));
        assert_eq!(Subset::parse("12.5%"), Ok(Subset::Percent(12.5)));
        for bad in ["0/3", "4/3", "1/0", "x", "0%", "101%", "a/b"] {
            assert!(Subset::parse(bad).is_err(), "{bad}");
        }
    }
}
