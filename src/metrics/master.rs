//! The master's part of the shared region: slots for workers, exits by reason, readiness.
//!
//! The master maps the region (`init`) before its first fork, gives every
//! worker it forks a free slot (`reserve`, then `spawned`), folds a dead
//! worker's counters into the departed totals and frees its slot
//! (`exited`), and publishes its own phase for `/readyz` (`phase`). It
//! runs on the master's one thread and only stores numbers: no thread,
//! no runtime, no allocation worth the name. The supervisor decides; this
//! module only writes down what it decided.

use super::region::{master_phase, now_ns, Phase, Region, Slot, EXIT_REASONS};
use super::{NEXT_SLOT, REGION};
use std::sync::atomic::Ordering;

/// Maps the region for about `workers` workers (room for TTIN and reloads).
pub(crate) fn init(workers: usize) -> std::io::Result<()> {
    if REGION.get().is_some() {
        return Ok(());
    }
    let slots = (workers.saturating_mul(4) + 8).clamp(32, 1024);
    let r = Region::map(slots)?;
    let h = r.header();
    // SAFETY: getpid(2) takes no arguments.
    h.master_pid
        .store(unsafe { libc::getpid() }, Ordering::Relaxed);
    h.started_ns.store(now_ns(), Ordering::Relaxed);
    h.phase.store(master_phase::RUNNING, Ordering::Relaxed);
    let _ = REGION.set(r);
    Ok(())
}

/// Picks a free slot for the worker about to be forked (the child reads it).
pub(crate) fn reserve() -> Option<usize> {
    let r = super::region()?;
    for (i, s) in r.all_slots() {
        if s.phase
            .compare_exchange(
                Phase::Free as u32,
                Phase::Reserved as u32,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            NEXT_SLOT.store(i, Ordering::Relaxed);
            return Some(i);
        }
    }
    crate::log::error::write(
        crate::log::error::Level::Warning,
        "Metrics: no free slot for a new worker; it is not counted",
    );
    None
}

/// The fork of `slot` returned `pid` (`None`: it failed).
pub(crate) fn spawned(slot: Option<usize>, pid: Option<i32>, age: u64) {
    NEXT_SLOT.store(usize::MAX, Ordering::Relaxed);
    let Some(r) = super::region() else { return };
    let Some(s) = slot.and_then(|i| r.slot(i)) else {
        return;
    };
    match pid {
        Some(pid) => {
            s.pid.store(pid, Ordering::Relaxed);
            s.age.store(age, Ordering::Relaxed);
            s.started_ns.store(now_ns(), Ordering::Relaxed);
            // The worker may already have marked itself ready.
            let _ = s.phase.compare_exchange(
                Phase::Reserved as u32,
                Phase::Booting as u32,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            r.header().worker_starts.fetch_add(1, Ordering::Relaxed);
        }
        None => s.phase.store(Phase::Free as u32, Ordering::Relaxed),
    }
}

/// The master decided to end worker `pid`.
pub(crate) fn retiring(pid: i32) {
    if let Some(s) = find(pid) {
        s.phase.store(Phase::Draining as u32, Ordering::Relaxed);
    }
}

fn find(pid: i32) -> Option<&'static Slot> {
    let r = super::region()?;
    r.all_slots()
        .map(|(_, s)| s)
        .find(|s| s.pid.load(Ordering::Relaxed) == pid && s.phase.load(Ordering::Relaxed) != 0)
}

/// Worker `pid` exited: `retired` is the master's reason if it ended it,
/// `code` its exit code (negative: killed by that signal).
pub(crate) fn exited(pid: i32, retired: Option<&'static str>, code: i32) {
    let Some(r) = super::region() else { return };
    let Some(s) = find(pid) else { return };
    let own = s.exit_reason.load(Ordering::Relaxed) as usize;
    let reason = match (retired, own) {
        (Some(why), _) => why,
        (None, n) if n > 0 => EXIT_REASONS.get(n - 1).copied().unwrap_or("crash"),
        (None, _) if code == 3 || code == 4 => "boot_error",
        (None, _) if code == 0 => "stop",
        (None, _) => "crash",
    };
    if let Some(i) = EXIT_REASONS.iter().position(|x| *x == reason) {
        r.header().exits[i].fetch_add(1, Ordering::Relaxed);
        // What it had in flight got no complete response: killed with it
        // (a timeout, a crash) or cut at the end of a stop's time.
        // Those cut short then finished before it exited count too.
        let cut = s.counters.0[super::region::at::CUT].load(Ordering::Relaxed);
        let lost = (s.in_flight().max(0) as u64).saturating_add(cut);
        r.header().lost[i].fetch_add(lost, Ordering::Relaxed);
    }
    r.fold(s);
}

/// A HUP ended: `outcome` is one of `RELOAD_OUTCOMES`.
pub(crate) fn reloaded(outcome: &str) {
    let Some(r) = super::region() else { return };
    if let Some(i) = super::region::RELOAD_OUTCOMES
        .iter()
        .position(|x| *x == outcome)
    {
        r.header().reloads[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The master's phase, every tick: stopping, reloading, or running.
pub(crate) fn phase(stopping: bool, reloading: bool, target: usize) {
    let Some(r) = super::region() else { return };
    let p = if stopping {
        master_phase::STOPPING
    } else if reloading {
        master_phase::RELOADING
    } else {
        master_phase::RUNNING
    };
    let h = r.header();
    h.phase.store(p, Ordering::Relaxed);
    h.target.store(target as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_for_workers_and_exits_by_reason() -> std::io::Result<()> {
        init(2)?;
        let a = reserve();
        assert!(a.is_some());
        spawned(a, Some(4242), 1);
        let Some(s) = find(4242) else {
            panic!("slot found by pid")
        };
        assert_eq!(
            Phase::from_u32(s.phase.load(Ordering::Relaxed)),
            Phase::Booting
        );
        s.exit_reason.store(2, Ordering::Relaxed); // max_requests

        // Two requests in the app and one sending when it went: lost.
        let live = super::super::region::gauge::INFLIGHT;
        s.gauges.0[live + 1].store(2, Ordering::Relaxed);
        s.gauges.0[live + 3].store(1, Ordering::Relaxed);
        exited(4242, None, 0);
        assert!(find(4242).is_none());
        let Some(r) = super::super::region() else {
            panic!("mapped")
        };
        assert_eq!(r.header().exits[1].load(Ordering::Relaxed), 1);
        assert_eq!(r.header().lost[1].load(Ordering::Relaxed), 3);
        assert_eq!(s.in_flight(), 0, "the slot is folded");
        let b = reserve();
        spawned(b, None, 2);
        assert_eq!(b, a, "a failed fork frees its slot again");
        Ok(())
    }
}
