//! Allocator settings for a long pass, applied by the binaries at start,
//! and the page size asked for large buffers.
//!
//! glibc raises its mmap threshold to the size of each large block freed
//! (up to 32 MiB). After the first 16 MiB pack buffer is freed, later ones
//! come from the heap arenas instead of their own mappings, and the arenas
//! keep what they hand back: a long pass grows its RSS with fragmentation
//! (measured: 282 MiB at 10^6 objects against 131 MiB with a fixed
//! threshold; `docs/benchmarks.md`). A fixed 1 MiB threshold keeps large
//! buffers in mappings of their own, returned to the system when freed.
//!
//! glibc also gives threads up to eight arenas per core; memory freed in
//! one arena is not reused by threads of another, so blocks allocated on
//! one thread and freed on another (listing pages fetched by spawned
//! tasks) leave each arena holding its own free space: 131 MiB at 10^6
//! objects against 113 MiB with one arena per core, at the same speed.

/// Fixes glibc's mmap threshold at 1 MiB and its arenas at one per core.
/// Call once, before threads start. Elsewhere (another libc) it does
/// nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_for_long_runs() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = i32::try_from(cores).unwrap_or(i32::MAX).max(2);
    for (param, value, name) in [
        (libc::M_MMAP_THRESHOLD, 1 << 20, "M_MMAP_THRESHOLD"),
        (libc::M_ARENA_MAX, arenas, "M_ARENA_MAX"),
    ] {
        // SAFETY: mallopt only sets an allocator parameter; it touches no
        // memory of ours and is called before other threads exist.
        let ok = unsafe { libc::mallopt(param, value) };
        if ok != 1 {
            tracing::debug!("mallopt({name}) refused");
        }
    }
}

/// Fixes glibc's mmap threshold and arenas (not glibc: nothing to do).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_for_long_runs() {}

/// Asks the kernel to back `buf`'s allocation with transparent huge
/// pages (2 MiB) where it can. Filling a fresh 16 MiB pack buffer in 4 KiB
/// pages costs 4,096 page faults, each allocating, zeroing and charging
/// one page, and as many to free it: a sixth of a large backup's CPU time,
/// against 2.55 → 2.25 s for the large preset with huge pages, for a few
/// MiB more at the peak (a partly filled buffer rounds up to 2 MiB; see
/// `docs/benchmarks.md`). Where huge pages are off (`never`) or the
/// range is too small, nothing changes.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn advise_huge_pages<T>(buf: &mut Vec<T>) {
    const HUGE: usize = 2 << 20;
    let base = buf.as_mut_ptr().cast::<u8>();
    let skip = base.align_offset(HUGE);
    let bytes = buf.capacity() * std::mem::size_of::<T>();
    let len = bytes.saturating_sub(skip) & !(HUGE - 1);
    if skip == usize::MAX || len == 0 {
        return;
    }
    // SAFETY: `base + skip .. + len` lies inside the vector's allocation
    // (`skip + len <= capacity` in bytes), which it keeps while we hold `&mut`;
    // MADV_HUGEPAGE only changes how the kernel backs those pages, never
    // their contents.
    let rc = unsafe { libc::madvise(base.add(skip).cast(), len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        tracing::trace!(error = %std::io::Error::last_os_error(), "madvise(MADV_HUGEPAGE) refused");
    }
}

/// Huge pages for a buffer (not Linux: nothing to ask).
#[cfg(not(target_os = "linux"))]
pub fn advise_huge_pages<T>(_: &mut Vec<T>) {}
