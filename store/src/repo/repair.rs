//! `repair index`: rebuild the index from pack trailers alone.
//!
//! Every pack's trailer is read (ranged reads) and its entries written to
//! new segments; the last segment supersedes every segment that existed
//! before, so readers skip them — damaged or not. Nothing is deleted (the
//! vault is immutable); a crash part-way leaves extra segments that
//! restate entries, which is harmless, and the repair can simply be run
//! again. Packs whose trailers do not authenticate are reported: their
//! blobs are lost, and verify names the keys they reach.

use std::collections::HashSet;

use futures::StreamExt;

use super::Repository;
use crate::error::{ErrorKind, Result};
use crate::id::ObjectId;
use crate::index::{IndexEntry, Segment};

/// Entries per segment a repair writes.
const ENTRIES_PER_SEGMENT: usize = 1 << 20;

/// What a repair did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// Packs whose trailers were read.
    pub packs: u64,
    /// Index entries written.
    pub entries: u64,
    /// Segments written.
    pub segments_written: Vec<ObjectId>,
    /// Segments the repair supersedes.
    pub superseded: u64,
    /// Packs whose trailers could not be read, with the reason.
    pub damaged_packs: Vec<(ObjectId, String)>,
}

impl Repository {
    /// Rebuilds the index from the trailers of every pack.
    pub async fn repair_index(&self) -> Result<RepairReport> {
        let old: Vec<ObjectId> = self
            .list_segments()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let packs = self.list_packs().await?;
        let mut report = RepairReport {
            superseded: old.len() as u64,
            ..Default::default()
        };
        let mut batch: Vec<IndexEntry> = Vec::new();
        let mut seen = HashSet::new();
        let mut trailers = futures::stream::iter(packs)
            .map(|p| async move { (p, self.read_trailer(&p).await) })
            .buffer_unordered(8);
        while let Some((pack, r)) = trailers.next().await {
            match r {
                Ok(entries) => {
                    report.packs += 1;
                    batch.extend(entries.into_iter().filter(|e| seen.insert(e.blob)));
                }
                Err(e) if e.kind() == ErrorKind::Transient => return Err(e),
                Err(e) => {
                    tracing::error!(%pack, error = %e, "pack trailer unreadable; its blobs are lost");
                    report.damaged_packs.push((pack, e.to_string()));
                }
            }
            if batch.len() >= ENTRIES_PER_SEGMENT {
                let entries = std::mem::take(&mut batch);
                report.entries += entries.len() as u64;
                report
                    .segments_written
                    .push(self.write_repair_segment(entries, Vec::new()).await?);
            }
        }
        drop(trailers);
        report.entries += batch.len() as u64;
        // Last: the segment that retires the old ones.
        report
            .segments_written
            .push(self.write_repair_segment(batch, old).await?);
        // The local cache starts again from the vault.
        let _ = std::fs::remove_file(self.cache_path());
        *self.index.write().expect("index lock") =
            std::sync::Arc::new(crate::index::cache::IndexCache::empty());
        self.refresh_index(false).await?;
        Ok(report)
    }

    async fn write_repair_segment(
        &self,
        mut entries: Vec<IndexEntry>,
        supersedes: Vec<ObjectId>,
    ) -> Result<ObjectId> {
        entries.sort_by_key(|e| e.blob);
        let id = self
            .put_segment(&Segment {
                entries,
                supersedes,
            })
            .await?;
        tracing::info!(segment = %id, "repair segment written");
        Ok(id)
    }
}
