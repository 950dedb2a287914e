//! `strata mount --at TIME MOUNTPOINT`: a recorded point as a read-only
//! FUSE filesystem, until SIGINT or SIGTERM (or an external unmount).
//!
//! Directories are the `/`-separated prefixes of keys
//! ([`strata_store::restore::browse`]); sizes and times come from the
//! entries; a read fetches only the blobs covering the requested range,
//! with a small cache of decrypted blobs for sequential reads. Listings
//! are served page by page from the vault as the kernel asks for them.
//! The point is immutable, so the kernel may cache attributes and pages
//! for as long as it likes.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry,
    ReplyOpen, Request, SessionACL,
};
use strata_store::id::BlobId;
use strata_store::manifest::point::Point;
use strata_store::manifest::ObjectMeta;
use strata_store::repo::Repository;
use strata_store::restore::browse::{self, Child};
use strata_store::ErrorKind;
use tokio::signal::unix::{signal, SignalKind};

use super::{fmt_time, open_for_read, print_json, resolve_point};
use crate::cli::{Global, MountArgs};

/// Attributes and entries never change: a point is immutable.
const TTL: Duration = Duration::from_secs(3600);
/// Children fetched per directory page.
const PAGE: usize = 256;
/// Decrypted blobs kept for sequential reads.
const BLOB_CACHE: usize = 16;

pub async fn run(g: &Global, a: MountArgs) -> Result<ExitCode> {
    let repo = Arc::new(open_for_read(g).await?);
    let point = resolve_point(&repo, &a.at).await?;
    repo.refresh_index(false).await?;
    let mountpoint = a.mountpoint.clone();
    let meta = std::fs::metadata(&mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    if !meta.is_dir() {
        return Err(strata_store::Error::config(format!(
            "mount point {} is not a directory",
            mountpoint.display()
        ))
        .into());
    }
    let fs = VaultFs::new(repo, point.clone(), tokio::runtime::Handle::current());
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(format!("strata#{}", point.seq)),
        MountOption::Subtype("strata".into()),
        MountOption::DefaultPermissions,
    ];
    config.acl = if a.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(4);
    let mut session = fuser::Session::new(fs, &mountpoint, &config).with_context(|| {
        format!(
            "mounting {} (needs /dev/fuse, and root or fusermount3: scripts/install-fuse)",
            mountpoint.display()
        )
    })?;
    let mut unmounter = session.unmount_callable();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let worker = std::thread::spawn(move || {
        let r = session.run();
        let _ = done_tx.send(());
        r
    });
    if g.json {
        print_json(&serde_json::json!({
            "mounted": mountpoint,
            "seq": point.seq,
            "time": fmt_time(point.time_ns),
        }))?;
    } else {
        eprintln!(
            "strata: point #{} ({}) mounted read-only at {}; Ctrl-C to unmount",
            point.seq,
            fmt_time(point.time_ns),
            mountpoint.display()
        );
    }
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = done_rx => {
            tracing::info!("unmounted from outside");
        }
    }
    if let Err(e) = unmounter.unmount() {
        tracing::debug!(error = %e, "unmount (already unmounted?)");
    }
    let joined = tokio::task::spawn_blocking(move || worker.join()).await?;
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "FUSE session ended with an error"),
        Err(_) => anyhow::bail!("the FUSE session thread panicked"),
    }
    if !g.json {
        eprintln!("strata: unmounted {}", mountpoint.display());
    }
    Ok(ExitCode::SUCCESS)
}

enum NodeKind {
    Dir,
    File(Box<ObjectMeta>),
}

struct Node {
    /// Directory: its key prefix ("" or ending in '/'); file: its key.
    path: String,
    kind: NodeKind,
    /// File: where each chunk starts, computed on first read.
    offsets: Option<Arc<Vec<u64>>>,
}

#[derive(Default)]
struct Nodes {
    by_ino: HashMap<u64, Node>,
    by_path: HashMap<(String, bool), u64>,
    next: u64,
}

