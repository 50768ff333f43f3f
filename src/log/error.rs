//! The error log: `[time] [pid] [LEVEL] message`, as gunicorn writes it.
//!
//! One process-wide sink (stderr or `--error-logfile`) behind a mutex,
//! configured once at startup and reopened on request. App tracebacks are
//! formatted by Python's `traceback` module and written here line by line.
//! With `--capture-output` a reopen also points fds 1 and 2 (the app's
//! prints; the Python side pointed them at the file at startup) at the new
//! file, as gunicorn does. Access lines live in `access.rs`.

use super::Civil;
use parking_lot::Mutex;
use pyo3::prelude::*;
use std::fs::File;
use std::io::{self, Write};
use std::sync::OnceLock;
use std::time::SystemTime;

/// Log levels, gunicorn's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    /// The canonical names only: spellings and aliases are the settings
    /// table's business (`python/siesta/config.py`).
    pub(crate) fn parse(s: &str) -> Option<Level> {
        match s {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warning" => Some(Level::Warning),
            "error" => Some(Level::Error),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

enum Sink {
    Stderr,
    File(File, String),
}

struct ErrorLog {
    level: Level,
    sink: Sink,
    /// `--capture-output`: fds 1 and 2 are the log file too, and follow it on reopen.
    capture: bool,
}

fn log() -> &'static Mutex<ErrorLog> {
    static LOG: OnceLock<Mutex<ErrorLog>> = OnceLock::new();
    LOG.get_or_init(|| {
        Mutex::new(ErrorLog {
            level: Level::Info,
            sink: Sink::Stderr,
            capture: false,
        })
    })
}

fn open(path: &str) -> io::Result<File> {
    super::open_append(path)
}

/// Sets the level and destination (`-` or empty for stderr); `capture`
/// is `--capture-output`. `inherited`: a worker's call, which keeps the
/// file of the same path the master opened (inherited across the fork):
/// under -u/-g it may not be able to open it again (a directory only root
/// may enter), as gunicorn's workers need not. The master's calls (start,
/// HUP) open the path anew, so a HUP after a rotation writes to the new
/// file.
pub(crate) fn configure(
    level: Level,
    path: Option<&str>,
    capture: bool,
    inherited: bool,
) -> io::Result<()> {
    let mut l = log().lock();
    let kept = inherited && matches!((&l.sink, path), (Sink::File(_, q), Some(p)) if q == p);
    if !kept {
        l.sink = match path {
            None | Some("-") | Some("") => Sink::Stderr,
            Some(p) => Sink::File(open(p)?, p.to_string()),
        };
    }
    l.level = level;
    l.capture = capture;
    Ok(())
}

/// Reopens a log file (after rotation); stderr needs nothing. The new file
/// takes the old one's descriptor number (`dup2`), so what writes to that
/// number (the worker's `faulthandler`, `error_log_fd`) follows it. With
/// `--capture-output`, fds 1 and 2 then point at the new file as well.
pub(crate) fn reopen() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = log().lock();
    if let Sink::File(old, path) = &l.sink {
        let file = open(path)?;
        // SAFETY: dup2 between two descriptors these `File`s own; `old`'s
        // number stays open throughout (dup2 replaces it atomically).
        if unsafe { libc::dup2(file.as_raw_fd(), old.as_raw_fd()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // dup2 clears close-on-exec on the number it fills: set it again,
        // or the log would leak into what the app execs.
        // SAFETY: fcntl on a descriptor `old` owns, with an integer flag.
        unsafe { libc::fcntl(old.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        if l.capture {
            capture_into(old)?;
        }
    }
    Ok(())
}

/// The file the error log goes to (`None`: stderr), and whether fds 1 and
/// 2 follow it (`--capture-output`): what a forked process keeps of it.
pub(crate) fn destination() -> (Option<String>, bool) {
    let l = log().lock();
    match &l.sink {
        Sink::File(_, path) => (Some(path.clone()), l.capture),
        Sink::Stderr => (None, l.capture),
    }
}

/// The descriptor the error log is written through (2 for stderr): the
/// same number for the life of the process, across `reopen`.
pub(crate) fn fd() -> i32 {
    use std::os::fd::AsRawFd;
    match &log().lock().sink {
        Sink::File(f, _) => f.as_raw_fd(),
        Sink::Stderr => libc::STDERR_FILENO,
    }
}

/// Points stdout and stderr (fds 1 and 2) at `file`.
fn capture_into(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 on a file descriptor this `File` owns; fds 1 and 2
        // stay open throughout (dup2 replaces them atomically).
        if unsafe { libc::dup2(file.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Called for every line written (StatsD counts them), with whether it
/// logs an exception; set once.
static ON_WRITE: OnceLock<fn(Level, bool)> = OnceLock::new();

/// Registers the one function told about every line written.
pub(crate) fn on_write(f: fn(Level, bool)) {
    let _ = ON_WRITE.set(f);
}

pub(crate) fn enabled(level: Level) -> bool {
    level >= log().lock().level
}

pub(crate) fn write(level: Level, msg: &str) {
    emit(level, msg, false);
}

/// An error line that carries a traceback (formatted by the caller).
pub(crate) fn write_exception(msg: &str) {
    emit(Level::Error, msg, true);
}

/// Writes one line; `exception`: it carries a traceback (StatsD counts it
/// as `gunicorn.log.exception`, as gunicorn's `log.exception` is counted).
fn emit(level: Level, msg: &str, exception: bool) {
    let mut l = log().lock();
    if level < l.level {
        return;
    }
    let line = format_line(level, msg);
    let _ = match &mut l.sink {
        Sink::Stderr => io::stderr().write_all(line.as_bytes()),
        Sink::File(f, _) => f.write_all(line.as_bytes()),
    };
    drop(l);
    if let Some(f) = ON_WRITE.get() {
        f(level, exception);
    }
}

/// Writes one line if the log is free within 100 ms, else drops it: for a
/// forked child, in which the lock may be held by a thread that is gone.
pub(crate) fn write_if_free(level: Level, msg: &str) {
    let Some(mut l) = log().try_lock_for(std::time::Duration::from_millis(100)) else {
        return;
    };
    if level < l.level {
        return;
    }
    let line = format_line_at(level, msg, Civil::cached(SystemTime::now()));
    match &mut l.sink {
        // Not through `io::stderr()`, whose own lock may be held too.
        // SAFETY: writes a live buffer's bytes to fd 2.
        Sink::Stderr => unsafe {
            libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len());
        },
        Sink::File(f, _) => {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Sends a panic's message to the error log, in its line format, instead of
/// stderr: Siesta catches the panics it can (a request's, tokio's when the
/// system runs short) and goes on, so its line belongs with the others,
/// in the file `--error-logfile` names. With `RUST_BACKTRACE` set, the
/// backtrace follows it. With the log busy (a panic while it was being
/// written), the default hook prints it to stderr, as without this.
pub(crate) fn route_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let place = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let mut msg = format!("Internal error: a panic in Siesta (thread {name}){place}: {what}");
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            msg.push_str(&format!("\n{trace}"));
        }
        // Waits a little for a line being written by another thread; a lock
        // held by a thread gone (a forked child's) leaves it to the default.
        let Some(mut l) = log().try_lock_for(std::time::Duration::from_millis(100)) else {
            return default(info);
        };
        // A forked child's stamp takes no lock: the zone's may be held too.
        let when = if crate::worker::forked::is_child() {
            Civil::cached(SystemTime::now())
        } else {
            Civil::from_system(SystemTime::now())
        };
        let line = format_line_at(Level::Error, msg.trim_end(), when);
        let _ = match &mut l.sink {
            Sink::Stderr => io::stderr().write_all(line.as_bytes()),
            Sink::File(f, _) => f.write_all(line.as_bytes()),
        };
        drop(l);
        if let Some(f) = ON_WRITE.get() {
            f(Level::Error, false);
        }
    }));
}

/// One error-log line, as gunicorn formats it.
fn format_line(level: Level, msg: &str) -> String {
    format_line_at(level, msg, Civil::from_system(SystemTime::now()))
}

/// One error-log line stamped `when`.
fn format_line_at(level: Level, msg: &str, when: Civil) -> String {
    let stamp = when.error_stamp();
    format!(
        "[{stamp}] [{}] [{}] {msg}\n",
        std::process::id(),
        level.name()
    )
}

pub(crate) fn flush() {
    let mut l = log().lock();
    let _ = match &mut l.sink {
        Sink::Stderr => io::stderr().flush(),
        Sink::File(f, _) => f.flush(),
    };
}

pub(crate) fn info(msg: &str) {
    write(Level::Info, msg);
}

pub(crate) fn error(msg: &str) {
    write(Level::Error, msg);
}

/// Text the app wrote to `wsgi.errors` (whole lines, or what `flush()`
/// let go of), written as it is, as gunicorn writes it: the app's own
/// logging formats it already (Flask's `app.logger` has its level and
/// time), so no prefix or level is added and no level filters it out.
pub(crate) fn app_text(text: &str) {
    let mut l = log().lock();
    let _ = match &mut l.sink {
        Sink::Stderr => io::stderr().write_all(text.as_bytes()),
        Sink::File(f, _) => f.write_all(text.as_bytes()),
    };
}

/// `context` plus the exception's formatted traceback.
pub(crate) fn exception(py: Python<'_>, context: &str, err: &PyErr) {
    if !enabled(Level::Error) {
        return;
    }
    let tb = format_exception(py, err).unwrap_or_else(|_| format!("{err}\n"));
    emit(Level::Error, &format!("{context}\n{}", tb.trim_end()), true);
}

/// An exception raised by the app while handling a request.
pub(crate) fn app_exception(py: Python<'_>, err: &PyErr, head: &http::request::Parts) {
    exception(
        py,
        &format!("Error handling request {} {}", head.method, head.uri),
        err,
    );
}

fn format_exception(py: Python<'_>, err: &PyErr) -> PyResult<String> {
    let tb = py.import("traceback")?;
    let lines = tb.call_method1(
        "format_exception",
        (err.get_type(py), err.value(py), err.traceback(py)),
    )?;
    let parts: Vec<String> = lines.extract()?;
    Ok(parts.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_one_error_log_line() -> io::Result<()> {
        let path = std::env::temp_dir().join(format!("siesta-panic-{}.log", std::process::id()));
        let name = path.to_string_lossy().into_owned();
        configure(Level::Info, Some(&name), false, false)?;
        route_panics();
        let caught = std::panic::catch_unwind(|| panic!("a deliberate panic {}", 42));
        let _ = std::panic::take_hook(); // the default hook again
        configure(Level::Info, None, false, false)?;
        let text = std::fs::read_to_string(&path)?;
        std::fs::remove_file(&path)?;
        assert!(caught.is_err());
        let line = "[ERROR] Internal error: a panic in Siesta (thread ";
        assert!(text.contains(line), "{text}");
        assert!(text.contains(": a deliberate panic 42"), "{text}");
        assert!(text.contains(") at src/log/error.rs:"), "{text}");
        Ok(())
    }
}
