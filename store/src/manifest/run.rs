//! Runs: immutable sorted sequences of [`Entry`] stored as a small B-tree
//! of sealed pages (`runs/<id>`), built bottom-up in one pass.
//!
//! Spec: `format-spec/SPEC.md#run-pages`. A page body is
//!
//! ```text
//! leaf:  type 0 (u8) ‖ count u32 ‖ count × Entry
//! inner: type 1 (u8) ‖ height u8 ‖ count u32 ‖ count × Child
//! Child: first key (u16 len ‖ bytes) ‖ first seq u64 ‖ page id [32] ‖ entries u64
//! ```
//!
//! Entries are ordered by key ascending, then seq descending; a child's
//! first position is the position of the first entry below it.

use super::{cmp_pos, Entry};
use crate::crypto::Keys;
use crate::error::{DecodeError, Error, Result};
use crate::format::{ObjectKind, Reader, Writer};
use crate::id::ObjectId;
use crate::sealed;

/// Target plaintext size of a page (pages close at the first entry past it).
pub const DEFAULT_PAGE_TARGET: usize = 256 << 10;
/// Children per inner page at most.
pub const MAX_FANOUT: usize = 1024;

/// One child of an inner page.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Child {
    /// Key of the first entry below this child.
    pub first_key: String,
    /// Seq of the first entry below this child.
    pub first_seq: u64,
    /// The child page.
    pub page: ObjectId,
    /// Number of entries below this child.
    pub entries: u64,
}

/// A decoded run page.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Page {
    /// Entries.
    Leaf {
        /// The entries, in run order.
        entries: Vec<Entry>,
    },
    /// Pointers to pages one level down.
    Inner {
        /// 1 when the children are leaves.
        height: u8,
        /// The children, in run order.
        children: Vec<Child>,
    },
}

impl Page {
    /// The plaintext body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Page::Leaf { entries } => {
                w.u8(0);
                w.u32(u32::try_from(entries.len()).expect("page entry count fits u32"));
                for e in entries {
                    e.encode(&mut w);
                }
            }
            Page::Inner { height, children } => {
                w.u8(1);
                w.u8(*height);
                w.u32(u32::try_from(children.len()).expect("fanout fits u32"));
                for c in children {
                    w.bytes16(c.first_key.as_bytes());
                    w.u64(c.first_seq);
                    w.bytes(c.page.as_bytes());
                    w.u64(c.entries);
                }
            }
        }
        w.into_inner()
    }

    /// Decodes a body and checks that its positions are in run order.
    pub fn decode(body: &[u8]) -> Result<Page, DecodeError> {
        let mut r = Reader::new(body);
        let page = match r.u8("page type")? {
            0 => {
                let n = r.count32(11, "entries")?;
                let mut entries: Vec<Entry> = Vec::with_capacity(n);
                for i in 0..n {
                    let at = r.offset();
                    let e = Entry::decode(&mut r)?;
                    if entries.last().is_some_and(|p| p.order(&e).is_ge()) {
                        return Err(DecodeError::new(at, format!("entry {i} is out of order")));
                    }
                    entries.push(e);
                }
                Page::Leaf { entries }
            }
            1 => {
                let height = r.u8("height")?;
                if height == 0 {
                    return Err(DecodeError::new(1, "inner page of height 0"));
                }
                let n = r.count32(50, "children")?;
                let mut children: Vec<Child> = Vec::with_capacity(n);
                for i in 0..n {
                    let at = r.offset();
                    let c = Child {
                        first_key: r.string16("first key")?,
                        first_seq: r.u64("first seq")?,
                        page: ObjectId(r.array::<32>("page id")?),
                        entries: r.u64("entries")?,
                    };
                    if children.last().is_some_and(|p| {
                        cmp_pos(&p.first_key, p.first_seq, &c.first_key, c.first_seq).is_ge()
                    }) {
                        return Err(DecodeError::new(at, format!("child {i} is out of order")));
                    }
                    children.push(c);
                }
                Page::Inner { height, children }
            }
            t => {
                return Err(DecodeError::unsupported(
                    0,
                    format!("unknown page type {t}"),
                ))
            }
        };
        r.finish("run page")?;
        Ok(page)
    }

    /// Opens a sealed page object.
    pub fn open(keys: &Keys, bytes: &[u8]) -> Result<Page> {
        let body = sealed::open(keys, ObjectKind::RunPage, bytes)?;
        Ok(Page::decode(&body)?)
    }
}

