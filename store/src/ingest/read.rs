//! Reading one object into packs: re-read when it changed, the read
//! failed or a pinned read came back short, so stored bytes always match
//! stored metadata.

use super::packer::Packer;
use super::Outcome;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::ObjectMeta;
use crate::source::{Source, SourceObject};

/// True when the listed object is the version `meta` records.
pub(super) fn unchanged(meta: &ObjectMeta, obj: &SourceObject) -> bool {
    meta.size == obj.size
        && meta.mtime_ns == obj.mtime_ns
        && meta.mode == obj.mode
        && meta.etag == obj.etag
        && meta.version_id == obj.version_id
}

/// Looks at what the source holds for `key` now: gone, the version
/// `previous` records, or something to store.
pub(super) fn check_and_store(
    source: &dyn Source,
    packer: &Packer,
    key: String,
    previous: Option<&ObjectMeta>,
) -> Result<Outcome> {
    let probe = SourceObject {
        key,
        ..Default::default()
    };
    match source.restat(&probe)? {
        None => Ok(Outcome::Vanished),
        Some(now) if previous.is_some_and(|m| unchanged(m, &now)) => Ok(Outcome::Unchanged),
        Some(now) => store_object(source, packer, now),
    }
}

/// Reads of one object before giving up on it for this pass.
const MAX_READS: u32 = 3;

/// Reads one object into packs; re-reads (up to [`MAX_READS`] times) if it
/// changed while being read, the read failed, or a pinned read came back
/// short, so the stored bytes always match the stored metadata.
pub(super) fn store_object(
    source: &dyn Source,
    packer: &Packer,
    mut obj: SourceObject,
) -> Result<Outcome> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (reader, meta) = match source.open(&obj) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Outcome::Vanished),
            // A failed precondition: the object changed since the listing.
            Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < MAX_READS => {
                match source.restat(&SourceObject {
                    version_id: String::new(),
                    etag: String::new(),
                    ..obj.clone()
                })? {
                    Some(now) => {
                        obj = SourceObject {
                            key: obj.key,
                            ..now
                        };
                        continue;
                    }
                    None => return Ok(Outcome::Vanished),
                }
            }
            Err(e) => return Err(e),
        };
        let mut chunks = Vec::new();
        let read = match packer.chunk_object(reader, meta.size, |data| {
            chunks.push(packer.store_blob(data)?);
            Ok(())
        }) {
            Ok(n) => n,
            // A reset connection or a failing read mid-object: read again.
            Err(e)
                if matches!(e.kind(), ErrorKind::Io | ErrorKind::Transient)
                    && attempt < MAX_READS =>
            {
                tracing::warn!(key = %obj.key, attempt, error = %e, "read failed; reading again");
                continue;
            }
            Err(e) => return Err(e),
        };
        // A pinned read (version id or ETag) promised exactly `meta.size`
        // bytes: fewer is a truncated body, never stored.
        let pinned = !meta.version_id.is_empty() || !meta.etag.is_empty();
        if pinned && read != meta.size {
            if attempt < MAX_READS {
                tracing::warn!(key = %obj.key, read, size = meta.size, "short read; reading again");
                continue;
            }
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "read {read} of {} bytes {MAX_READS} times (truncated bodies); not recorded",
                    meta.size
                ),
            ));
        }
        // A read pinned by the request (the listed version id, or
        // If-Match on the listed ETag) cannot have seen another version:
        // the response's metadata stands, and no second request is needed.
        let request_pinned = !obj.version_id.is_empty() || !obj.etag.is_empty();
        let (mtime_ns, mode) = if request_pinned && read == meta.size {
            (meta.mtime_ns, meta.mode)
        } else {
            let Some(now) = source.restat(&meta)? else {
                return Ok(Outcome::Vanished);
            };
            let stable = now.size == read
                && now.mtime_ns == meta.mtime_ns
                && now.etag == meta.etag
                && now.size == meta.size;
            if !stable && attempt < MAX_READS {
                tracing::debug!(key = %obj.key, attempt, "object changed while read; reading again");
                obj = SourceObject {
                    key: obj.key,
                    ..now
                };
                continue;
            }
            if !stable {
                tracing::warn!(key = %obj.key, "object kept changing while read; recording the last read");
            }
            (now.mtime_ns, now.mode)
        };
        return Ok(Outcome::Stored(ObjectMeta {
            size: read,
            mtime_ns,
            mode,
            version_id: meta.version_id,
            etag: meta.etag,
            system: meta.system,
            user: meta.user,
            tags: meta.tags,
            chunks,
        }));
    }
}
