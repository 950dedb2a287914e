//! Reading runs: cursors over one run's pages, and the merged view of the
//! state at one point.
//!
//! The state at point `T` for a key is the newest entry with `seq <= T`
//! across the runs that point lists; a deletion entry hides the key.
//! A seek descends from each run's root (its height + 1 pages), then
//! iteration walks leaves in order, so `ls` of a prefix reads only the
//! pages that hold it, and a single-key lookup reads O(log n) pages.

use std::sync::Arc;

use super::Repository;
use crate::error::Result;
use crate::manifest::run::{Page, RunDescriptor};
use crate::manifest::{cmp_pos, Entry};

/// A position in one run, iterating entries in run order.
pub struct RunCursor<'r> {
    repo: &'r Repository,
    /// Path from the root: page and index of the next child/entry.
    stack: Vec<(Arc<Page>, usize)>,
}

impl<'r> RunCursor<'r> {
    /// A cursor at the first entry at or after (`key`, `seq`) in run order.
    pub async fn seek(
        repo: &'r Repository,
        run: &RunDescriptor,
        key: &str,
        seq: u64,
    ) -> Result<RunCursor<'r>> {
        let mut stack = Vec::new();
        let mut page = repo.load_page(&run.root).await?;
        loop {
            match &*page {
                Page::Leaf { entries } => {
                    let i = entries.partition_point(|e| cmp_pos(&e.key, e.seq, key, seq).is_lt());
                    stack.push((page.clone(), i));
                    break;
                }
                Page::Inner { children, .. } => {
                    // The last child whose first position is <= target.
                    let i = children
                        .partition_point(|c| cmp_pos(&c.first_key, c.first_seq, key, seq).is_le())
                        .saturating_sub(1);
                    let child = children.get(i).map(|c| c.page);
                    stack.push((page.clone(), i));
                    match child {
                        Some(id) => page = repo.load_page(&id).await?,
                        None => break,
                    }
                }
            }
        }
        Ok(RunCursor { repo, stack })
    }

    /// A cursor at the start of the run.
    pub async fn start(repo: &'r Repository, run: &RunDescriptor) -> Result<RunCursor<'r>> {
        Self::seek(repo, run, "", u64::MAX).await
    }

    /// The next entry in run order.
    pub async fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            let Some((page, i)) = self.stack.last_mut() else {
                return Ok(None);
            };
            match &**page {
                Page::Leaf { entries } => {
                    if let Some(e) = entries.get(*i) {
                        *i += 1;
                        return Ok(Some(e.clone()));
                    }
                    self.stack.pop();
                    self.advance_parent().await?;
                }
                Page::Inner { .. } => {
                    // Only reached after advance_parent moved past the end.
                    self.stack.pop();
                    self.advance_parent().await?;
                }
            }
        }
    }

    /// Moves the top inner page to its next child and descends to that
    /// child's first leaf.
    async fn advance_parent(&mut self) -> Result<()> {
        let Some((page, i)) = self.stack.last_mut() else {
            return Ok(());
        };
        *i += 1;
        let Page::Inner { children, .. } = &**page else {
            return Ok(());
        };
        let Some(mut id) = children.get(*i).map(|c| c.page) else {
            return Ok(()); // exhausted; next() pops it
        };
        loop {
            let p = self.repo.load_page(&id).await?;
            let first_child = match &*p {
                Page::Leaf { .. } => None,
                Page::Inner { children, .. } => children.first().map(|c| c.page),
            };
            self.stack.push((p, 0));
            match first_child {
                Some(c) => id = c,
                None => return Ok(()),
            }
        }
    }
}

/// One run's view at point `at`: per key, its newest entry with seq <= at.
struct RunAt<'r> {
    cursor: RunCursor<'r>,
    at: u64,
    peeked: Option<Entry>,
    done: bool,
}

impl RunAt<'_> {
    async fn next_key(&mut self) -> Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        // Find the first entry visible at `at`.
        let found = loop {
            let e = match self.peeked.take() {
                Some(e) => e,
                None => match self.cursor.next().await? {
                    Some(e) => e,
                    None => {
                        self.done = true;
                        return Ok(None);
                    }
                },
            };
            if e.seq <= self.at {
                break e;
            }
        };
        // Skip older versions of the same key.
        loop {
            match self.cursor.next().await? {
                Some(e) if e.key == found.key => continue,
                Some(e) => {
                    self.peeked = Some(e);
                    break;
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        Ok(Some(found))
    }
}

/// The state at one point: live objects in key order, optionally under a
/// prefix. Merges the point's runs; newest version wins; deletions hide.
pub struct StateCursor<'r> {
    runs: Vec<RunAt<'r>>,
    heads: Vec<Option<Entry>>,
    prefix: String,
    include_deleted: bool,
}

