//! Thread mode (`-k thread`): a pool of Python threads that also drives the I/O.
//!
//! By default (`--runtime-threads 0`) there is no I/O thread: the pool's
//! tokio runtime is a current-thread one, driven by whichever Python thread
//! is free. That thread (the *driver*) polls sockets and hyper with the GIL
//! released until a request head is parsed, then runs the app itself and
//! comes back, so under load one thread goes request to request with no
//! hand-off and no wake-up, and idle threads sleep instead of fighting over
//! the GIL. A thread waiting in `wsgi.input` or on a slow client drives the
//! runtime while it waits (`wait.rs`). When the running thread is stuck in
//! the app's own I/O, the `monitor` wakes an idle thread within about a
//! millisecond to take over driving and queued requests. With
//! `--runtime-threads N` dedicated I/O threads push requests and the pool
//! only runs apps. Python starts the threads (`python/siesta/_run.py`); each
//! runs `Pool::run` with the handler that serves one job, so the pool never
//! knows what a job is for.

use crate::error::RequestError;
use crate::exchange::Job;
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// How long the pool may go without taking a job or driving I/O before an
/// idle thread is woken (the running ones may be blocked in the app).
const TICK: Duration = Duration::from_millis(1);

/// A thread going from one queued job to the next gives the runtime a turn
/// (so finished replies go out) at most this often: often enough that no
/// reply waits noticeably, rarely enough to cost nothing under load.
const TURN_EVERY: Duration = Duration::from_micros(200);

thread_local! {
    /// The pool this Python thread belongs to, for `wait.rs`.
    static CURRENT: RefCell<Option<Arc<Pool>>> = const { RefCell::new(None) };
}

/// The pool of the calling thread, if it is a pool thread.
pub(crate) fn current() -> Option<Arc<Pool>> {
    CURRENT.with(|c| c.borrow().clone())
}

pub(crate) struct Pool {
    state: Mutex<State>,
    /// Idle threads sleep here.
    idle_cv: Condvar,
    /// The monitor sleeps here while the pool is quiet.
    monitor_cv: Condvar,
    /// Wakes the driver's `recv` when a job is queued.
    job_ready: Notify,
    /// The runtime the pool drives; `None` with dedicated I/O threads.
    runtime: Option<Arc<Runtime>>,
    /// `--queue-timeout`: a job that waited this long for a thread is
    /// answered 503 instead (load shedding).
    queue_timeout: Option<Duration>,
}

struct State {
    jobs: VecDeque<Job>,
    /// Threads asleep on `idle_cv`.
    idle: usize,
    /// Threads running Python for a job (not idle, not waiting in `park`).
    running: usize,
    /// A thread is in `recv`, driving I/O and about to take the next job.
    driver: bool,
    /// Bumped whenever a thread drives the runtime (as driver, for a turn
    /// between queued jobs, or while waiting in `park`): the monitor's sign
    /// that I/O is moving.
    turns: u64,
    /// When the runtime last had a turn, to space the turns a thread gives
    /// it between queued jobs (`TURN_EVERY`).
    last_turn: Instant,
    /// The monitor is asleep on `monitor_cv`.
    monitor_asleep: bool,
    /// Jobs past `--queue-timeout`, to be refused once the lock is released.
    expired: Vec<Job>,
    /// Jobs served to the end, for the heartbeat.
    completed: u64,
    /// Threads waiting on the network for their request (in `wait.rs`):
    /// not stuck in the app, whatever the others do.
    waiting: usize,
    closed: bool,
}

impl State {
    /// The oldest job still worth running; older ones move to `expired`.
    fn pop_live(&mut self, queue_timeout: Option<Duration>) -> Option<Job> {
        loop {
            let job = self.jobs.pop_front()?;
            match queue_timeout {
                Some(t) if job.queued.elapsed() > t => self.expired.push(job),
                _ => return Some(job),
            }
        }
    }
}

