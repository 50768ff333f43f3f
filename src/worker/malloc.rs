//! Caps glibc's malloc arenas in a worker, unless the deployer chose a number.
//!
//! glibc gives a thread that allocates while another holds the main arena
//! an arena of its own, up to eight per core. Thread mode's pool grows to
//! `--max-threads` threads while uploads are parked, and every thread that
//! drives the I/O runtime allocates hyper's buffers, so a burst of uploads
//! leaves up to sixteen arenas (on 2 cores) each holding freed 64 KiB read
//! buffers: about 5 MiB more peak RSS in S2 than with two arenas, for no
//! measurable CPU (bench/results/2026-11-28-ab-upload.md). App code runs
//! under the GIL, so arena contention is not what limits a worker. A
//! `MALLOC_ARENA_MAX` in the environment is glibc's own setting and wins.
//! Other C libraries have no arenas; there this does nothing.

/// Arenas a worker keeps when the environment does not say.
const ARENAS: i32 = 2;

/// The arena cap to set, given the `MALLOC_ARENA_MAX` environment variable.
fn arena_cap(env: Option<&std::ffi::OsStr>) -> Option<i32> {
    match env {
        Some(_) => None,
        None => Some(ARENAS),
    }
}

/// Applies the cap (before the worker starts its threads).
pub(crate) fn cap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Some(n) = arena_cap(std::env::var_os("MALLOC_ARENA_MAX").as_deref()) {
        // SAFETY: mallopt takes two integers and touches only glibc's
        // allocator settings; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins() {
        assert_eq!(arena_cap(None), Some(ARENAS));
        assert_eq!(arena_cap(Some(std::ffi::OsStr::new("8"))), None);
        assert_eq!(arena_cap(Some(std::ffi::OsStr::new(""))), None);
    }
}
