//! Executors: where a queued `Job` waits for a Python thread or greenlet, and how a request waits.
//!
//! This is a leaf: it runs what it is handed and names no type of the layers
//! above it. The I/O side `submit`s jobs; the thread pool (`threads/`)
//! hands each one to the handler its Python thread was started with (and
//! grows while requests are parked, by the rules of `threads/growth.rs`),
//! and the gevent hub queue (`gevent.rs`) hands them to the hub loop in
//! Python.
//! `wait.rs` is the one way a request waits for the network, in both modes:
//! a thread blocks (GIL released by the caller), a greenlet gets a token to
//! park on; and the way the app side hands the I/O side a reply
//! (`Waiter::hand_over`: on a pool thread, inside the pool's runtime).
//! `arena.rs` keeps CPython's frame memory between greenlets.
//! What a request *does* is `wsgi/`'s business.

pub(crate) mod arena;
pub(crate) mod gevent;
pub(crate) mod threads;
pub(crate) mod wait;

use crate::error::RequestError;
use crate::exchange::Job;
use std::sync::Arc;
use tokio::sync::watch;

/// Where requests go: the running mode's queue.
pub(crate) enum Executor {
    Threads(Arc<threads::Pool>),
    Gevent(Arc<gevent::Hub>),
}

impl Executor {
    /// Queues a request; when shutting down it is answered with 503 at once.
    pub(crate) fn submit(&self, job: Job) {
        let refused = match self {
            Executor::Threads(q) => q.push(job),
            Executor::Gevent(h) => h.push_request(job),
        };
        if let Err(job) = refused {
            job.refuse(RequestError::ShuttingDown);
        }
    }

    /// Gevent mode: turns true while the hub loop is held
    /// (`gevent::Hub::watch_held`, a task of the calling runtime). `None`
    /// in thread mode, whose queued jobs wait for a thread or are shed with
    /// 503 (`--queue-timeout`).
    pub(crate) fn watch_held(&self) -> Option<watch::Receiver<bool>> {
        match self {
            Executor::Threads(_) => None,
            Executor::Gevent(hub) => {
                let (tx, rx) = watch::channel(false);
                tokio::spawn(hub.clone().watch_held(tx));
                Some(rx)
            }
        }
    }

    /// No more requests: idle Python threads (or the hub loop) return.
    pub(crate) fn close(&self) {
        match self {
            Executor::Threads(q) => q.close(),
            Executor::Gevent(h) => h.close(),
        }
    }
}

/// `tokio::task::spawn_blocking`, or `None` when no thread could be started
/// for it (a pids or memory limit, and none of the pool's idle): tokio
/// panics then, with the task queued for a thread that may come later. The
/// caller falls back (reads in place, skips a trim) rather than letting the
/// panic end the response or the task. The panic's line still reaches
/// the error log (`log::error::route_panics`).
pub(crate) fn try_spawn_blocking<F, R>(f: F) -> Option<tokio::task::JoinHandle<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    unpanicked(|| Ok(tokio::task::spawn_blocking(f))).ok()
}

/// Runs a tokio call that panics rather than fails when the system runs
/// short (a runtime's signal driver with no descriptor for its socket pair,
/// a signal registration, a blocking pool with no thread: QA, session 30):
/// an error with the errno the panic names instead, so that a worker
/// started at such a moment is a crash to retry, not a panic.
pub(crate) fn unpanicked<T>(f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(done) => done,
        Err(payload) => Err(panic_error(payload.as_ref())),
    }
}

/// The error a caught tokio panic reports: its message, with the errno it
/// names (`Os { code: 24, ..` or `(os error 11)`), read from the message
/// rather than from `errno`, which the panic hook may have changed since.
pub(crate) fn panic_error(payload: &(dyn std::any::Any + Send)) -> std::io::Error {
    let said = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    let code = ["code: ", "os error "].iter().find_map(|mark| {
        let at = said.find(mark)? + mark.len();
        let digits: String = said[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<i32>().ok()
    });
    match code {
        Some(errno) => std::io::Error::from_raw_os_error(errno),
        None => std::io::Error::other(said.to_string()),
    }
}

#[cfg(test)]
mod panic_tests {
    #[test]
    fn the_errno_is_read_from_the_message() {
        let os = std::io::Error::from_raw_os_error(24);
        let e = super::panic_error(&format!("failed to create UnixStream: {os:?}"));
        assert_eq!(e.raw_os_error(), Some(24));
        let e = super::panic_error(&format!(
            "OS can't spawn worker thread: {}",
            std::io::Error::from_raw_os_error(11)
        ));
        assert_eq!(e.raw_os_error(), Some(11));
        let e = super::panic_error(&"something else");
        assert_eq!(e.raw_os_error(), None);
    }
}
