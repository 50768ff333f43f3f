//! Gevent mode (`-k gevent`): requests and wake-ups reach the hub through one queue and one eventfd.
//!
//! The I/O runtime pushes `Event`s (a new request, a wake token for a parked
//! greenlet, stop) into a vector and writes the eventfd only when the vector
//! was empty, so the hub wakes once per batch, not per event. The hub
//! (`python/siesta/_gevent.py`) watches the fd, takes the whole batch, and
//! does every greenlet switch itself; this module never blocks and never
//! holds a lock across a call into Python. Wake tokens are numbered here.
//!
//! The hub loop beats (`hub_beat`) once a heartbeat interval, for
//! `--timeout`, and every `TICK` while it has requests (from the push of
//! one, or `hub_busy`, to `hub_idle`: an idle worker does not wake for it).
//! The I/O thread accepts and reads heads for the hub, so a hub held by a
//! greenlet that does not yield (a CPU-bound request, a blocking call the
//! patching does not cover) would otherwise go on taking connections it
//! cannot serve, which the other workers could have. `watch_held` looks at the beats
//! while the hub is busy: one that misses `HELD_AFTER` of them is held,
//! and its worker stops accepting until it beats again, as a gevent worker
//! whose hub accepts stops when its hub is held. That includes a hub that
//! runs a batch of CPU-bound requests back to back for that long: it is
//! saturated, and the other workers are better placed.

use crate::exchange::Job;
use parking_lot::Mutex;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How often the hub loop beats while it has requests.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// A hub that has not beaten for this long is held: its worker stops
/// accepting. Several ticks, so that a busy but turning loop (a batch of
/// a thousand wake-ups, a short blocking call) does not count.
const HELD_AFTER: Duration = Duration::from_millis(200);

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
    /// The hub has requests, and so beats every `TICK`.
    busy: AtomicBool,
    /// Wakes `watch_held` when the hub turns busy, or closes.
    rouse: Notify,
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
            busy: AtomicBool::new(false),
            rouse: Notify::new(),
        })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn push(&self, ev: Event) {
        let request = matches!(ev, Event::Request(_));
        let (was_empty, roused) = {
            let mut evs = self.events.lock();
            let was_empty = evs.is_empty();
            evs.push(ev);
            // Busy from the moment a request waits for the hub, not only
            // once it runs one: a hub held by a greenlet of the app's own (a
            // background job) would never take the request to say so. Set
            // under the lock, where `idle` looks, so the hub cannot take,
            // run and finish the request in between (and be left busy with
            // no tick to end it). Not for a wake token: those are for
            // requests running (busy already), or late, for one that ended.
            let roused = request && !self.busy.load(Ordering::Relaxed);
            if roused {
                self.busy.store(true, Ordering::Release);
            }
            (was_empty, roused)
        };
        if roused {
            self.rouse.notify_one();
        }
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

    /// The hub runs requests: it beats every `TICK` until `idle`.
    pub(crate) fn busy(&self) {
        self.busy.store(true, Ordering::Release);
        self.rouse.notify_one();
    }

    /// The hub runs no request: its beats come once a heartbeat interval.
    /// Not while a request waits for it (pushed since the hub took them).
    pub(crate) fn idle(&self) {
        let events = self.events.lock();
        if !events.iter().any(|e| matches!(e, Event::Request(_))) {
            self.busy.store(false, Ordering::Release);
        }
    }

    /// Whether the hub beat since `mark` (which is updated).
    pub(crate) fn beating(&self, mark: &mut u64) -> bool {
        let now = self.beats.load(Ordering::Relaxed);
        let alive = now != *mark;
        *mark = now;
        alive
    }

    /// Tells `held` whether the hub loop is held (true) or turning, from the
    /// I/O runtime: while the hub is busy it looks once a `TICK`, otherwise
    /// it waits to be roused. A change also sets the worker's phase on the
    /// status page, and is logged at debug (`tell`). Ends when the hub
    /// closes.
    pub(crate) async fn watch_held(self: Arc<Self>, held: watch::Sender<bool>) {
        let misses_allowed = (HELD_AFTER.as_millis() / TICK.as_millis()) as u32;
        while !self.closed.load(Ordering::Acquire) {
            if !self.busy.load(Ordering::Acquire) {
                tell(&held, false);
                self.rouse.notified().await;
                continue;
            }
            let mut look = tokio::time::interval(TICK);
            look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut mark, mut misses) = (self.beats.load(Ordering::Relaxed), 0u32);
            while self.busy.load(Ordering::Acquire) && !self.closed.load(Ordering::Acquire) {
                look.tick().await;
                misses = if self.beating(&mut mark) {
                    0
                } else {
                    misses + 1
                };
                tell(&held, misses > misses_allowed);
            }
        }
    }

    /// A fresh wake token.
    pub(crate) fn next_token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.push(Event::Stop);
            self.rouse.notify_one();
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

/// Sets `held`, and the worker's phase on the status page, logging a
/// change at debug. The phase is set here, before the line, rather than by
/// a task watching `held`: that task ran late on a starved CPU, and the
/// status page showed a worker logged held as ready meanwhile.
fn tell(held: &watch::Sender<bool>, now_held: bool) {
    if *held.borrow() == now_held {
        return;
    }
    crate::metrics::worker_held(now_held);
    held.send_replace(now_held);
    let msg = if now_held {
        format!(
            "The hub loop has not turned for {} s: not accepting until it does",
            HELD_AFTER.as_secs_f64()
        )
    } else {
        "The hub loop turns again: accepting".to_owned()
    };
    crate::log::error::write(crate::log::error::Level::Debug, &msg);
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

    /// Lets the paused clock run `d` in small steps, so the watcher's
    /// interval fires along the way.
    async fn pass(d: Duration) {
        for _ in 0..d.as_millis() / 10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_hub_that_stops_beating_is_held_until_it_beats() -> io::Result<()> {
        let hub = Arc::new(Hub::new()?);
        let (tx, rx) = watch::channel(false);
        let watcher = tokio::spawn(hub.clone().watch_held(tx));
        // Idle, the hub beats rarely (the heartbeat interval): never held.
        pass(HELD_AFTER * 3).await;
        assert!(!*rx.borrow());
        // Busy and beating every tick: not held.
        hub.busy();
        for _ in 0..10 {
            hub.beat();
            pass(TICK).await;
        }
        assert!(!*rx.borrow());
        // Busy without a beat for longer than HELD_AFTER: held.
        pass(HELD_AFTER + TICK * 2).await;
        assert!(*rx.borrow());
        // One beat: turning again.
        hub.beat();
        pass(TICK * 2).await;
        assert!(!*rx.borrow());
        pass(HELD_AFTER + TICK * 2).await;
        assert!(*rx.borrow());
        // Idle (its last request done): not held, whatever its beats.
        hub.idle();
        pass(TICK * 2).await;
        assert!(!*rx.borrow());
        // A late wake token (for a request that ended) does not make an
        // idle hub busy: nothing would make it idle again.
        hub.waker(7).wake();
        pass(HELD_AFTER + TICK * 2).await;
        assert!(!*rx.borrow());
        assert_eq!(hub.take().len(), 1);
        // Closing ends the watcher.
        hub.close();
        tokio::time::timeout(Duration::from_secs(1), watcher)
            .await
            .map_err(|_| io::Error::other("the watcher did not end at close"))?
            .map_err(io::Error::other)?;
        Ok(())
    }
}
