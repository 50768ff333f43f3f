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
//! `MALLOC_ARENA_MAX` in the environment, or `glibc.malloc.arena_max` in
//! `GLIBC_TUNABLES`, is glibc's own setting and wins.
//! Other C libraries have no arenas; there this does nothing.

/// Arenas a worker keeps when the environment does not say.
const ARENAS: i32 = 2;

/// The arena cap to set, given the `MALLOC_ARENA_MAX` and `GLIBC_TUNABLES`
/// environment variables: none when either already sets one.
fn arena_cap(max: Option<&std::ffi::OsStr>, tunables: Option<&std::ffi::OsStr>) -> Option<i32> {
    let tuned = tunables.is_some_and(|t| t.to_string_lossy().contains("malloc.arena_max"));
    match max {
        Some(_) => None,
        None if tuned => None,
        None => Some(ARENAS),
    }
}

/// Applies the cap (before the worker starts its threads).
pub(crate) fn cap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Some(n) = arena_cap(
        std::env::var_os("MALLOC_ARENA_MAX").as_deref(),
        std::env::var_os("GLIBC_TUNABLES").as_deref(),
    ) {
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
        let os = |s| Some(std::ffi::OsStr::new(s));
        assert_eq!(arena_cap(None, None), Some(ARENAS));
        assert_eq!(arena_cap(os("8"), None), None);
        assert_eq!(arena_cap(os(""), None), None);
        assert_eq!(arena_cap(None, os("glibc.malloc.arena_max=4")), None);
        assert_eq!(
            arena_cap(None, os("glibc.malloc.tcache_count=0")),
            Some(ARENAS)
        );
    }
}
