//! The shared memory every process of one server writes its numbers into: layout, mapping, reading.
//!
//! The master maps one anonymous `MAP_SHARED` region before it forks
//! anything, so every worker and the metrics process see the same pages.
//! It holds a `Header` (the master's own numbers), the counters of workers
//! that have exited (`departed`, so totals never go back), and one `Slot`
//! per worker: atomic counters and gauges, and a fixed table of in-flight
//! requests whose text fields are guarded by a per-entry sequence counter,
//! so a reader never sees a torn entry. Every field is an atomic, so all
//! zeroes (what `mmap` gives) is a valid empty region. A worker writes only
//! its own slot; the master folds a dead worker's counters into `departed`
//! under the header's sequence counter. This module holds the layout and
//! the lock-free protocols; who writes what, and when, is `track.rs`
//! (workers), `master.rs` (the master) and `observer/` (the reader).

use std::sync::atomic::{fence, AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering};

/// In-flight requests one worker can show at once (more are counted, not listed).
pub(crate) const ENTRIES: usize = 256;

/// The methods counted by name; anything else is `other`.
pub(crate) const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
/// Status classes; `none` when no response head went out.
pub(crate) const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
/// Upper bounds (seconds) of the duration and queue-time histograms; `+Inf` is implicit.
pub(crate) const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Counters kept per refusal reason (`RequestError`'s index in `track::REFUSALS`).
pub(crate) const REASONS: usize = 32;
/// Why a `wsgi.input` read failed (`track::InputFailure`).
pub(crate) const INPUT_FAILURES: [&str; 4] = ["timeout", "disconnected", "too_large", "malformed"];

/// Where each counter lives in `Counters` (one flat array, so folding and
/// summing are one loop).
pub(crate) mod at {
    use super::{BUCKETS, CLASSES, INPUT_FAILURES, METHODS, REASONS};
    /// `[method][class]` request counts.
    pub const REQUESTS: usize = 0;
    /// A histogram: one count per bucket plus `+Inf`, then the sum in µs
    /// (the count is the buckets' total: one add less per observation).
    pub const HIST_WORDS: usize = BUCKETS.len() + 2;
    pub const DURATION: usize = REQUESTS + METHODS.len() * CLASSES.len();
    pub const QUEUED: usize = DURATION + HIST_WORDS;
    pub const BODY_IN: usize = QUEUED + HIST_WORDS;
    pub const BODY_OUT: usize = BODY_IN + 1;
    pub const REFUSALS: usize = BODY_OUT + 1;
    pub const INPUT: usize = REFUSALS + REASONS;
    pub const SLOW_UPLOADS: usize = INPUT + INPUT_FAILURES.len();
    pub const CONNECTIONS: usize = SLOW_UPLOADS + 1;
    /// `accept()` failures (`EMFILE` and the like) retried.
    pub const ACCEPT_FAILURES: usize = CONNECTIONS + 1;
    /// Responses cut short when a stop's time ran out: lost, not requests
    /// (the master adds them to `lost` when the worker exits).
    pub const CUT: usize = ACCEPT_FAILURES + 1;
    pub const WORDS: usize = CUT + 1;
}

/// Where each gauge lives in `Gauges`.
pub(crate) mod gauge {
    /// In-flight requests by `State` (index = state - 1).
    pub const INFLIGHT: usize = 0;
    /// Declared body bytes not yet received, over unfinished requests.
    pub const PENDING: usize = 4;
    /// Connections open.
    pub const OPEN: usize = 5;
    /// Threads in the worker's thread-mode pool (0 in gevent mode).
    pub const THREADS: usize = 6;
    pub const WORDS: usize = 7;
}

/// Where an in-flight request is. `Free` marks an unused entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum State {
    Free = 0,
    /// Parsed, waiting for a thread or greenlet.
    Queued = 1,
    /// The app is running it.
    App = 2,
    /// Parked in `wsgi.input`, waiting for body bytes from the client.
    Reading = 3,
    /// Waiting for a slow client to take the response.
    Sending = 4,
}

impl State {
    pub(crate) const LIVE: [State; 4] = [State::Queued, State::App, State::Reading, State::Sending];

    pub(crate) fn from_u32(n: u32) -> State {
        match n {
            1 => State::Queued,
            2 => State::App,
            3 => State::Reading,
            4 => State::Sending,
            _ => State::Free,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Queued => "queued",
            State::App => "app",
            State::Reading => "reading_body",
            State::Sending => "sending",
        }
    }
}

/// An entry being claimed (between `Free` and `Queued`).
const CLAIMING: u32 = 99;

