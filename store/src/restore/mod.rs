//! Restoring a point: to a directory, or one object to a writer (`cat`).
//!
//! Files are written to a temp name beside their target and then linked
//! into place ([`file`]), so a crash never leaves a partial file under a
//! real name, and an existing file is never replaced unless `overwrite`
//! is set.
//! Directories are created one component at a time and must be real
//! directories (never followed symlinks), so nothing is written outside
//! the target root whatever the keys contain.

pub mod browse;
mod file;
pub mod path;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::direct_io::{BufferPool, DirectWriter, PAGE};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::point::Point;
use crate::manifest::{Entry, ObjectMeta};
use crate::repo::runs::StateCursor;
use crate::repo::Repository;
use file::NewFile;
use path::{key_to_path, KeyPath};

/// Options for a restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Only keys starting with this.
    pub prefix: String,
    /// Replace existing files.
    pub overwrite: bool,
    /// Objects restored at once.
    pub concurrency: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            prefix: String::new(),
            overwrite: false,
            concurrency: 8,
        }
    }
}

/// Live counters.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Objects written.
    pub objects: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
}

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    /// The point restored.
    pub seq: u64,
    /// Objects restored.
    pub objects: u64,
    /// Bytes restored.
    pub bytes: u64,
    /// Keys that cannot be paths, with the reason.
    pub unrepresentable: Vec<String>,
    /// Objects that failed (damaged data, conflicts, existing files).
    pub errors: Vec<String>,
    /// Wall time in seconds.
    pub elapsed_s: f64,
}

/// Writes an object's content to `out`, blob by blob.
pub async fn read_object(
    repo: &Repository,
    meta: &ObjectMeta,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let mut n = 0u64;
    repo.read_blobs(&meta.chunks, |data| {
        out.write_all(data)?;
        n += data.len() as u64;
        Ok(())
    })
    .await?;
    whole(n, meta)
}

/// `n`, the bytes of `meta`'s content read, when that is all of it.
fn whole(n: u64, meta: &ObjectMeta) -> Result<u64> {
    if n != meta.size {
        return Err(Error::corrupt(format!(
            "object content is {n} bytes, its entry says {}",
            meta.size
        )));
    }
    Ok(n)
}

/// The entry of `key` at point `point`, if the key is live there.
pub async fn lookup(repo: &Repository, point: &Point, key: &str) -> Result<Option<Entry>> {
    let mut c = StateCursor::new(repo, &point.runs, point.seq, key).await?;
    Ok(c.next().await?.filter(|e| e.key == key))
}

