//! A vault in a local directory.
//!
//! Create-only writes: the bytes go to a temp file under `.tmp/`, are
//! fsynced, then hard-linked to their final name — `link(2)` fails if the
//! name exists, so nothing is ever overwritten, even by a concurrent
//! writer — and the parent directory is fsynced so the name is durable.
//! Packs and large ranges go by direct I/O where they can
//! ([`crate::direct_io`]). File I/O runs on tokio's blocking pool.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Backend, ByteRange, GetResult, Listed};
use crate::blocking::run;
use crate::direct_io;
use crate::error::{Error, ErrorKind, Result};

/// A vault rooted at a directory.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(".tmp"))
            .map_err(|e| Error::from(e).context(format!("vault directory {}", root.display())))?;
        Ok(LocalBackend { root })
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        let ok = !name.is_empty()
            && !name.starts_with('/')
            && name
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with(".tmp"));
        if !ok {
            return Err(Error::config(format!("invalid object name {name:?}")));
        }
        Ok(self.root.join(name))
    }
}

fn put_blocking(root: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::config("object has no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = root.join(".tmp").join(format!(
        "{}-{}",
        std::process::id(),
        hex::encode(crate::crypto::random_bytes::<8>())
    ));
    let result = (|| {
        let mut f = std::fs::File::create_new(&tmp)?;
        let large = bytes.len() >= LARGE;
        let direct = if large {
            direct_io::write_all_direct(&f, bytes, 0)?
        } else {
            f.write_all(bytes)?;
            false
        };
        f.sync_all()?;
        if large && !direct {
            if let Err(e) = direct_io::drop_cached(&f) {
                tracing::debug!(error = %e, "posix_fadvise(DONTNEED) refused");
            }
        }
        std::fs::hard_link(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok::<_, std::io::Error>(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            )
        } else {
            Error::from(e).context(format!("writing {}", path.display()))
        }
    })
}

/// Objects and ranges of at least this size (packs, runs of blobs) go
/// by direct I/O where they can (a pack built page-aligned, see
/// [`crate::pack::PackBuilder`]), else leave the page cache once written;
/// smaller ones (points, run pages, pack headers) use and stay in the
/// cache, as the next pass reads the last point's runs.
const LARGE: usize = 1 << 20;

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<Listed>> {
    // Start from the deepest directory the prefix names.
    let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
    let mut out = Vec::new();
    let mut stack = vec![(root.join(dir_part), dir_part.to_string())];
    while let Some((dir, name)) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::from(e).context(format!("listing {}", dir.display()))),
        };
        for ent in rd {
            let ent = ent?;
            let Some(file_name) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if file_name.starts_with(".tmp") {
                continue;
            }
            let full = if name.is_empty() {
                file_name
            } else {
                format!("{name}/{file_name}")
            };
            let ft = ent.file_type()?;
            if ft.is_dir() {
                if full.starts_with(prefix) || prefix.starts_with(&format!("{full}/")) {
                    stack.push((ent.path(), full));
                }
            } else if ft.is_file() && full.starts_with(prefix) {
                out.push(Listed {
                    name: full,
                    size: ent.metadata()?.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(name)?;
        let root = self.root.clone();
        run("vault file", move || put_blocking(&root, &path, &bytes)).await
    }

    async fn get(&self, name: &str, range: ByteRange) -> Result<GetResult> {
        let path = self.path(name)?;
        let name = name.to_string();
        run("vault file", move || {
            use std::io::{Read, Seek, SeekFrom};
            let mut f =
                std::fs::File::open(&path).map_err(|e| Error::from(e).context(name.clone()))?;
            let total_len = f.metadata()?.len();
            let (s, e) = match &range {
                ByteRange::All => (0, total_len),
                ByteRange::Bounded(r) => {
                    let s = r.start.min(total_len);
                    (s, r.end.min(total_len).max(s))
                }
                ByteRange::Suffix(n) => (total_len.saturating_sub(*n), total_len),
            };
            if e - s >= LARGE as u64 {
                let direct = direct_io::read_direct(&f, s..e)
                    .map_err(|e| Error::from(e).context(name.clone()))?;
                if let Some(bytes) = direct {
                    return Ok(GetResult { bytes, total_len });
                }
            }
            f.seek(SeekFrom::Start(s))?;
            let mut buf = Vec::with_capacity(usize::try_from(e - s).unwrap_or(0));
            f.take(e - s).read_to_end(&mut buf)?;
            Ok(GetResult {
                bytes: Bytes::from(buf),
                total_len,
            })
        })
        .await
    }

    async fn head(&self, name: &str) -> Result<u64> {
        let path = self.path(name)?;
        let name = name.to_string();
        run("vault file", move || {
            Ok(std::fs::metadata(&path)
                .map_err(|e| Error::from(e).context(name))?
                .len())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        run("vault file", move || list_blocking(&root, &prefix)).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        run("vault file", move || Ok(std::fs::remove_file(&path)?)).await
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let b = super::LocalBackend::new(dir.path()).unwrap();
        super::super::conformance::run_all(&b).await;
    }

    /// Page-aligned large objects take the direct path (whole pages
    /// direct, the last partial page buffered); others the usual one.
    /// Both read back byte for byte, whole or in large (direct) ranges,
    /// and neither overwrites.
    #[tokio::test]
    async fn direct_and_buffered_writes_read_back() {
        use super::super::Backend;
        use crate::crypto::{Keys, MasterKey};
        let dir = tempfile::tempdir().unwrap();
        let b = super::LocalBackend::new(dir.path()).unwrap();
        let keys = Keys::derive(&MasterKey::from_bytes([3; 32]));
        let mut pack = crate::pack::PackBuilder::new(&keys, [4; 32], 3 << 20);
        for i in 0..5u8 {
            let blob: Vec<u8> = (0..400_000u32)
                .map(|j| (j * 7 + u32::from(i)) as u8)
                .collect();
            pack.add(keys.blob_id(&blob), &blob, 0).unwrap();
        }
        let pack = pack.finish();
        assert_eq!(pack.bytes.as_ptr().align_offset(crate::direct_io::PAGE), 0);
        assert_ne!(
            pack.bytes.len() % crate::direct_io::PAGE,
            0,
            "a partial last page"
        );
        let unaligned = bytes::Bytes::from(pack.bytes.to_vec()).slice(1..);
        for (name, bytes) in [
            ("packs/aligned", pack.bytes.clone()),
            ("packs/other", unaligned),
        ] {
            b.put(name, bytes.clone()).await.unwrap();
            let got = b.get(name, super::ByteRange::All).await.unwrap().bytes;
            assert!(got == bytes, "{name} reads back differently");
            // Large ranges are read direct, from any offset to any end.
            let len = bytes.len() as u64;
            let large = super::LARGE as u64;
            for r in [
                1..large + 5,
                4096..len,
                len - large - 3..len,
                0..large,
                5..len - 1,
            ] {
                let got = b.get(name, super::ByteRange::Bounded(r.clone()));
                let got = got.await.unwrap();
                assert_eq!(got.total_len, len);
                let want = &bytes[r.start as usize..r.end as usize];
                assert!(got.bytes == want, "{name} {r:?} reads back differently");
            }
            let again = b
                .put(name, bytes::Bytes::from_static(b"x"))
                .await
                .unwrap_err();
            assert_eq!(again.kind(), crate::error::ErrorKind::AlreadyExists);
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );
    }
}
