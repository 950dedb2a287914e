//! Allocator settings for a long pass, applied by the binaries at start.
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
