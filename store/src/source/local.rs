//! A local directory as a source: regular files under a root, keyed by
//! their `/`-separated relative path, walked in key order. Symlinks,
//! devices and names that are not UTF-8 are skipped with a warning;
//! empty directories are not objects and are not recorded.
//!
//! Listing is paged: each page walks on from where the last one stopped
//! (the walk is kept between pages), so reading starts after the first
//! page instead of after a walk of the whole tree, and a listing never
//! holds more than a page of objects.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use super::{KeyRange, ListPage, Source, SourceObject};
use crate::error::{Error, Result};

/// A directory tree.
pub struct LocalSource {
    root: PathBuf,
    /// Walks paused at the end of a page, to go on from there.
    walks: Arc<Mutex<Vec<Walk>>>,
}

/// Objects per page of a listing.
const PAGE: usize = 1000;
/// Paused walks kept at most (one per partition listing at once).
const MAX_PAUSED_WALKS: usize = 64;

impl LocalSource {
    /// A source rooted at `root`, which must be a directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let md = std::fs::metadata(&root)
            .map_err(|e| Error::from(e).context(format!("source {}", root.display())))?;
        if !md.is_dir() {
            return Err(Error::config(format!(
                "source {} is not a directory",
                root.display()
            )));
        }
        Ok(LocalSource {
            root,
            walks: Arc::default(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

fn object(key: String, md: &std::fs::Metadata) -> SourceObject {
    SourceObject {
        key,
        size: md.len(),
        mtime_ns: md
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(md.mtime_nsec()),
        mode: md.mode() & 0o7777,
        ..Default::default()
    }
}

/// A depth-first walk of the tree in key order that can pause and go on.
struct Walk {
    root: PathBuf,
    /// Directories being walked, outermost first: the key prefix of each
    /// and the names of its entries not walked yet, in reverse order. A
    /// directory's name ends in `/`, where all its keys continue, so
    /// sorting names by bytes and walking depth first yields keys in byte
    /// order.
    stack: Vec<(String, Vec<String>)>,
    /// The last key handed out.
    last: Option<String>,
    /// Entries skipped since the last page.
    skipped: u64,
}

impl Walk {
    /// A walk of `root` that yields only keys after `after`.
    fn new(root: &Path, after: &str) -> Result<Walk> {
        let mut walk = Walk {
            root: root.to_path_buf(),
            stack: Vec::new(),
            last: None,
            skipped: 0,
        };
        walk.enter(String::new(), after)?;
        Ok(walk)
    }

    /// Reads the directory of keys starting `prefix`, keeping the entries
    /// that can hold keys after `after`.
    fn enter(&mut self, prefix: String, after: &str) -> Result<()> {
        let dir = self.root.join(&prefix);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            // Removed since its parent was read: nothing in it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !prefix.is_empty() => {
                return Ok(())
            }
            Err(e) => return Err(Error::from(e).context(format!("listing {}", dir.display()))),
        };
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %ent.path().display(), "skipping a name that is not UTF-8");
                self.skipped += 1;
                continue;
            };
            let name = if ent.file_type()?.is_dir() {
                format!("{name}/")
            } else {
                name
            };
            // A directory's keys all start with `prefix` + `name`: all are
            // before `after` when that sorts before it without being a
            // prefix of it.
            let key = format!("{prefix}{name}");
            if key.as_str() > after || (key.ends_with('/') && after.starts_with(&key)) {
                names.push(name);
            }
        }
        names.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        self.stack.push((prefix, names));
        Ok(())
    }

    /// The next regular file after `after`, in key order.
    fn next(&mut self, after: &str) -> Result<Option<SourceObject>> {
        loop {
            let Some((prefix, names)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(n) = names.pop() else {
                self.stack.pop();
                continue;
            };
            let key = format!("{prefix}{n}");
            if key.ends_with('/') {
                self.enter(key, after)?;
                continue;
            }
            match std::fs::symlink_metadata(self.root.join(&key)) {
                Ok(md) if md.is_file() => return Ok(Some(object(key, &md))),
                Ok(_) => {
                    tracing::warn!(%key, "skipping: not a regular file");
                    self.skipped += 1;
                }
                // Removed since its directory was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::from(e).context(key)),
            }
        }
    }
}

