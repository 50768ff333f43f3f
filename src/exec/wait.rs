//! How a request waits for the network: the one waiting primitive of both modes.
//!
//! A `Waiter` polls a `poll`-style closure. `Waiter::Thread` blocks the
//! calling OS thread until the closure is ready or the deadline passes; on
//! a pool thread (`threads/`) the pool decides whether it drives the I/O
//! runtime while it waits (`Pool::wait_io`), so sockets keep moving. The
//! caller releases the GIL around it (`outside_gil`). `Waiter::Greenlet`
//! never blocks: it registers a wake token with the hub and returns `Park`,
//! and the hub loop in Python switches away until the token comes back (or
//! the park's timeout passes), then the caller polls again. The deadline
//! check is the same for both. This module knows nothing of WSGI.

use super::gevent::Hub;
use pyo3::marker::Ungil;
use pyo3::Python;
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;
use std::time::Instant;

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// One waker per thread, made once: waiting allocates nothing.
    static WAKER: Waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
}

/// How the request being served waits: its thread, or its greenlet.
#[derive(Clone)]
pub(crate) enum Waiter {
    Thread,
    Greenlet(Arc<Hub>),
}

/// A greenlet must park on `token` for at most `timeout`, then poll again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Park {
    pub token: u64,
    pub timeout: Option<Duration>,
}

/// What a wait came to.
#[derive(Debug, PartialEq)]
pub(crate) enum Waited<T> {
    Ready(T),
    /// The deadline passed with `f` still pending.
    TimedOut,
    /// Greenlet mode: not ready yet; park, then poll again.
    Park(Park),
}

impl Waiter {
    /// Runs `f`, which hands the I/O side something and wakes its task (a
    /// reply for the connection), where that wake costs least: on a pool
    /// thread, inside the pool's runtime (`threads::wake_from_app`).
    pub(crate) fn hand_over<R>(&self, f: impl FnOnce() -> R) -> R {
        match self {
            Waiter::Thread => super::threads::wake_from_app(f),
            Waiter::Greenlet(_) => f(),
        }
    }

    /// Runs `f` with the GIL released if this waiter blocks a thread.
    pub(crate) fn outside_gil<R: Ungil>(&self, py: Python<'_>, f: impl FnOnce() -> R + Ungil) -> R {
        match self {
            Waiter::Thread => py.detach(f),
            Waiter::Greenlet(_) => f(),
        }
    }

    /// Polls `f` until it is ready, the deadline passes, or (greenlets) it
    /// would block.
    pub(crate) fn wait<T>(
        &self,
        deadline: Option<Instant>,
        mut f: impl FnMut(&Waker) -> Poll<T>,
    ) -> Waited<T> {
        match self {
            Waiter::Thread => match block(deadline, f) {
                Some(v) => Waited::Ready(v),
                None => Waited::TimedOut,
            },
            Waiter::Greenlet(hub) => {
                let token = hub.next_token();
                if let Poll::Ready(v) = f(&hub.waker(token)) {
                    return Waited::Ready(v);
                }
                let timeout = match deadline {
                    None => None,
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => Some(left),
                        _ => return Waited::TimedOut,
                    },
                };
                Waited::Park(Park { token, timeout })
            }
        }
    }
}

/// Polls `f` until it is ready; `None` if `deadline` passes first. On a
/// pool thread that drives the I/O runtime, the pool decides whether the
/// wait drives it too (`Pool::wait_io`).
fn block<T>(deadline: Option<Instant>, mut f: impl FnMut(&Waker) -> Poll<T>) -> Option<T> {
    if let Poll::Ready(v) = WAKER.with(|w| f(w)) {
        return Some(v);
    }
    let pool = super::threads::current();
    if let Some(pool) = &pool {
        pool.set_blocked(true);
    }
    let out = match &pool {
        Some(p) => p.wait_io(deadline, &mut f),
        None => match park(deadline, &mut f, || false) {
            Parked::Ready(v) => Some(v),
            _ => None,
        },
    };
    if let Some(pool) = &pool {
        pool.set_blocked(false);
    }
    out
}

/// How `park` ended.
pub(crate) enum Parked<T> {
    Ready(T),
    TimedOut,
    /// `leave` said so on a wake.
    Left,
}

/// Polls `f` with this thread's waker, sleeping between wakes, until it is
/// ready, `deadline` passes, or `leave` (asked after each wake) says to stop.
pub(crate) fn park<T>(
    deadline: Option<Instant>,
    f: &mut impl FnMut(&Waker) -> Poll<T>,
    leave: impl Fn() -> bool,
) -> Parked<T> {
    WAKER.with(|waker| loop {
        if let Poll::Ready(v) = f(waker) {
            return Parked::Ready(v);
        }
        match deadline {
            None => thread::park(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Parked::TimedOut;
                }
                thread::park_timeout(d - now);
            }
        }
        if leave() {
            return Parked::Left;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn wakes_from_another_thread() {
        let flag = Arc::new(AtomicBool::new(false));
        let stash: Arc<parking_lot::Mutex<Option<Waker>>> = Arc::default();
        let (f2, s2) = (flag.clone(), stash.clone());
        let t = thread::spawn(move || loop {
            if let Some(w) = s2.lock().take() {
                f2.store(true, Ordering::SeqCst);
                w.wake();
                return;
            }
            thread::yield_now();
        });
        let got = block(None, |w| {
            if flag.load(Ordering::SeqCst) {
                Poll::Ready(7)
            } else {
                *stash.lock() = Some(w.clone());
                Poll::Pending
            }
        });
        assert_eq!(got, Some(7));
        assert!(t.join().is_ok());
    }

    #[test]
    fn deadline_passes() {
        let d = Instant::now() + Duration::from_millis(5);
        assert_eq!(block(Some(d), |_| Poll::<()>::Pending), None);
    }
}