impl Pool {
    pub(crate) fn new(runtime: Option<Arc<Runtime>>, queue_timeout: Option<Duration>) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            state: Mutex::new(State {
                jobs: VecDeque::with_capacity(256),
                idle: 0,
                running: 0,
                driver: false,
                turns: 0,
                last_turn: Instant::now(),
                monitor_asleep: false,
                expired: Vec::new(),
                completed: 0,
                waiting: 0,
                closed: false,
            }),
            idle_cv: Condvar::new(),
            monitor_cv: Condvar::new(),
            job_ready: Notify::new(),
            runtime,
            queue_timeout,
        });
        let p = pool.clone();
        let spawned = std::thread::Builder::new()
            .name("siesta-monitor".into())
            .spawn(move || {
                // A bug here must not end the monitor silently: say so.
                let run = std::panic::AssertUnwindSafe(|| p.monitor());
                if std::panic::catch_unwind(run).is_err() {
                    crate::log::error::error("The pool monitor stopped after an internal error");
                }
            });
        if let Err(e) = spawned {
            crate::log::error::error(&format!("Cannot start the pool monitor: {e}"));
        }
        pool
    }

    pub(crate) fn runtime(&self) -> Option<&Arc<Runtime>> {
        self.runtime.as_ref()
    }

    /// Queues a job; hands it back when the pool is closed.
    pub(crate) fn push(&self, job: Job) -> Result<(), Job> {
        let (notify_driver, wake_idle, wake_monitor) = {
            let mut st = self.state.lock();
            if st.closed {
                return Err(job);
            }
            st.jobs.push_back(job);
            let wake_idle = !st.driver && st.running == 0 && st.idle > 0;
            let wake_monitor = st.monitor_asleep;
            st.monitor_asleep = false;
            (st.driver, wake_idle, wake_monitor)
        };
        if notify_driver {
            self.job_ready.notify_one();
        } else if wake_idle {
            self.idle_cv.notify_one();
        }
        if wake_monitor {
            self.monitor_cv.notify_one();
        }
        Ok(())
    }

    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.job_ready.notify_waiters();
        self.idle_cv.notify_all();
        self.monitor_cv.notify_all();
    }

    /// Whether the pool is making progress (for the heartbeat): a thread is
    /// free, driving I/O or waiting on the network, or a job finished or a
    /// wait began since `mark` (which is updated). Stuck means every thread
    /// is inside app code and none came back.
    pub(crate) fn making_progress(&self, mark: &mut u64) -> bool {
        let st = self.state.lock();
        let now = st.turns + st.completed;
        let moved = now != *mark;
        *mark = now;
        moved || st.idle > 0 || st.driver || st.waiting > 0 || st.running == 0
    }

    /// Marks the calling pool thread as waiting (`true`) or running again.
    pub(crate) fn set_blocked(&self, blocked: bool) {
        let wake = {
            let mut st = self.state.lock();
            if blocked {
                st.turns += 1;
                st.last_turn = Instant::now();
                st.waiting += 1;
                st.running = st.running.saturating_sub(1);
                st.running == 0 && !st.driver && st.idle > 0 && !st.jobs.is_empty()
            } else {
                st.waiting = st.waiting.saturating_sub(1);
                st.running += 1;
                false
            }
        };
        if wake {
            self.idle_cv.notify_one();
        }
    }

    /// The next job for a thread that just finished one (GIL released).
    fn next_job(&self) -> Option<Job> {
        let mut st = self.state.lock();
        st.running = st.running.saturating_sub(1);
        loop {
            if let Some(job) = st.pop_live(self.queue_timeout) {
                st.running += 1;
                if let (false, Some(rt)) = (st.driver, &self.runtime) {
                    // Nobody drives while this thread runs the app: give
                    // the runtime a turn first, so replies of finished
                    // requests go out and connections keep moving.
                    st.turns += 1;
                    st.last_turn = Instant::now();
                    drop(st);
                    rt.block_on(tokio::task::yield_now());
                }
                return Some(job);
            }
            if st.closed {
                return None;
            }
            if let (false, Some(rt)) = (st.driver, &self.runtime) {
                st.driver = true;
                st.turns += 1;
                st.last_turn = Instant::now();
                drop(st);
                let job = rt.block_on(self.recv());
                st = self.state.lock();
                st.driver = false;
                if job.is_some() {
                    st.running += 1;
                    if st.monitor_asleep {
                        st.monitor_asleep = false;
                        self.monitor_cv.notify_one();
                    }
                }
                return job;
            }
            st.idle += 1;
            self.idle_cv.wait(&mut st);
            st.idle -= 1;
        }
    }

    /// Drives the runtime until a job is queued (or the pool closes).
    async fn recv(&self) -> Option<Job> {
        loop {
            let notified = self.job_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state.lock();
                if let Some(job) = st.pop_live(self.queue_timeout) {
                    return Some(job);
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Keeps I/O moving when no pool thread drives it: after a tick with no
    /// turn while threads are busy, it wakes an idle thread to take over, or,
    /// with every thread inside the app, drives the runtime itself a tick at
    /// a time (it never holds the GIL) until a thread comes back. It also
    /// answers 503 to jobs past `--queue-timeout` (set aside by `pop_live`
    /// or found at the front of the queue).
    fn monitor(&self) {
        let mut st = self.state.lock();
        let mut last = st.turns;
        loop {
            if st.closed {
                return;
            }
            if st.running == 0 && st.jobs.is_empty() && st.expired.is_empty() {
                st.monitor_asleep = true;
                self.monitor_cv.wait(&mut st);
                last = st.turns;
                continue;
            }
            self.monitor_cv.wait_for(&mut st, TICK);
            // Shed what waited too long, even while every thread is busy.
            if let Some(t) = self.queue_timeout {
                while st.jobs.front().is_some_and(|j| j.queued.elapsed() > t) {
                    if let Some(job) = st.jobs.pop_front() {
                        st.expired.push(job);
                    }
                }
            }
            if !st.expired.is_empty() {
                let expired = std::mem::take(&mut st.expired);
                drop(st);
                for job in expired {
                    job.refuse(RequestError::Overloaded);
                }
                st = self.state.lock();
            }
            let stuck = st.turns == last && !st.driver;
            last = st.turns;
            if !stuck {
                continue;
            }
            if st.idle > 0 && (self.runtime.is_some() || !st.jobs.is_empty()) {
                self.idle_cv.notify_one();
            } else if let Some(rt) = &self.runtime {
                drop(st);
                // The timer is made inside the runtime: built outside, it
                // would find no reactor.
                rt.block_on(async { tokio::time::sleep(TICK).await });
                st = self.state.lock();
            }
        }
    }

    /// One Python thread's life: take jobs and hand each to `serve` until
    /// the pool closes.
    pub(crate) fn run(self: &Arc<Self>, py: Python<'_>, mut serve: impl FnMut(Python<'_>, Job)) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        self.state.lock().running += 1;
        let mut served = false;
        loop {
            // A job already queued is taken without releasing the GIL,
            // unless the runtime is due a turn (`next_job` gives it one).
            let queued = {
                let mut st = self.state.lock();
                st.completed += u64::from(served);
                let due =
                    self.runtime.is_some() && !st.driver && st.last_turn.elapsed() > TURN_EVERY;
                if due {
                    None
                } else {
                    st.pop_live(self.queue_timeout)
                }
            };
            let job = match queued {
                Some(job) => job,
                None => match py.detach(|| self.next_job()) {
                    Some(job) => job,
                    None => break,
                },
            };
            serve(py, job);
            served = true;
        }
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_only_when_every_thread_is_in_the_app() {
        let pool = Pool::new(None, None);
        let mut mark = 0;
        assert!(pool.making_progress(&mut mark), "nothing running");
        pool.set_blocked(false); // a thread enters the app
        assert!(
            !pool.making_progress(&mut mark),
            "in the app, nothing moved"
        );
        pool.set_blocked(true); // it waits on the network
        assert!(pool.making_progress(&mut mark), "waiting is progress");
        assert!(pool.making_progress(&mut mark), "still waiting, not stuck");
        pool.set_blocked(false);
        assert!(
            !pool.making_progress(&mut mark),
            "back in the app and silent"
        );
        pool.close();
    }
}
