//! Moving large file contents between the disk and memory without the
//! page cache (Linux `O_DIRECT`), and dropping what a pass will not read
//! again from it.
//!
//! Why: a pack written, or a restored file, is not read back by the pass
//! that writes it; copying it through the page cache costs a copy per
//! byte and a page of memory per 4 KiB, and on a VM whose free memory is
//! handed back to the host (free-page reporting) every such page is a
//! host fault the first time it is touched again: 2 GB written through the
//! cache took 4.7–5.0 s on the bench machine after 15 s idle and 0.3–0.9 s
//! right after a previous write, against 0.73–0.75 s direct either way
//! (`docs/benchmarks.md`).
//!
//! Direct I/O wants buffers, offsets and lengths in whole pages; this
//! module owns that: [`page_aligned`] buffers, a descriptor switched into
//! and out of direct mode ([`set_direct`]), whole pages direct and the last
//! partial page the usual way ([`write_all_direct`], [`DirectWriter`]),
//! and [`read_direct`], whose buffers come back for the next reads
//! ([`give_back`]); [`BufferPool`] keeps buffers for reuse. Where a
//! filesystem has no direct I/O (`EINVAL`), everything falls back to the
//! usual way; off Linux there is only that.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

/// The boundary direct I/O asks of buffers, offsets and lengths.
pub const PAGE: usize = 4096;

/// A zeroed vector of `len + PAGE` bytes and the offset of its first page
/// boundary (at most `PAGE`): `buf[start..start + len]` may take direct
/// I/O. Large buffers come zeroed for free (a fresh mapping, see
/// [`crate::allocator`]) and ask for huge pages.
pub fn page_aligned(len: usize) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; len + PAGE];
    crate::allocator::advise_huge_pages(&mut buf);
    let start = buf.as_ptr().align_offset(PAGE).min(PAGE);
    (buf, start)
}

/// `buf` emptied for reuse as [`page_aligned`]`(len)` would give it, with
/// its page-aligned start, when it has room for `len` bytes after that
/// start; a fresh one otherwise. Reused pages are already resident: no
/// fault, no zeroing, no host fault on a VM that handed them back.
pub fn reuse_aligned(mut buf: Vec<u8>, len: usize) -> (Vec<u8>, usize) {
    let start = buf.as_ptr().align_offset(PAGE);
    if start <= PAGE && buf.capacity().saturating_sub(start) >= len {
        buf.clear();
        buf.resize(start, 0);
        return (buf, start);
    }
    let (mut buf, start) = page_aligned(len);
    buf.truncate(start);
    (buf, start)
}

/// The allocation under `bytes` back as an empty vector, for
/// [`reuse_aligned`], when nothing else holds it.
pub fn reclaim(bytes: Bytes) -> Option<Vec<u8>> {
    let mut m = bytes.try_into_mut().ok()?;
    m.clear();
    // An empty `BytesMut` becomes its whole allocation without a copy.
    Some(Vec::from(m))
}

/// True when `bytes` can go to or from the disk directly: it starts on a
/// page boundary (its length may end anywhere: the tail goes the usual way).
pub fn is_page_aligned(bytes: &[u8]) -> bool {
    bytes.as_ptr().align_offset(PAGE) == 0
}

/// Switches `f` into (`on`) or out of direct I/O. `false` when its
/// filesystem has none (and `on` was asked).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn set_direct(f: &File, on: bool) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl reads and sets the status flags of a descriptor that
    // `f` keeps open; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let want = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, want) } < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINVAL) if on => Ok(false),
            _ => Err(e),
        };
    }
    Ok(true)
}

/// No direct I/O off Linux.
#[cfg(not(target_os = "linux"))]
pub fn set_direct(_: &File, on: bool) -> std::io::Result<bool> {
    Ok(!on)
}

