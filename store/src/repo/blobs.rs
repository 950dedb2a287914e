//! Reading blobs back: one by one, or an object's blobs in runs — blobs
//! stored back to back in one pack come in one range read (one GET from
//! S3), and the next run is read while the caller writes this one.

use futures::stream::{self, StreamExt, TryStreamExt};

use super::{pack_name, Repository};
use crate::backend::ByteRange;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::IndexEntry;

/// Bytes of one range read at most (a single larger blob is read alone).
const RUN_BYTES: u64 = 8 << 20;

/// Runs read ahead of the one being handed out.
const RUNS_AHEAD: usize = 2;

/// A run's blobs, opened: the read buffer and where each blob is, in it
/// (stored raw, decrypted where it lay) or beside it (decompressed).
/// Owned, so a run can go to another thread to be written.
pub struct OpenedRun {
    buf: bytes::BytesMut,
    blobs: Vec<Opened>,
}

enum Opened {
    InBuffer(std::ops::Range<usize>),
    Decompressed(Vec<u8>),
}

impl OpenedRun {
    /// The run's blobs' contents, in order.
    pub fn blobs(&self) -> impl Iterator<Item = &[u8]> {
        self.blobs.iter().map(|b| match b {
            Opened::InBuffer(r) => self.buf.get(r.clone()).unwrap_or_default(),
            Opened::Decompressed(plain) => plain.as_slice(),
        })
    }

    /// The blob of a run of one.
    fn into_only_blob(mut self) -> Vec<u8> {
        match std::mem::take(&mut self.blobs).into_iter().next() {
            Some(Opened::InBuffer(r)) => self.buf.get(r).unwrap_or_default().to_vec(),
            Some(Opened::Decompressed(plain)) => plain,
            None => Vec::new(),
        }
    }
}

impl Drop for OpenedRun {
    /// The read buffer goes back for the next reads.
    fn drop(&mut self) {
        crate::direct_io::give_back(std::mem::take(&mut self.buf));
    }
}

impl Repository {
    /// Reads, authenticates and re-hashes one blob. A blob the local index
    /// cache does not know yet (segments written since it was loaded)
    /// brings it up to date first.
    pub async fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let entry = self.entry_of(id).await?;
        let run = self.read_run(std::slice::from_ref(&entry)).await?;
        Ok(run.into_only_blob())
    }

    /// Reads the blobs `ids` in order and hands each to `each`, checked as
    /// [`Repository::read_blob`] checks one. Consecutive blobs stored back
    /// to back in one pack are read together (up to [`RUN_BYTES`]); the
    /// next [`RUNS_AHEAD`] runs are read while `each` works.
    pub async fn read_blobs(
        &self,
        ids: &[BlobId],
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut runs = self.blob_runs(ids).await?;
        while let Some(run) = runs.try_next().await? {
            run.blobs().try_for_each(&mut each)?;
        }
        Ok(())
    }

    /// The blobs `ids` as [`Repository::read_blobs`] reads them, a run at
    /// a time, owned: for a caller that hands each run to another thread.
    pub async fn blob_runs(
        &self,
        ids: &[BlobId],
    ) -> Result<impl futures::Stream<Item = Result<OpenedRun>> + '_> {
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            entries.push(self.entry_of(id).await?);
        }
        let runs: Vec<Vec<IndexEntry>> = runs(&entries).into_iter().map(<[_]>::to_vec).collect();
        Ok(stream::iter(runs)
            .map(move |run| async move { self.read_run(&run).await })
            .buffered(RUNS_AHEAD))
    }

    /// The index entry of `id`, refreshing the index once if it is not
    /// known yet.
    async fn entry_of(&self, id: &BlobId) -> Result<IndexEntry> {
        if let Some(e) = self.blob_entry(id) {
            return Ok(e);
        }
        self.refresh_index(false).await?;
        self.blob_entry(id)
            .ok_or_else(|| Error::not_found(format!("blob {id} is not in the index")))
    }

    /// One range read for `run` (back to back in one pack), its blobs
    /// opened in place.
    async fn read_run(&self, run: &[IndexEntry]) -> Result<OpenedRun> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(OpenedRun {
                buf: bytes::BytesMut::new(),
                blobs: Vec::new(),
            });
        };
        let key = self.pack_key(&first.pack).await?;
        let name = pack_name(&first.pack);
        let (start, end) = (
            first.offset,
            last.offset.saturating_add(u64::from(last.stored_len)),
        );
        let got = self
            .backend
            .get(&name, ByteRange::Bounded(start..end))
            .await
            .map_err(|e| e.context(name.clone()))?;
        let keys = self.keys.clone();
        let entries: Vec<_> = run.iter().map(IndexEntry::pack_entry).collect();
        // Opened where it lies: the buffer the backend read into, made
        // mutable without a copy when nothing else holds it (`Vec::from`
        // moved a range read at an offset, as a direct read is, to the
        // front of its buffer: a copy of every byte restored).
        let mut buf = bytes::BytesMut::from(got.bytes);
        crate::blocking::run("blob", move || {
            let mut blobs = Vec::with_capacity(entries.len());
            let got = buf.len();
            for e in &entries {
                let at = usize::try_from(e.offset.saturating_sub(start)).unwrap_or(usize::MAX);
                let record = at
                    .checked_add(e.stored_len as usize)
                    .and_then(|to| buf.get_mut(at..to))
                    .ok_or_else(|| {
                        Error::corrupt(format!(
                            "read {got} bytes of {start}..{end}: short of blob {}",
                            e.id.short()
                        ))
                    })?;
                blobs.push(match key.open_blob_in(&keys, e, record)? {
                    std::borrow::Cow::Borrowed(plain) => Opened::InBuffer(at..at + plain.len()),
                    std::borrow::Cow::Owned(plain) => Opened::Decompressed(plain),
                });
            }
            Ok(OpenedRun { buf, blobs })
        })
        .await
        .map_err(|e| e.context(name))
    }
}

