//! One consistent reading of the shared region: totals, gauges, workers, in-flight requests.
//!
//! `Snapshot::take` sums the counters of every worker (the departed ones
//! included), sums the gauges of the living, lists each worker with its
//! resident memory (from `/proc`) and copies every listed in-flight
//! request. Rendering it (Prometheus text, `status.json`) is
//! `exposition.rs`'s and `page.rs`'s; this file decides nothing about
//! formats.

use crate::metrics::region::{
    at, gauge, master_phase, now_ns, EntryView, Phase, Region, State, CLASSES, EXIT_REASONS,
    METHODS, RELOAD_OUTCOMES,
};
use std::sync::atomic::Ordering;

pub(crate) struct WorkerView {
    pub pid: i32,
    pub age: u64,
    pub phase: Phase,
    pub started_ns: u64,
    /// Requests this worker finished.
    pub requests: u64,
    pub in_flight: i64,
    pub connections: i64,
    pub rss_bytes: Option<u64>,
}

pub(crate) struct RequestView {
    pub pid: i32,
    pub entry: EntryView,
}

pub(crate) struct Snapshot {
    pub now_ns: u64,
    pub totals: [u64; at::WORDS],
    /// Summed over living workers.
    pub gauges: [i64; gauge::WORDS],
    pub workers: Vec<WorkerView>,
    pub requests: Vec<RequestView>,
    pub master_pid: i32,
    pub master_phase: u32,
    pub master_started_ns: u64,
    pub worker_starts: u64,
    pub exits: [u64; EXIT_REASONS.len()],
    /// Requests in flight when their worker exited, by its exit reason.
    pub lost: [u64; EXIT_REASONS.len()],
    /// HUPs by how they ended (`RELOAD_OUTCOMES`).
    pub reloads: [u64; RELOAD_OUTCOMES.len()],
    pub target: u64,
    /// `--slow-upload-rate`, bytes/s (0: off).
    pub slow_rate: u64,
}

impl Snapshot {
    pub(crate) fn take(r: &Region, slow_rate: u64) -> Snapshot {
        let h = r.header();
        let mut gauges = [0i64; gauge::WORDS];
        let mut workers = Vec::new();
        let mut requests = Vec::new();
        for (_, s) in r.all_slots() {
            let phase = Phase::from_u32(s.phase.load(Ordering::Relaxed));
            if phase == Phase::Free {
                continue;
            }
            let pid = s.pid.load(Ordering::Relaxed);
            for (g, w) in gauges.iter_mut().zip(s.gauges.0.iter()) {
                *g += w.load(Ordering::Acquire);
            }
            let served: u64 = s.counters.0
                [at::REQUESTS..at::REQUESTS + METHODS.len() * CLASSES.len()]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum();
            let in_flight = s.in_flight();
            workers.push(WorkerView {
                pid,
                age: s.age.load(Ordering::Relaxed),
                phase,
                started_ns: s.started_ns.load(Ordering::Relaxed),
                requests: served,
                in_flight,
                connections: s.gauges.0[gauge::OPEN].load(Ordering::Relaxed),
                rss_bytes: (pid > 0).then(|| rss_bytes(pid)).flatten(),
            });
            for e in &s.entries {
                if let Some(entry) = e.view() {
                    requests.push(RequestView { pid, entry });
                }
            }
        }
        // Counters after gauges: a worker bumps a counter before the gauge
        // (`track.rs`), so a scrape that shows a body byte gone from
        // `pending` also shows it in `body_bytes`.
        let totals = r.totals();
        workers.sort_by_key(|w| w.age);
        requests.sort_by_key(|r| r.entry.started_ns);
        let exits = h.exits.each_ref().map(|e| e.load(Ordering::Relaxed));
        let lost = h.lost.each_ref().map(|e| e.load(Ordering::Relaxed));
        let reloads = h.reloads.each_ref().map(|e| e.load(Ordering::Relaxed));
        Snapshot {
            now_ns: now_ns(),
            totals,
            gauges,
            workers,
            requests,
            master_pid: h.master_pid.load(Ordering::Relaxed),
            master_phase: h.phase.load(Ordering::Relaxed),
            master_started_ns: h.started_ns.load(Ordering::Relaxed),
            worker_starts: h.worker_starts.load(Ordering::Relaxed),
            exits,
            lost,
            reloads,
            target: h.target.load(Ordering::Relaxed),
            slow_rate,
        }
    }

    /// `/readyz`: the master runs (not starting a reload, not stopping) and a worker is ready.
    pub(crate) fn ready(&self) -> Result<(), &'static str> {
        match self.master_phase {
            master_phase::STOPPING => return Err("draining: the server is stopping"),
            master_phase::RELOADING => return Err("draining: a reload is under way"),
            _ => {}
        }
        // A held gevent hub is no reason: a worker busy with CPU-bound
        // requests is held for as long as one batch of them runs.
        if self
            .workers
            .iter()
            .any(|w| matches!(w.phase, Phase::Ready | Phase::Held))
        {
            Ok(())
        } else {
            Err("starting: no worker is ready yet")
        }
    }

    /// In-flight requests by state.
    pub(crate) fn in_flight(&self, s: State) -> i64 {
        match s {
            State::Free => 0,
            s => self.gauges[gauge::INFLIGHT + s as usize - 1].max(0),
        }
    }

    /// Bytes per second a request's body has come at so far.
    pub(crate) fn rate(&self, e: &EntryView) -> Option<f64> {
        let secs = self.now_ns.saturating_sub(e.started_ns) as f64 / 1e9;
        (e.declared.is_some_and(|d| d > 0) && secs > 0.0).then(|| e.read as f64 / secs)
    }

    /// Whether an unfinished upload is coming slower than `--slow-upload-rate`
    /// (judged after its first second).
    pub(crate) fn is_slow(&self, e: &EntryView) -> bool {
        let age = self.now_ns.saturating_sub(e.started_ns);
        let unfinished = e.declared.is_some_and(|d| e.read < d);
        self.slow_rate > 0
            && unfinished
            && age >= 1_000_000_000
            && self.rate(e).is_some_and(|r| r < self.slow_rate as f64)
    }
}

/// Resident memory of a process, from `/proc/PID/statm`.
fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes no pointers.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(pages * page)
}
