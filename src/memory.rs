//! How the process keeps freed memory (glibc's allocator on Linux).
//!
//! A training step allocates and frees activations of 5–120 MB, a dozen per layer. glibc's
//! defaults hand large freed blocks back to the kernel at once (per-thread arenas, a 128 KiB
//! `mmap` threshold that grows only slowly), so the next step's allocations fault in fresh
//! zeroed pages: on ResNet-101 the kernel's page clearing was 15–17 % of a training step's CPU
//! time (issue 11: `perf record -g` on `BENCH_CHILD=1 BENCH_BACKBONES=resnet101` running the
//! `make bench` binary). Keeping freed blocks for reuse shortened the step at the same peak
//! memory (`make bench` rows and peak-RSS table). Called once at start-up by the CLI and `make bench`; a no-op elsewhere.

/// Keeps freed memory in the process for reuse: one arena, blocks up to 32 MiB (glibc's
/// largest `mmap` threshold) from the heap, the heap never trimmed below its peak, grown
/// 256 MiB at a time.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called before any other thread
    // exists (start-up), with parameters and values glibc documents.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
