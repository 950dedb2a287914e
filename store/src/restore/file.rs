//! One restored file while it is written: under a temp name beside its
//! target (`.strata-restore-<random>`), given its real name only when it
//! is complete, so a crash or an error never leaves a partial file under a
//! real name, and an existing file is replaced only when asked.
//!
//! (Unnamed files, `O_TMPFILE` then `linkat`, were measured too: on ext4
//! they were no faster for many small files — each goes on and off the
//! orphan list — so the portable way stays.)

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// A file being written under a temp name.
pub(super) struct NewFile {
    file: File,
    /// The temp name, until the file has its real one.
    tmp: Option<PathBuf>,
}

impl NewFile {
    /// Creates a file under a temp name in `dir`.
    pub fn create(dir: &Path) -> Result<NewFile> {
        let tmp = dir.join(format!(
            ".strata-restore-{}",
            hex::encode(crate::crypto::random_bytes::<8>())
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        Ok(NewFile {
            file,
            tmp: Some(tmp),
        })
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Gives the complete file its name `path` (in the directory it was
    /// created in). Without `overwrite`, an existing `path` is an
    /// `AlreadyExists` error and is left as it was; with it, a file there
    /// is replaced (a directory is not).
    pub fn name(mut self, path: &Path, overwrite: bool) -> Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Err(Error::new(ErrorKind::Io, "restored file named twice"));
        };
        // The temp name goes whatever happens below.
        self.tmp = Some(tmp.clone());
        if overwrite {
            if path.symlink_metadata().is_ok_and(|md| md.is_dir()) {
                return Err(exists(path, "is a directory"));
            }
            std::fs::rename(&tmp, path)?;
            self.tmp = None;
            return Ok(());
        }
        std::fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                exists(path, "exists")
            } else {
                Error::from(e).context(path.display().to_string())
            }
        })?;
        self.tmp = None;
        std::fs::remove_file(tmp)?;
        Ok(())
    }
}

impl Drop for NewFile {
    /// A file never named leaves nothing behind.
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

fn exists(path: &Path, what: &str) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!("{} {what}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn named_only_when_complete_and_never_over_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = NewFile::create(dir.path()).unwrap();
        f.file().write_all(b"new").unwrap();
        assert!(names(dir.path())
            .iter()
            .all(|n| n.starts_with(".strata-restore-")));
        f.name(&dir.path().join("a"), false).unwrap();
        assert_eq!(names(dir.path()), ["a"]);
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"new");

        let mut g = NewFile::create(dir.path()).unwrap();
        g.file().write_all(b"other").unwrap();
        let e = g.name(&dir.path().join("a"), false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["a"], "nothing left behind");

        let mut h = NewFile::create(dir.path()).unwrap();
        h.file().write_all(b"replaced").unwrap();
        h.name(&dir.path().join("a"), true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"replaced");
        assert_eq!(names(dir.path()), ["a"]);

        std::fs::create_dir(dir.path().join("d")).unwrap();
        let h = NewFile::create(dir.path()).unwrap();
        let e = h.name(&dir.path().join("d"), true).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        drop(NewFile::create(dir.path()).unwrap());
        assert_eq!(
            names(dir.path()),
            ["a", "d"],
            "an unnamed file leaves nothing"
        );
    }
}
