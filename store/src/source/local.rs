//! A local directory as a source: regular files under a root, keyed by
//! their `/`-separated relative path, walked in key order. Symlinks,
//! devices and names that are not UTF-8 are skipped with a warning;
//! empty directories are not objects and are not recorded.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Source, SourceObject};
use crate::error::{Error, Result};

/// A directory tree.
pub struct LocalSource {
    root: PathBuf,
}

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
        Ok(LocalSource { root })
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

fn walk(root: &Path) -> Result<(Vec<SourceObject>, u64)> {
    let mut out = Vec::new();
    let mut skipped = 0u64;
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| Error::from(e).context(format!("listing {}", dir.display())))?;
        for ent in rd {
            let ent = ent?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %ent.path().display(), "skipping a name that is not UTF-8");
                skipped += 1;
                continue;
            };
            let key = format!("{prefix}{name}");
            let md = ent.path().symlink_metadata()?;
            if md.is_dir() {
                stack.push((ent.path(), format!("{key}/")));
            } else if md.is_file() {
                out.push(object(key, &md));
            } else {
                tracing::warn!(path = %ent.path().display(), "skipping: not a regular file");
                skipped += 1;
            }
        }
    }
    out.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    Ok((out, skipped))
}

#[async_trait::async_trait]
impl Source for LocalSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn list(&self) -> Result<(Vec<SourceObject>, u64)> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk(&root))
            .await
            .map_err(|e| Error::new(crate::ErrorKind::Io, format!("listing task: {e}")))?
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
}
