//! Error lines for a condition that can repeat many times a second (a
//! descriptor or thread limit): one line per period at most, carrying the
//! count of those left out since the last.

use std::time::{Duration, Instant};

/// How often a repeating failure is logged at most.
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// The state of one repeating failure's lines.
#[derive(Default)]
pub(crate) struct Spaced {
    logged: Option<Instant>,
    unlogged: u64,
}

impl Spaced {
    /// Logs `line` at error level unless such a line went out less than
    /// `EVERY` ago; the next line that goes out says how many were left out.
    pub(crate) fn error(&mut self, line: &str) {
        if let Some(more) = self.due(Instant::now()) {
            crate::log::error::error(&format!("{line}{}", more_since(more)));
        }
    }

    /// Whether a failure at `now` is logged: `Some(failures not logged
    /// since the last line)`, or `None` while that line is recent.
    pub(crate) fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .logged
            .is_some_and(|t| now.saturating_duration_since(t) < EVERY)
        {
            self.unlogged += 1;
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The note a spaced line ends with: empty when none was left out.
pub(crate) fn more_since(more: u64) -> String {
    match more {
        0 => String::new(),
        n => format!(" ({n} more failures since the last such line)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_logged_once_per_period_with_a_count() {
        let mut s = Spaced::default();
        let t0 = Instant::now();
        assert_eq!(s.due(t0), Some(0));
        for ms in [1, 500, 9_000] {
            assert_eq!(s.due(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(s.due(t0 + EVERY), Some(3));
        assert_eq!(s.due(t0 + EVERY * 3), Some(0));
        assert_eq!(more_since(0), "");
        assert_eq!(more_since(2), " (2 more failures since the last such line)");
    }
}
