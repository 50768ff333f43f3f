//! Gevent mode's hub and I/O threads run under `SCHED_BATCH`, so that waking one does not preempt the other.
//!
//! In gevent mode a request crosses two threads: the I/O thread parses it
//! and queues it for the hub (an eventfd write), the hub runs the app and
//! hands the response back (tokio's eventfd write). Under the default
//! policy a woken thread preempts the one that woke it when both share a
//! CPU, so the I/O thread was switched out at the first request of every
//! batch, and the hub took one or two requests per wake-up instead of all
//! that were ready: about one context switch per two hello requests.
//! `SCHED_BATCH` is the same fair policy with the same nice value, except
//! that a woken thread waits for the running one to block or use up its
//! slice instead of preempting it (sched(7): "without interactivity
//! causing extra preemptions between the workload's tasks"). On a machine
//! with an idle CPU the woken thread still runs at once, there.
//!
//! A woken `SCHED_BATCH` thread does not preempt other processes either,
//! so on a CPU busy with other work it waits up to the running task's
//! slice (milliseconds) where it used to run at once; that latency under
//! contention has not been measured. Threads and processes started from
//! these threads inherit the policy (the app's `subprocess` children
//! included), as they would inherit a nice value. A thread the deployer
//! put under another policy keeps it. Thread mode keeps the default
//! policy: its pool threads take turns at the runtime and gain nothing
//! measurable from it.

/// Puts the calling thread under `SCHED_BATCH` if it runs under the
/// default policy; a policy the deployer chose (`chrt`, systemd's
/// `CPUSchedulingPolicy=`: idle, real-time, or batch already) is left
/// alone. Does nothing where the call fails (it is an optimisation only).
pub(crate) fn batch_this_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pid 0 is the calling thread; no pointers.
        if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_OTHER {
            return;
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a live sched_param; pid 0 is the calling thread.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        }
    }
}
