//! Waiting on a poll function from an OS thread: the thread mode's only way to block.
//!
//! `wait` runs a `poll`-style closure with a waker that unparks the calling
//! thread, parking in between, until it is ready or a deadline passes. The
//! caller releases the GIL around it; this module knows nothing of Python.
//! Greenlets never come here: the hub does their waiting (`exec/gevent.rs`).

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
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

/// Polls `f` until it is ready; `None` if `deadline` passes first.
pub(crate) fn wait<T>(
    deadline: Option<Instant>,
    mut f: impl FnMut(&Waker) -> Poll<T>,
) -> Option<T> {
    WAKER.with(|waker| loop {
        if let Poll::Ready(v) = f(waker) {
            return Some(v);
        }
        match deadline {
            None => thread::park(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                thread::park_timeout(d - now);
            }
        }
    })
}

/// Polls a `Context`-taking function until ready (no deadline).
pub(crate) fn wait_cx<T>(mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
    loop {
        if let Some(v) = wait(None, |w| f(&mut Context::from_waker(w))) {
            return v;
        }
    }
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
        let got = wait(None, |w| {
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
        assert_eq!(wait(Some(d), |_| Poll::<()>::Pending), None);
    }
}