/// Writes `bytes` at `offset` of `f` (a page multiple): the whole pages
/// direct when `bytes` starts on a page boundary and the filesystem takes
/// it, the rest the usual way. `f` is left out of direct mode. Returns
/// whether the whole pages went direct.
pub fn write_all_direct(f: &File, bytes: &[u8], offset: u64) -> std::io::Result<bool> {
    let whole = bytes.len() & !(PAGE - 1);
    let mut done = 0;
    let mut direct = false;
    if whole > 0
        && is_page_aligned(bytes)
        && offset.is_multiple_of(PAGE as u64)
        && set_direct(f, true)?
    {
        let head = bytes.get(..whole).unwrap_or_default();
        match f.write_all_at(head, offset) {
            Ok(()) => (done, direct) = (whole, true),
            // Refused (an alignment this filesystem does not take): the
            // usual way; nothing was written that it will not overwrite.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(error = %e, "direct write refused");
            }
            Err(e) => {
                set_direct(f, false)?;
                return Err(e);
            }
        }
        set_direct(f, false)?;
    }
    f.write_all_at(bytes.get(done..).unwrap_or_default(), offset + done as u64)?;
    Ok(direct)
}

/// Reads `range` of `f` direct: the whole pages around it go from the disk
/// into a page-aligned buffer, not through the page cache (a restore or a
/// verify reads a pack once). `f` is left out of direct mode. `None` where
/// the filesystem has no direct I/O.
pub fn read_direct(f: &File, range: std::ops::Range<u64>) -> std::io::Result<Option<Bytes>> {
    let page = PAGE as u64;
    let from = range.start & !(page - 1);
    let len =
        usize::try_from(range.end.div_ceil(page) * page - from).map_err(std::io::Error::other)?;
    if !set_direct(f, true)? {
        return Ok(None);
    }
    let read = read_pages(f, from, len);
    set_direct(f, false)?;
    let Some((buf, start, got)) = read? else {
        return Ok(None);
    };
    let skip = (range.start - from) as usize;
    let want = (range.end - range.start) as usize;
    if got < skip + want {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file ends before byte {}", range.end),
        ));
    }
    Ok(Some(
        Bytes::from(buf).slice(start + skip..start + skip + want),
    ))
}

/// Reads up to `len` bytes from page `from` of `f` (in direct mode) into
/// a fresh page-aligned buffer: the buffer, where the bytes start in it,
/// and how many were read. `None` if the filesystem refuses.
fn read_pages(f: &File, from: u64, len: usize) -> std::io::Result<Option<(Vec<u8>, usize, usize)>> {
    let (mut buf, start) = read_buffer(len);
    buf.resize(start + len, 0);
    let mut got = 0;
    while let Some(rest) = buf
        .get_mut(start + got..start + len)
        .filter(|r| !r.is_empty())
    {
        let n = match f.read_at(rest, from + got as u64) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        got += n;
        // A short read is the end of the file (its last partial page).
        if n == 0 || n % PAGE != 0 {
            break;
        }
    }
    Ok(Some((buf, start, got)))
}

/// Buffers kept for reuse, up to a budget of bytes: a reused buffer's
/// pages are resident, where a fresh one faults in and zeroes every page
/// (and on a VM whose idle memory went back to the host, takes a host
/// fault for each). Used for stored packs' buffers, restored files' write
/// buffers and direct reads' buffers.
pub struct BufferPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
    keep_bytes: usize,
}

impl BufferPool {
    /// A pool keeping at most `keep_bytes` of buffers.
    pub const fn new(keep_bytes: usize) -> Self {
        BufferPool {
            free: std::sync::Mutex::new(Vec::new()),
            keep_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The smallest kept buffer of at least `capacity` bytes (empty), or
    /// an empty vector without an allocation.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut free = self.lock();
        let best = (free.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= capacity)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        best.map(|i| free.swap_remove(i)).unwrap_or_default()
    }

    /// Keeps `buf` for a later [`BufferPool::take`] if the budget allows.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < 2 * PAGE {
            return;
        }
        buf.clear();
        let mut free = self.lock();
        let kept: usize = free.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= self.keep_bytes {
            free.push(buf);
        }
    }
}

/// Buffers of direct reads given back when their bytes were used
/// ([`give_back`]), for the next reads (a restore reads a few runs of up
/// to 8 MiB per file, for a few files at once).
static READ_BUFFERS: BufferPool = BufferPool::new(32 << 20);

/// A page-aligned buffer for a direct read of `len` bytes.
fn read_buffer(len: usize) -> (Vec<u8>, usize) {
    reuse_aligned(READ_BUFFERS.take(len + PAGE), len)
}