/// Describes one run; time-index entries list the runs of a point.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RunDescriptor {
    /// Root page.
    pub root: ObjectId,
    /// Height of the root (0: the root is a leaf).
    pub height: u8,
    /// Lowest point sequence among its entries.
    pub min_seq: u64,
    /// Highest point sequence among its entries.
    pub max_seq: u64,
    /// Number of entries.
    pub entries: u64,
    /// Bytes of all its pages as stored.
    pub stored_bytes: u64,
}

/// Encoded length of a [`RunDescriptor`].
pub const DESCRIPTOR_LEN: usize = 32 + 1 + 8 * 4;

impl RunDescriptor {
    /// Appends the encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.bytes(self.root.as_bytes());
        w.u8(self.height);
        w.u64(self.min_seq);
        w.u64(self.max_seq);
        w.u64(self.entries);
        w.u64(self.stored_bytes);
    }

    /// Decodes one descriptor.
    pub fn decode(r: &mut Reader<'_>) -> Result<RunDescriptor, DecodeError> {
        Ok(RunDescriptor {
            root: ObjectId(r.array::<32>("run root")?),
            height: r.u8("run height")?,
            min_seq: r.u64("min seq")?,
            max_seq: r.u64("max seq")?,
            entries: r.u64("entries")?,
            stored_bytes: r.u64("stored bytes")?,
        })
    }

    /// The size tier for merging: runs in one tier are within a factor of
    /// `fanout` in entry count.
    pub fn tier(&self, fanout: u64) -> u32 {
        let mut n = self.entries / 1024;
        let mut tier = 0;
        while n > 0 {
            n /= fanout.max(2);
            tier += 1;
        }
        tier
    }
}

/// Type byte and entry count before a leaf's entries.
const LEAF_HEADER_LEN: usize = 5;

/// A sealed page ready to store under `runs/<id>`.
#[derive(Debug)]
pub struct SealedPage {
    /// blake3 of `bytes`.
    pub id: ObjectId,
    /// The sealed object.
    pub bytes: Vec<u8>,
}

/// Builds a run from entries pushed in run order; sans-I/O: finished pages
/// are collected with [`RunBuilder::take_ready`] and stored by the caller
/// before the descriptor from [`RunBuilder::finish`] is published.
pub struct RunBuilder {
    keys: Keys,
    salts: Box<dyn FnMut() -> [u8; 32] + Send>,
    zstd_level: i32,
    page_target: usize,
    /// The leaf being filled, already in its stored form (type, a count
    /// filled in when sealed, then the entries): a partition holds one, and
    /// a pass hundreds of partitions.
    leaf: Writer,
    leaf_count: u32,
    /// Position of the leaf's first entry.
    leaf_first: Option<(String, u64)>,
    /// Pending children per height (index 0: children that are leaves).
    levels: Vec<Vec<Child>>,
    ready: Vec<SealedPage>,
    last: Option<(String, u64)>,
    min_seq: u64,
    max_seq: u64,
    entries: u64,
    stored_bytes: u64,
}

impl RunBuilder {
    /// A builder whose page salts come from `salts` (random in normal use).
    pub fn new(keys: &Keys, zstd_level: i32, salts: Box<dyn FnMut() -> [u8; 32] + Send>) -> Self {
        RunBuilder {
            keys: keys.clone(),
            salts,
            zstd_level,
            page_target: DEFAULT_PAGE_TARGET,
            leaf: Writer::default(),
            leaf_count: 0,
            leaf_first: None,
            levels: Vec::new(),
            ready: Vec::new(),
            last: None,
            min_seq: u64::MAX,
            max_seq: 0,
            entries: 0,
            stored_bytes: 0,
        }
    }

    /// Sets the page target size (tests use small pages to get deep trees).
    #[must_use]
    pub fn page_target(mut self, bytes: usize) -> Self {
        self.page_target = bytes.max(1);
        self
    }