/// A slot's life, written by the master (free, booting) and the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Phase {
    Free = 0,
    /// Reserved by the master for the next fork.
    Reserved = 1,
    Booting = 2,
    Ready = 3,
    Draining = 4,
    /// Ready, but its gevent hub is held: it accepts nothing meanwhile.
    Held = 5,
}

impl Phase {
    pub(crate) fn from_u32(n: u32) -> Phase {
        match n {
            1 => Phase::Reserved,
            2 => Phase::Booting,
            3 => Phase::Ready,
            4 => Phase::Draining,
            5 => Phase::Held,
            _ => Phase::Free,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Free => "free",
            Phase::Reserved | Phase::Booting => "booting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
            Phase::Held => "held",
        }
    }
}

/// Why a worker process ended (`siesta_worker_exits_total{reason}`).
pub(crate) const EXIT_REASONS: [&str; 9] = [
    "crash",
    "max_requests",
    "max_worker_rss",
    "timeout",
    "reload",
    "stop",
    "boot_error",
    "listener_failed",
    "hook",
];

/// How a HUP ended, once each (`siesta_reloads_total{outcome}`): its new
/// workers up and the old ones retired; the same with its config refused
/// (the workers reloaded with the running one); given up (new workers could
/// not load the app or boot: the old ones serve on with their code); or
/// superseded by a HUP that came before it ended.
pub(crate) const RELOAD_OUTCOMES: [&str; 4] = ["done", "config_refused", "given_up", "superseded"];

/// The master's state for `/readyz`.
pub(crate) mod master_phase {
    pub const RUNNING: u32 = 0;
    pub const RELOADING: u32 = 1;
    pub const STOPPING: u32 = 2;
}

/// Fixed-size text in atomic words (zero padded, truncated to `8 * N` bytes).
#[repr(C)]
pub(crate) struct Text<const N: usize>([AtomicU64; N]);

