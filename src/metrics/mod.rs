//! Numbers about the server, written where things happen and read by the metrics process.
//!
//! A leaf like `log`: any layer may call it, it calls no layer back (it
//! names only `error`, for the refusal table). `region.rs` is the shared
//! memory every process of a server writes into; `track.rs` is what a
//! worker writes per request and per connection; `master.rs` is the
//! master's part (slots for workers, exits by reason, readiness);
//! `statsd.rs` sends gunicorn's StatsD lines. Serving the numbers over
//! HTTP is `observer/`'s job, not this module's.
//!
//! A process finds its part through statics: the master maps the region
//! (`REGION`) before it forks, so every child inherits the mapping and
//! the static; before each fork it writes the slot it chose in
//! `NEXT_SLOT`, which the child reads in `attach`.

pub(crate) mod master;
pub(crate) mod region;
pub(crate) mod statsd;
pub(crate) mod track;

use region::{Phase, Region, Slot};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

pub(crate) use region::State;
pub(crate) use track::{finished, Connection, Ended, InputFailure, Track};

/// The shared region, mapped by the master (inherited by its children).
static REGION: OnceLock<Region> = OnceLock::new();
/// The slot the master chose for the worker it is about to fork.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// This worker's slot, set once by `attach`.
static SLOT: OnceLock<&'static Slot> = OnceLock::new();
/// `--slow-upload-rate` in bytes/s (0: off), set by `attach`.
static SLOW_RATE: AtomicU64 = AtomicU64::new(0);

pub(crate) fn region() -> Option<Region> {
    REGION.get().copied()
}

pub(crate) fn worker_slot() -> Option<&'static Slot> {
    SLOT.get().copied()
}

pub(crate) fn slow_upload_rate() -> u64 {
    SLOW_RATE.load(Ordering::Relaxed)
}

/// In a freshly forked worker: take the slot the master chose for it.
pub(crate) fn attach(slow_upload_rate: u64) {
    SLOW_RATE.store(slow_upload_rate, Ordering::Relaxed);
    let i = NEXT_SLOT.swap(usize::MAX, Ordering::Relaxed);
    if let Some(slot) = region().and_then(|r| r.slot(i)) {
        let _ = SLOT.set(slot);
    }
}

/// The worker listens: it is ready for `/readyz`.
pub(crate) fn worker_ready() {
    // A stop that came in between (a TERM once the signal thread listens)
    // stays shown: a draining worker is not ready again.
    if let Some(s) = worker_slot() {
        let _ = s
            .phase
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                (p != Phase::Draining as u32).then_some(Phase::Ready as u32)
            });
    }
}

/// The worker was asked to stop and is draining.
pub(crate) fn worker_draining() {
    set_phase(Phase::Draining);
}

/// The worker that paused to leave stays: the master holds recycling
/// (`Recorder::resume`). Only a draining worker moves back to ready.
pub(crate) fn worker_resumed() {
    if let Some(s) = worker_slot() {
        let (from, to) = (Phase::Draining as u32, Phase::Ready as u32);
        let _ = s
            .phase
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Gevent mode: the worker's hub is held (the worker accepts nothing) or
/// turns again. Only a ready worker moves to held and back: a draining
/// one stays draining.
pub(crate) fn worker_held(held: bool) {
    if let Some(s) = worker_slot() {
        let (from, to) = match held {
            true => (Phase::Ready, Phase::Held),
            false => (Phase::Held, Phase::Ready),
        };
        let _ =
            s.phase
                .compare_exchange(from as u32, to as u32, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The worker will exit by itself for `reason` (an `EXIT_REASONS` name).
pub(crate) fn worker_leaving(reason: &str) {
    if let (Some(s), Some(i)) = (
        worker_slot(),
        region::EXIT_REASONS.iter().position(|r| *r == reason),
    ) {
        s.exit_reason.store(i as u32 + 1, Ordering::Relaxed);
    }
}

/// Thread mode: the worker's pool has `n` threads now.
pub(crate) fn pool_threads(n: usize) {
    if let Some(s) = worker_slot() {
        s.gauges.0[region::gauge::THREADS].store(n as i64, Ordering::Relaxed);
    }
}

fn set_phase(p: Phase) {
    if let Some(s) = worker_slot() {
        s.phase.store(p as u32, Ordering::Relaxed);
    }
}
