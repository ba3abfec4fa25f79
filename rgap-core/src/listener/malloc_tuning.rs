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
//! Setting the threshold (and the trim threshold that moves with it) explicitly turns that
//! adjustment off: every block of 128 KiB or
//! more is then mapped on its own and unmapped when freed, so memory that is freed goes back
//! to the system at once, whichever thread frees it. Plugins share the process's malloc, so
//! their buffers are covered too. Blocks this large are rare per second (tens, each costing
//! page faults that copying it into would cost anyway), so the CPU cost does not show in
//! `rgap-bench ingest`.

/// Blocks at least this large are mapped on their own: glibc's default, made fixed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
/// Free memory at the top of the main heap beyond this is returned: glibc's default, made
/// fixed (glibc would otherwise raise it along with the mmap threshold).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes glibc's mmap threshold (see the module documentation). Call once, early.
pub(crate) fn tune_for_long_runs() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; any value is accepted or refused
        // (returning 0), never undefined behaviour.
        let accepted = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                & libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        };
        if accepted == 0 {
            tracing::debug!(
                "mallopt refused the mmap or trim threshold; memory may grow under churn"
            );
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Set in the child processes: "default" or "tuned".
    const CHILD: &str = "RGAP_MALLOC_TUNING_CHILD";
    const BLOCK: usize = 1 << 20;

    /// Blocks glibc currently has mapped on their own.
    fn mapped_blocks() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        unsafe { libc::mallinfo2() }.hblks
    }

    /// For three 1 MiB blocks in turn, each freed before the next: was it mapped on its own?
    fn three_blocks_mapped() -> [bool; 3] {
        [(); 3].map(|()| {
            let before = mapped_blocks();
            let block = std::hint::black_box(vec![1u8; BLOCK]);
            let mapped = mapped_blocks() > before;
            drop(block);
            mapped
        })
    }

    /// The child's half: runs only in a process of its own (see below), since the
    /// allocator's counters are global and other tests allocate on other threads.
    #[test]
    fn child_maps_large_blocks() {
        let Some(mode) = std::env::var_os(CHILD) else { return };
        if mode == "tuned" {
            tune_for_long_runs();
            assert_eq!(three_blocks_mapped(), [true; 3], "tuned: every block mapped");
        } else {
            // glibc's default: freeing the first block raises the threshold past 1 MiB, and
            // later blocks come from an arena, where their pages stay once freed.
            assert_eq!(three_blocks_mapped(), [true, false, false], "glibc's dynamic threshold");
        }
    }

    fn run_child(mode: &str) {
        let name = "listener::malloc_tuning::tests::child_maps_large_blocks";
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads", "1", "--nocapture"])
            .env(CHILD, mode)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child {mode}:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn untuned_glibc_stops_mapping_large_blocks_once_one_is_freed() {
        if std::env::var_os(CHILD).is_none() {
            run_child("default");
        }
    }

    #[test]
    fn tuned_glibc_maps_every_large_block_and_unmaps_it_when_freed() {
        if std::env::var_os(CHILD).is_none() {
            run_child("tuned");
        }
    }
}
