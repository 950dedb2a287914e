//! A point seen as a directory tree, for `mount`: directories are the
//! `/`-separated prefixes of keys. Listing a directory walks the state
//! cursor from the prefix and jumps over each subdirectory's keys with a
//! fresh seek, so a directory with a million files is streamed page by
//! page, and one with a million keys in ten subdirectories costs ten
//! seeks, never a full scan.
//!
//! Keys that cannot be paths (see [`super::path`]) are not shown; where a
//! key is both an object and a prefix of others ("a" and "a/b"), the
//! directory is shown. Both stay restorable to a bucket and with `cat`.

use super::path::{key_to_path, KeyPath};
use crate::error::Result;
use crate::manifest::point::Point;
use crate::manifest::Entry;
use crate::repo::runs::StateCursor;
use crate::repo::Repository;

/// One name in a directory.
#[derive(Clone, Debug)]
pub enum Child {
    /// A subdirectory (a prefix of at least one key).
    Dir(String),
    /// An object: its name and entry.
    File(String, Box<Entry>),
}

impl Child {
    /// The name within its directory.
    pub fn name(&self) -> &str {
        match self {
            Child::Dir(n) | Child::File(n, _) => n,
        }
    }
}

/// The first key that sorts after every key under `dir_prefix` (which
/// ends with `/`): `/` is 0x2F, so `0` (0x30) is next.
fn after_dir(dir_prefix: &str) -> String {
    let mut s = dir_prefix.trim_end_matches('/').to_string();
    s.push('0');
    s
}

/// True when some live key starts with `dir_prefix`.
pub async fn dir_exists(repo: &Repository, point: &Point, dir_prefix: &str) -> Result<bool> {
    if dir_prefix.is_empty() {
        return Ok(true);
    }
    let mut c = StateCursor::new(repo, &point.runs, point.seq, dir_prefix).await?;
    Ok(c.next()
        .await?
        .is_some_and(|e| e.key.starts_with(dir_prefix)))
}

/// Up to `limit` children of directory `dir` (`""` for the root, else a
/// prefix ending in `/`), in name order, starting after the child named
/// `after` (a directory when `after_is_dir`).
pub async fn list_children(
    repo: &Repository,
    point: &Point,
    dir: &str,
    after: Option<(&str, bool)>,
    limit: usize,
) -> Result<Vec<Child>> {
    let mut start = match after {
        None => dir.to_string(),
        Some((name, true)) => after_dir(&format!("{dir}{name}/")),
        Some((name, false)) => format!("{dir}{name}\0"),
    };
    let mut out: Vec<Child> = Vec::new();
    // A file is held until the next key shows whether a directory of the
    // same name follows (keys between "a" and "a/" all start with "a").
    let mut pending: Option<(String, Entry)> = None;
    'seek: while out.len() < limit {
        let mut c = StateCursor::starting_at(repo, &point.runs, point.seq, &start, dir).await?;
        while out.len() < limit {
            let Some(e) = c.next().await? else {
                break 'seek;
            };
            let Some(rest) = e.key.strip_prefix(dir) else {
                break 'seek;
            };
            if let Some((name, entry)) = pending.take() {
                let shadowed = match rest.strip_prefix(name.as_str()) {
                    Some(tail) if tail.starts_with('/') => true,
                    Some(_) => dir_exists(repo, point, &format!("{dir}{name}/")).await?,
                    None => false,
                };
                if !shadowed {
                    out.push(Child::File(name, Box::new(entry)));
                }
            }
            match rest.split_once('/') {
                Some((name, _)) => {
                    if valid_component(name) {
                        out.push(Child::Dir(name.to_string()));
                    }
                    start = after_dir(&format!("{dir}{name}/"));
                    continue 'seek;
                }
                None if valid_component(rest) => {
                    pending = Some((rest.to_string(), e));
                }
                None => {}
            }
        }
    }
    if let Some((name, entry)) = pending {
        if dir_exists(repo, point, &format!("{dir}{name}/")).await? {
            out.push(Child::Dir(name));
        } else {
            out.push(Child::File(name, Box::new(entry)));
        }
    }
    Ok(out)
}

/// The child `name` of directory `dir`, if there is one.
pub async fn child(
    repo: &Repository,
    point: &Point,
    dir: &str,
    name: &str,
) -> Result<Option<Child>> {
    if !valid_component(name) {
        return Ok(None);
    }
    if dir_exists(repo, point, &format!("{dir}{name}/")).await? {
        return Ok(Some(Child::Dir(name.to_string())));
    }
    Ok(super::lookup(repo, point, &format!("{dir}{name}"))
        .await?
        .map(|e| Child::File(name.to_string(), Box::new(e))))
}

fn valid_component(name: &str) -> bool {
    matches!(key_to_path(name), Ok(KeyPath::File(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_after_a_directory_skips_all_of_it() {
        let after = after_dir("a/b/");
        assert_eq!(after, "a/b0");
        for inside in ["a/b/", "a/b/x", "a/b/\u{10FFFF}"] {
            assert!(inside < after.as_str());
        }
        assert!("a/b0" >= after.as_str());
        assert!("a/b.txt" < "a/b/");
    }
}
