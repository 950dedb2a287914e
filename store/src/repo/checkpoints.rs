//! Storing and finding checkpoints: change-feed positions after a point
//! (`checkpoints/<seq>`), the progress of an unfinished full pass
//! (`passes/<seq>/<n>`) and the marker a pass leaves before its first
//! pack (`passes/<seq>/begun`).

use bytes::Bytes;

use super::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::ObjectKind;
use crate::manifest::checkpoint::Checkpoint;
use crate::manifest::pass::{PassMarker, PassState};

impl Repository {
    /// Records feed positions after point `checkpoint.seq` (create-only:
    /// an existing checkpoint for that point is left as it is).
    pub async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let body = checkpoint.encode().map_err(Error::config)?;
        let bytes = self.seal(ObjectKind::Checkpoint, &body);
        match self
            .backend()
            .put(&Checkpoint::name(checkpoint.seq), Bytes::from(bytes))
            .await
        {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// Loads the checkpoint after point `seq`, if one was written.
    pub async fn load_checkpoint(&self, seq: u64) -> Result<Option<Checkpoint>> {
        let name = Checkpoint::name(seq);
        let read = self.get_sealed_of_point(
            &name,
            ObjectKind::Checkpoint,
            seq,
            "the checkpoint of point",
            |b| Ok(Checkpoint::decode(b)?),
            |c| c.seq,
        );
        none_if_absent(read.await)
    }

    /// The newest checkpoint at or before point `seq`: the one of `seq`
    /// itself (one read) or, when that point was recorded without one
    /// (a crash between point and checkpoint, or a pass without a feed),
    /// the newest earlier one (one listing).
    pub async fn checkpoint_at(&self, seq: u64) -> Result<Option<Checkpoint>> {
        if let Some(c) = self.load_checkpoint(seq).await? {
            return Ok(Some(c));
        }
        let mut seqs: Vec<u64> = self
            .backend()
            .list("checkpoints/")
            .await?
            .iter()
            .filter_map(|l| Checkpoint::seq_from_name(&l.name))
            .filter(|&s| s < seq)
            .collect();
        seqs.sort_unstable();
        match seqs.last() {
            Some(&s) => self.load_checkpoint(s).await,
            None => Ok(None),
        }
    }

    /// Stores state number `n` of the pass committing `state.seq`
    /// (create-only).
    pub async fn put_pass_state(&self, state: &PassState, n: u32) -> Result<()> {
        let body = state.encode().map_err(Error::config)?;
        let bytes = self.seal(ObjectKind::PassState, &body);
        self.backend()
            .put(&PassState::name(state.seq, n), Bytes::from(bytes))
            .await
    }

    /// The newest state of the pass committing point `seq` that
    /// authenticates, with its number; damaged states are skipped with a
    /// warning (the pass then resumes from an earlier one).
    pub async fn latest_pass_state(&self, seq: u64) -> Result<Option<(PassState, u32)>> {
        let mut found: Vec<(u32, String)> = self
            .backend()
            .list(&PassState::prefix(seq))
            .await?
            .into_iter()
            .filter_map(|l| PassState::parse_name(&l.name).map(|(_, n)| (n, l.name)))
            .collect();
        found.sort();
        for (n, name) in found.into_iter().rev() {
            let read = self
                .get_sealed_of_point(
                    &name,
                    ObjectKind::PassState,
                    seq,
                    "the state of the pass for point",
                    |b| Ok(PassState::decode(b)?),
                    |s| s.seq,
                )
                .await;
            match read {
                Ok((s, _)) => return Ok(Some((s, n))),
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Crypto) => {
                    tracing::warn!(error = %e, "skipping a damaged pass state");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The sealed marker of a pass for point `seq` beginning now, and its
    /// name: the packer stores it before the pass's first pack.
    pub(crate) fn pass_marker(&self, seq: u64) -> (String, Bytes) {
        let body = PassMarker {
            seq,
            began_ns: super::now_ns(),
        }
        .encode();
        let bytes = self.seal(ObjectKind::PassMarker, &body);
        (PassMarker::name(seq), Bytes::from(bytes))
    }

    /// The marker of a pass for point `seq`, if one began (for display:
    /// [`Repository::pass_marked`] is what a pass asks).
    pub async fn load_pass_marker(&self, seq: u64) -> Result<Option<PassMarker>> {
        let name = PassMarker::name(seq);
        let read = self.get_sealed_of_point(
            &name,
            ObjectKind::PassMarker,
            seq,
            "the marker of a pass for point",
            |b| Ok(PassMarker::decode(b)?),
            |m| m.seq,
        );
        none_if_absent(read.await)
    }

    /// Whether a pass for point `seq` began before: with `seq` not yet
    /// committed, one stopped on the way and may have left packs no index
    /// segment describes. Existence is enough (a damaged or planted
    /// marker only costs a listing of `packs/`).
    pub async fn pass_marked(&self, seq: u64) -> Result<bool> {
        let name = PassMarker::name(seq);
        match self.backend().head(&name).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.context(name)),
        }
    }
}

/// The value read, or `None` when the object does not exist.
fn none_if_absent<T>(read: Result<(T, Bytes)>) -> Result<Option<T>> {
    match read {
        Ok((value, _)) => Ok(Some(value)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
