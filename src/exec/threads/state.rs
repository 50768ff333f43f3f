//! The thread pool's bookkeeping: every count the pool decides on, behind its one lock.
//!
//! `State` is plain data with the few rules that only read and write it:
//! which queued job is still worth running (`--queue-timeout`), whether an
//! app slot is free, taking and giving back a slot, how many idle threads
//! the pool could spare, and the `Census` the growth rules (`growth.rs`)
//! look at. It never waits, wakes or starts a
//! thread: that is `mod.rs`, `park.rs` and `monitor.rs`.

use super::growth::Census;
use crate::exchange::Job;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub(super) struct State {
    pub jobs: VecDeque<Job>,
    /// Threads asleep on `idle_cv`.
    pub idle: usize,
    /// Threads holding an app slot: running Python for a job (not idle,
    /// not waiting in `park`). At most `--threads`, but for a thread back
    /// from the network after `RESUME_WAIT` (`park.rs`).
    pub running: usize,
    /// A thread is in `recv`, driving I/O and about to take the next job.
    pub driver: bool,
    /// Threads waiting on the network without driving the runtime, because
    /// a driver in `recv` does (`park.rs`); woken when the pool closes.
    pub coreless: Vec<std::thread::Thread>,
    /// Bumped whenever a thread drives the runtime (as driver, for a turn
    /// between queued jobs, or while waiting in `park`): the monitor's sign
    /// that I/O is moving.
    pub turns: u64,
    /// Threads giving the runtime a turn between queued jobs right now. A
    /// turn with many connections ready can outlast the monitor's `TICK`:
    /// that is I/O moving, not a pool stuck in the app.
    pub turning: usize,
    /// When the runtime last had a turn, to space the turns a thread gives
    /// it between queued jobs (`TURN_EVERY`).
    pub last_turn: Instant,
    /// The monitor is asleep on `monitor_cv`.
    pub monitor_asleep: bool,
    /// Jobs past `--queue-timeout`, to be refused once the lock is released.
    pub expired: Vec<Job>,
    /// Jobs served to the end, for the heartbeat.
    pub completed: u64,
    /// Bumped when a thread gives one of the `--threads` app slots back to
    /// wait on the network: the app moved (the heartbeat's other sign). A
    /// thread running beyond `--threads` (back late, `park.rs`) does not
    /// count: its request moves, but every slot may be held by a stuck app.
    pub slot_waits: u64,
    /// Threads waiting on the network for their request (in `wait.rs`):
    /// not stuck in the app, whatever the others do, and holding no slot.
    pub waiting: usize,
    /// Threads back from the network, waiting for an app slot (`slot_cv`);
    /// they get the next free one before any queued job.
    pub resuming: usize,
    /// Bumped whenever a thread gives its app slot back, so a thread
    /// waiting for one can tell a busy app from a blocked one.
    pub released: u64,
    /// Threads in the pool loop (`Pool::run`).
    pub threads: usize,
    /// Threads asked for and not in the loop yet: Python's first
    /// `--threads`, then the monitor's spawns.
    pub starting: usize,
    /// Fewest idle threads since `window` began, looked at whenever an
    /// idle thread was needed (woken, it took a job or the driving): that
    /// many were not needed all through the window.
    pub idle_low: usize,
    /// When the current shrink window began (`SHRINK_AFTER` long).
    pub window: Instant,
    /// Idle threads still to leave, decided when the last window ended.
    pub retire: usize,
    /// No spawn before then (Python failed to start a thread).
    pub spawn_after: Option<Instant>,
    pub closed: bool,
}

impl State {
    /// An empty pool expecting its first `threads` threads from Python.
    pub(super) fn new(threads: usize) -> State {
        State {
            jobs: VecDeque::with_capacity(256),
            idle: 0,
            running: 0,
            driver: false,
            coreless: Vec::new(),
            turns: 0,
            slot_waits: 0,
            turning: 0,
            last_turn: Instant::now(),
            monitor_asleep: false,
            expired: Vec::new(),
            completed: 0,
            waiting: 0,
            resuming: 0,
            released: 0,
            threads: 0,
            starting: threads,
            idle_low: 0,
            window: Instant::now(),
            retire: 0,
            spawn_after: None,
            closed: false,
        }
    }

