//! Gevent mode (`-k gevent`): requests and wake-ups reach the hub through one queue and one eventfd.
//!
//! The I/O runtime pushes `Event`s (a new request, a wake token for a parked
//! greenlet, stop) into a vector and writes the eventfd only when the vector
//! was empty, so the hub wakes once per batch, not per event. The hub
//! (`python/siesta/_gevent.py`) watches the fd, takes the whole batch, and
//! does every greenlet switch itself; this module never blocks and never
//! holds a lock across a call into Python. Wake tokens are numbered here.

use crate::exchange::Job;
use parking_lot::Mutex;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

/// Something the hub has to act on.
pub(crate) enum Event {
    Request(Box<Job>),
    /// A greenlet parked on this token can make progress.
    Wake(u64),
    /// Shutting down: the hub loop returns once its greenlets are done.
    Stop,
}

pub(crate) struct Hub {
    events: Mutex<Vec<Event>>,
    /// Readable while `events` is non-empty (eventfd counter > 0).
    fd: OwnedFd,
    closed: AtomicBool,
    /// The last wake token handed out.
    tokens: AtomicU64,
    /// Bumped by the hub loop's timer: the heartbeat's sign it is alive.
    beats: AtomicU64,
}

impl Hub {
    pub(crate) fn new() -> io::Result<Hub> {
        // SAFETY: eventfd takes no pointers; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Hub {
            events: Mutex::new(Vec::with_capacity(64)),
            fd,
            closed: AtomicBool::new(false),
            tokens: AtomicU64::new(0),
            beats: AtomicU64::new(0),
        })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn push(&self, ev: Event) {
        let was_empty = {
            let mut evs = self.events.lock();
            let was_empty = evs.is_empty();
            evs.push(ev);
            was_empty
        };
        if was_empty {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
            unsafe {
                libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
            }
        }
    }

    /// Queues a request; hands it back when the hub is closed.
    pub(crate) fn push_request(&self, job: Job) -> Result<(), Job> {
        if self.closed.load(Ordering::Acquire) {
            return Err(job);
        }
        self.push(Event::Request(Box::new(job)));
        Ok(())
    }

    /// The hub loop ran its timer.
    pub(crate) fn beat(&self) {
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the hub beat since `mark` (which is updated).
    pub(crate) fn beating(&self, mark: &mut u64) -> bool {
        let now = self.beats.load(Ordering::Relaxed);
        let alive = now != *mark;
        *mark = now;
        alive
    }

    /// A fresh wake token.
    pub(crate) fn next_token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.push(Event::Stop);
        }
    }

    /// Takes every pending event. The eventfd is reset first, so an event
    /// pushed after the reset always makes the fd readable again.
    pub(crate) fn take(&self) -> Vec<Event> {
        let mut buf: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN is fine.
        unsafe {
            libc::read(self.fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8);
        }
        std::mem::take(&mut *self.events.lock())
    }

    /// A waker that queues `token` for the hub.
    pub(crate) fn waker(self: &Arc<Self>, token: u64) -> Waker {
        Waker::from(Arc::new(TokenWaker {
            hub: self.clone(),
            token,
        }))
    }
}

struct TokenWaker {
    hub: Arc<Hub>,
    token: u64,
}

impl Wake for TokenWaker {
    fn wake(self: Arc<Self>) {
        self.hub.push(Event::Wake(self.token));
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.hub.push(Event::Wake(self.token));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn one_wake_per_batch() -> io::Result<()> {
        let hub = Arc::new(Hub::new()?);
        assert!(!readable(hub.raw_fd()));
        hub.waker(1).wake_by_ref();
        hub.waker(2).wake();
        assert!(readable(hub.raw_fd()));
        let evs = hub.take();
        let tokens: Vec<u64> = evs
            .iter()
            .filter_map(|e| {
                if let Event::Wake(t) = e {
                    Some(*t)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(tokens, vec![1, 2]);
        assert!(!readable(hub.raw_fd()));
        hub.close();
        assert!(readable(hub.raw_fd()));
        assert!(matches!(hub.take().as_slice(), [Event::Stop]));
        Ok(())
    }
}
