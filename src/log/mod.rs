//! Logging, rendered in Rust: the error log and the gunicorn-style access log.
//!
//! `error` is the process-wide error log (`--error-logfile`, `--log-level`),
//! used by Siesta, by `wsgi.errors` and, through `_siesta.log`, by the
//! Python layer, so every line has one format. `access` renders
//! `--access-logformat` atoms per request. Nothing here is on the request
//! path at the default level except the access line, when enabled.

pub(crate) mod access;
pub(crate) mod error;
pub(crate) mod spaced;

use std::fs::{File, OpenOptions};
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

/// Opens a log file for appending. `/dev/stdout` and `/dev/stderr` are the
/// process's own descriptors 1 and 2 (a copy: the same open file, at the
/// same offset), not the path opened again: when one log is the stream
/// and the other names it (`accesslog = errorlog = "/dev/stderr"`), a
/// second open of a file the shell redirected there (`2>file`, not in
/// append mode) wrote from an offset of its own, over the other's lines.
/// It also works where opening the path fails (a socket: journald).
pub(crate) fn open_append(path: &str) -> io::Result<File> {
    let fd = match path {
        "/dev/stdout" => libc::STDOUT_FILENO,
        "/dev/stderr" => libc::STDERR_FILENO,
        _ => return OpenOptions::new().create(true).append(true).open(path),
    };
    let stream = std::mem::ManuallyDrop::new(
        // SAFETY: a `File` over a descriptor the process holds open; it is
        // never dropped (ManuallyDrop), so never closed here, only copied.
        unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) },
    );
    stream.try_clone() // F_DUPFD_CLOEXEC
}

/// The longest target or field a refusal's log lines show: a refused head
/// can hold tens of kilobytes of one, and each would otherwise be logged
/// whole.
pub(crate) const LOGGED_TARGET: usize = 256;

/// `target`, cut to `LOGGED_TARGET` bytes at most (at a character's start)
/// with its full length noted: `/aaa...[60001B]`, with no space, so that
/// an access line's `%(r)s` still splits in three at its spaces.
pub(crate) fn shortened(target: &str) -> std::borrow::Cow<'_, str> {
    if target.len() <= LOGGED_TARGET {
        return target.into();
    }
    let mut end = LOGGED_TARGET;
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[{}B]", &target[..end], target.len()).into()
}

/// A local calendar time with its offset from UTC, enough for both log
/// formats (gunicorn stamps its lines in local time, `TZ` included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// Seconds east of UTC.
    pub offset: i32,
}

/// The last offset from UTC worked out, by any thread (for `cached`).
static LAST_OFFSET: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The local offset from UTC at `secs`, in seconds east: worked out once
/// per second per thread (`localtime_r` takes a lock and reads the zone).
fn local_offset(secs: i64) -> i32 {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<(i64, i32)> = const { Cell::new((i64::MIN, 0)) };
    }
    LAST.with(|last| {
        let (at, offset) = last.get();
        if at == secs {
            return offset;
        }
        let t: libc::time_t = secs;
        let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
        // SAFETY: localtime_r fills the `tm` it is given from a valid time_t;
        // it is read only when the call succeeded.
        let offset = if unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) }.is_null() {
            0
        } else {
            // SAFETY: filled by the successful call above.
            i32::try_from(unsafe { tm.assume_init() }.tm_gmtoff).unwrap_or(0)
        };
        last.set((secs, offset));
        LAST_OFFSET.store(offset, std::sync::atomic::Ordering::Relaxed);
        offset
    })
}

impl Civil {
    /// `t` in local time.
    pub(crate) fn from_system(t: SystemTime) -> Civil {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
        Self::at_offset(secs, local_offset(secs))
    }

    /// `t` at the last offset worked out, without the zone's lock: for a
    /// forked child, in which that lock may be held by a thread that is gone.
    pub(crate) fn cached(t: SystemTime) -> Civil {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
        Self::at_offset(secs, LAST_OFFSET.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn at_offset(secs: i64, offset: i32) -> Civil {
        Civil {
            offset,
            ..Self::from_unix(secs + i64::from(offset))
        }
    }

    /// The `+hhmm` of the stamps.
    fn zone(&self) -> String {
        let sign = if self.offset < 0 { '-' } else { '+' };
        let minutes = self.offset.unsigned_abs() / 60;
        format!("{sign}{:02}{:02}", minutes / 60, minutes % 60)
    }

    /// A UTC time. Days-to-date after Howard Hinnant's `civil_from_days`.
    pub(crate) fn from_unix(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            offset: 0,
        }
    }

    /// `2026-11-24 23:11:51 +0000`, the error log's stamp.
    pub(crate) fn error_stamp(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.zone()
        )
    }

    /// `24/Nov/2026:23:11:51 +0000`, the access log's `%(t)s` inside brackets.
    pub(crate) fn clf_stamp(&self) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let m = MONTHS
            .get(self.month.saturating_sub(1) as usize)
            .unwrap_or(&"Jan");
        format!(
            "{:02}/{}/{:04}:{:02}:{:02}:{:02} {}",
            self.day,
            m,
            self.year,
            self.hour,
            self.minute,
            self.second,
            self.zone()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01 00:00:00 +0000"),
            (951_782_400, "2000-02-29 00:00:00 +0000"),
            (1_795_561_911, "2026-11-24 23:11:51 +0000"),
        ];
        for (secs, want) in cases {
            assert_eq!(Civil::from_unix(*secs).error_stamp(), *want);
        }
        assert_eq!(
            Civil::from_unix(1_795_561_911).clf_stamp(),
            "24/Nov/2026:23:11:51 +0000"
        );
        let east = Civil::at_offset(1_795_561_911, 5 * 3600 + 30 * 60);
        assert_eq!(east.error_stamp(), "2026-11-25 04:41:51 +0530");
        let west = Civil::at_offset(1_795_561_911, -3 * 3600);
        assert_eq!(west.clf_stamp(), "24/Nov/2026:20:11:51 -0300");
    }

    #[test]
    fn a_long_target_is_logged_shortened_with_its_length() {
        assert_eq!(shortened("/a?b"), "/a?b");
        let at = "/".repeat(LOGGED_TARGET);
        assert_eq!(shortened(&at), at);
        let long = format!("/{}", "x".repeat(5000));
        let logged = shortened(&long);
        assert!(logged.starts_with(&long[..LOGGED_TARGET]));
        assert!(logged.ends_with("...[5001B]"), "{logged}");
        // A character across the cut is left out whole.
        let wide = format!("/{}", "é".repeat(3000));
        let logged = shortened(&wide);
        assert!(logged.starts_with(&wide[..LOGGED_TARGET - 1]));
        assert!(logged.ends_with("...[6001B]"), "{logged}");
        assert!(logged.len() < LOGGED_TARGET + 20);
    }
}
