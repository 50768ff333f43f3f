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
//! only runs apps.
//!
//! `--threads` are app slots, not a thread count (`growth.rs`): a thread
//! parked on the network gives its slot back, and takes one again (waiting
//! for it if need be) when the network answers, so no more than `--threads`
//! threads run app code at once. While requests are parked and jobs queue
//! with a slot free and no thread to take it, the monitor asks Python for
//! more threads, up to `--max-threads`; threads above `--threads` leave
//! after `SHRINK_AFTER` idle. Python starts every thread
//! (`python/siesta/_run.py`, through the spawner it hands `set_spawner`);
//! each runs `Pool::run` with the handler that serves one job, so the pool
//! never knows what a job is for.

use super::growth::{Census, PoolSize, SHRINK_AFTER};
use crate::error::RequestError;
use crate::exchange::Job;
use parking_lot::{Condvar, Mutex, MutexGuard};
use pyo3::prelude::*;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
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

/// A thread back from the network waits for a free app slot, but when no
/// slot at all is given back for this long it goes ahead anyway: the app's
/// threads may be waiting for something its own request holds (a lock or a
/// database connection taken before `read()`), and waiting longer would be
/// a deadlock.
const RESUME_WAIT: Duration = Duration::from_secs(1);

/// After Python failed to start a thread, the pool tries again only after
/// this long.
const SPAWN_RETRY: Duration = Duration::from_secs(1);

/// Starts one more pool thread (Python's `threading.Thread` running
/// `Pool::run`); false when it could not. Called by the monitor, which holds
/// no lock while it runs.
pub(crate) type Spawner = Box<dyn Fn() -> bool + Send + Sync>;

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
    /// Threads back from the network sleep here until an app slot is free.
    slot_cv: Condvar,
    /// The monitor sleeps here while the pool is quiet.
    monitor_cv: Condvar,
    /// Wakes the driver's `recv` when a job is queued or a slot freed.
    job_ready: Notify,
    /// The runtime the pool drives; `None` with dedicated I/O threads.
    runtime: Option<Arc<Runtime>>,
    /// `--queue-timeout`: a job that waited this long for a thread is
    /// answered 503 instead (load shedding).
    queue_timeout: Option<Duration>,
    /// `--threads` (app slots) and `--max-threads`.
    size: PoolSize,
    /// How the pool grows; without one it keeps the threads it was given.
    spawner: OnceLock<Spawner>,
}

struct State {
    jobs: VecDeque<Job>,
    /// Threads asleep on `idle_cv`.
    idle: usize,
    /// Threads holding an app slot: running Python for a job (not idle,
    /// not waiting in `park`). At most `--threads`, but for a thread back
    /// from the network after `RESUME_WAIT`.
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
    /// not stuck in the app, whatever the others do, and holding no slot.
    waiting: usize,
    /// Threads back from the network, waiting for an app slot (`slot_cv`);
    /// they get the next free one before any queued job.
    resuming: usize,
    /// Bumped whenever a thread gives its app slot back, so a thread
    /// waiting for one can tell a busy app from a blocked one.
    released: u64,
    /// Threads in the pool loop (`Pool::run`).
    threads: usize,
    /// Threads asked for and not in the loop yet: Python's first
    /// `--threads`, then the monitor's spawns.
    starting: usize,
    /// No spawn before then (Python failed to start a thread).
    spawn_after: Option<Instant>,
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

    /// A slot is free for a queued job (threads back from the network
    /// take free slots first).
    fn slot_free(&self, slots: usize) -> bool {
        self.running + self.resuming < slots
    }

    /// The oldest live job with an app slot, when one is free.
    fn take(&mut self, queue_timeout: Option<Duration>, slots: usize) -> Option<Job> {
        if !self.slot_free(slots) {
            return None;
        }
        let job = self.pop_live(queue_timeout)?;
        self.running += 1;
        Some(job)
    }

    /// The calling thread gives its app slot back.
    fn release(&mut self) {
        self.running = self.running.saturating_sub(1);
        self.released += 1;
    }

    fn census(&self) -> Census {
        Census {
            threads: self.threads,
            starting: self.starting,
            parked: self.waiting,
            idle: self.idle,
            driver: self.driver,
            queued: self.jobs.len(),
        }
    }
}

