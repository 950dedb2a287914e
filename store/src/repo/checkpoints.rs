//! Storing and finding checkpoints: change-feed positions after a point
//! (`checkpoints/<seq>`), the progress of an unfinished full pass
//! (`passes/<seq>/<n>`) and the marker a pass leaves before its first
//! pack (`passes/<seq>/begun`).

use bytes::Bytes;

use super::Repository;
use crate::crypto::random_bytes;
use crate::error::{Error, ErrorKind, Result};
use crate::format::ObjectKind;
use crate::manifest::checkpoint::Checkpoint;
use crate::manifest::pass::{PassMarker, PassState};
use crate::sealed;

impl Repository {
    /// Records feed positions after point `checkpoint.seq` (create-only:
    /// an existing checkpoint for that point is left as it is).
    pub async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let body = checkpoint.encode().map_err(Error::config)?;
        let bytes = sealed::seal(
            self.keys(),
            ObjectKind::Checkpoint,
            random_bytes(),
            &body,
            self.config().zstd_level,
        );
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
        let keys = self.keys();
        match self
            .get_authentic(&name, |bytes| {
                let c = Checkpoint::decode(&sealed::open(keys, ObjectKind::Checkpoint, bytes)?)?;
                if c.seq != seq {
                    return Err(Error::corrupt(format!(
                        "holds the checkpoint of point {} (replayed or moved)",
                        c.seq
                    )));
                }
                Ok(c)
            })
            .await
        {
            Ok((c, _)) => Ok(Some(c)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.context(name)),
        }
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
        let bytes = sealed::seal(
            self.keys(),
            ObjectKind::PassState,
            random_bytes(),
            &body,
            self.config().zstd_level,
        );
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
        let keys = self.keys();
        for (n, name) in found.into_iter().rev() {
            let read = self
                .get_authentic(&name, |bytes| {
                    let s = PassState::decode(&sealed::open(keys, ObjectKind::PassState, bytes)?)?;
                    if s.seq != seq {
                        return Err(Error::corrupt(format!(
                            "holds the state of the pass for point {} (moved)",
                            s.seq
                        )));
                    }
                    Ok(s)
                })
                .await;
            match read {
                Ok((s, _)) => return Ok(Some((s, n))),
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Crypto) => {
                    tracing::warn!(%name, error = %e, "skipping a damaged pass state");
                }
                Err(e) => return Err(e.context(name)),
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
        let bytes = sealed::seal(
            self.keys(),
            ObjectKind::PassMarker,
            random_bytes(),
            &body,
            self.config().zstd_level,
        );
        (PassMarker::name(seq), Bytes::from(bytes))
    }

    /// The marker of a pass for point `seq`, if one began (for display:
    /// [`Repository::pass_marked`] is what a pass asks).
    pub async fn load_pass_marker(&self, seq: u64) -> Result<Option<PassMarker>> {
        let name = PassMarker::name(seq);
        let keys = self.keys();
        match self
            .get_authentic(&name, |bytes| {
                let m = PassMarker::decode(&sealed::open(keys, ObjectKind::PassMarker, bytes)?)?;
                if m.seq != seq {
                    return Err(Error::corrupt(format!(
                        "holds the marker of a pass for point {} (moved)",
                        m.seq
                    )));
                }
                Ok(m)
            })
            .await
        {
            Ok((m, _)) => Ok(Some(m)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.context(name)),
        }
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
