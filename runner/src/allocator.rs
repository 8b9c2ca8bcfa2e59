//! The process allocator's settings for runs that allocate the same large tensors over and
//! over (a batch's logits: up to hundreds of MB per run of a plan).
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MB, however it adapts)
//! with a fresh mmap and gives it back with munmap on free, so each run of a plan faults in
//! its large tensors page by page again: measured with `suf-bench` on the GPT-2 fixture
//! (batch 8 x 128, one thread), the float graph took 154.6 ms per run that way and 26.1 ms
//! with the large blocks kept (GLIBC_TUNABLES mmap_threshold/trim_threshold). Keeping freed
//! memory in the heap does not raise the peak: the next run reuses it.

/// Keep large freed blocks in the heap for reuse (glibc only; elsewhere a no-op). A user's
/// own `GLIBC_TUNABLES` for these settings is respected.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var("GLIBC_TUNABLES")
            .map(|t| t.contains("mmap_threshold") || t.contains("trim_threshold"))
            .unwrap_or(false);
        if !tuned {
            // SAFETY: mallopt only changes the allocator's thresholds; called at start-up,
            // before any thread exists.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        }
    }
}