/// `entries` cut into runs: each run's blobs lie back to back in one pack,
/// in order, within [`RUN_BYTES`].
fn runs(entries: &[IndexEntry]) -> Vec<&[IndexEntry]> {
    let mut out = Vec::new();
    let mut from = 0;
    for (i, pair) in entries.windows(2).enumerate() {
        let [a, b] = pair else { continue };
        let run_start = entries.get(from).map_or(0, |e| e.offset);
        // Checked: the entries come from the index, whatever it holds.
        let adjacent =
            b.pack == a.pack && a.offset.checked_add(u64::from(a.stored_len)) == Some(b.offset);
        let joins = adjacent
            && b.offset
                .saturating_add(u64::from(b.stored_len))
                .saturating_sub(run_start)
                <= RUN_BYTES;
        if !joins {
            out.extend(entries.get(from..=i));
            from = i + 1;
        }
    }
    out.extend(entries.get(from..).filter(|r| !r.is_empty()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::id::ObjectId;

    fn entry(pack: u8, offset: u64, stored_len: u32) -> IndexEntry {
        IndexEntry {
            blob: BlobId([offset as u8; 32]),
            pack: ObjectId([pack; 32]),
            offset,
            stored_len,
            raw_len: stored_len - 16,
            compression: Compression::Raw,
        }
    }

    fn lens(runs: &[&[IndexEntry]]) -> Vec<usize> {
        runs.iter().map(|r| r.len()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_objects_blobs_come_in_one_read_per_run_and_byte_for_byte() {
        use crate::backend::counting::Counting;
        use crate::backend::memory::MemoryBackend;
        use crate::repo::{InitOptions, OpenOptions};
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        // 6 MiB that neither compresses nor repeats: several chunks, in
        // one pack, back to back.
        let mut body = Vec::with_capacity(6 << 20);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        while body.len() < 6 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(src.join("big"), &body).unwrap();
        let counting = Arc::new(Counting::new(Arc::new(MemoryBackend::new())));
        let open = OpenOptions {
            cache_dir: Some(dir.path().join("cache")),
        };
        let repo = Repository::init(counting.clone(), b"pw", InitOptions::default(), open)
            .await
            .unwrap();
        let source = Arc::new(crate::source::local::LocalSource::new(&src).unwrap());
        crate::ingest::ingest(&repo, source, &Default::default(), Default::default())
            .await
            .unwrap();
        let (point, _) = repo.latest_point().await.unwrap().unwrap();
        let entry = crate::restore::lookup(&repo, &point, "big")
            .await
            .unwrap()
            .unwrap();
        let chunks = entry.object.unwrap().chunks;
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());

        let before = counting.gets();
        let mut read = Vec::new();
        repo.read_blobs(&chunks, |b| {
            read.extend_from_slice(b);
            Ok(())
        })
        .await
        .unwrap();
        assert!(read == body, "restored bytes differ");
        // The pack's header (for its key) and one range for the blobs.
        assert!(
            counting.gets() - before <= 2,
            "{} GETs",
            counting.gets() - before
        );
    }

    #[test]
    fn back_to_back_blobs_of_one_pack_make_one_run() {
        let e = [entry(1, 50, 100), entry(1, 150, 100), entry(1, 250, 30)];
        assert_eq!(lens(&runs(&e)), [3]);
    }

    #[test]
    fn a_gap_another_pack_or_a_step_back_starts_a_new_run() {
        let e = [
            entry(1, 50, 100),
            entry(1, 160, 100), // a gap
            entry(2, 260, 100), // another pack
            entry(2, 360, 100),
            entry(2, 360, 100),           // the same blob again
            entry(3, 0, 100),             // another pack, at a lower offset
            entry(3, u64::MAX - 10, 100), // an index entry past any pack
            entry(3, 5, 100),
        ];
        assert_eq!(lens(&runs(&e)), [1, 1, 2, 1, 1, 1, 1]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn a_run_stops_at_its_byte_limit() {
        let big = (RUN_BYTES / 3) as u32;
        let mut e = Vec::new();
        for i in 0..7u64 {
            e.push(entry(1, 10 + i * u64::from(big), big));
        }
        assert_eq!(lens(&runs(&e)), [3, 3, 1]);
    }
}
