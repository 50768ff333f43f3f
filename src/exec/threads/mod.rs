//! Thread mode (`-k thread`): a pool of Python threads that also drives the I/O.
//!
//! By default (`--runtime-threads 0`) there is no I/O thread: the pool's
//! tokio runtime is a current-thread one, driven by whichever Python thread
//! is free. That thread (the *driver*) polls sockets and hyper with the GIL
//! released until a request head is parsed, then runs the app itself and
//! comes back, so under load one thread goes request to request with no
//! hand-off and no wake-up, and idle threads sleep instead of fighting over
//! the GIL. A thread waiting in `wsgi.input` or on a slow client drives the
//! runtime while it waits, until a thread comes to wait for jobs and takes
//! the driving over (`park.rs`). When the running thread is stuck in
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
//! more threads, up to `--max-threads`; the pool shrinks back, never below
//! `--threads`, by as many threads as stayed idle through `SHRINK_AFTER`
//! (`end_window`). Python starts every thread
//! (`python/siesta/_run.py`, and the spawner it hands `Server.grow_with`);
//! each runs `Pool::run` with the handler that serves one job, so the pool
//! never knows what a job is for.
//!
//! A reply the app hands over wakes its connection inside the runtime when
//! no thread drives it (`wake_from_app`), so that wake is no system call.
//!
//! This file takes jobs (`run`, `next_job`, the driver's `recv`);
//! `state.rs` holds the counts behind the one lock, `park.rs` the slot a
//! thread gives back while it waits on the network, `monitor.rs` the
//! watcher (I/O, shedding, growth, heartbeat), `growth.rs` the pure rules.

pub(crate) mod growth;
mod monitor;
mod park;
mod state;

pub(crate) use growth::PoolSize;
pub(crate) use monitor::{app_called, Spawner};

use crate::exchange::Job;
use growth::SHRINK_AFTER;
use parking_lot::{Condvar, Mutex, MutexGuard};
use pyo3::prelude::*;
use state::State;
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

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