impl<const N: usize> Text<N> {
    /// Stores `s` (cut to `8 * N` bytes) and a zero word after it when it
    /// fits: `load` stops at the first zero byte, so the words past that
    /// are left as they were.
    pub(crate) fn store(&self, s: &[u8]) {
        let mut used = 0;
        for (w, c) in self.0.iter().zip(s.chunks(8)) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
            used += 1;
        }
        if s.len().is_multiple_of(8) {
            if let Some(w) = self.0.get(used) {
                w.store(0, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn load(&self) -> String {
        let mut out = Vec::with_capacity(8 * N);
        for w in &self.0 {
            out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let end = out.iter().position(|&b| b == 0).unwrap_or(out.len());
        out.truncate(end);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// One in-flight request as the status page shows it. The identity
/// fields (`seq`-guarded) are written when the entry is claimed; the
/// progress fields are single atomics updated as the request moves.
#[repr(C)]
pub(crate) struct Entry {
    /// Odd while the identity fields are being written.
    seq: AtomicU32,
    /// A `State` (or `CLAIMING`).
    pub(crate) state: AtomicU32,
    pub(crate) started_ns: AtomicU64,
    /// When the last body byte arrived (0: none yet).
    pub(crate) last_byte_ns: AtomicU64,
    /// Declared Content-Length, `u64::MAX` when none (chunked or no body).
    pub(crate) declared: AtomicU64,
    pub(crate) read: AtomicU64,
    pub(crate) sent: AtomicU64,
    /// The client: IPv6 (or IPv4-mapped) address bytes, then port and family.
    peer_ip: [AtomicU64; 2],
    /// Port in the low 16 bits; family in bits 16..: 0 none, 4, 6.
    peer_port: AtomicU64,
    method: Text<2>,
    path: Text<21>,
}

/// What a reader copied out of an entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EntryView {
    pub state: State,
    pub started_ns: u64,
    pub last_byte_ns: u64,
    pub declared: Option<u64>,
    pub read: u64,
    pub sent: u64,
    pub client: Option<std::net::SocketAddr>,
    pub method: String,
    pub path: String,
}

/// The identity of a request, for `Entry::claim`.
pub(crate) struct Identity<'a> {
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub peer: Option<std::net::SocketAddr>,
    pub declared: Option<u64>,
    pub started_ns: u64,
}

impl Entry {
    /// Takes this entry if it is free; writes the identity under the sequence counter.
    pub(crate) fn claim(&self, id: &Identity<'_>) -> bool {
        if self
            .state
            .compare_exchange(
                State::Free as u32,
                CLAIMING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        self.write(|| {
            self.started_ns.store(id.started_ns, Ordering::Relaxed);
            self.last_byte_ns.store(0, Ordering::Relaxed);
            self.declared
                .store(id.declared.unwrap_or(u64::MAX), Ordering::Relaxed);
            self.read.store(0, Ordering::Relaxed);
            self.sent.store(0, Ordering::Relaxed);
            let (ip, port) = match id.peer {
                None => (0u128, 0u64),
                Some(std::net::SocketAddr::V4(a)) => (
                    u128::from(a.ip().to_ipv6_mapped()),
                    u64::from(a.port()) | 4 << 16,
                ),
                Some(std::net::SocketAddr::V6(a)) => {
                    (u128::from(*a.ip()), u64::from(a.port()) | 6 << 16)
                }
            };
            self.peer_ip[0].store(ip as u64, Ordering::Relaxed);
            self.peer_ip[1].store((ip >> 64) as u64, Ordering::Relaxed);
            self.peer_port.store(port, Ordering::Relaxed);
            self.method.store(id.method);
            self.path.store(id.path);
            self.state.store(State::Queued as u32, Ordering::Relaxed);
        });
        true
    }

    /// Gives the entry back.
    pub(crate) fn release(&self) {
        self.write(|| self.state.store(State::Free as u32, Ordering::Relaxed));
    }

    fn write(&self, f: impl FnOnce()) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        f();
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// A consistent copy, or `None` when free (or busy for every try).
    pub(crate) fn view(&self) -> Option<EntryView> {
        if self.state.load(Ordering::Relaxed) == State::Free as u32 {
            return None;
        }
        for _ in 0..16 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let state = State::from_u32(self.state.load(Ordering::Relaxed));
            let started_ns = self.started_ns.load(Ordering::Relaxed);
            let declared = self.declared.load(Ordering::Relaxed);
            let lo = self.peer_ip[0].load(Ordering::Relaxed);
            let hi = self.peer_ip[1].load(Ordering::Relaxed);
            let port = self.peer_port.load(Ordering::Relaxed);
            let method = self.method.load();
            let path = self.path.load();
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            if state == State::Free {
                return None;
            }
            let ip = std::net::Ipv6Addr::from(u128::from(hi) << 64 | u128::from(lo));
            let client = match port >> 16 {
                4 => ip
                    .to_ipv4_mapped()
                    .map(|v4| std::net::SocketAddr::from((v4, port as u16))),
                6 => Some(std::net::SocketAddr::from((ip, port as u16))),
                _ => None,
            };
            return Some(EntryView {
                state,
                started_ns,
                last_byte_ns: self.last_byte_ns.load(Ordering::Relaxed),
                declared: (declared != u64::MAX).then_some(declared),
                read: self.read.load(Ordering::Relaxed),
                sent: self.sent.load(Ordering::Relaxed),
                client,
                method,
                path,
            });
        }
        None
    }
}

/// Counters that only grow; folded into `departed` when their worker exits.
#[repr(C)]
pub(crate) struct Counters(pub(crate) [AtomicU64; at::WORDS]);

/// Gauges: they describe the present, so a dead worker's are dropped.
#[repr(C)]
pub(crate) struct Gauges(pub(crate) [AtomicI64; gauge::WORDS]);

/// One worker's part of the region.
#[repr(C)]
pub(crate) struct Slot {
    /// A `Phase`.
    pub(crate) phase: AtomicU32,
    /// Why the worker is leaving on its own (an index in `EXIT_REASONS`, +1).
    pub(crate) exit_reason: AtomicU32,
    pub(crate) pid: AtomicI32,
    _pad: AtomicU32,
    /// When the worker was forked (monotonic ns).
    pub(crate) started_ns: AtomicU64,
    /// The worker's spawn order (gunicorn's `age`).
    pub(crate) age: AtomicU64,
    /// Where the next claim starts looking.
    pub(crate) hint: AtomicU64,
    /// In-flight requests that found the table full.
    pub(crate) unlisted: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) gauges: Gauges,
    pub(crate) entries: [Entry; ENTRIES],
}

impl Slot {
    /// The worker's requests in flight: its `LIVE` gauges summed (a
    /// reader between two of a request's moves may see it twice or not).
    pub(crate) fn in_flight(&self) -> i64 {
        let live = &self.gauges.0[gauge::INFLIGHT..gauge::INFLIGHT + State::LIVE.len()];
        live.iter().map(|g| g.load(Ordering::Relaxed)).sum()
    }
}

/// The master's numbers and the region's shape.
#[repr(C)]
pub(crate) struct Header {
    /// Odd while the master folds a dead worker's counters (readers retry).
    pub(crate) seq: AtomicU64,
    pub(crate) slots: AtomicU64,
    pub(crate) master_pid: AtomicI32,
    /// A `master_phase` value.
    pub(crate) phase: AtomicU32,
    pub(crate) started_ns: AtomicU64,
    pub(crate) worker_starts: AtomicU64,
    pub(crate) exits: [AtomicU64; EXIT_REASONS.len()],
    pub(crate) reloads: [AtomicU64; RELOAD_OUTCOMES.len()],
    /// Workers the master wants (`-w`, TTIN/TTOU).
    pub(crate) target: AtomicU64,
    /// The metrics process's own pid.
    pub(crate) observer_pid: AtomicI32,
    _pad: AtomicU32,
    /// Requests still in flight when their worker exited, by its exit
    /// reason (`siesta_requests_lost_total`).
    pub(crate) lost: [AtomicU64; EXIT_REASONS.len()],
}

/// The mapped region: a header, the departed totals, then `slots` slots.
#[derive(Clone, Copy)]
pub(crate) struct Region {
    base: *mut u8,
    slots: usize,
}

// SAFETY: the region is only ever accessed through atomics.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

const HEADER_BYTES: usize = align8(std::mem::size_of::<Header>());
const DEPARTED_BYTES: usize = align8(std::mem::size_of::<Counters>());
const SLOT_BYTES: usize = align8(std::mem::size_of::<Slot>());

impl Region {
    /// Maps a fresh zeroed shared region for `slots` workers (the master, before any fork).
    pub(crate) fn map(slots: usize) -> std::io::Result<Region> {
        let len = Self::len(slots);
        // SAFETY: an anonymous shared mapping; no file, no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let r = Region {
            base: p.cast(),
            slots,
        };
        r.header().slots.store(slots as u64, Ordering::Relaxed);
        Ok(r)
    }

    fn len(slots: usize) -> usize {
        HEADER_BYTES + DEPARTED_BYTES + slots * SLOT_BYTES
    }

    pub(crate) fn header(&self) -> &'static Header {
        // SAFETY: the mapping is page aligned, zero-initialised (a valid
        // `Header` of atomics) and never unmapped while the process lives.
        unsafe { &*(self.base as *const Header) }
    }

    pub(crate) fn departed(&self) -> &'static Counters {
        // SAFETY: as `header`; `Counters` follows it at an 8-aligned offset.
        unsafe { &*(self.base.add(HEADER_BYTES) as *const Counters) }
    }

