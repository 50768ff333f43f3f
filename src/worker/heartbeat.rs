//! The worker's heartbeat: the master's `--timeout` reads it.
//!
//! A thread touches the heartbeat file the master made for this worker
//! once at start (the master's sign that the worker booted) and then every
//! interval while the worker makes progress: in thread mode, while one of
//! the `--threads` app slots is free (its thread idle, driving I/O or
//! waiting on the network), or a request completed or gave its slot back
//! to wait on the network since the last look; in gevent mode, while the
//! hub loop keeps calling `hub_beat`. A worker whose app holds every slot
//! (or the hub) stops beating, and the master dumps and replaces it;
//! threads the pool added for parked requests, or running beyond
//! `--threads`, do not keep it alive. In thread mode the beat also waits
//! for the GIL: an app thread that keeps it in C code (a regular
//! expression backtracking, an extension that never lets it go) stops
//! every other app thread, free slots or not, and so stops the beat too,
//! as it stops a gunicorn worker's Python heartbeat.
//!
//! A worker leaving on its own also writes into the file: one byte as its
//! last request before `--max-requests` starts (`replace_me`), two once its
//! stop begins (`leaving`); the master reads the file's length
//! (`supervisor::workers`, `check_beats`), and takes a lone byte back from
//! a worker it holds (`recycling_held`).

use crate::exec::Executor;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn start(fd: RawFd, interval: Duration, exec: Arc<Executor>) -> io::Result<()> {
    first_beat(fd);
    std::thread::Builder::new()
        .name("siesta-heartbeat".into())
        .spawn(move || {
            let mut mark = 0u64;
            loop {
                std::thread::sleep(interval);
                let alive = match &*exec {
                    // The pool's lock is let go before the GIL is waited for.
                    Executor::Threads(pool) => pool.making_progress(&mut mark) && gil_free(),
                    Executor::Gevent(hub) => hub.beating(&mut mark),
                };
                if alive {
                    touch(fd);
                }
            }
        })?;
    Ok(())
}

/// The worker's master, through the heartbeat file's descriptor.
pub(crate) struct Master(pub(crate) RawFd);

impl crate::server::end::Master for Master {
    fn holds_recycling(&self) -> bool {
        recycling_held(self.0).is_some()
    }

    fn took_back(&self) -> bool {
        said(self.0) == 0
    }

    fn served_first(&self) {
        served(self.0);
    }

    fn replace_me(&self) {
        replace_me(self.0);
        // The master looks at the file on its tick (up to a second); a
        // SIGCHLD wakes it now, and it reaps nothing, then looks (not under
        // `--user` with a root master: then on its tick).
        // SAFETY: getppid(2) and kill(2) take plain integers.
        unsafe {
            libc::kill(libc::getppid(), libc::SIGCHLD);
        }
    }
}

/// Tells the master that this worker's last request before
/// `--max-requests` has started: one byte in the heartbeat file, written
/// through the descriptor the worker was handed (whatever user it runs
/// as). The master then starts the replacement at once, which takes the
/// connections while that request runs and this worker drains, instead of
/// once it has exited: with `-w 1` new connections would otherwise wait in
/// the backlog for a fresh worker to boot. No kill is due for it yet.
pub(crate) fn replace_me(fd: RawFd) {
    say(fd, b"x");
}

/// Tells the master that this worker's own stop has begun (`--max-requests`
/// after its last request, a hook's retire, a listening socket that
/// failed): two bytes. The master replaces it, if it has not yet, and
/// kills it if its drain outlasts `--graceful-timeout`.
pub(crate) fn leaving(fd: RawFd) {
    say(fd, b"xx");
}

/// How many bytes the worker has said (the file's length; 0 if unknown):
/// the master takes a lone byte back from a worker it holds.
pub(crate) fn said(fd: RawFd) -> u64 {
    stat(fd).map_or(0, |st| u64::try_from(st.st_size).unwrap_or(0))
}