    /// Adds the next entry; entries must come in strictly increasing run order.
    pub fn push(&mut self, entry: Entry) -> Result<()> {
        entry
            .validate()
            .map_err(|e| Error::config(format!("entry {:?}: {e}", entry.key)))?;
        if let Some((k, s)) = &self.last {
            if cmp_pos(k, *s, &entry.key, entry.seq).is_ge() {
                return Err(Error::config(format!(
                    "run entries out of order: {:?}@{} after {k:?}@{s}",
                    entry.key, entry.seq
                )));
            }
        }
        self.last = Some((entry.key.clone(), entry.seq));
        self.min_seq = self.min_seq.min(entry.seq);
        self.max_seq = self.max_seq.max(entry.seq);
        self.entries += 1;
        if self.leaf_count == 0 {
            self.leaf = Writer::default();
            self.leaf.u8(0);
            self.leaf.u32(0);
            self.leaf_first = Some((entry.key.clone(), entry.seq));
        }
        entry.encode(&mut self.leaf);
        self.leaf_count += 1;
        if self.leaf.len() - LEAF_HEADER_LEN >= self.page_target {
            self.flush_leaf();
        }
        Ok(())
    }

    fn seal(&mut self, page: &Page) -> ObjectId {
        self.seal_body(&page.encode())
    }

    fn seal_body(&mut self, body: &[u8]) -> ObjectId {
        let bytes = sealed::seal(
            &self.keys,
            ObjectKind::RunPage,
            (self.salts)(),
            body,
            self.zstd_level,
        );
        let id = ObjectId::of(&bytes);
        self.stored_bytes += bytes.len() as u64;
        self.ready.push(SealedPage { id, bytes });
        id
    }

    fn flush_leaf(&mut self) {
        if self.leaf_count == 0 {
            return;
        }
        let count = std::mem::take(&mut self.leaf_count);
        let (first_key, first_seq) = self.leaf_first.take().unwrap_or_default();
        let mut body = std::mem::take(&mut self.leaf).into_inner();
        // The count, now known, after the type byte (as `Page::encode`).
        if let Some(at) = body.get_mut(1..LEAF_HEADER_LEN) {
            at.copy_from_slice(&count.to_le_bytes());
        }
        let id = self.seal_body(&body);
        let count = u64::from(count);
        self.add_child(
            0,
            Child {
                first_key,
                first_seq,
                page: id,
                entries: count,
            },
        );
    }

    fn add_child(&mut self, level: usize, child: Child) {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        let full = self.levels.get_mut(level).map(|l| {
            l.push(child);
            l.len() >= MAX_FANOUT
        });
        if full == Some(true) {
            self.flush_inner(level);
        }
    }

    fn flush_inner(&mut self, level: usize) {
        let children = self
            .levels
            .get_mut(level)
            .map(std::mem::take)
            .unwrap_or_default();
        if children.is_empty() {
            return;
        }
        let first = children
            .first()
            .map(|c| (c.first_key.clone(), c.first_seq))
            .unwrap_or_default();
        let entries = children.iter().map(|c| c.entries).sum();
        let height = u8::try_from(level + 1).unwrap_or(u8::MAX);
        let id = self.seal(&Page::Inner { height, children });
        self.add_child(
            level + 1,
            Child {
                first_key: first.0,
                first_seq: first.1,
                page: id,
                entries,
            },
        );
    }

    /// Appends the stored leaves of `run` (their first positions and
    /// counts, in run order) after everything pushed so far: concatenates
    /// runs over disjoint key ranges without rewriting their leaves. The
    /// leaves must sort after what the builder holds.
    pub fn append_leaves(&mut self, run: &RunDescriptor, leaves: Vec<Child>) -> Result<()> {
        self.flush_leaf();
        for child in leaves {
            if let Some((k, s)) = &self.last {
                if cmp_pos(k, *s, &child.first_key, child.first_seq).is_ge() {
                    return Err(Error::config(format!(
                        "runs to concatenate overlap at {:?}",
                        child.first_key
                    )));
                }
            }
            // Later pushes compare against the leaf's first position: the
            // caller keeps whole runs in order.
            self.last = Some((child.first_key.clone(), child.first_seq));
            self.entries += child.entries;
            self.add_child(0, child);
        }
        self.min_seq = self.min_seq.min(run.min_seq);
        self.max_seq = self.max_seq.max(run.max_seq);
        self.stored_bytes += run.stored_bytes;
        Ok(())
    }