/// Restores the objects of `point` under `opts.prefix` into `target`.
pub async fn restore_to_dir(
    repo: &Repository,
    point: &Point,
    target: &Path,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreSummary> {
    std::fs::create_dir_all(target)
        .map_err(|e| Error::from(e).context(format!("restore target {}", target.display())))?;
    let known = KnownDirs::default();
    let known = &known;
    // The buffers of the files being written direct, kept for the next
    // ones: a fresh megabyte per file was 256 page faults, each zeroing a
    // page, and as many to unmap after.
    let buffers = BufferPool::new(opts.concurrency.max(1) * (DirectWriter::BUFFER + PAGE));
    let buffers = &buffers;
    restore_each(repo, point, opts, progress, |e, is_prefix| async move {
        restore_entry(repo, target, &e, is_prefix, opts.overwrite, known, buffers).await
    })
    .await
}

#[cfg(feature = "s3")]
/// Restores the objects of `point` under `opts.prefix` into a bucket,
/// under `target_prefix`, with the metadata and tags each entry recorded;
/// existing objects are kept unless `opts.overwrite`.
pub async fn restore_to_bucket(
    repo: &Repository,
    point: &Point,
    client: &aws_sdk_s3::Client,
    bucket: &str,
    target_prefix: &str,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreSummary> {
    restore_each(repo, point, opts, progress, |e, _| async move {
        let meta = e
            .object
            .as_ref()
            .ok_or_else(|| Error::corrupt("deleted entry"))?;
        let mut body = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        read_object(repo, meta, &mut body).await?;
        let n = body.len() as u64;
        let key = format!("{target_prefix}{}", e.key);
        crate::source::s3::put_with_metadata(client, bucket, &key, meta, body, opts.overwrite)
            .await
            // Every key is representable in a bucket: a refusal is a failure.
            .map_err(|e| {
                if e.kind() == ErrorKind::Config {
                    Error::new(ErrorKind::Io, e.to_string())
                } else {
                    e
                }
            })?;
        Ok(n)
    })
    .await
}

/// Streams the live entries of `point` under `opts.prefix` in batches and
/// restores each with `restore_one` (returning the bytes written),
/// `opts.concurrency` at a time; collects the outcome. A `Config` error
/// from `restore_one` means the key cannot be represented at the target.
async fn restore_each<F, Fut>(
    repo: &Repository,
    point: &Point,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
    restore_one: F,
) -> Result<RestoreSummary>
where
    F: Fn(Entry, bool) -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let started = Instant::now();
    let mut summary = RestoreSummary {
        seq: point.seq,
        ..Default::default()
    };
    let mut cursor = StateCursor::new(repo, &point.runs, point.seq, &opts.prefix).await?;
    loop {
        let mut batch = Vec::new();
        while batch.len() < 1024 {
            match cursor.next().await? {
                Some(e) => batch.push(e),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        // Which objects are also directories ("a" beside "a/b"): the
        // batch is sorted, so the first key at or after "a/" tells, unless
        // the batch ends first.
        let mut flagged = Vec::with_capacity(batch.len());
        for (i, e) in batch.iter().enumerate() {
            let dir = format!("{}/", e.key);
            let at = i + 1 + batch[i + 1..].partition_point(|x| x.key < dir);
            let is_prefix = match batch.get(at) {
                Some(next) => next.key.starts_with(&dir),
                None => browse::dir_exists(repo, point, &dir).await?,
            };
            flagged.push(is_prefix);
        }
        let results: Vec<(String, Result<u64>)> = stream::iter(batch.into_iter().zip(flagged))
            .map(|(e, is_prefix)| {
                let key = e.key.clone();
                let fut = restore_one(e, is_prefix);
                async move { (key, fut.await) }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        for (key, r) in results {
            match r {
                Ok(n) => {
                    summary.objects += 1;
                    summary.bytes += n;
                    progress.objects.fetch_add(1, Ordering::Relaxed);
                    progress.bytes.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::Config => {
                    summary.unrepresentable.push(e.to_string())
                }
                Err(e) => {
                    tracing::error!(key = %key, error = %e, "object not restored");
                    summary.errors.push(format!("{key}: {e}"));
                }
            }
        }
    }
    summary.elapsed_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn restore_entry(
    repo: &Repository,
    root: &Path,
    e: &Entry,
    is_prefix: bool,
    overwrite: bool,
    known: &KnownDirs,
    buffers: &BufferPool,
) -> Result<u64> {
    let meta = e
        .object
        .as_ref()
        .ok_or_else(|| Error::corrupt("deleted entry"))?;
    let rel = match key_to_path(&e.key, is_prefix).map_err(Error::config)? {
        KeyPath::Dir(rel) => {
            known.ensure(root, &rel)?;
            return Ok(0);
        }
        KeyPath::File(rel) => rel,
    };
    let parent_rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = known.ensure(root, &parent_rel)?;
    let name = rel
        .file_name()
        .ok_or_else(|| Error::config(format!("key {:?} has no file name", e.key)))?;
    let final_path = dir.join(name);
    if !overwrite && final_path.symlink_metadata().is_ok() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "{} exists (use --overwrite to replace it)",
                final_path.display()
            ),
        ));
    }
    let mut new = NewFile::create(&dir)?;
    let n = if meta.size >= DIRECT_FROM {
        let w = DirectWriter::new(new.file().try_clone()?, buffers.take(0));
        let (n, buf) = write_direct(repo, meta, w).await?;
        buffers.give(buf);
        n
    } else {
        // A small file's buffer is its size: a megabyte for each of many
        // small files was a mapping made and torn down per file.
        let capacity = usize::try_from(meta.size).map_or(WRITE_BUFFER, |n| n.min(WRITE_BUFFER));
        let mut w = std::io::BufWriter::with_capacity(capacity, new.file());
        let n = read_object(repo, meta, &mut w).await?;
        w.flush()?;
        n
    };
    let mode = if meta.mode == 0 {
        0o644
    } else {
        meta.mode & 0o7777
    };
    let f = new.file();
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    let mtime = if meta.mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(meta.mtime_ns).unwrap_or(0))
    } else {
        UNIX_EPOCH
    };
    f.set_modified(mtime)?;
    new.name(&final_path, overwrite)?;
    Ok(n)
}

/// Writes an object's content through `w`, each run of blobs on the
/// blocking pool: a direct write waits for the disk, and on the async
/// threads it held up every other file being restored. Returns the bytes
/// written and the writer's buffer.
async fn write_direct(
    repo: &Repository,
    meta: &ObjectMeta,
    mut w: DirectWriter,
) -> Result<(u64, Vec<u8>)> {
    let mut runs = repo.blob_runs(&meta.chunks).await?;
    while let Some(run) = runs.try_next().await? {
        w = crate::blocking::run("restore write", move || {
            run.blobs().try_for_each(|b| w.write_all(b))?;
            Ok(w)
        })
        .await?;
    }
    let (n, buf) = crate::blocking::run("restore write", move || Ok(w.finish()?)).await?;
    Ok((whole(n, meta)?, buf))
}

/// Write buffer of a restored file at most.
const WRITE_BUFFER: usize = 1 << 20;

/// Files of at least this size are written with direct I/O
/// ([`DirectWriter`]): from the restore's buffer to the disk, not copied
/// into the page cache first. Smaller ones go through the cache, where
/// many of them cost less than a wait on the disk each.
const DIRECT_FROM: u64 = 256 << 10;

/// Directories a restore has checked or created, so that a file whose
/// parent was checked for the file before it (keys come sorted, so most
/// are) does not check each component again. Only the last few are kept.
#[derive(Default)]
struct KnownDirs(std::sync::Mutex<std::collections::VecDeque<PathBuf>>);

impl KnownDirs {
    const KEEP: usize = 32;

    /// [`ensure_dirs`], unless `rel` was ensured lately.
    fn ensure(&self, root: &Path, rel: &Path) -> Result<PathBuf> {
        let lock = || {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if lock().iter().any(|d| d == rel) {
            return Ok(root.join(rel));
        }
        let dir = ensure_dirs(root, rel)?;
        let mut known = lock();
        if known.len() == Self::KEEP {
            known.pop_front();
        }
        known.push_back(rel.to_path_buf());
        Ok(dir)
    }
}

/// Creates `root/rel` one component at a time; every existing component
/// must be a real directory, never a symlink.
fn ensure_dirs(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut dir = root.to_path_buf();
    for comp in rel.components() {
        dir.push(comp);
        match dir.symlink_metadata() {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a directory (a key is both an object and a prefix?)",
                        dir.display()
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && dir.symlink_metadata().is_ok_and(|m| m.is_dir()) => {}
                Err(e) => return Err(Error::from(e).context(dir.display().to_string())),
            },
            Err(e) => return Err(Error::from(e).context(dir.display().to_string())),
        }
    }
    Ok(dir)
}
