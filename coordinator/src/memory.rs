//! Handing memory the process freed back to the system.

/// Returns the allocator's free pages to the system. glibc keeps what a burst of work
/// freed (a crowd of downloads) in its arenas, so the process would stay at its peak.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no
    // preconditions and touches no memory the program holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
