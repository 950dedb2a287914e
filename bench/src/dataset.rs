//! A deterministic bucket-like dataset, written as a directory tree, and
//! the mutation step that changes 1% of it.
//!
//! Objects are described first (kind, size, seed; a duplicate or a
//! near-duplicate names the object it copies), then written, so the same
//! preset gives the same bytes on every machine: many small JSON/text
//! objects (1–16 KiB), medium documents (64 KiB–2 MiB, partly
//! compressible), incompressible blobs (256 KiB–8 MiB), about 7% exact
//! duplicates under other keys, and near-duplicates of large objects (an
//! edit in the middle, an append), under keys like
//! `tenant/<id>/attachments/<id>/<name>`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::synth::Rng;

/// A dataset's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// ~5,000 objects, ~80 MB.
    Small,
    /// ~200,000 objects, ~1.5 GB, nearly all small.
    Medium,
    /// ~1,600 objects, ~3 GB, nearly all large.
    Large,
}

/// How many objects of each kind a preset holds.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    small: usize,
    medium: usize,
    blobs: usize,
    /// Near-duplicates of blobs.
    near: usize,
    /// Exact duplicates of any earlier object, in percent of the rest.
    dup_pct: usize,
    seed: u64,
}

impl Preset {
    /// The preset's mix of objects.
    pub fn mix(self) -> Mix {
        match self {
            Preset::Small => Mix {
                small: 4_560,
                medium: 60,
                blobs: 18,
                near: 6,
                dup_pct: 7,
                seed: 1,
            },
            Preset::Medium => Mix {
                small: 185_300,
                medium: 300,
                blobs: 90,
                near: 30,
                dup_pct: 7,
                seed: 2,
            },
            Preset::Large => Mix {
                small: 200,
                medium: 300,
                blobs: 900,
                near: 120,
                dup_pct: 7,
                seed: 3,
            },
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Small => "small",
            Preset::Medium => "medium",
            Preset::Large => "large",
        }
    }
}

/// What an object's bytes are.
#[derive(Clone, Copy, Debug)]
enum Body {
    /// JSON records (compressible).
    Json { size: usize, seed: u64 },
    /// Text with random runs (about half compressible).
    Document { size: usize, seed: u64 },
    /// Random bytes.
    Random { size: usize, seed: u64 },
    /// Object `of` with 4 KiB in the middle rewritten.
    Edited { of: usize, seed: u64 },
    /// Object `of` with 64 KiB appended.
    Appended { of: usize, seed: u64 },
    /// The same bytes as object `of`.
    Copy { of: usize },
}

struct Object {
    key: String,
    body: Body,
}

/// Size drawn log-uniformly in `lo..hi`: many small, few large.
fn log_uniform(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    #[allow(clippy::cast_precision_loss)]
    let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
    #[allow(clippy::cast_precision_loss)]
    let u = rng.below(1 << 30) as f64 / f64::from(1u32 << 30);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = (l + u * (h - l)).exp() as usize;
    n.clamp(lo, hi)
}

const WORDS: &[&str] = &[
    "tenant",
    "invoice",
    "order",
    "status",
    "shipped",
    "pending",
    "customer",
    "amount",
    "currency",
    "EUR",
    "USD",
    "region",
    "eu-west-1",
    "attachment",
    "created",
    "updated",
    "note",
    "the",
    "a",
    "of",
    "and",
    "to",
    "report",
    "quarter",
    "summary",
    "total",
    "item",
    "price",
    "discount",
];

fn word(rng: &mut Rng) -> &'static str {
    #[allow(clippy::cast_possible_truncation)]
    WORDS[rng.below(WORDS.len() as u64) as usize]
}

fn json(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut s = String::with_capacity(size + 256);
    while s.len() < size {
        let _ = writeln!(
            s,
            "{{\"id\":{},\"tenant\":{},\"event\":\"{}\",\"ts\":{},\"amount\":{}.{:02},\"note\":\"{} {} {}\"}}",
            rng.below(1 << 40),
            rng.below(5000),
            word(&mut rng),
            1_700_000_000 + rng.below(100_000_000),
            rng.below(100_000),
            rng.below(100),
            word(&mut rng),
            word(&mut rng),
            word(&mut rng),
        );
    }
    s.truncate(size);
    s.into_bytes()
}

