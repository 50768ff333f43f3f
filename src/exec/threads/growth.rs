//! How big thread mode's pool is: `--threads`, `--max-threads`, and when it grows or shrinks.
//!
//! `--threads` is the number of *app slots*: threads allowed to run app code
//! at once. A thread parked on the network (in `wsgi.input` or sending to a
//! slow client, `wait.rs`) holds no slot, so while requests are parked the
//! pool may start more threads, up to `--max-threads`, to keep `--threads`
//! of them free for the app. Threads the pool did not need for
//! `SHRINK_AFTER` leave, down to `--threads`. These are the pure rules, with no lock and no thread:
//! the pool (`mod.rs`, `monitor.rs`) counts, asks `PoolSize` what to do,
//! and starts threads (through the spawner Python handed it) or ends them.

use std::time::Duration;

/// The pool looks back this far to shrink: threads that stayed idle all
/// through it (never woken for work) leave, down to `--threads`. Long
/// enough that a burst of slow uploads does not start and end threads over
/// and over, short enough that the pool is back to `--threads` soon after
/// the uploads are gone.
pub(crate) const SHRINK_AFTER: Duration = Duration::from_secs(3);

/// `--max-threads 0` is derived from `--threads`: four times as many, or
/// `--threads` + `DERIVED_EXTRA` when that is more (8 threads: 136), at most
/// `DERIVED_CAP` (and never fewer than `--threads`). A parked thread costs a
/// stack and Python's thread state, tens of KiB resident.
const DERIVED_EXTRA: usize = 128;
const DERIVED_CAP: usize = 1024;

/// `--threads` and `--max-threads`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolSize {
    /// App slots: at most this many threads run app code at once.
    pub threads: usize,
    /// The most threads the pool holds, parked ones included.
    pub max_threads: usize,
}

/// The pool as the monitor sees it when it decides whether to grow.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Census {
    /// Threads in the pool loop.
    pub threads: usize,
    /// Threads asked for (from Python) and not in the loop yet.
    pub starting: usize,
    /// Threads parked on the network.
    pub parked: usize,
    /// Threads asleep with nothing to do.
    pub idle: usize,
    /// A thread drives the I/O and takes the next job.
    pub driver: bool,
    /// Jobs waiting for a thread.
    pub queued: usize,
}

impl PoolSize {
    /// The size from `--threads` and `--max-threads` as given: a
    /// `--max-threads` of 0 is derived, one below `--threads` means no growth.
    pub(crate) fn new(threads: usize, max_threads: usize) -> PoolSize {
        let threads = threads.max(1);
        let max_threads = match max_threads {
            0 => (4 * threads)
                .max(threads + DERIVED_EXTRA)
                .min(DERIVED_CAP)
                .max(threads),
            n => n.max(threads),
        };
        PoolSize {
            threads,
            max_threads,
        }
    }

    /// How many threads to start now. Only while requests are parked (the
    /// pool never grows for app work alone), only when no thread is idle or
    /// driving (those take the next job), only as many as there are queued
    /// jobs beyond the threads already starting, and only while the threads
    /// not parked (starting ones included) are fewer than `--threads`: no
    /// more than `--threads` threads ever run the app. Never past
    /// `--max-threads`.
    pub(crate) fn grow_by(&self, c: &Census) -> usize {
        if c.parked == 0 || c.idle > 0 || c.driver {
            return 0;
        }
        let present = c.threads + c.starting;
        let unparked = present.saturating_sub(c.parked);
        let for_slots = self.threads.saturating_sub(unparked);
        let for_jobs = c.queued.saturating_sub(c.starting);
        let room = self.max_threads.saturating_sub(present);
        for_slots.min(for_jobs).min(room)
    }

    /// Whether an idle thread may leave a pool of `threads` threads.
    pub(crate) fn may_shrink(&self, threads: usize) -> bool {
        threads > self.threads
    }

    /// How many of `threads` leave after a window through which at least
    /// `idle_low` stayed idle: those, but never below `--threads`.
    pub(crate) fn surplus(&self, threads: usize, idle_low: usize) -> usize {
        idle_low.min(threads.saturating_sub(self.threads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_max_threads() {
        let cases = [
            // (--threads, --max-threads, resolved max)
            (8, 0, 136),
            (1, 0, 129),
            (32, 0, 160),
            (100, 0, 400),
            (300, 0, 1024),
            (2000, 0, 2000),
            (8, 20, 20),
            (8, 8, 8),
            (8, 3, 8),
            (0, 0, 129),
        ];
        for (threads, max, want) in cases {
            let size = PoolSize::new(threads, max);
            assert_eq!(
                size.max_threads, want,
                "--threads {threads} --max-threads {max}"
            );
            assert!(size.max_threads >= size.threads);
        }
    }

    fn census(threads: usize, parked: usize, queued: usize) -> Census {
        Census {
            threads,
            parked,
            queued,
            ..Census::default()
        }
    }

    #[test]
    fn grows_only_for_parked_threads() {
        let size = PoolSize::new(2, 10);
        let cases = [
            // (census, threads to start, why)
            (census(2, 2, 1), 1, "both parked, one job"),
            (census(2, 2, 5), 2, "both parked: up to --threads free ones"),
            (census(2, 1, 5), 1, "one parked, one in the app"),
            (
                census(2, 0, 5),
                0,
                "nothing parked: the app holds every slot",
            ),
            (census(2, 2, 0), 0, "nothing queued"),
            (census(4, 2, 3), 0, "two unparked already"),
            (census(10, 10, 3), 0, "--max-threads reached"),
            (census(9, 9, 3), 1, "room for one more"),
            (census(9, 8, 3), 1, "one slot, room for one"),
        ];
        for (c, want, why) in cases {
            assert_eq!(size.grow_by(&c), want, "{why}: {c:?}");
        }
    }

    #[test]
    fn free_threads_take_the_job_instead() {
        let size = PoolSize::new(2, 10);
        let idle = Census {
            idle: 1,
            ..census(3, 2, 4)
        };
        assert_eq!(size.grow_by(&idle), 0, "an idle thread takes it");
        let driving = Census {
            driver: true,
            ..census(3, 2, 4)
        };
        assert_eq!(size.grow_by(&driving), 0, "the driver takes it");
    }

    #[test]
    fn threads_on_their_way_count() {
        let size = PoolSize::new(2, 10);
        let starting = Census {
            starting: 1,
            ..census(2, 2, 1)
        };
        assert_eq!(size.grow_by(&starting), 0, "one job, one thread coming");
        let more = Census {
            starting: 1,
            ..census(2, 2, 5)
        };
        assert_eq!(size.grow_by(&more), 1, "the second free slot");
        let boot = Census {
            starting: 2,
            ..census(0, 0, 5)
        };
        assert_eq!(size.grow_by(&boot), 0, "Python is still starting --threads");
    }

    #[test]
    fn shrinks_to_threads_only() {
        let size = PoolSize::new(2, 10);
        assert!(size.may_shrink(3));
        assert!(!size.may_shrink(2));
        assert!(!size.may_shrink(1));
        let cases = [
            // (threads, fewest idle through the window, threads to leave)
            (10, 8, 8),
            (10, 9, 8),
            (10, 3, 3),
            (10, 0, 0),
            (2, 2, 0),
            (1, 1, 0),
        ];
        for (threads, idle_low, want) in cases {
            assert_eq!(
                size.surplus(threads, idle_low),
                want,
                "{threads} {idle_low}"
            );
        }
    }
}