/// Gives a direct read's buffer back for the next reads.
pub fn give_back(mut bytes: bytes::BytesMut) {
    bytes.clear();
    // Empty, it becomes its whole allocation without a copy.
    READ_BUFFERS.give(Vec::from(bytes));
}

/// Writes a new file front to back, through a page-aligned buffer: each
/// time the buffer fills it goes to the disk direct, and the last partial
/// page goes the usual way at [`DirectWriter::finish`]. Where the
/// filesystem refuses direct I/O it writes the usual way. The buffer is
/// handed back at the end, for the next file.
pub struct DirectWriter {
    /// The file (a descriptor of its own: direct mode is switched on it).
    file: File,
    buf: Vec<u8>,
    /// Where the aligned part of `buf` starts.
    start: usize,
    /// Bytes the aligned part holds (whole pages).
    cap: usize,
    /// Bytes of the file already written out.
    written: u64,
    /// Whether `file` is in direct mode: switched on once, for the
    /// file's life, and off for its last partial page.
    direct: bool,
}

impl DirectWriter {
    /// The size of a fresh buffer.
    pub const BUFFER: usize = 1 << 20;

    /// A writer for `file` (empty) through `buf`: a previous writer's
    /// (see [`DirectWriter::finish`]), or any other; what it holds does
    /// not matter, and one too small for a page is replaced by a fresh
    /// one of [`DirectWriter::BUFFER`] bytes.
    pub fn new(file: File, buf: Vec<u8>) -> Self {
        let room = buf.capacity().saturating_sub(PAGE);
        let (buf, start) = if room >= PAGE {
            reuse_aligned(buf, room)
        } else {
            reuse_aligned(Vec::new(), Self::BUFFER)
        };
        let cap = (buf.capacity() - start) & !(PAGE - 1);
        // Refused or failed: the usual way (a later write says why, if
        // the descriptor is at fault).
        let direct = set_direct(&file, true).unwrap_or(false);
        DirectWriter {
            file,
            buf,
            start,
            cap,
            written: 0,
            direct,
        }
    }

    /// Bytes buffered.
    fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Writes out the whole pages buffered (direct where it can) and keeps
    /// the partial last page.
    fn write_out(&mut self) -> std::io::Result<()> {
        let data = self.buf.get(self.start..).unwrap_or_default();
        let whole = data.len() & !(PAGE - 1);
        if whole == 0 {
            return Ok(());
        }
        let head = data.get(..whole).unwrap_or_default();
        // Page-aligned in memory and in the file: `written` only ever
        // grows by whole pages.
        match self.file.write_all_at(head, self.written) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(error = %e, "direct write refused");
                set_direct(&self.file, false)?;
                self.direct = false;
                self.file.write_all_at(head, self.written)?;
            }
            r => r?,
        }
        self.written += whole as u64;
        self.buf.copy_within(self.start + whole.., self.start);
        self.buf.truncate(self.buf.len() - whole);
        Ok(())
    }

    /// Writes out the rest; returns the file's length and the buffer.
    pub fn finish(mut self) -> std::io::Result<(u64, Vec<u8>)> {
        self.write_out()?;
        if self.direct {
            set_direct(&self.file, false)?;
        }
        let tail = self.buf.get(self.start..).unwrap_or_default();
        self.file.write_all_at(tail, self.written)?;
        Ok((self.written + tail.len() as u64, self.buf))
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(self.cap - self.buffered());
        self.buf
            .extend_from_slice(data.get(..n).unwrap_or_default());
        if self.buffered() == self.cap {
            self.write_out()?;
        }
        Ok(n)
    }

    /// Writes out the whole pages; the last partial page waits for
    /// [`DirectWriter::finish`], as a direct write takes only whole ones.
    fn flush(&mut self) -> std::io::Result<()> {
        self.write_out()
    }
}

/// Tells the kernel the file's pages, written and synced, are not needed
/// in memory: a pack is not read back by the pass that wrote it, and its
/// pages, freed at once, serve the next write instead of pushing the
/// source's data out of the page cache. (The bench harness uses it to
/// read a vault cold.)
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn drop_cached(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads the descriptor, which `f` keeps open.
    match unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) } {
        0 => Ok(()),
        rc => Err(std::io::Error::from_raw_os_error(rc)),
    }
}