/// Runs `f`, which wakes a task of the I/O runtime (the app side handing a
/// connection its reply; `Waiter::hand_over`), where that wake costs least.
/// On a pool thread that drives its runtime between jobs, nobody may be
/// driving while it runs the app: a wake from outside the runtime then
/// writes its eventfd for nobody, a system call per request under load.
/// Run inside the runtime (`Pool::in_runtime`), the wake only queues the
/// task for whichever thread drives next. Anywhere else `f` just runs.
pub(crate) fn wake_from_app<R>(f: impl FnOnce() -> R) -> R {
    let rt = CURRENT
        .try_with(|c| c.borrow().as_ref().and_then(|p| p.runtime.clone()))
        .ok()
        .flatten();
    match rt {
        Some(rt) => Pool::in_runtime(&rt, f),
        None => f(),
    }
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
    /// Tells a thread that drives the runtime while it waits on the network
    /// that a thread in `recv` wants the runtime (`park.rs`).
    core_wanted: Notify,
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
            state: Mutex::new(State::new(size.threads)),
            idle_cv: Condvar::new(),
            slot_cv: Condvar::new(),
            monitor_cv: Condvar::new(),
            job_ready: Notify::new(),
            core_wanted: Notify::new(),
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
        let coreless = {
            let mut st = self.state.lock();
            st.closed = true;
            std::mem::take(&mut st.coreless)
        };
        for t in coreless {
            t.unpark();
        }
        self.job_ready.notify_waiters();
        self.idle_cv.notify_all();
        self.monitor_cv.notify_all();
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
        // Woken from idle: if it then works, the pool needed it.
        let mut woke = false;
        loop {
            let mut now = None;
            if let Some(job) = st.take(self.queue_timeout, self.size.threads, &mut now) {
                if woke {
                    st.idle_needed();
                }
                if let (false, Some(rt)) = (st.driver, &self.runtime) {
                    // Nobody drives while this thread runs the app: give
                    // the runtime a turn first, so replies of finished
                    // requests go out and connections keep moving.
                    st.turns += 1;
                    st.turning += 1;
                    st.last_turn = now.unwrap_or_else(Instant::now);
                    drop(st);
                    let _under_way = TurnUnderWay(self);
                    rt.block_on(tokio::task::yield_now());
                }
                return Some(job);
            }
            if st.closed {
                st.threads = st.threads.saturating_sub(1);
                return None;
            }
            if let (false, Some(rt)) = (st.driver, &self.runtime) {
                if woke {
                    st.idle_needed();
                }
                st.driver = true;
                st.turns += 1;
                st.last_turn = Instant::now();
                drop(st);
                // A thread waiting on the network may hold the runtime:
                // it hands it over, and the driver keeps it for the next jobs.
                self.core_wanted.notify_waiters();
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
            if self.size.may_shrink(st.threads) {
                self.end_window(&mut st);
                if st.retire > 0 {
                    // Not needed: one too many.
                    st.retire -= 1;
                    st.threads = st.threads.saturating_sub(1);
                    return None;
                }
                let until = st.window + SHRINK_AFTER;
                st.idle += 1;
                self.idle_cv.wait_until(&mut st, until);
            } else {
                st.idle += 1;
                self.idle_cv.wait(&mut st);
            }
            st.idle -= 1;
            woke = true;
        }
    }

    /// With more threads than `--threads`, called by a thread about to go
    /// idle: once `SHRINK_AFTER` has passed since the window began, the
    /// threads that stayed idle all through it were not needed, and that
    /// many (never below `--threads`) are to leave (`retire`); the first
    /// is the calling thread, the others are woken to go.
    fn end_window(&self, st: &mut MutexGuard<'_, State>) {
        let now = Instant::now();
        if now < st.window + SHRINK_AFTER {
            return;
        }
        let idle = st.idle + 1; // the calling thread included
        let surplus = self.size.surplus(st.threads, st.idle_low.min(idle));
        st.retire = surplus;
        st.window = now;
        st.idle_low = idle - surplus;
        if surplus > 1 {
            self.idle_cv.notify_all();
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
                if let Some(job) = st.take(self.queue_timeout, self.size.threads, &mut None) {
                    return Some(job);
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// One Python thread's life: take jobs and hand each to `serve` until
    /// the pool closes, or the thread, idle, is one too many.
    pub(crate) fn run(self: &Arc<Self>, py: Python<'_>, mut serve: impl FnMut(Python<'_>, Job)) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        {
            let mut st = self.state.lock();
            st.threads += 1;
            st.starting = st.starting.saturating_sub(1);
            crate::metrics::pool_threads(st.threads);
        }
        let mut next = py.detach(|| self.next_job(false));
        while let Some(job) = next {
            serve(py, job);
            next = match self.after_job() {
                Some(job) => Some(job),
                None => py.detach(|| self.next_job(true)),
            };
        }
        // This thread left the count as it stopped taking jobs.
        crate::metrics::pool_threads(self.state.lock().threads);
        CURRENT.with(|c| *c.borrow_mut() = None);
    }

    /// Counts the job just served and, when one is queued, takes it at once
    /// without releasing the GIL, keeping the app slot; not when the
    /// runtime is due a turn (`next_job` gives it one) or a thread back
    /// from the network waits for this slot.
    fn after_job(&self) -> Option<Job> {
        monitor::set_slotless(false); // the next job takes a slot
        let mut st = self.state.lock();
        st.completed += 1;
        let mut now = None;
        let due = self.runtime.is_some()
            && !st.driver
            && now
                .insert(Instant::now())
                .saturating_duration_since(st.last_turn)
                > TURN_EVERY;
        if due || st.resuming > 0 {
            return None;
        }
        st.pop_live(self.queue_timeout, &mut now)
    }
}

impl Pool {
    /// `f` inside the pool's current-thread runtime. When no thread holds
    /// the runtime, this one takes it for just the one poll of `f` (the
    /// `block_on` polls its future before any task): a task `f` wakes goes
    /// on the runtime's own queue, with no eventfd write, and runs when a
    /// thread next drives (this one, at its turn or in `recv`; or the one
    /// the monitor wakes when no thread turns). When a thread holds it
    /// (a driver in `recv`, a thread waiting on the network), `block_on`
    /// polls `f` once without it, and the wake reaches that driver as it
    /// would from anywhere else. Never waits. The caller holds the GIL
    /// and may hold its request's locks, and a thread that wants the
    /// runtime meanwhile waits for it: `f` must stay one hand-over (a
    /// channel send), never a wait or a call into Python. In a runtime
    /// context already (where a `block_on` would panic), `f` just runs.
    fn in_runtime<R>(rt: &Runtime, f: impl FnOnce() -> R) -> R {
        if tokio::runtime::Handle::try_current().is_ok() {
            return f();
        }
        rt.block_on(async move { f() })
    }
}

/// A turn between jobs counts as under way (`State::turning`) until it
/// ends, by a panic too: a count left behind would hide a stuck pool from
/// the monitor for good.
struct TurnUnderWay<'a>(&'a Pool);