/// One page of `range` after `from`, going on with a paused walk that
/// stopped there when there is one.
fn page(
    root: &Path,
    walks: &Mutex<Vec<Walk>>,
    range: &KeyRange,
    from: &str,
    limit: usize,
) -> Result<ListPage> {
    let paused = {
        let mut walks = walks.lock().unwrap_or_else(|e| e.into_inner());
        let at = walks.iter().position(|w| w.last.as_deref() == Some(from));
        at.map(|i| walks.swap_remove(i))
    };
    let mut walk = match paused {
        Some(w) => w,
        None => Walk::new(root, from)?,
    };
    let mut objects = Vec::new();
    let mut ended = true;
    while let Some(o) = walk.next(from)? {
        if range.is_past(&o.key) {
            break;
        }
        if range.contains(&o.key) {
            objects.push(o);
        }
        if objects.len() == limit {
            ended = false;
            break;
        }
    }
    let skipped = std::mem::take(&mut walk.skipped);
    let next = if ended {
        None
    } else {
        objects.last().map(|o| o.key.clone())
    };
    if next.is_some() {
        walk.last = next.clone();
        let mut walks = walks.lock().unwrap_or_else(|e| e.into_inner());
        if walks.len() >= MAX_PAUSED_WALKS {
            walks.remove(0);
        }
        walks.push(walk);
    }
    Ok(ListPage {
        objects,
        skipped,
        next,
    })
}

#[async_trait::async_trait]
impl Source for LocalSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn list(&self) -> Result<(Vec<SourceObject>, u64)> {
        let root = self.root.clone();
        let everything = KeyRange::default();
        let page = crate::blocking::run("listing", move || {
            page(&root, &Mutex::default(), &everything, "", usize::MAX)
        })
        .await?;
        Ok((page.objects, page.skipped))
    }

    async fn list_page(&self, range: &KeyRange, after: Option<&str>) -> Result<ListPage> {
        let (root, walks, range) = (self.root.clone(), self.walks.clone(), range.clone());
        let from = after.unwrap_or(&range.after).to_string();
        crate::blocking::run("listing", move || page(&root, &walks, &range, &from, PAGE)).await
    }

    fn open(&self, obj: &SourceObject) -> Result<(Box<dyn Read + Send>, SourceObject)> {
        let f = std::fs::File::open(self.path(&obj.key))
            .map_err(|e| Error::from(e).context(obj.key.clone()))?;
        Ok((Box::new(f), obj.clone()))
    }

    fn restat(&self, obj: &SourceObject) -> Result<Option<SourceObject>> {
        match std::fs::symlink_metadata(self.path(&obj.key)) {
            Ok(md) if md.is_file() => Ok(Some(object(obj.key.clone(), &md))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from(e).context(obj.key.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_in_key_byte_order() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/b", "a.txt", "z", "a/c/d"] {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, p).unwrap();
        }
        std::fs::create_dir_all(d.path().join("empty")).unwrap();
        let (objs, skipped) = LocalSource::new(d.path()).unwrap().list().await.unwrap();
        let keys: Vec<&str> = objs.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a.txt", "a/b", "a/c/d", "z"]);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn pages_go_on_where_the_last_stopped_and_match_a_full_walk() {
        let d = tempfile::tempdir().unwrap();
        let mut want = Vec::new();
        for t in 0..4 {
            for id in 0..7 {
                for name in ["a", "a.json", "b-c", "z"] {
                    let key = format!("tenant/{t}/att-{id}/{name}");
                    let path = d.path().join(&key);
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(path, &key).unwrap();
                    want.push(key);
                }
            }
            // A file beside the directories, sorting between them.
            let key = format!("tenant/{t}/att-3.txt");
            std::fs::write(d.path().join(&key), &key).unwrap();
            want.push(key);
        }
        want.sort();
        let range = |after: &str, until: Option<&str>| KeyRange {
            after: after.into(),
            until: until.map(String::from),
        };
        // Paged with a paused walk, and each page from a fresh walk.
        for keep_walks in [true, false] {
            let walks = Mutex::new(Vec::new());
            let mut got = Vec::new();
            let mut from = String::new();
            loop {
                if !keep_walks {
                    walks.lock().unwrap().clear();
                }
                let p = page(d.path(), &walks, &range("", None), &from, 5).unwrap();
                assert!(p.objects.len() <= 5);
                got.extend(p.objects.into_iter().map(|o| o.key));
                match p.next {
                    Some(n) => from = n,
                    None => break,
                }
            }
            assert_eq!(got, want, "keep_walks {keep_walks}");
        }
        // A range in the middle, starting inside a directory.
        let r = range("tenant/1/att-3/a.json", Some("tenant/2/att-0/b-c"));
        let p = page(d.path(), &Mutex::default(), &r, &r.after, usize::MAX).unwrap();
        let keys: Vec<String> = p.objects.into_iter().map(|o| o.key).collect();
        let expected: Vec<String> = want.iter().filter(|k| r.contains(k)).cloned().collect();
        assert_eq!(keys, expected);
        assert_eq!(keys.first().unwrap(), "tenant/1/att-3/b-c");
        assert_eq!(p.next, None);
    }
}