/// Where a directory handle's listing stands.
#[derive(Default)]
struct DirState {
    /// The offset of the last entry handed out.
    offset: u64,
    /// The last child handed out (name, is a directory).
    after: Option<(String, bool)>,
}

struct VaultFs {
    repo: Arc<Repository>,
    point: Point,
    rt: tokio::runtime::Handle,
    nodes: Mutex<Nodes>,
    dirs: Mutex<HashMap<u64, DirState>>,
    blobs: Mutex<VecDeque<(BlobId, Arc<Vec<u8>>)>>,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn errno(e: &strata_store::Error) -> Errno {
    match e.kind() {
        ErrorKind::NotFound => Errno::ENOENT,
        _ => Errno::EIO,
    }
}

impl VaultFs {
    fn new(repo: Arc<Repository>, point: Point, rt: tokio::runtime::Handle) -> Self {
        let mut nodes = Nodes {
            next: 2,
            ..Default::default()
        };
        nodes.by_ino.insert(
            1,
            Node {
                path: String::new(),
                kind: NodeKind::Dir,
                offsets: None,
            },
        );
        nodes.by_path.insert((String::new(), true), 1);
        let (uid, gid) = current_ids();
        VaultFs {
            repo,
            point,
            rt,
            nodes: Mutex::new(nodes),
            dirs: Mutex::default(),
            blobs: Mutex::default(),
            next_fh: AtomicU64::new(1),
            uid,
            gid,
        }
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The inode of `child` of directory `dir`, allocated on first sight.
    fn inode_of(&self, dir: &str, child: &Child) -> (u64, FileAttr) {
        let (path, kind, is_dir) = match child {
            Child::Dir(n) => (format!("{dir}{n}/"), NodeKind::Dir, true),
            Child::File(n, e) => (
                format!("{dir}{n}"),
                NodeKind::File(Box::new(e.object.clone().unwrap_or_default())),
                false,
            ),
        };
        let mut nodes = self.lock_nodes();
        let ino = match nodes.by_path.get(&(path.clone(), is_dir)) {
            Some(&ino) => ino,
            None => {
                let ino = nodes.next;
                nodes.next += 1;
                nodes.by_path.insert((path.clone(), is_dir), ino);
                nodes.by_ino.insert(
                    ino,
                    Node {
                        path,
                        kind,
                        offsets: None,
                    },
                );
                ino
            }
        };
        let attr = self.attr(ino, &nodes.by_ino[&ino]);
        (ino, attr)
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (kind, size, perm, mtime, nlink) = match &node.kind {
            NodeKind::Dir => (FileType::Directory, 0, 0o555, self.point.time_ns, 2),
            NodeKind::File(m) => {
                let mode = if m.mode & 0o777 == 0 {
                    0o444
                } else {
                    (m.mode & 0o777 & !0o222) as u16
                };
                (FileType::RegularFile, m.size, mode, m.mtime_ns, 1)
            }
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(mtime),
            mtime: time(mtime),
            ctime: time(mtime),
            crtime: time(mtime),
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        }
    }

    fn dir_path(&self, ino: INodeNo) -> Result<String, Errno> {
        let nodes = self.lock_nodes();
        match nodes.by_ino.get(&ino.0) {
            Some(Node {
                path,
                kind: NodeKind::Dir,
                ..
            }) => Ok(path.clone()),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn blob(&self, id: &BlobId) -> Result<Arc<Vec<u8>>, Errno> {
        {
            let cache = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, b)) = cache.iter().find(|(k, _)| k == id) {
                return Ok(b.clone());
            }
        }
        let data = self.rt.block_on(self.repo.read_blob(id)).map_err(|e| {
            tracing::error!(blob = %id, error = %e, "read failed");
            errno(&e)
        })?;
        let data = Arc::new(data);
        let mut cache = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= BLOB_CACHE {
            cache.pop_front();
        }
        cache.push_back((*id, data.clone()));
        Ok(data)
    }

    /// Chunk start offsets of a file (from the index's plaintext lengths).
    fn offsets(&self, ino: u64) -> Result<(Arc<Vec<u64>>, Box<ObjectMeta>), Errno> {
        let mut nodes = self.lock_nodes();
        let node = nodes.by_ino.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let NodeKind::File(meta) = &node.kind else {
            return Err(Errno::EISDIR);
        };
        if let Some(o) = &node.offsets {
            return Ok((o.clone(), meta.clone()));
        }
        let mut offsets = Vec::with_capacity(meta.chunks.len() + 1);
        let mut at = 0u64;
        for id in &meta.chunks {
            offsets.push(at);
            let e = self.repo.blob_entry(id).ok_or_else(|| {
                tracing::error!(blob = %id, key = %node.path, "blob missing from the index");
                Errno::EIO
            })?;
            at += u64::from(e.raw_len);
        }
        offsets.push(at);
        let offsets = Arc::new(offsets);
        node.offsets = Some(offsets.clone());
        Ok((offsets, meta.clone()))
    }

    fn read_range(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let (offsets, meta) = self.offsets(ino)?;
        let end = (offset + u64::from(size)).min(meta.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        if offset >= end {
            return Ok(out);
        }
        // The chunk holding `offset`: the last start at or before it.
        let first = offsets.partition_point(|&s| s <= offset).saturating_sub(1);
        for (i, id) in meta.chunks.iter().enumerate().skip(first) {
            let start = offsets[i];
            if start >= end {
                break;
            }
            let data = self.blob(id)?;
            let from = offset.saturating_sub(start) as usize;
            let to = ((end - start) as usize).min(data.len());
            out.extend_from_slice(data.get(from..to).ok_or(Errno::EIO)?);
        }
        Ok(out)
    }
}

fn current_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    // The owner of our own process directory is our uid/gid.
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}

impl Filesystem for VaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let dir = match self.dir_path(parent) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        match self
            .rt
            .block_on(browse::child(&self.repo, &self.point, &dir, name))
        {
            Ok(Some(child)) => {
                let (_, attr) = self.inode_of(&dir, &child);
                reply.entry(&TTL, &attr, Generation(0));
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => {
                tracing::error!(dir, name, error = %e, "lookup failed");
                reply.error(errno(&e));
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let nodes = self.lock_nodes();
        match nodes.by_ino.get(&ino.0) {
            Some(node) => reply.attr(&TTL, &self.attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.lock_nodes().by_ino.get(&ino.0) {
            Some(Node {
                kind: NodeKind::File(_),
                ..
            }) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_range(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if let Err(e) = self.dir_path(ino) {
            return reply.error(e);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, DirState::default());
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dir = match self.dir_path(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        // Offsets: 1 ".", 2 "..", then 3.. children in order.
        let mut at = offset;
        if at == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            at = 1;
        }
        if at == 1 {
            if reply.add(INodeNo(1), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            at = 2;
        }
        let state = self
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0)
            .unwrap_or_default();
        // Continue where this handle stopped; otherwise (a seek back)
        // list again from the start and skip.
        let (mut after, mut skip) = if state.offset == at && at > 2 {
            (state.after, 0)
        } else {
            (None, at.saturating_sub(2))
        };
        let mut state = DirState {
            offset: at,
            after: after.clone(),
        };
        'pages: loop {
            let page = match self.rt.block_on(browse::list_children(
                &self.repo,
                &self.point,
                &dir,
                after.as_ref().map(|(n, d)| (n.as_str(), *d)),
                PAGE,
            )) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(dir, error = %e, "listing failed");
                    return reply.error(errno(&e));
                }
            };
            if page.is_empty() {
                break;
            }
            for child in page {
                let last = (child.name().to_string(), matches!(child, Child::Dir(_)));
                if skip > 0 {
                    skip -= 1;
                    after = Some(last);
                    continue;
                }
                let (child_ino, attr) = self.inode_of(&dir, &child);
                if reply.add(
                    INodeNo(child_ino),
                    state.offset + 1,
                    attr.kind,
                    child.name(),
                ) {
                    break 'pages;
                }
                state.offset += 1;
                state.after = Some(last.clone());
                after = Some(last);
            }
        }
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh.0, state);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: fuser::ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }
}