    /// The oldest job still worth running; older ones move to `expired`.
    /// `now`: the time, if the caller read it already (one clock read per
    /// job, not two); filled when this reads it.
    pub(super) fn pop_live(
        &mut self,
        queue_timeout: Option<Duration>,
        now: &mut Option<Instant>,
    ) -> Option<Job> {
        loop {
            let job = self.jobs.pop_front()?;
            match queue_timeout {
                Some(t)
                    if now
                        .get_or_insert_with(Instant::now)
                        .saturating_duration_since(job.queued)
                        > t =>
                {
                    self.expired.push(job)
                }
                _ => return Some(job),
            }
        }
    }

    /// A slot is free for a queued job (threads back from the network
    /// take free slots first).
    pub(super) fn slot_free(&self, slots: usize) -> bool {
        self.running + self.resuming < slots
    }

    /// The oldest live job with an app slot, when one is free.
    pub(super) fn take(
        &mut self,
        queue_timeout: Option<Duration>,
        slots: usize,
        now: &mut Option<Instant>,
    ) -> Option<Job> {
        if !self.slot_free(slots) {
            return None;
        }
        let job = self.pop_live(queue_timeout, now)?;
        self.running += 1;
        Some(job)
    }

    /// No thread drives I/O now, and none began a turn since the monitor
    /// saw `turns` at `last`: the threads running may all be stuck in the
    /// app.
    pub(super) fn io_still(&self, last: u64) -> bool {
        self.turns == last && !self.driver && self.turning == 0
    }

    /// The calling thread gives its app slot back.
    pub(super) fn release(&mut self) {
        self.running = self.running.saturating_sub(1);
        self.released += 1;
    }

    /// A thread woken from idle took a job or the driving: the threads
    /// still idle are all the window can spare.
    pub(super) fn idle_needed(&mut self) {
        self.idle_low = self.idle_low.min(self.idle);
    }

    /// The pool grew (no thread was idle): a new shrink window begins,
    /// with nothing to spare yet.
    pub(super) fn grew(&mut self) {
        self.window = Instant::now();
        self.idle_low = 0;
        self.retire = 0;
    }

    pub(super) fn census(&self) -> Census {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_job_without_a_free_slot() {
        let mut st = State::new(2);
        st.running = 1;
        assert!(st.slot_free(2));
        st.resuming = 1;
        assert!(!st.slot_free(2), "the returning thread comes first");
        st.resuming = 0;
        st.running = 2;
        assert!(!st.slot_free(2));
        assert!(st.take(None, 2, &mut None).is_none());
    }

    #[test]
    fn a_long_turn_is_io_moving() {
        let mut st = State::new(1);
        st.running = 1;
        let last = st.turns;
        assert!(st.io_still(last), "no turn, no driver");
        st.turns += 1;
        st.turning = 1; // a turn began and outlasts the tick
        let last = st.turns;
        assert!(!st.io_still(last), "still turning");
        st.turning = 0;
        assert!(st.io_still(last), "the turn ended and no other began");
        st.driver = true;
        assert!(!st.io_still(last), "a thread drives");
    }

    #[test]
    fn giving_a_slot_back_is_counted() {
        let mut st = State::new(2);
        st.running = 2;
        st.release();
        assert_eq!((st.running, st.released), (1, 1));
        st.release();
        st.release(); // never below zero
        assert_eq!((st.running, st.released), (0, 3));
    }

    #[test]
    fn idle_threads_spared_through_a_window() {
        let mut st = State::new(2);
        st.idle_low = 5;
        st.idle = 4;
        st.idle_needed(); // one of five was woken for work
        assert_eq!(st.idle_low, 4);
        st.idle = 6;
        st.idle_needed();
        assert_eq!(st.idle_low, 4, "the fewest counts");
        st.retire = 2;
        st.grew();
        assert_eq!((st.idle_low, st.retire), (0, 0), "growing spares none");
    }

    #[test]
    fn census_counts_the_threads_on_their_way() {
        let st = State::new(3);
        let c = st.census();
        assert_eq!((c.threads, c.starting, c.parked, c.queued), (0, 3, 0, 0));
    }
}
