//! Storing and finding change-feed checkpoints (`checkpoints/<seq>`).

use bytes::Bytes;

use super::Repository;
use crate::crypto::random_bytes;
use crate::error::{Error, ErrorKind, Result};
use crate::format::ObjectKind;
use crate::manifest::checkpoint::Checkpoint;
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
}
