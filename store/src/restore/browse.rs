//! A point seen as a directory tree, for `mount`: directories are the
//! `/`-separated prefixes of keys. Listing a directory walks the state
//! cursor from the prefix and jumps over each subdirectory's keys with a
//! fresh seek, so a directory with a million files is streamed page by
//! page, and one with a million keys in ten subdirectories costs ten
//! seeks, never a full scan.
//!
//! Names are escaped as in a directory restore ([`super::path`]): an empty
//! component shows as `%`, `..` as `%2E%2E`, and an object that is also a
//! prefix of others ("a" beside "a/b") shows as `a/%=`. Components longer
//! than a file name may be are not shown (a directory restore splits them;
//! they stay readable with `cat` and restorable to a bucket).

use super::path::{escape_component, SELF_NAME};
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
/// prefix ending in `/`), in key order, starting after the child shown as
/// `after` (a directory when `after_is_dir`). Names are escaped.
pub async fn list_children(
    repo: &Repository,
    point: &Point,
    dir: &str,
    after: Option<(&str, bool)>,
    limit: usize,
) -> Result<Vec<Child>> {
    let mut out: Vec<Child> = Vec::new();
    // The directory's own object ("a" for "a/"), first.
    let after = match after {
        None => {
            if let Some(own) = dir.strip_suffix('/') {
                if let Some(e) = super::lookup(repo, point, own).await? {
                    out.push(Child::File(SELF_NAME.to_string(), Box::new(e)));
                }
            }
            None
        }
        Some((name, _)) if name == SELF_NAME => None,
        Some((name, is_dir)) => Some((unescape_name(name).unwrap_or_default(), is_dir)),
    };
    let after = after.as_ref().map(|(n, d)| (n.as_str(), *d));
    let mut start = match after {
        None => dir.to_string(),
        Some((name, true)) => after_dir(&format!("{dir}{name}/")),
        Some((name, false)) => format!("{dir}{name}\0"),
    };
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
                    out.push(Child::File(show(&name), Box::new(entry)));
                }
            }
            match rest.split_once('/') {
                Some((name, _)) => {
                    if valid_component(name) {
                        out.push(Child::Dir(show(name)));
                    }
                    start = after_dir(&format!("{dir}{name}/"));
                    continue 'seek;
                }
                // `rest` empty: the directory's own marker key ("a/").
                None if !rest.is_empty() && valid_component(rest) => {
                    pending = Some((rest.to_string(), e));
                }
                None => {}
            }
        }
    }
    if let Some((name, entry)) = pending {
        if dir_exists(repo, point, &format!("{dir}{name}/")).await? {
            out.push(Child::Dir(show(&name)));
        } else {
            out.push(Child::File(show(&name), Box::new(entry)));
        }
    }
    Ok(out)
}

/// The child shown as `name` of directory `dir`, if there is one.
pub async fn child(
    repo: &Repository,
    point: &Point,
    dir: &str,
    shown: &str,
) -> Result<Option<Child>> {
    if shown == SELF_NAME {
        let Some(own) = dir.strip_suffix('/') else {
            return Ok(None);
        };
        return Ok(super::lookup(repo, point, own)
            .await?
            .map(|e| Child::File(SELF_NAME.to_string(), Box::new(e))));
    }
    let Some(name) = unescape_name(shown) else {
        return Ok(None);
    };
    let name = name.as_str();
    if !valid_component(name) || show(name) != shown {
        return Ok(None);
    }
    if dir_exists(repo, point, &format!("{dir}{name}/")).await? {
        return Ok(Some(Child::Dir(shown.to_string())));
    }
    Ok(super::lookup(repo, point, &format!("{dir}{name}"))
        .await?
        .map(|e| Child::File(shown.to_string(), Box::new(e))))
}

/// A component that fits one file name once escaped.
fn valid_component(name: &str) -> bool {
    escape_component(name).len() == 1
}

/// The escaped name a component shows as.
fn show(name: &str) -> String {
    escape_component(name).concat()
}

/// The component a shown name stands for.
fn unescape_name(shown: &str) -> Option<String> {
    super::path::path_to_key(std::path::Path::new(shown))
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
