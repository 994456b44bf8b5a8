//! The agent's own memory: the C library's allocator tuned for a small,
//! long-lived process, freed start-up memory handed back to the kernel,
//! and, for the static (musl) binary, memcpy and memmove of its own
//! (feature `own-memcpy`, on by default).
//!
//! glibc raises its mmap threshold each time a large block is freed, up to
//! 32 MiB, so after the eBPF load (which reads the kernel's BTF, several
//! MiB, twice) every later large buffer (scrape bodies, WAL segments) is
//! carved from the heap and leaves free, resident pages behind. A fixed
//! threshold keeps large buffers in their own mappings, returned on free.
//!
//! musl's allocator (the static binary's, which the image and the systemd
//! unit ship) returns memory by itself and has no such knobs. It is slower
//! than glibc's on the scrape path; mimalloc was measured in its place and
//! was as fast as glibc but held 8 MiB more on the full host (README,
//! dependencies), so it is not used.

#[cfg(all(target_arch = "x86_64", feature = "own-memcpy"))]
pub mod copy;

/// Blocks from this size up get a mapping of their own (glibc's default
/// before its dynamic adjustment).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Two heaps, one per tokio worker; glibc's default of eight per core only
/// multiplies free pages for an agent whose threads mostly sleep.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Tunes the allocator; call first thing in `main`, before other threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc allocator parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Returns free heap pages to the kernel, after a one-off start-up cost
/// (the eBPF load) that would otherwise stay in the agent's RSS for good.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
