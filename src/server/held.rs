//! Connections that hold hyper's buffers, and giving their memory back after a burst.
//!
//! A connection holds a hyper connection, with its read and write buffers
//! (16 KiB), from its first bytes until it comes to rest between two
//! requests (`drive`); at rest it holds only the socket and Siesta's own
//! state, about 2 KiB. After a burst, say a thousand clients that connected
//! at once and now idle on keep-alive, the freed buffers sit between the
//! resting connections' small allocations: glibc keeps them for reuse, and
//! they stay in the worker's RSS. Once most of a burst has come to rest,
//! `trim_after_bursts` asks glibc to hand the free pages back
//! (`malloc_trim`), at most once a second and only after a drop that large.
//! Other C libraries return memory their own way; there it does nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How many connections hold a hyper connection now, and the most that did
/// since the last trim.
#[derive(Debug, Default)]
pub(crate) struct Held {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// One connection's hold, released when dropped.
pub(crate) struct Hold<'a>(&'a Held);

impl Held {
    /// A connection builds a hyper connection.
    pub(crate) fn hold(&self) -> Hold<'_> {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        // The peak is a hint for the trim, not an exact count: a plain
        // load and store, not a read-modify-write per request.
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.store(now, Ordering::Relaxed);
        }
        Hold(self)
    }

    /// Whether enough buffers were freed since the last trim to trim
    /// again: the peak at least `TRIM_DROP` above now, and now at most a
    /// quarter of it (the burst is over, not just ebbing). Resets the peak
    /// when it says yes.
    fn burst_over(&self) -> bool {
        let (now, peak) = (
            self.now.load(Ordering::Relaxed),
            self.peak.load(Ordering::Relaxed),
        );
        let over = peak >= now + TRIM_DROP && now <= peak / 4;
        if over {
            self.peak.store(now, Ordering::Relaxed);
        }
        over
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connections come to rest before a trim is worth it: about 4 MiB of
/// hyper's buffers.
const TRIM_DROP: usize = 256;

/// How often the count is looked at.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Runs for the life of the server: trims once a burst has come to rest.
pub(crate) async fn trim_after_bursts(held: std::sync::Arc<Held>) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if held.burst_over() {
            // It walks the heap with its locks held: off the I/O thread.
            // No thread for it (a pids limit): no trim this time.
            if let Some(job) = crate::exec::try_spawn_blocking(trim) {
                let _ = job.await;
            }
        }
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory glibc holds; it is
    // safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_a_burst_has_come_to_rest() {
        let held = Held::default();
        let holds: Vec<_> = (0..TRIM_DROP + 10).map(|_| held.hold()).collect();
        assert!(!held.burst_over(), "all still busy");
        let mut holds = holds.into_iter();
        for _ in 0..TRIM_DROP {
            drop(holds.next());
        }
        assert!(held.burst_over(), "down from {} to 10", TRIM_DROP + 10);
        assert!(!held.burst_over(), "the peak was reset");
        drop(holds);
        assert_eq!(held.now.load(Ordering::Relaxed), 0);
        assert!(!held.burst_over(), "a drop of 10 is not worth a trim");
    }

    #[test]
    fn an_ebbing_burst_is_not_trimmed() {
        let held = Held::default();
        let holds: Vec<_> = (0..1000).map(|_| held.hold()).collect();
        let kept: Vec<_> = holds.into_iter().take(600).collect();
        assert!(!held.burst_over(), "600 of 1000 still busy");
        drop(kept);
        assert!(held.burst_over());
    }
}
