//! After a reload was given up: the old workers serve on, held, and a failed replacement is retried.
//!
//! A HUP whose new workers cannot load the app (or boot) is given up: the
//! workers it was to replace serve on with the code they loaded
//! (`Master::abandon_generation`). Until a worker of the new code boots, a
//! worker started to replace one would load the code that reload could
//! not, so while that lasts:
//!
//! - `--max-requests` does not restart the serving workers: the master
//!   takes the write bit off their heartbeat files (`hold`), and a worker
//!   that reaches its count looks there before it leaves
//!   (`worker/heartbeat.rs`, `recycling_held`), serving on;
//! - a replacement for one that died (a crash, `--timeout`,
//!   `--max-worker-rss`, TTIN) that cannot start does not stop the server
//!   while others serve: it is tried again after a delay that doubles up
//!   to a minute, so a broken deploy costs the capacity of the workers
//!   lost rather than the server, and a cause that passes (a database down
//!   during the import) heals on its own. With no worker left serving, one
//!   is started at once, and if it cannot start the server stops, as at a
//!   start.
//!
//! A HUP starts workers at once, whatever the delay; a worker of the new
//! code that boots ends it all.
//!
//! The same hold, with a reason of its own (`Held::Hang`), keeps the
//! workers serving while a boot that outlasted `--timeout` is tried again
//! (`Master::hang_is_retried`), until any worker boots.

use super::backoff::Backoff;
use super::workers::{Retire, Worker};
use crate::worker::heartbeat::Held;
use std::fs::{File, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// The first delay before a failed replacement is tried again.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest.
const LAST_RETRY: Duration = Duration::from_secs(60);

pub(crate) struct Degraded {
    /// The first generation started after the given-up reload: a boot of
    /// one of its workers, or a later one's, ends this state.
    pub since: u64,
    /// No replacement is started while its wait runs (and a worker serves).
    retries: Backoff,
}

impl Degraded {
    pub(crate) fn new(since: u64) -> Degraded {
        Degraded {
            since,
            retries: Backoff::new(FIRST_RETRY, LAST_RETRY),
        }
    }

    /// A replacement could not start: the next waits. Returns how long.
    /// Workers that failed in one round (lost together, started together)
    /// share its wait: the delay doubles once per round.
    pub(crate) fn failed(&mut self, now: Instant) -> Duration {
        self.retries.failed(now).0
    }

    /// Whether a worker may be started now: the wait is over, or no worker
    /// serves (the server then stops at once if it still cannot start one,
    /// rather than leave connections in the backlog for the wait).
    pub(crate) fn may_start(&self, now: Instant, serving: bool) -> bool {
        !serving || !self.retries.waiting(now)
    }

    /// A HUP: its workers start at once.
    pub(crate) fn hup(&mut self) {
        self.retries.end_wait();
    }

    /// Whether `w` is of the code after the given-up reload and booted
    /// (not one that booted only as its boot's timeout was aborting it).
    pub(crate) fn ended_by(&self, w: &Worker) -> bool {
        w.generation >= self.since && w.booted && !w.retiring.is_some_and(Retire::aborts)
    }
}

/// Holds (`Some`, saying why) or lets go (`None`) a worker's
/// `--max-requests` restart, through its heartbeat file's mode
/// (`Held::mode_of`); true if it took. A failure leaves it as it was: a
/// worker not held restarts at its count, as without the hold.
pub(crate) fn hold(heartbeat: &File, why: Option<Held>) -> bool {
    heartbeat
        .set_permissions(Permissions::from_mode(Held::mode_of(why)))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_a_minute() {
        let mut d = Degraded::new(3);
        let t = Instant::now();
        assert!(d.may_start(t, true));
        let mut now = t;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let wait = d.failed(now);
            // A second failure in the same round waits the same.
            assert_eq!(
                d.failed(now + Duration::from_secs(1)),
                wait - Duration::from_secs(1)
            );
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        let at = now - Duration::from_secs(60);
        assert!(!d.may_start(at + Duration::from_secs(59), true));
        assert!(
            d.may_start(at + Duration::from_secs(59), false),
            "none serves"
        );
        assert!(d.may_start(at + Duration::from_secs(60), true));
        d.hup();
        assert!(d.may_start(at, true));
    }

    #[test]
    fn the_hold_is_the_heartbeat_files_write_bit() -> std::io::Result<()> {
        use crate::worker::heartbeat::recycling_held;
        let (f, _) = super::super::workers::Table::heartbeat_file(None)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        assert_eq!(recycling_held(fd), None);
        assert!(hold(&f, Some(Held::Reload)));
        assert_eq!(recycling_held(fd), Some(Held::Reload));
        // Still written through the descriptor opened before.
        crate::worker::heartbeat::replace_me(fd);
        assert_eq!(f.metadata()?.len(), 1);
        assert!(hold(&f, Some(Held::Hang)));
        assert_eq!(recycling_held(fd), Some(Held::Hang));
        assert!(hold(&f, None));
        assert_eq!(recycling_held(fd), None);
        Ok(())
    }
}