fn stat(fd: RawFd) -> Option<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` on success; it is read only then.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful fstat above.
    Some(unsafe { st.assume_init() })
}

fn say(fd: RawFd, what: &'static [u8]) {
    // SAFETY: pwrite from a static buffer to a descriptor we were handed;
    // a failure only means the replacement starts later.
    unsafe {
        libc::pwrite(fd, what.as_ptr().cast(), what.len(), 0);
    }
}

/// Why the master holds `--max-requests` recycling: a replacement would
/// not start.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Held {
    /// A reload was given up: a replacement would load the code it could not.
    Reload,
    /// A new worker's boot outlasted `--timeout` (its import waits on
    /// something), and no worker booted since.
    Hang,
}

impl Held {
    /// The heartbeat file's mode that says it (`mode_of(None)`: not held).
    /// The owner's write bit is off while held: descriptors open for
    /// writing stay so, and the worker owns the file, so beats go on.
    pub(crate) fn mode_of(held: Option<Held>) -> u32 {
        match held {
            None => 0o600,
            Some(Held::Reload) => 0o400,
            Some(Held::Hang) => 0o440,
        }
    }

    /// The worker's line when it does not restart for `what`.
    pub(crate) fn line(self, what: &str) -> String {
        match self {
            Held::Reload => format!(
                "Not restarting {what}: the last reload could not start a worker, and a \
                 new one would load the same code"
            ),
            Held::Hang => format!(
                "Not restarting {what}: a new worker's boot outlasted --timeout (what its \
                 import waits on is down?), so this one serves on until a worker boots"
            ),
        }
    }
}

/// Whether, and why, the master holds `--max-requests` recycling, from the
/// mode it gave the heartbeat file (`supervisor/degraded.rs`, `hold`).
pub(crate) fn recycling_held(fd: RawFd) -> Option<Held> {
    let mode = stat(fd)?.st_mode;
    if mode & libc::S_IWUSR != 0 {
        None
    } else if mode & libc::S_IRGRP != 0 {
        Some(Held::Hang)
    } else {
        Some(Held::Reload)
    }
}

/// Waits for the GIL and lets it go at once: true when Python code can run.
/// Raw calls, not PyO3's `attach`, which would also run the references
/// PyO3 deferred dropping (an app object's `__del__`) on this thread.
fn gil_free() -> bool {
    // SAFETY: the interpreter runs for the worker's life (it leaves with
    // `_exit`); Ensure and Release pair on this thread, nothing between.
    unsafe {
        let state = pyo3::ffi::PyGILState_Ensure();
        pyo3::ffi::PyGILState_Release(state);
    }
    true
}

/// The beat that says the worker booted also says how much memory it
/// holds then: its RSS in MiB as the file's access time, in seconds past
/// the epoch, set in the same call as the beat, so the master that sees
/// the beat sees the figure too (`supervisor::workers`, `boot_rss`). A
/// worker already over `--max-worker-rss` then is not replaced for it.
pub(crate) fn first_beat(fd: RawFd) {
    let mib = crate::supervisor::workers::rss_mib(std::process::id().cast_signed()).unwrap_or(0);
    BOOT_MIB.store(mib, Ordering::Relaxed);
    set_times(fd, boot_figure(0), libc::UTIME_NOW);
}

/// The first beat's figure, which `served` writes again.
static BOOT_MIB: AtomicU64 = AtomicU64::new(0);

/// Tells the master this worker finished a request: the access time's
/// nanoseconds set to 1, its seconds still the first beat's figure. Once,
/// at the first request. A worker that ends soon after its start having
/// served is then not a crash as it begins to serve, for which the master
/// pauses the next fork (a request that kills the worker, in a stream of
/// good ones, took the whole server down for up to 10 s at a time).
pub(crate) fn served(fd: RawFd) {
    set_times(fd, boot_figure(1), libc::UTIME_OMIT);
}

/// Sets the file's modification time to now (the access time keeps the
/// first beat's figure).
pub(crate) fn touch(fd: RawFd) {
    set_times(
        fd,
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::UTIME_NOW,
    );
}

/// The access time that carries the first beat's figure, with `nanos`.
fn boot_figure(nanos: libc::c_long) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(BOOT_MIB.load(Ordering::Relaxed)).unwrap_or(0),
        tv_nsec: nanos,
    }
}

/// Sets the access time to `access` and the modification time as `modified`
/// says (`UTIME_NOW` or `UTIME_OMIT`). A failure only costs a missed beat or
/// mark.
fn set_times(fd: RawFd, access: libc::timespec, modified: libc::c_long) {
    let times = [
        access,
        libc::timespec {
            tv_sec: 0,
            tv_nsec: modified,
        },
    ];
    // SAFETY: futimens on a descriptor we were handed, with two valid timespecs.
    unsafe {
        libc::futimens(fd, times.as_ptr());
    }
}