fn random(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(size);
    v
}

fn document(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = Vec::with_capacity(size + 4096);
    while v.len() < size {
        // 2 KiB of prose, then 2 KiB of base64-like noise.
        let end = v.len() + 2048;
        while v.len() < end {
            v.extend_from_slice(word(&mut rng).as_bytes());
            v.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
        }
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for _ in 0..2048 {
            #[allow(clippy::cast_possible_truncation)]
            v.push(B64[rng.below(64) as usize]);
        }
    }
    v.truncate(size);
    v
}

/// A planned dataset: keys and how to make their bytes.
pub struct Dataset {
    objects: Vec<Object>,
}

impl Dataset {
    /// Plans the objects of `preset`.
    pub fn plan(preset: Preset) -> Self {
        let m = preset.mix();
        let mut rng = Rng(0x5eed_0000 ^ m.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let unique = m.small + m.medium + m.blobs + m.near;
        let tenants = (unique / 200).max(4) as u64;
        let mut objects: Vec<Object> = Vec::with_capacity(unique * (100 + m.dup_pct) / 100);
        let mut blob_ids = Vec::new();
        let key = |rng: &mut Rng, id: usize, name: &str| {
            format!(
                "tenant/{:04}/attachments/{id:07}/{name}",
                rng.below(tenants)
            )
        };
        // Kinds interleaved so every tenant gets some of each.
        let mut kinds: Vec<u8> = std::iter::repeat_n(0u8, m.small)
            .chain(std::iter::repeat_n(1, m.medium))
            .chain(std::iter::repeat_n(2, m.blobs))
            .collect();
        for i in (1..kinds.len()).rev() {
            #[allow(clippy::cast_possible_truncation)]
            let j = rng.below(i as u64 + 1) as usize;
            kinds.swap(i, j);
        }
        for kind in kinds {
            let id = objects.len();
            let seed = rng.next();
            let (name, body) = match kind {
                0 => {
                    let size = log_uniform(&mut rng, 1 << 10, 16 << 10);
                    ("event.json", Body::Json { size, seed })
                }
                1 => {
                    let size = log_uniform(&mut rng, 64 << 10, 2 << 20);
                    ("report.txt", Body::Document { size, seed })
                }
                _ => {
                    blob_ids.push(id);
                    let size = log_uniform(&mut rng, 256 << 10, 8 << 20);
                    ("scan.bin", Body::Random { size, seed })
                }
            };
            let key = key(&mut rng, id, name);
            objects.push(Object { key, body });
        }
        for n in 0..m.near {
            let Some(&of) = blob_ids.get(n % blob_ids.len().max(1)) else {
                break;
            };
            let id = objects.len();
            let seed = rng.next();
            let body = if n % 2 == 0 {
                Body::Edited { of, seed }
            } else {
                Body::Appended { of, seed }
            };
            let key = key(&mut rng, id, "scan-v2.bin");
            objects.push(Object { key, body });
        }
        let dups = objects.len() * m.dup_pct / 100;
        for _ in 0..dups {
            #[allow(clippy::cast_possible_truncation)]
            let of = rng.below(objects.len() as u64) as usize;
            let id = objects.len();
            let key = key(&mut rng, id, "copy");
            objects.push(Object {
                key,
                body: Body::Copy { of },
            });
        }
        Dataset { objects }
    }

    /// Objects planned.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    fn bytes_of(&self, i: usize) -> Vec<u8> {
        match self.objects[i].body {
            Body::Json { size, seed } => json(size, seed),
            Body::Document { size, seed } => document(size, seed),
            Body::Random { size, seed } => random(size, seed),
            Body::Edited { of, seed } => {
                let mut v = self.bytes_of(of);
                let at = v.len() / 2;
                let end = (at + 4096).min(v.len());
                v[at..end].copy_from_slice(&random(end - at, seed));
                v
            }
            Body::Appended { of, seed } => {
                let mut v = self.bytes_of(of);
                v.extend_from_slice(&random(64 << 10, seed));
                v
            }
            Body::Copy { of } => self.bytes_of(of),
        }
    }

