//! A pool thread waiting on the network: it gives its app slot back, then takes one again.
//!
//! `wait.rs` calls `set_blocked(true)` before a request's thread blocks in
//! `wsgi.input` or on a slow client, and `set_blocked(false)` once the
//! network answered. Parked, the thread holds no app slot, so a queued job
//! (or a thread the pool adds, `growth.rs`) may run in its place; back, it
//! waits for a free slot, first in line, so no more than `--threads`
//! threads run app code at once. What the freed slot wakes is decided
//! here, and so is who drives the runtime during the wait (`wait_io`): the
//! waiting thread drives it while no thread waits for jobs in `recv`, and
//! hands it to such a thread as soon as there is one, then sleeps until
//! its own request's waker calls. Under load with uploads parked, the
//! driver then takes each new request itself, with no hand-off to another
//! thread, as it does with none parked.

use super::state::State;
use super::Pool;
use crate::exec::wait::{park, Parked};
use parking_lot::MutexGuard;
use std::future::Future;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// A thread back from the network waits for a free app slot, but when no
/// slot at all is given back for this long it goes ahead anyway: the app's
/// threads may be waiting for something its own request holds (a lock or a
/// database connection taken before `read()`), and waiting longer would be
/// a deadlock.
const RESUME_WAIT: Duration = Duration::from_secs(1);

impl Pool {
    /// Marks the calling pool thread as waiting on the network (`true`:
    /// its app slot is free for others) or back (`false`: it takes a slot
    /// again, waiting for one if the pool grew meanwhile).
    pub(crate) fn set_blocked(&self, blocked: bool) {
        super::monitor::set_slotless(false);
        let mut st = self.state.lock();
        if blocked {
            st.turns += 1;
            st.last_turn = Instant::now();
            if st.running <= self.size.threads {
                st.slot_waits += 1;
            }
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
        let took = if st.running < self.size.threads {
            st.running += 1;
            true
        } else {
            self.take_slot_late(&mut st)
        };
        // The monitor sleeps while no thread runs app code; one is back now,
        // and it may block in Python while a thread outside the pool waits
        // for the network, which only the monitor then drives.
        if std::mem::take(&mut st.monitor_asleep) {
            self.monitor_cv.notify_one();
        }
        if !took {
            drop(st);
            super::monitor::set_slotless(true);
            crate::log::error::write(
                crate::log::error::Level::Warning,
                "A request back from the network waited for an app slot while no \
                 thread of the app made progress; it runs beyond --threads (the app's \
                 threads are stuck, or wait for something this request holds: a lock \
                 or connection taken before wsgi.input.read())",
            );
        }
    }

    /// Waits, GIL released, until `f` is ready (`None`: `deadline` passed
    /// first). While no thread waits for jobs in `recv`, this thread drives
    /// the runtime as it waits; when one starts to (`core_wanted`), this
    /// thread lets the runtime go to it and sleeps until `f`'s waker calls,
    /// taking the runtime back when it wakes to find that thread gone from
    /// `recv`. Nothing wakes it for that alone: the driver left with a job,
    /// so it comes back, or the monitor (awake while a job runs) wakes an
    /// idle thread or drives a tick itself. Without a runtime (dedicated
    /// I/O threads) it only sleeps.
    pub(crate) fn wait_io<T>(
        &self,
        deadline: Option<Instant>,
        f: &mut impl FnMut(&Waker) -> Poll<T>,
    ) -> Option<T> {
        let Some(rt) = &self.runtime else {
            return match park(deadline, f, || false) {
                Parked::Ready(v) => Some(v),
                _ => None,
            };
        };
        loop {
            // Enabled before the driver is looked at: a driver that comes
            // after the look is heard through it.
            let wanted = self.core_wanted.notified();
            tokio::pin!(wanted);
            wanted.as_mut().enable();
            let me = std::thread::current();
            let coreless = {
                let mut st = self.state.lock();
                let coreless = st.driver && !st.closed;
                if coreless {
                    st.coreless.push(me.clone());
                }
                coreless
            };
            if coreless {
                let parked = park(deadline, f, || {
                    let st = self.state.lock();
                    !st.driver || st.closed
                });
                let mut st = self.state.lock();
                if let Some(i) = st.coreless.iter().rposition(|t| t.id() == me.id()) {
                    st.coreless.swap_remove(i);
                }
                drop(st);
                match parked {
                    Parked::Ready(v) => return Some(v),
                    Parked::TimedOut => return None,
                    Parked::Left => continue,
                }
            }
            // `Some(Some(v))`: ready; `Some(None)`: timed out; `None`: the
            // runtime is wanted by a thread in `recv`.
            let driven = rt.block_on(async {
                let fut = std::future::poll_fn(|cx| {
                    if let Poll::Ready(v) = f(cx.waker()) {
                        return Poll::Ready(Some(Some(v)));
                    }
                    if wanted.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                });
                match deadline {
                    Some(d) => tokio::time::timeout_at(d.into(), fut)
                        .await
                        .unwrap_or(Some(None)),
                    None => fut.await,
                }
            });
            if let Some(out) = driven {
                return out;
            }
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{eventually, pool};

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
    fn back_from_the_network_wakes_a_sleeping_monitor() {
        let pool = pool(1, 4);
        {
            // The one thread parked; the monitor went to sleep (nothing ran).
            let mut st = pool.state.lock();
            st.waiting = 1;
            st.monitor_asleep = true;
        }
        pool.set_blocked(false);
        let st = pool.state.lock();
        assert_eq!((st.running, st.waiting), (1, 0));
        assert!(!st.monitor_asleep, "the monitor is woken to drive the I/O");
        drop(st);
        pool.close();
    }
}