/// Drops a file's pages from the page cache (not Linux: nothing to do).
#[cfg(not(target_os = "linux"))]
pub fn drop_cached(_: &File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 4099) as u8).collect()
    }

    #[test]
    fn whole_pages_direct_and_the_rest_the_usual_way_read_back() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, PAGE - 1, PAGE, 3 * PAGE + 17, (1 << 20) + 5] {
            let data = pattern(len);
            let (mut buf, start) = page_aligned(len);
            buf[start..start + len].copy_from_slice(&data);
            let path = dir.path().join(format!("w{len}"));
            let f = File::create_new(&path).unwrap();
            let direct = write_all_direct(&f, &buf[start..start + len], 0).unwrap();
            assert!(
                !direct || len >= PAGE,
                "{len}: no whole page, nothing direct"
            );
            assert!(std::fs::read(&path).unwrap() == data, "{len}");
            // Unaligned bytes go the usual way.
            let f = File::create_new(dir.path().join(format!("u{len}"))).unwrap();
            let unaligned = &buf[start + 1..start + len.max(1)];
            assert!(!write_all_direct(&f, unaligned, 0).unwrap());
            // Any range reads back, direct or not.
            let f = File::open(&path).unwrap();
            let l = len as u64;
            for r in [0..l, l / 3..l, 1.min(l)..l.saturating_sub(1).max(1.min(l))] {
                let got = match read_direct(&f, r.clone()).unwrap() {
                    Some(b) => b.to_vec(),
                    None => data[r.start as usize..r.end as usize].to_vec(),
                };
                assert!(got == data[r.start as usize..r.end as usize], "{len} {r:?}");
            }
            let e = read_direct(&f, 0..l + 1).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn a_pool_keeps_what_its_budget_allows_and_gives_the_smallest_that_fits() {
        let pool = BufferPool::new(100 * PAGE);
        for pages in [10, 40, 20, 60] {
            let mut buf = Vec::with_capacity(pages * PAGE);
            buf.push(1);
            pool.give(buf);
        }
        // Too small to keep.
        pool.give(Vec::with_capacity(PAGE));
        // 10 + 40 + 20 kept; 60 more was over the budget.
        let got = pool.take(15 * PAGE);
        assert_eq!((got.capacity(), got.len()), (20 * PAGE, 0));
        assert_eq!(pool.take(30 * PAGE).capacity(), 40 * PAGE);
        assert_eq!(pool.take(30 * PAGE).capacity(), 0, "none left that fits");
        assert_eq!(pool.take(0).capacity(), 10 * PAGE);
    }

    /// A buffer given back serves a later read, which sees only its own
    /// bytes.
    #[test]
    fn read_buffers_given_back_are_reused_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (pattern(5 * PAGE + 100), vec![7u8; 2 * PAGE + 3]);
        std::fs::write(dir.path().join("a"), &a).unwrap();
        std::fs::write(dir.path().join("b"), &b).unwrap();
        let read = |name: &str, len: usize| {
            let f = File::open(dir.path().join(name)).unwrap();
            read_direct(&f, 0..len as u64).unwrap()
        };
        let Some(first) = read("a", a.len()) else {
            return; // no direct I/O here
        };
        assert!(first == a);
        give_back(bytes::BytesMut::from(first));
        assert!(read("b", b.len()).unwrap() == b);
        let e = File::open(dir.path().join("b")).unwrap();
        let short = read_direct(&e, 0..b.len() as u64 + 1).unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_direct_writer_writes_any_sequence_of_writes_as_one_file() {
        let dir = tempfile::tempdir().unwrap();
        // The first file gets an empty buffer (replaced), the next ones
        // the buffer of the one before.
        let mut buf = Vec::new();
        for (len, step) in [
            (0, 1),
            (10, 3),
            (PAGE, 4095),
            (3 << 20, 70_001),
            (5 << 19, 1 << 20),
        ] {
            let data = pattern(len);
            let path = dir.path().join(format!("f{len}"));
            let f = File::create_new(&path).unwrap();
            let mut w = DirectWriter::new(f, std::mem::take(&mut buf));
            for piece in data.chunks(step) {
                w.write_all(piece).unwrap();
            }
            w.flush().unwrap();
            let (n, back) = w.finish().unwrap();
            assert_eq!(n, len as u64);
            assert!(std::fs::read(&path).unwrap() == data, "{len} by {step}");
            buf = back;
        }
    }
}
