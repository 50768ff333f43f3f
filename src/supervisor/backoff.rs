//! A wait before a worker that could not start is tried again, doubling once per round.
//!
//! Two failures share it: a replacement with the code of a given-up reload
//! (`degraded.rs`) and a boot that outlasted `--timeout` while others serve
//! (`Master::hang_is_retried`). Workers that failed in one round (lost
//! together, started together) share its wait; the next round waits twice
//! as long, up to a limit.

use std::time::{Duration, Instant};

pub(crate) struct Backoff {
    first: Duration,
    last: Duration,
    /// The next round's wait.
    delay: Duration,
    /// The present round's end.
    until: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new(first: Duration, last: Duration) -> Backoff {
        Backoff {
            first,
            last,
            delay: first,
            until: None,
        }
    }

    /// A worker could not start: how long until it is tried again, and
    /// whether that begins a round (else it joins the one under way).
    pub(crate) fn failed(&mut self, now: Instant) -> (Duration, bool) {
        if let Some(at) = self.until.filter(|at| *at > now) {
            return (at - now, false);
        }
        let wait = self.delay;
        self.until = Some(now + wait);
        self.delay = (self.delay * 2).min(self.last);
        (wait, true)
    }

    /// Whether a round's wait is still running.
    pub(crate) fn waiting(&self, now: Instant) -> bool {
        self.until.is_some_and(|at| now < at)
    }

    /// The wait under way ends now (a HUP: its workers start at once); the
    /// next round's is kept.
    pub(crate) fn end_wait(&mut self) {
        self.until = None;
    }

    /// A worker booted: no wait, and the next starts from the first again.
    pub(crate) fn reset(&mut self) {
        *self = Backoff::new(self.first, self.last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_double_up_to_the_limit_and_share_their_wait() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut now = Instant::now();
        assert!(!b.waiting(now));
        let mut waits = Vec::new();
        for _ in 0..8 {
            let (wait, new) = b.failed(now);
            assert!(new);
            // A second failure in the same round waits what is left of it.
            let later = now + Duration::from_millis(500);
            assert_eq!(b.failed(later), (wait - Duration::from_millis(500), false));
            assert!(b.waiting(later));
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.failed(now);
        b.end_wait();
        assert!(!b.waiting(now));
        assert_eq!(
            b.failed(now).0,
            Duration::from_secs(60),
            "the next round's is kept"
        );
        b.reset();
        assert!(!b.waiting(now));
        assert_eq!(b.failed(now).0, Duration::from_secs(1));
    }
}
