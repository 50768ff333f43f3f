//! The pool's watcher: keeps I/O moving, sheds old jobs, grows the pool, and tells the heartbeat.
//!
//! One Rust thread per pool (`siesta-monitor`), never holding the GIL but
//! for a spawn. While threads are busy it looks every `TICK`: no runtime
//! turn begun since the last look, and none under way, means every thread
//! may be stuck in the app, so it wakes an idle thread or drives the
//! runtime itself; jobs past `--queue-timeout` get 503; while requests
//! are parked it asks Python for the threads `growth.rs` wants.
//! `making_progress` answers the heartbeat (`worker/heartbeat.rs`). Taking
//! jobs is `mod.rs`'s, slots `park.rs`'s.

use super::state::State;
use super::Pool;
use crate::error::RequestError;
use parking_lot::MutexGuard;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the pool may go without taking a job or driving I/O before an
/// idle thread is woken (the running ones may be blocked in the app).
pub(super) const TICK: Duration = Duration::from_millis(1);

/// After Python failed to start a thread, the pool tries again only after
/// this long.
const SPAWN_RETRY: Duration = Duration::from_secs(1);

/// The app's calls into Siesta from inside a request (a response chunk
/// queued, a body read): an app making them is not stuck, though every
/// slot is held (a stream of server-sent events, a download it generates).
static APP_CALLS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This pool thread went ahead beyond `--threads`, holding no app slot
    /// (`Pool::set_blocked`): its calls do not say the slots' holders move.
    static SLOTLESS: Cell<bool> = const { Cell::new(false) };
}

/// Counts one call of the app's into Siesta (see `APP_CALLS`), made by a
/// thread that holds an app slot (or is no pool thread).
pub(crate) fn app_called() {
    if SLOTLESS.with(Cell::get) {
        // Rare: this thread went ahead beyond `--threads`. Once the others
        // are back within it, it holds a slot like any of them.
        let Some(pool) = super::current() else { return };
        if pool.state.lock().running > pool.size.threads {
            return;
        }
        set_slotless(false);
    }
    APP_CALLS.fetch_add(1, Ordering::Relaxed);
}

/// Whether the calling pool thread runs without an app slot.
pub(super) fn set_slotless(slotless: bool) {
    SLOTLESS.with(|s| s.set(slotless));
}

/// Starts one more pool thread (Python's `threading.Thread` running
/// `Pool::run`); false when it could not. Called by the monitor, which holds
/// no lock while it runs.
pub(crate) type Spawner = Box<dyn Fn() -> bool + Send + Sync>;

impl Pool {
    /// Lets the pool grow past `--threads`: `spawn` starts one more thread
    /// that enters `run`. Only the first spawner counts.
    pub(crate) fn set_spawner(&self, spawn: Spawner) {
        let _ = self.spawner.set(spawn);
    }

    /// Whether the pool is making progress (for the heartbeat): an app slot
    /// is free, or a job finished, a slot was given back to wait on the
    /// network or the app called into Siesta (`app_called`) since `mark`
    /// (which is updated). Stuck means every slot is held by a thread
    /// inside app code and none came back; threads parked
    /// on the network, idle or driving beside them, or running beyond
    /// `--threads`, serve nothing new.
    pub(crate) fn making_progress(&self, mark: &mut u64) -> bool {
        let st = self.state.lock();
        let now = st.slot_waits + st.completed + APP_CALLS.load(Ordering::Relaxed);
        let moved = now != *mark;
        *mark = now;
        moved || st.running < self.size.threads
    }

    /// Keeps I/O moving when no pool thread drives it: after a tick with no
    /// turn while threads are busy, it wakes an idle thread to take over, or,
    /// with every thread inside the app, drives the runtime itself a tick at
    /// a time (it never holds the GIL) until a thread comes back. It also
    /// answers 503 to jobs past `--queue-timeout` (set aside by `pop_live`
    /// or found at the front of the queue), and starts threads while
    /// requests are parked (`grow`).
    pub(super) fn monitor(&self) {
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
            let stuck = st.io_still(last);
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
        st.grew();
        drop(st);
        let started = (0..wanted).take_while(|_| spawn()).count();
        let mut st = self.state.lock();
        if started < wanted {
            st.starting = st.starting.saturating_sub(wanted - started);
            st.spawn_after = Some(Instant::now() + SPAWN_RETRY);
        }
        st
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::pool;

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
    fn no_spawn_without_queued_jobs() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let pool = pool(1, 3);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        pool.set_spawner(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            true
        }));
        let st = pool.state.lock();
        let mut st = pool.grow(st);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "nothing parked, nothing queued"
        );
        // One thread, parked; its slot is free but no job is queued.
        st.threads = 1;
        st.starting = 0;
        st.waiting = 1;
        let st = pool.grow(st);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing queued");
        assert_eq!(st.starting, 0);
        drop(st);
        pool.close();
    }
}