impl<'r> StateCursor<'r> {
    /// A cursor over the state at sequence `at`, given the runs of a point
    /// at or after `at`, starting at the first key >= `prefix`.
    pub async fn new(
        repo: &'r Repository,
        runs: &[RunDescriptor],
        at: u64,
        prefix: &str,
    ) -> Result<StateCursor<'r>> {
        Self::starting_at(repo, runs, at, prefix, prefix).await
    }

    /// Like [`StateCursor::new`], but starting at the first key >= `start`
    /// (which must sort at or after `prefix`) and still ending with the
    /// last key under `prefix`.
    pub async fn starting_at(
        repo: &'r Repository,
        runs: &[RunDescriptor],
        at: u64,
        start: &str,
        prefix: &str,
    ) -> Result<StateCursor<'r>> {
        let mut rs = Vec::new();
        for run in runs.iter().filter(|r| r.min_seq <= at) {
            let cursor = RunCursor::seek(repo, run, start, u64::MAX).await?;
            rs.push(RunAt {
                cursor,
                at,
                peeked: None,
                done: false,
            });
        }
        let mut heads = Vec::with_capacity(rs.len());
        for r in &mut rs {
            heads.push(r.next_key().await?);
        }
        Ok(StateCursor {
            runs: rs,
            heads,
            prefix: prefix.to_string(),
            include_deleted: false,
        })
    }

    /// Also yield deletion entries (the diff and the ingest planner need them).
    #[must_use]
    pub fn include_deleted(mut self) -> Self {
        self.include_deleted = true;
        self
    }

    /// The next key's current entry.
    pub async fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            let Some(min_key) = self.heads.iter().flatten().map(|e| e.key.clone()).min() else {
                return Ok(None);
            };
            if !min_key.starts_with(&self.prefix) {
                return Ok(None);
            }
            let mut best: Option<Entry> = None;
            for (head, run) in self.heads.iter_mut().zip(self.runs.iter_mut()) {
                if head.as_ref().is_some_and(|e| e.key == min_key) {
                    let e = head.take().expect("checked above");
                    *head = run.next_key().await?;
                    if best.as_ref().is_none_or(|b| e.seq > b.seq) {
                        best = Some(e);
                    }
                }
            }
            match best {
                Some(e) if e.object.is_some() || self.include_deleted => return Ok(Some(e)),
                _ => continue,
            }
        }
    }
}

/// Iterates every entry of several runs (all versions) in run order: the
/// input of a run merge.
pub struct MergeCursor<'r> {
    cursors: Vec<RunCursor<'r>>,
    heads: Vec<Option<Entry>>,
}

impl<'r> MergeCursor<'r> {
    /// A cursor over all entries of `runs`.
    pub async fn new(repo: &'r Repository, runs: &[RunDescriptor]) -> Result<MergeCursor<'r>> {
        let mut cursors = Vec::new();
        let mut heads = Vec::new();
        for r in runs {
            let mut c = RunCursor::start(repo, r).await?;
            heads.push(c.next().await?);
            cursors.push(c);
        }
        Ok(MergeCursor { cursors, heads })
    }

    /// The next entry in run order; an entry present in two runs (same key
    /// and seq) is yielded once.
    pub async fn next(&mut self) -> Result<Option<Entry>> {
        let mut min: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some(e) = h {
                let better = match min.and_then(|m| self.heads.get(m)).and_then(Option::as_ref) {
                    None => true,
                    Some(cur) => e.order(cur).is_lt(),
                };
                if better {
                    min = Some(i);
                }
            }
        }
        let Some(m) = min else { return Ok(None) };
        let out = self.heads.get_mut(m).and_then(Option::take);
        if let (Some(c), Some(h)) = (self.cursors.get_mut(m), self.heads.get_mut(m)) {
            *h = c.next().await?;
        }
        // Drop duplicates of the same position in other runs.
        if let Some(e) = &out {
            for (h, c) in self.heads.iter_mut().zip(self.cursors.iter_mut()) {
                while h.as_ref().is_some_and(|x| x.key == e.key && x.seq == e.seq) {
                    *h = c.next().await?;
                }
            }
        }
        Ok(out)
    }
}