impl Pool {
    /// A pool for `size.threads` threads that Python is about to start
    /// (each enters `run`), growing up to `size.max_threads` once it has a
    /// spawner.
    pub(crate) fn new(
        runtime: Option<Arc<Runtime>>,
        queue_timeout: Option<Duration>,
        size: PoolSize,
    ) -> Arc<Pool> {
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
                resuming: 0,
                released: 0,
                threads: 0,
                starting: size.threads,
                spawn_after: None,
                closed: false,
            }),
            idle_cv: Condvar::new(),
            slot_cv: Condvar::new(),
            monitor_cv: Condvar::new(),
            job_ready: Notify::new(),
            runtime,
            queue_timeout,
            size,
            spawner: OnceLock::new(),
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

    /// Lets the pool grow past `--threads`: `spawn` starts one more thread
    /// that enters `run`. Only the first spawner counts.
    pub(crate) fn set_spawner(&self, spawn: Spawner) {
        let _ = self.spawner.set(spawn);
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

    /// Whether the pool is making progress (for the heartbeat): an app slot
    /// is free, or a job finished or a wait began since `mark` (which is
    /// updated). Stuck means every slot is held by a thread inside app code
    /// and none came back; threads parked on the network, idle or driving
    /// beside them serve nothing new.
    pub(crate) fn making_progress(&self, mark: &mut u64) -> bool {
        let st = self.state.lock();
        let now = st.turns + st.completed;
        let moved = now != *mark;
        *mark = now;
        moved || st.running < self.size.threads
    }

    /// Marks the calling pool thread as waiting on the network (`true`:
    /// its app slot is free for others) or back (`false`: it takes a slot
    /// again, waiting for one if the pool grew meanwhile).
    pub(crate) fn set_blocked(&self, blocked: bool) {
        let mut st = self.state.lock();
        if blocked {
            st.turns += 1;
            st.last_turn = Instant::now();
            st.waiting += 1;
            st.release();
            if st.resuming > 0 {
                self.slot_cv.notify_one();
            } else if !st.jobs.is_empty() {
                if st.driver {
                    // It may have held a job back for want of a slot.
                    drop(st);
                    self.job_ready.notify_one();
                } else if st.running == 0 && st.idle > 0 {
                    self.idle_cv.notify_one();
                }
            }
            return;
        }
        st.waiting = st.waiting.saturating_sub(1);
        if st.running < self.size.threads {
            st.running += 1;
        } else if !self.take_slot_late(&mut st) {
            drop(st);
            crate::log::error::write(
                crate::log::error::Level::Warning,
                "A request back from the network waited for an app slot while no \
                 thread of the app made progress; it runs beyond --threads (does the \
                 app hold a lock or connection across wsgi.input.read()?)",
            );
        }
    }

    /// Waits (GIL released) until an app slot is free and takes it: true.
    /// False when no slot was given back for `RESUME_WAIT`: it takes one
    /// beyond `--threads` then.
    fn take_slot_late(&self, st: &mut MutexGuard<'_, State>) -> bool {
        st.resuming += 1;
        let took = loop {
            let seen = st.released;
            let timed_out = self.slot_cv.wait_for(st, RESUME_WAIT).timed_out();
            if st.running < self.size.threads {
                break true;
            }
            if timed_out && st.released == seen {
                break false;
            }
        };
        st.resuming -= 1;
        st.running += 1;
        took
    }

    /// The next job for a thread that just finished one (`held`: it still
    /// holds that job's app slot) or just started, GIL released. `None`:
    /// the thread leaves the pool (closed, or idle above `--threads`).
    fn next_job(&self, held: bool) -> Option<Job> {
        let mut st = self.state.lock();
        if held {
            st.release();
            if st.resuming > 0 {
                self.slot_cv.notify_one();
            }
        }
        let mut idle_since = None;
        loop {
            if let Some(job) = st.take(self.queue_timeout, self.size.threads) {
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
                st.threads = st.threads.saturating_sub(1);
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
                if job.is_none() {
                    st.threads = st.threads.saturating_sub(1);
                } else if st.monitor_asleep {
                    st.monitor_asleep = false;
                    self.monitor_cv.notify_one();
                }
                return job;
            }
            let since: Instant = *idle_since.get_or_insert_with(Instant::now);
            st.idle += 1;
            if self.size.may_shrink(st.threads) {
                let left = SHRINK_AFTER.saturating_sub(since.elapsed());
                if left.is_zero() {
                    // Idle long enough, with more threads than --threads.
                    st.idle -= 1;
                    st.threads = st.threads.saturating_sub(1);
                    return None;
                }
                self.idle_cv.wait_for(&mut st, left);
            } else {
                self.idle_cv.wait(&mut st);
            }
            st.idle -= 1;
        }
    }

    /// Drives the runtime until a job is queued and a slot is free (or the
    /// pool closes); the job comes with its slot taken.
    async fn recv(&self) -> Option<Job> {
        loop {
            let notified = self.job_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state.lock();
                if let Some(job) = st.take(self.queue_timeout, self.size.threads) {
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
    /// or found at the front of the queue), and starts threads while
    /// requests are parked (`grow`).
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
            st = self.grow(st);
            let stuck = st.turns == last && !st.driver;
            last = st.turns;
            if !stuck {
                continue;
            }
            let takeable = !st.jobs.is_empty() && st.slot_free(self.size.threads);
            if st.idle > 0 && (self.runtime.is_some() || takeable) {
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

    /// Starts the threads `PoolSize::grow_by` asks for, calling the
    /// spawner (which takes the GIL) with the lock released.
    fn grow<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let Some(spawn) = self.spawner.get() else {
            return st;
        };
        if st.closed || st.spawn_after.is_some_and(|t| Instant::now() < t) {
            return st;
        }
        let wanted = self.size.grow_by(&st.census());
        if wanted == 0 {
            return st;
        }
        st.starting += wanted;
        drop(st);
        let started = (0..wanted).take_while(|_| spawn()).count();
        let mut st = self.state.lock();
        if started < wanted {
            st.starting = st.starting.saturating_sub(wanted - started);
            st.spawn_after = Some(Instant::now() + SPAWN_RETRY);
        }
        st
    }

    /// One Python thread's life: take jobs and hand each to `serve` until
    /// the pool closes, or the thread, idle, is one too many.
    pub(crate) fn run(self: &Arc<Self>, py: Python<'_>, mut serve: impl FnMut(Python<'_>, Job)) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        {
            let mut st = self.state.lock();
            st.threads += 1;
            st.starting = st.starting.saturating_sub(1);
        }
        let mut next = py.detach(|| self.next_job(false));
        while let Some(job) = next {
            serve(py, job);
            next = match self.after_job() {
                Some(job) => Some(job),
                None => py.detach(|| self.next_job(true)),
            };
        }
        CURRENT.with(|c| *c.borrow_mut() = None);
    }

    /// Counts the job just served and, when one is queued, takes it at once
    /// without releasing the GIL, keeping the app slot; not when the
    /// runtime is due a turn (`next_job` gives it one) or a thread back
    /// from the network waits for this slot.
    fn after_job(&self) -> Option<Job> {
        let mut st = self.state.lock();
        st.completed += 1;
        let due = self.runtime.is_some() && !st.driver && st.last_turn.elapsed() > TURN_EVERY;
        if due || st.resuming > 0 {
            return None;
        }
        st.pop_live(self.queue_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize, max_threads: usize) -> Arc<Pool> {
        Pool::new(None, None, PoolSize::new(threads, max_threads))
    }

    /// Polls `check` until it holds (bounded): the other thread got there.
    fn eventually(check: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn stuck_only_when_every_thread_is_in_the_app() {
        let pool = pool(1, 1);
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

    #[test]
    fn stuck_when_every_slot_is_held_whatever_the_extra_threads_do() {
        let pool = pool(2, 10);
        let mut mark = 0;
        {
            let mut st = pool.state.lock();
            st.threads = 6;
            st.starting = 0;
            st.running = 2;
            st.waiting = 2;
            st.idle = 1;
            st.driver = true;
        }
        assert!(
            !pool.making_progress(&mut mark),
            "parked, idle and driving threads serve nothing new"
        );
        pool.state.lock().running = 1;
        assert!(pool.making_progress(&mut mark), "a slot is free");
        pool.close();
    }

    #[test]
    fn back_from_the_network_waits_for_a_slot() {
        let pool = pool(1, 4);
        {
            // One thread in the app, one parked (the pool grew for it).
            let mut st = pool.state.lock();
            st.running = 1;
            st.waiting = 1;
        }
        let p = pool.clone();
        let parked = std::thread::spawn(move || p.set_blocked(false));
        assert!(
            eventually(|| pool.state.lock().resuming == 1),
            "the slot is taken: it waits"
        );
        assert_eq!(pool.state.lock().running, 1);
        pool.set_blocked(true); // the app's thread parks in turn
        assert!(parked.join().is_ok());
        let st = pool.state.lock();
        assert_eq!((st.running, st.waiting, st.resuming), (1, 1, 0));
        drop(st);
        pool.close();
    }

    #[test]
    fn back_from_the_network_goes_ahead_when_the_app_is_blocked() {
        let pool = pool(1, 4);
        {
            let mut st = pool.state.lock();
            st.running = 1;
            st.waiting = 1;
        }
        // Nobody gives the slot back: after RESUME_WAIT it runs anyway.
        pool.set_blocked(false);
        let st = pool.state.lock();
        assert_eq!((st.running, st.waiting, st.resuming), (2, 0, 0));
        drop(st);
        pool.close();
    }

    #[test]
    fn no_job_without_a_free_slot() {
        let pool = pool(2, 4);
        let mut st = pool.state.lock();
        st.running = 1;
        assert!(st.slot_free(2));
        st.resuming = 1;
        assert!(!st.slot_free(2), "the returning thread comes first");
        st.resuming = 0;
        st.running = 2;
        assert!(!st.slot_free(2));
        drop(st);
        pool.close();
    }
}
