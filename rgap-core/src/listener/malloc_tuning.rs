//! Keeps glibc's malloc from holding on to freed megabytes in a listener that runs for months.
//!
//! Under churn the listener and its outputs allocate and free buffers of a megabyte or more
//! many times a second, on several threads: each group's published member list (built by the
//! table thread, freed by whichever output lets go of it last), the dns output's view of a
//! group, the hosts file's text. glibc serves a block that large with its own `mmap` only
//! until the first such block is freed; it then raises its "mmap threshold" to that size
//! (up to 32 MiB), and from there on these blocks are carved out of the per-thread arenas.
//! Freed in the middle of an arena, their pages stay resident, and as blocks of slightly
//! different sizes come and go the arenas grow: RSS climbed by about 1 MiB a minute under
//! 20 000 announcements a second (`rgap-bench soak`) while the live heap stayed flat.
//!
//! Setting the threshold explicitly turns that adjustment off: every block of 128 KiB or
//! more is then mapped on its own and unmapped when freed, so memory that is freed goes back
//! to the system at once, whichever thread frees it. Plugins share the process's malloc, so
//! their buffers are covered too. Blocks this large are rare per second (tens, each costing
//! page faults that copying it into would cost anyway), so the CPU cost does not show in
//! `rgap-bench ingest`.

/// Blocks at least this large are mapped on their own: glibc's default, made fixed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes glibc's mmap threshold (see the module documentation). Call once, early.
pub(crate) fn tune_for_long_runs() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; any value is accepted or refused
        // (returning 0), never undefined behaviour.
        let accepted = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if accepted == 0 {
            tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused; memory may grow under churn");
        }
    }
}