    /// Writes every object under `dir` (created); returns (objects, bytes).
    pub fn write(&self, dir: &Path) -> Result<(usize, u64)> {
        let mut bytes = 0u64;
        for i in 0..self.objects.len() {
            let path = dir.join(&self.objects[i].key);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let data = self.bytes_of(i);
            bytes += data.len() as u64;
            std::fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok((self.objects.len(), bytes))
    }
}

/// Every file under `dir`, sorted, as paths relative to it.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(root, &path, out)?;
            } else {
                out.push(path.strip_prefix(root)?.to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// What a mutation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mutation {
    pub overwritten: usize,
    pub added: usize,
    pub deleted: usize,
}

/// Changes 1% of the objects under `dir` (at least one), deterministically
/// for its contents and `round`: half overwritten with new bytes of about
/// the same size and kind, a quarter deleted, and as many new objects put
/// as a quarter of the count.
pub fn mutate(dir: &Path, round: u64) -> Result<Mutation> {
    let all = files(dir)?;
    let n = (all.len() / 100).max(1);
    let mut rng = Rng(0x6d75_7461_7465 ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < n.min(all.len()) {
        #[allow(clippy::cast_possible_truncation)]
        picked.insert(rng.below(all.len() as u64) as usize);
    }
    let mut done = Mutation::default();
    for (k, &i) in picked.iter().enumerate() {
        let path = dir.join(&all[i]);
        match k % 4 {
            0 | 1 => {
                let old = std::fs::metadata(&path)?.len();
                #[allow(clippy::cast_possible_truncation)]
                let size = (old as usize).max(1);
                let seed = rng.next();
                let data = if all[i].extension().is_some_and(|e| e == "json") {
                    json(size, seed)
                } else {
                    random(size, seed)
                };
                std::fs::write(&path, data)?;
                done.overwritten += 1;
            }
            2 => {
                std::fs::remove_file(&path)?;
                done.deleted += 1;
            }
            _ => {
                let key = format!(
                    "tenant/{:04}/attachments/r{round}-{k:07}/event.json",
                    rng.below(100)
                );
                let path = dir.join(key);
                std::fs::create_dir_all(path.parent().context("a parent")?)?;
                let size = log_uniform(&mut rng, 1 << 10, 16 << 10);
                std::fs::write(&path, json(size, rng.next()))?;
                done.added += 1;
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
        files(dir)
            .unwrap()
            .into_iter()
            .map(|p| {
                let data = std::fs::read(dir.join(&p)).unwrap();
                let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                (p, data.len() as u64, h)
            })
            .collect()
    }

    #[test]
    fn the_small_preset_is_the_same_every_time_and_has_its_mix() {
        let plan = Dataset::plan(Preset::Small);
        assert!((4_900..5_300).contains(&plan.len()), "{}", plan.len());
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (n, bytes) = plan.write(a.path()).unwrap();
        Dataset::plan(Preset::Small).write(b.path()).unwrap();
        let (da, db) = (digest(a.path()), digest(b.path()));
        assert_eq!(da, db, "deterministic");
        // Keys may repeat only if the planner collided; it must not.
        assert_eq!(da.len(), n);
        assert!((40_000_000..160_000_000).contains(&bytes), "{bytes}");
        // About 7% exact duplicates.
        let mut seen = std::collections::HashMap::new();
        for (_, len, h) in &da {
            *seen.entry((len, h)).or_insert(0usize) += 1;
        }
        let dups = n - seen.len();
        assert!(dups * 100 / n >= 5 && dups * 100 / n <= 8, "{dups} of {n}");
        // Keys look like a bucket's.
        assert!(da
            .iter()
            .all(|(p, _, _)| p.starts_with("tenant") && p.components().count() == 5));

        // Mutation: 1%, the same on both copies.
        let ma = mutate(a.path(), 1).unwrap();
        let mb = mutate(b.path(), 1).unwrap();
        assert_eq!(ma, mb);
        assert_eq!(ma.overwritten + ma.added + ma.deleted, n / 100);
        let after = digest(a.path());
        assert_eq!(after, digest(b.path()));
        assert_eq!(after.len(), n - ma.deleted + ma.added);
        let changed = after.iter().filter(|e| !da.contains(e)).count();
        assert_eq!(changed, ma.overwritten + ma.added);
    }
}