    /// Pages finished since the last call; store them before publishing
    /// the run.
    pub fn take_ready(&mut self) -> Vec<SealedPage> {
        std::mem::take(&mut self.ready)
    }

    /// Entries pushed so far.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Closes all pages and returns the run's descriptor; `None` for an
    /// empty run. Call [`RunBuilder::take_ready`] afterwards for the last pages.
    pub fn finish(&mut self) -> Option<RunDescriptor> {
        if self.entries == 0 {
            return None;
        }
        self.flush_leaf();
        let mut level = 0;
        // Close every level bottom-up until one page remains at the top.
        loop {
            let pending = self.levels.get(level).map_or(0, Vec::len);
            let above = self.levels.iter().skip(level + 1).any(|l| !l.is_empty());
            if pending == 1 && !above {
                let child = self.levels.get_mut(level).and_then(Vec::pop)?;
                return Some(RunDescriptor {
                    root: child.page,
                    height: u8::try_from(level).unwrap_or(u8::MAX),
                    min_seq: self.min_seq,
                    max_seq: self.max_seq,
                    entries: self.entries,
                    stored_bytes: self.stored_bytes,
                });
            }
            self.flush_inner(level);
            level += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::manifest::ObjectMeta;
    use std::collections::HashMap;

    fn entry(i: u32, seq: u64) -> Entry {
        Entry {
            key: format!("key/{i:06}"),
            seq,
            object: Some(ObjectMeta {
                size: u64::from(i),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn builds_a_tree_whose_leaves_hold_every_entry_in_order() {
        let keys = Keys::derive(&MasterKey::from_bytes([1; 32]));
        let mut b = RunBuilder::new(&keys, 0, Box::new(|| [0; 32])).page_target(200);
        let mut pages = HashMap::new();
        for i in 0..3000 {
            b.push(entry(i, 5)).unwrap();
            b.push(entry(i, 2)).unwrap();
        }
        assert!(b.push(entry(0, 1)).is_err());
        let d = b.finish().unwrap();
        for p in b.take_ready() {
            pages.insert(p.id, Page::open(&keys, &p.bytes).unwrap());
        }
        assert_eq!(d.entries, 6000);
        assert!(d.height >= 2, "height {}", d.height);
        // Walk the tree.
        let mut out = Vec::new();
        let mut stack = vec![d.root];
        while let Some(id) = stack.pop() {
            match &pages[&id] {
                Page::Leaf { entries } => out.extend(entries.iter().cloned()),
                Page::Inner { children, .. } => stack.extend(children.iter().rev().map(|c| c.page)),
            }
        }
        assert_eq!(out.len(), 6000);
        assert!(out.windows(2).all(|w| w[0].order(&w[1]).is_lt()));
    }

    proptest::proptest! {
        #[test]
        fn page_round_trip(mut entries in proptest::collection::vec(crate::manifest::tests::arb_entry(), 0..20)) {
            entries.sort_by(|a, b| a.order(b));
            entries.dedup_by(|a, b| a.order(b).is_eq());
            let leaf = Page::Leaf { entries: entries.clone() };
            proptest::prop_assert_eq!(Page::decode(&leaf.encode()).unwrap(), leaf.clone());
            let children: Vec<Child> = entries
                .iter()
                .map(|e| Child { first_key: e.key.clone(), first_seq: e.seq, page: ObjectId([7; 32]), entries: 3 })
                .collect();
            let inner = Page::Inner { height: 2, children };
            proptest::prop_assert_eq!(Page::decode(&inner.encode()).unwrap(), inner);
        }
    }

    #[test]
    fn single_leaf_run_has_height_zero() {
        let keys = Keys::derive(&MasterKey::from_bytes([1; 32]));
        let mut b = RunBuilder::new(&keys, 3, Box::new(|| [0; 32]));
        assert!(b.finish().is_none());
        b.push(entry(1, 0)).unwrap();
        let d = b.finish().unwrap();
        assert_eq!(d.height, 0);
        assert_eq!(b.take_ready().len(), 1);
    }
}
