//! Allocator settings for a long pass, applied by the binaries at start.
//!
//! glibc raises its mmap threshold to the size of each large block freed
//! (up to 32 MiB). After the first 16 MiB pack buffer is freed, later ones
//! come from the heap arenas instead of their own mappings, and the arenas
//! keep what they hand back: a long pass grows its RSS with fragmentation
//! (measured: 282 MiB at 10^6 objects against 131 MiB with a fixed
//! threshold; `docs/benchmarks.md`). A fixed 1 MiB threshold keeps large
//! buffers in mappings of their own, returned to the system when freed.

/// Fixes glibc's mmap threshold at 1 MiB. Call once, before threads start.
/// Elsewhere (another libc) it does nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_for_long_runs() {
    // SAFETY: mallopt only sets an allocator parameter; it touches no
    // memory of ours and is called before other threads exist.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    if ok != 1 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused");
    }
}

/// Fixes glibc's mmap threshold at 1 MiB (not glibc: nothing to do).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_for_long_runs() {}
