//! A process the app forks during a request: it must never run the server.
//!
//! A child of a worker's `os.fork()` is a copy of the worker without its I/O
//! threads, holding the worker's listening sockets and, in gevent mode, the
//! hub's eventfd. Had it run on into Siesta's code (the child returning from
//! the app, or its `sys.exit()` let through), it served requests with half a
//! server and crashed its parent's runtime (thread mode), or took the
//! wake-ups meant for its parent's hub and froze it (gevent mode), and kept
//! the port after the server stopped. So a worker registers an at-fork
//! handler (`watch`) that, in every child, marks the process, points the
//! listening sockets at /dev/null and gives the hub's descriptor a fresh
//! eventfd nothing writes; and where the app's code returns into Siesta's
//! (the app call, a response chunk) a marked process exits at once
//! (`leave`), as gunicorn's sync worker's child does ("Parent changed").
//! A child that does its work and ends with `os._exit`, as
//! `multiprocessing` does, or that execs, never meets any of this.

use pyo3::prelude::*;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Once;

static CHILD: AtomicBool = AtomicBool::new(false);

/// The listening sockets' descriptors (-1: free), read in the child, with
/// the device and inode each named when recorded: a number closed since
/// (a stop's drain, the app) and reused for another file is left alone.
static LISTENING: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];
static DEV: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
static INO: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
/// Gevent mode: the hub's eventfd.
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// /dev/null, opened by `watch`, put in the listening sockets' place.
static NULL: AtomicI32 = AtomicI32::new(-1);

/// Runs in the child of every fork of this process, before anything else
/// (only async-signal-safe calls: stores, `dup3`, `eventfd`, `close`).
extern "C" fn in_child() {
    CHILD.store(true, Ordering::Relaxed);
    let null = NULL.load(Ordering::Relaxed);
    for (i, slot) in LISTENING.iter().enumerate() {
        let fd = slot.load(Ordering::Relaxed);
        if fd >= 0 && null >= 0 && same_file(fd, i) {
            // SAFETY: both are descriptors this process holds; dup3 replaces
            // `fd` atomically, keeping close-on-exec.
            unsafe { libc::dup3(null, fd, libc::O_CLOEXEC) };
        }
    }
    let wake = WAKE.load(Ordering::Relaxed);
    if wake >= 0 {
        // SAFETY: a new eventfd, put in the hub's place, then its own
        // number closed; no pointers.
        unsafe {
            let fresh = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
            if fresh >= 0 {
                libc::dup3(fresh, wake, libc::O_CLOEXEC);
                libc::close(fresh);
            }
        }
    }
}

/// Whether `fd` is still the file recorded in slot `i` (fstat is
/// async-signal-safe).
fn same_file(fd: RawFd, i: usize) -> bool {
    // SAFETY: fstat writes into a zeroed stat we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    let (dev, ino) = ids(&st);
    dev == DEV[i].load(Ordering::Relaxed) && ino == INO[i].load(Ordering::Relaxed)
}

/// A stat's device and inode as u64 (`ino_t` is 32 bits on some 32-bit targets).
#[allow(clippy::useless_conversion)]
fn ids(st: &libc::stat) -> (u64, u64) {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

/// Called by a worker as it starts serving, with its listening sockets and
/// (gevent mode) the hub's eventfd.
pub(crate) fn watch(listening: &[RawFd], wake: Option<RawFd>) {
    static REGISTER: Once = Once::new();
    // SAFETY: a NUL-terminated path; the descriptor is kept for the process's life.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if null >= 0 {
        let old = NULL.swap(null, Ordering::Relaxed);
        if old >= 0 {
            // SAFETY: the previous /dev/null descriptor, ours alone.
            unsafe { libc::close(old) };
        }
    }
    for (i, fd) in listening.iter().take(LISTENING.len()).enumerate() {
        // SAFETY: fstat writes into a zeroed stat we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(*fd, &mut st) } == 0 {
            let (dev, ino) = ids(&st);
            DEV[i].store(dev, Ordering::Relaxed);
            INO[i].store(ino, Ordering::Relaxed);
            LISTENING[i].store(*fd, Ordering::Relaxed);
        }
    }
    WAKE.store(wake.unwrap_or(-1), Ordering::Relaxed);
    REGISTER.call_once(|| {
        // SAFETY: registers a handler that only makes async-signal-safe calls.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// Whether this process is a child the app forked from a worker.
#[inline]
pub(crate) fn is_child() -> bool {
    CHILD.load(Ordering::Relaxed)
}

/// The exit code of a child whose app code ended with `err`: a
/// `SystemExit`'s code (None: 0, a number: it, anything else: 1), 1 for
/// another exception, 0 when it returned.
pub(crate) fn exit_code(py: Python<'_>, err: Option<&PyErr>) -> i32 {
    let Some(err) = err else { return 0 };
    if !err.is_instance_of::<pyo3::exceptions::PySystemExit>(py) {
        return 1;
    }
    match err.value(py).getattr("code") {
        Ok(code) if code.is_none() => 0,
        Ok(code) => code.extract::<i32>().unwrap_or(1),
        Err(_) => 1,
    }
}

/// A forked child returned into Siesta: one line, then exit at once (no
/// Python shutdown, no buffers of the parent's flushed a second time).
pub(crate) fn leave(code: i32) -> ! {
    crate::log::error::write_if_free(
        crate::log::error::Level::Warning,
        &format!(
            "A process the app forked (pid {}) returned into the server: it exits ({code})",
            std::process::id()
        ),
    );
    // SAFETY: ends this process at once, which is the point.
    unsafe { libc::_exit(code) }
}

/// Gevent mode's check, where the app's code returns into the hub's loop:
/// a forked child leaves, with the code of `exc` (the app's exception).
#[pyfunction]
#[pyo3(signature = (exc=None))]
pub(crate) fn leave_if_forked(py: Python<'_>, exc: Option<Bound<'_, PyAny>>) {
    if is_child() {
        let err = exc.map(|e| PyErr::from_value(e));
        leave(exit_code(py, err.as_ref()));
    }
}