    pub(crate) fn slot(&self, i: usize) -> Option<&'static Slot> {
        if i >= self.slots {
            return None;
        }
        // SAFETY: as `header`; slot `i` lies inside the mapping.
        Some(unsafe {
            &*(self
                .base
                .add(HEADER_BYTES + DEPARTED_BYTES + i * SLOT_BYTES) as *const Slot)
        })
    }

    pub(crate) fn all_slots(self) -> impl Iterator<Item = (usize, &'static Slot)> {
        (0..self.slots).filter_map(move |i| self.slot(i).map(|s| (i, s)))
    }

    /// The counters of every worker, living and departed, summed; retried
    /// while the master is folding so nothing is counted twice.
    pub(crate) fn totals(&self) -> [u64; at::WORDS] {
        let h = self.header();
        loop {
            let s1 = h.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            let mut out = [0u64; at::WORDS];
            add_into(&mut out, self.departed());
            for (_, s) in self.all_slots() {
                if Phase::from_u32(s.phase.load(Ordering::Relaxed)) != Phase::Free {
                    add_into(&mut out, &s.counters);
                }
            }
            fence(Ordering::Acquire);
            if h.seq.load(Ordering::Relaxed) == s1 {
                return out;
            }
        }
    }

    /// The master, after a worker exited: its counters go into `departed`,
    /// its slot is cleared and freed.
    pub(crate) fn fold(&self, slot: &Slot) {
        let h = self.header();
        let s = h.seq.load(Ordering::Relaxed);
        h.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (d, c) in self.departed().0.iter().zip(slot.counters.0.iter()) {
            d.fetch_add(c.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
        for g in &slot.gauges.0 {
            g.store(0, Ordering::Relaxed);
        }
        for e in &slot.entries {
            if e.state.load(Ordering::Relaxed) != State::Free as u32 {
                e.release();
            }
        }
        slot.pid.store(0, Ordering::Relaxed);
        slot.exit_reason.store(0, Ordering::Relaxed);
        slot.unlisted.store(0, Ordering::Relaxed);
        slot.phase.store(Phase::Free as u32, Ordering::Relaxed);
        h.seq.store(s + 2, Ordering::Release);
    }
}

fn add_into(out: &mut [u64; at::WORDS], c: &Counters) {
    for (o, w) in out.iter_mut().zip(c.0.iter()) {
        *o = o.wrapping_add(w.load(Ordering::Relaxed));
    }
}

/// An `Instant` on `now_ns`'s scale, without reading the clock again: the
/// offset between the two is taken once per process (both are
/// CLOCK_MONOTONIC on Linux, so it stays put).
pub(crate) fn ns_at(t: std::time::Instant) -> u64 {
    static BASE: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (base, base_ns) = *BASE.get_or_init(|| (std::time::Instant::now(), now_ns()));
    match t.checked_duration_since(base) {
        Some(d) => base_ns.saturating_add(d.as_nanos() as u64),
        None => base_ns.saturating_sub(base.duration_since(t).as_nanos() as u64),
    }
}

/// Monotonic nanoseconds (CLOCK_MONOTONIC is the same clock in every process).
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The histogram bucket of a value in seconds (`BUCKETS.len()` is `+Inf`).
pub(crate) fn bucket(seconds: f64) -> usize {
    BUCKETS
        .iter()
        .position(|&b| seconds <= b)
        .unwrap_or(BUCKETS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_whole_words() {
        assert_eq!(std::mem::size_of::<Counters>(), at::WORDS * 8);
        assert_eq!(std::mem::size_of::<Entry>(), 256);
        assert_eq!(std::mem::align_of::<Slot>(), 8);
    }

    #[test]
    fn text_round_trips_and_truncates() {
        let t: Text<2> = Text(Default::default());
        t.store(b"GET");
        assert_eq!(t.load(), "GET");
        t.store(b"0123456789abcdefXYZ");
        assert_eq!(t.load(), "0123456789abcdef");
        t.store(b"");
        assert_eq!(t.load(), "");
        // A shorter text over a longer one: what is left past it is not read.
        let t: Text<3> = Text(Default::default());
        t.store(b"/a/longer/path/here");
        t.store(b"/exactly");
        assert_eq!(t.load(), "/exactly");
        t.store(b"/b");
        assert_eq!(t.load(), "/b");
    }

    #[test]
    fn claim_view_release() -> std::io::Result<()> {
        let r = Region::map(2)?;
        let Some(slot) = r.slot(1) else {
            panic!("slot 1 exists")
        };
        assert!(r.slot(2).is_none());
        let e = &slot.entries[3];
        assert_eq!(e.view(), None);
        let peer: std::net::SocketAddr = "10.1.2.3:4567".parse().map_err(std::io::Error::other)?;
        let id = Identity {
            method: b"POST",
            path: b"/upload",
            peer: Some(peer),
            declared: Some(1000),
            started_ns: 5,
        };
        assert!(e.claim(&id));
        assert!(!e.claim(&id), "taken");
        e.read.store(10, Ordering::Relaxed);
        let v = e.view().ok_or_else(|| std::io::Error::other("no view"))?;
        assert_eq!(
            (
                v.state,
                v.method.as_str(),
                v.path.as_str(),
                v.client,
                v.declared,
                v.read
            ),
            (State::Queued, "POST", "/upload", Some(peer), Some(1000), 10)
        );
        e.release();
        assert_eq!(e.view(), None);
        Ok(())
    }

    #[test]
    fn fold_keeps_totals() -> std::io::Result<()> {
        let r = Region::map(2)?;
        let (Some(a), Some(b)) = (r.slot(0), r.slot(1)) else {
            panic!("two slots")
        };
        for s in [a, b] {
            s.phase.store(Phase::Ready as u32, Ordering::Relaxed);
            s.counters.0[at::BODY_IN].store(7, Ordering::Relaxed);
        }
        assert_eq!(r.totals()[at::BODY_IN], 14);
        r.fold(a);
        assert_eq!(
            r.totals()[at::BODY_IN],
            14,
            "departed keeps the dead worker's"
        );
        assert_eq!(
            Phase::from_u32(a.phase.load(Ordering::Relaxed)),
            Phase::Free
        );
        assert_eq!(a.counters.0[at::BODY_IN].load(Ordering::Relaxed), 0);
        Ok(())
    }

    #[test]
    fn buckets() {
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(0.001), 0);
        assert_eq!(bucket(0.002), 1);
        assert_eq!(bucket(31.0), BUCKETS.len());
    }
}
