//! One restored file while it is written: it has no name until it is
//! complete, so a crash or an error never leaves a partial file under a
//! real name, and an existing file is replaced only when asked.
//!
//! On Linux the file is created unnamed (`O_TMPFILE`) in its directory
//! and linked into place once written: one directory entry per file. Where
//! the filesystem has no unnamed files, it is written under a temp name
//! (`.strata-restore-<random>`) and linked (or renamed) into place, and
//! the temp name removed.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// A file being written in `dir`, not yet under its name.
pub(super) struct NewFile {
    file: File,
    dir: PathBuf,
    /// The temp name, when the file has one (no unnamed files here).
    tmp: Option<PathBuf>,
}

impl NewFile {
    /// Creates an unnamed file in `dir`, or one under a temp name.
    pub fn create(dir: &Path) -> Result<NewFile> {
        if let Some(file) = unnamed_in(dir)? {
            return Ok(NewFile {
                file,
                dir: dir.to_path_buf(),
                tmp: None,
            });
        }
        let tmp = temp_name(dir);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        Ok(NewFile {
            file,
            dir: dir.to_path_buf(),
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
        if overwrite {
            if let Ok(md) = path.symlink_metadata() {
                if md.is_dir() {
                    return Err(exists(path, "is a directory"));
                }
            }
            // Rename needs a name to move: an unnamed file gets a temp one.
            let tmp = match self.tmp.take() {
                Some(tmp) => tmp,
                None => {
                    let tmp = temp_name(&self.dir);
                    link_unnamed(&self.file, &tmp)?;
                    tmp
                }
            };
            let renamed = std::fs::rename(&tmp, path);
            if renamed.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            return Ok(renamed?);
        }
        let linked = match &self.tmp {
            Some(tmp) => std::fs::hard_link(tmp, path),
            None => link_unnamed(&self.file, path),
        };
        linked.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                exists(path, "exists")
            } else {
                Error::from(e).context(path.display().to_string())
            }
        })?;
        if let Some(tmp) = self.tmp.take() {
            std::fs::remove_file(tmp)?;
        }
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

fn temp_name(dir: &Path) -> PathBuf {
    dir.join(format!(
        ".strata-restore-{}",
        hex::encode(crate::crypto::random_bytes::<8>())
    ))
}

/// An unnamed file in `dir`; `None` where the filesystem (or the system)
/// has none, or they cannot be named afterwards (no `/proc`).
#[cfg(target_os = "linux")]
fn unnamed_in(dir: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    static PROC_FDS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*PROC_FDS.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        return Ok(None);
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) => match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT) => Ok(None),
            _ => Err(Error::from(e).context(dir.display().to_string())),
        },
    }
}

#[cfg(not(target_os = "linux"))]
fn unnamed_in(_: &Path) -> Result<Option<File>> {
    Ok(None)
}

/// Links the unnamed `file` at `path` (fails if `path` exists).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn link_unnamed(file: &File, path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(std::io::Error::other)?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both are NUL-terminated strings that outlive the call, and
    // `file` (whose descriptor `from` names) is open for its duration.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_: &File, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("no unnamed files here"))
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
