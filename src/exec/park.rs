//! Waiting on a poll function from an OS thread: the thread mode's only way to block.
//!
//! `wait` runs a `poll`-style closure until it is ready or a deadline
//! passes. On a pool thread that drives the I/O runtime (`threads.rs`) it
//! waits inside the runtime, so the waiting thread keeps sockets moving;
//! elsewhere it parks the thread with a waker that unparks it. The caller
//! releases the GIL around it; this module knows nothing of Python.
//! Greenlets never come here: the hub does their waiting (`exec/gevent.rs`).

use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
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

/// Polls `f` until it is ready; `None` if `deadline` passes first. On a
/// pool thread that drives the I/O runtime, the wait drives it too.
pub(crate) fn wait<T>(
    deadline: Option<Instant>,
    mut f: impl FnMut(&Waker) -> Poll<T>,
) -> Option<T> {
    if let Poll::Ready(v) = WAKER.with(|w| f(w)) {
        return Some(v);
    }
    let pool = super::threads::current();
    if let Some(pool) = &pool {
        pool.set_blocked(true);
    }
    let out = match pool.as_ref().and_then(|p| p.runtime()) {
        Some(rt) => rt.block_on(async {
            let fut = std::future::poll_fn(|cx| f(cx.waker()));
            match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), fut).await.ok(),
                None => Some(fut.await),
            }
        }),
        None => WAKER.with(|waker| loop {
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
        }),
    };
    if let Some(pool) = &pool {
        pool.set_blocked(false);
    }
    out
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
