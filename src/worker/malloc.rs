//! glibc's malloc in a worker: two arenas, and free memory handed back once requests stop.
//!
//! **Arenas.** glibc gives a thread that allocates while another holds the
//! main arena an arena of its own, up to eight per core. Thread mode's pool
//! grows to `--max-threads` threads while uploads are parked, and every
//! thread that drives the I/O runtime allocates hyper's buffers, so a burst
//! of uploads leaves up to sixteen arenas (on 2 cores) each holding freed
//! 64 KiB read buffers: about 5 MiB more peak RSS in S2 than with two
//! arenas, for no measurable CPU (bench/results/2026-11-28-ab-upload.md).
//! App code runs under the GIL, so arena contention is not what limits a
//! worker.
//!
//! **The idle trim.** glibc gives memory back to the system only from the
//! top of a heap, so after a burst of uploads the free blocks below a live
//! one stay resident for good: a thread-mode worker at 24.2 MiB right after
//! S2's uploads (17.4 idle) was still at 24.1 25 s later.
//! `trim_when_idle` calls `malloc_trim` (which also returns the free pages
//! inside a heap) 10-20 s after the last request finished (a look every
//! `IDLE_LOOK` that sees none finish, after one that saw some): the same
//! burst left the worker at 18.4 MiB 25 s later
//! (bench/results/2026-11-30-ab-malloc.md). Keeping more free memory at
//! the heaps' tops while requests flow (a 4 MiB trim threshold) took the
//! page faults of S2's uploads from about 10,000 to 600 per 2 GiB, for no
//! CPU that an A/B could see (a fault costs about a microsecond), so
//! glibc's thresholds are left as they are.
//!
//! The deployer's own settings win: `MALLOC_ARENA_MAX` or
//! `glibc.malloc.arena_max` in `GLIBC_TUNABLES` leaves the arenas alone,
//! and a trim threshold set there (`MALLOC_TRIM_THRESHOLD_`,
//! `glibc.malloc.trim_threshold`) says how much free memory to keep, so
//! there is no idle trim. These are read from the environment the process
//! was started with (`/proc/self/environ`), the one glibc read: a variable
//! set later (`-e`, `raw_env`) reaches the app but not glibc, so it changes
//! nothing here either. Other C libraries have neither; there this does
//! nothing.

use std::ffi::OsStr;
use std::time::Duration;

/// Arenas a worker keeps when the environment does not say.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const ARENAS: i32 = 2;
/// How long no request must finish before the idle trim.
const IDLE_LOOK: Duration = Duration::from_secs(10);

/// What to do: the arena cap to set (`None` where the environment already
/// says), and whether to trim when idle.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
struct Tuning {
    arenas: Option<i32>,
    idle_trim: bool,
}

/// The settings to make, given a lookup of environment variables.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn tuning<'a>(var: impl Fn(&str) -> Option<&'a OsStr>) -> Tuning {
    let tunables = var("GLIBC_TUNABLES").map(OsStr::to_string_lossy);
    let unset = |name: &str, tunable: &str| {
        var(name).is_none() && !tunables.as_deref().is_some_and(|t| t.contains(tunable))
    };
    Tuning {
        arenas: unset("MALLOC_ARENA_MAX", "malloc.arena_max").then_some(ARENAS),
        idle_trim: unset("MALLOC_TRIM_THRESHOLD_", "malloc.trim_threshold"),
    }
}

/// Caps the arenas (before the worker starts its threads). Returns whether
/// the worker should trim when idle (`trim_when_idle`): not when the
/// deployer set a trim threshold.
pub(crate) fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::ffi::OsStrExt;
        let started = started_with();
        let t = tuning(|name| {
            let value = started.iter().find_map(|pair| {
                let rest = pair.strip_prefix(name.as_bytes())?;
                rest.strip_prefix(b"=")
            })?;
            Some(OsStr::from_bytes(value))
        });
        if let Some(n) = t.arenas {
            // SAFETY: mallopt takes two integers and touches only glibc's
            // allocator settings; it is safe to call at any time.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, n);
            }
        }
        t.idle_trim
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// The environment the process was started with, as `NAME=value` entries:
/// what glibc read. Where `/proc` cannot be read, the current one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn started_with() -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    match std::fs::read("/proc/self/environ") {
        Ok(all) => all
            .split(|b| *b == 0)
            .filter(|pair| !pair.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
        Err(_) => std::env::vars_os()
            .map(|(name, value)| [name.as_bytes(), b"=", value.as_bytes()].concat())
            .collect(),
    }
}

/// Starts a thread that hands free memory back to the system once the
/// worker goes quiet: it looks every `IDLE_LOOK` at `finished` (a count of
/// finished requests) and trims after a look that saw it move when the
/// next one does not, so once per quiet spell, 10-20 s after the last
/// request. Under light traffic (a request every 10-20 s) that is after
/// most requests, each trim costing the next one a few page faults; a
/// long request still running when the others stop sees one trim.
pub(crate) fn trim_when_idle(finished: impl Fn() -> u64 + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("siesta-trim".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut seen = finished();
            let mut busy = false;
            loop {
                std::thread::sleep(IDLE_LOOK);
                let now = finished();
                if now != seen {
                    (seen, busy) = (now, true);
                } else if busy {
                    busy = false;
                    trim();
                }
            }
        })?;
    Ok(())
}

/// Gives every whole free page of every arena back to the system.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' own locks; no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Tuning {
        tuning(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsStr::new(*v))
        })
    }

    #[test]
    fn the_environment_wins() {
        let both = |arenas: bool, idle_trim| Tuning {
            arenas: arenas.then_some(ARENAS),
            idle_trim,
        };
        assert_eq!(with(&[]), both(true, true));
        assert_eq!(with(&[("MALLOC_ARENA_MAX", "8")]), both(false, true));
        assert_eq!(with(&[("MALLOC_ARENA_MAX", "")]), both(false, true));
        let tunables = |t| with(&[("GLIBC_TUNABLES", t)]);
        assert_eq!(tunables("glibc.malloc.arena_max=4"), both(false, true));
        assert_eq!(tunables("glibc.malloc.tcache_count=0"), both(true, true));
        assert_eq!(tunables("glibc.malloc.trim_threshold=0"), both(true, false));
        assert_eq!(
            tunables("glibc.malloc.trim_threshold=1:glibc.malloc.arena_max=1"),
            both(false, false)
        );
        assert_eq!(
            with(&[("MALLOC_TRIM_THRESHOLD_", "131072")]),
            both(true, false)
        );
        assert_eq!(
            with(&[("MALLOC_MMAP_THRESHOLD_", "65536")]),
            both(true, true)
        );
    }
}