impl Drop for TurnUnderWay<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.turning = st.turning.saturating_sub(1);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A pool without runtime or spawner, for the tests of this module's files.
    pub(crate) fn pool(threads: usize, max_threads: usize) -> Arc<Pool> {
        Pool::new(None, None, PoolSize::new(threads, max_threads))
    }

    /// Polls `check` until it holds (bounded): the other thread got there.
    pub(crate) fn eventually(check: impl Fn() -> bool) -> bool {
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
    fn a_turn_that_panics_is_no_longer_under_way() {
        let pool = pool(1, 0);
        pool.state.lock().turning = 1;
        let turned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _under_way = TurnUnderWay(&pool);
            panic!("a task's panic escaping the turn");
        }));
        assert!(turned.is_err());
        assert_eq!(pool.state.lock().turning, 0);
        pool.close();
    }

    fn runtime() -> Runtime {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("no runtime: {e}"),
        }
    }

    #[test]
    fn a_hand_over_with_the_runtime_free_queues_the_task_for_the_next_driver() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let rt = runtime();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        rt.spawn(async move {
            let _ = rx.await;
            d.store(true, SeqCst);
        });
        rt.block_on(tokio::task::yield_now()); // the task now waits on `rx`
        assert!(Pool::in_runtime(&rt, || tx.send(()).is_ok()));
        assert!(!done.load(SeqCst), "queued, not run by the hand-over");
        assert_eq!(
            rt.metrics().global_queue_depth(),
            0,
            "on the runtime's own queue: no wake from outside"
        );
        rt.block_on(tokio::task::yield_now());
        assert!(done.load(SeqCst), "the next driver runs it");
    }

    #[test]
    fn a_hand_over_with_the_runtime_held_wakes_the_thread_holding_it() {
        let rt = Arc::new(runtime());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (held, holding) = std::sync::mpsc::channel();
        let (ended, end) = std::sync::mpsc::channel();
        let r = rt.clone();
        std::thread::spawn(move || {
            let got = r.block_on(async move {
                let _ = held.send(());
                rx.await.is_ok()
            });
            let _ = ended.send(got);
        });
        assert!(holding.recv_timeout(Duration::from_secs(10)).is_ok());
        assert!(Pool::in_runtime(&rt, || tx.send(()).is_ok()));
        assert_eq!(
            end.recv_timeout(Duration::from_secs(10)),
            Ok(true),
            "the thread in the runtime was woken"
        );
    }

    #[test]
    fn a_hand_over_inside_the_runtime_just_runs() {
        let rt = runtime();
        assert_eq!(rt.block_on(async { Pool::in_runtime(&rt, || 7) }), 7);
    }

    #[test]
    fn a_new_pool_expects_its_threads_from_python() {
        let pool = pool(3, 0);
        let st = pool.state.lock();
        assert_eq!((st.threads, st.starting), (0, 3));
        drop(st);
        pool.close();
    }
}
