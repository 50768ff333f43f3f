//! A worker's writes into its slot: one request's `Track`, connection counts, the end of a request.
//!
//! Every `Record` carries a `Track`. Made with the record, it claims an
//! entry in the worker's in-flight table and counts the request as queued;
//! the app side moves it through `State`s (in the app, parked in
//! `wsgi.input`, sending to a slow client) and counts body bytes; when the
//! record ends, `finished` (called from `server/end.rs`) adds the request
//! to the counters and gives the entry back. Everything is a relaxed atomic
//! in shared memory: no lock, no allocation. With `--metrics-bind` unset
//! there is no slot and every call returns at its first line.

use super::region::{
    at, bucket, gauge, now_ns, ns_at, Entry, Identity, Slot, State, CLASSES, ENTRIES,
};
use crate::error::RequestError;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every refusal, in the order of their counters (`siesta_refusals_total{reason}`).
pub(crate) const REFUSALS: [RequestError; 26] = [
    RequestError::MalformedHead,
    RequestError::RequestLineTooLong,
    RequestError::TooManyFields,
    RequestError::FieldTooLarge,
    RequestError::HeadTooLarge,
    RequestError::BodyTooLarge,
    RequestError::HeaderTimeout,
    RequestError::BadHost,
    RequestError::BadTransferEncoding,
    RequestError::BadContentLength,
    RequestError::LengthAndChunked,
    RequestError::DuplicateField,
    RequestError::MalformedBody,
    RequestError::Overloaded,
    RequestError::ShuttingDown,
    RequestError::AppFailed,
    RequestError::NoResponse,
    RequestError::ConflictingScheme,
    RequestError::Connect,
    RequestError::BodyTimeout,
    RequestError::LengthTooLarge,
    RequestError::ClientGone,
    RequestError::StopCut,
    RequestError::ExpectationFailed,
    RequestError::BadMethod,
    RequestError::Fragment,
];

/// A refusal's counter; an unlisted one (added without updating the table) is the last.
fn refusal_index(e: RequestError) -> usize {
    REFUSALS
        .iter()
        .position(|r| *r == e)
        .unwrap_or(super::region::REASONS - 1)
}

/// Why a `wsgi.input` read failed, in `INPUT_FAILURES` order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InputFailure {
    Timeout = 0,
    Disconnected = 1,
    TooLarge = 2,
    Malformed = 3,
}

fn method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        http::Method::PATCH => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
    }
}

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => CLASSES.len() - 1,
    }
}

fn observe(c: &[AtomicU64], base: usize, d: Duration) {
    let b = bucket(d.as_secs_f64());
    c[base + b].fetch_add(1, Ordering::Relaxed);
    c[base + at::HIST_WORDS - 1].fetch_add(d.as_micros() as u64, Ordering::Relaxed);
}

/// One request's part in its worker's slot.
pub(crate) struct Track {
    /// `None`: metrics are off (or this worker has no slot).
    slot: Option<&'static Slot>,
    /// Its row on the status page; `None` when the table was full.
    entry: Option<&'static Entry>,
    /// The `State` counted in the slot's in-flight gauges.
    state: AtomicU32,
    /// Declared Content-Length, for the pending-bytes gauge.
    declared: Option<u64>,
    /// Body bytes received so far.
    read: AtomicU64,
    started_ns: u64,
    last_byte_ns: AtomicU64,
}

impl Track {
    /// A track that records nothing.
    pub(crate) fn off() -> Track {
        Track {
            slot: None,
            entry: None,
            state: AtomicU32::new(State::Free as u32),
            declared: None,
            read: AtomicU64::new(0),
            started_ns: 0,
            last_byte_ns: AtomicU64::new(0),
        }
    }

    /// A request head was parsed at `received`, declaring a body of
    /// `declared` bytes (hyper's reading: `Some(0)` for no body, `None` for
    /// a chunked one): list it and count it as queued.
    pub(crate) fn start(
        head: &http::request::Parts,
        peer: Option<SocketAddr>,
        declared: Option<u64>,
        received: Instant,
    ) -> Track {
        match super::worker_slot() {
            Some(slot) => Track::start_in(slot, head, peer, declared, received),
            None => Track::off(),
        }
    }

    fn start_in(
        slot: &'static Slot,
        head: &http::request::Parts,
        peer: Option<SocketAddr>,
        declared: Option<u64>,
        received: Instant,
    ) -> Track {
        // A body-less request (Content-Length 0 or none) declares nothing.
        let declared = declared.filter(|&n| n > 0);
        let started_ns = ns_at(received);
        let id = Identity {
            method: head.method.as_str().as_bytes(),
            path: head.uri.path().as_bytes(),
            peer,
            declared,
            started_ns,
        };
        let entry = claim(slot, &id);
        let g = &slot.gauges.0;
        g[gauge::INFLIGHT].fetch_add(1, Ordering::Relaxed);
        if let Some(n) = declared {
            g[gauge::PENDING].fetch_add(n as i64, Ordering::Relaxed);
        }
        Track {
            slot: Some(slot),
            entry,
            state: AtomicU32::new(State::Queued as u32),
            declared,
            read: AtomicU64::new(0),
            started_ns,
            last_byte_ns: AtomicU64::new(0),
        }
    }

    /// Whether anything is recorded (callers skip work for nothing).
    pub(crate) fn on(&self) -> bool {
        self.slot.is_some()
    }

    /// The request moved to `s`.
    pub(crate) fn to(&self, s: State) {
        let Some(slot) = self.slot else { return };
        let old = self.state.swap(s as u32, Ordering::Relaxed);
        if old == s as u32 {
            return;
        }
        // The row first, then the gauges (Release: after the row and the
        // counters a caller bumped, see `Snapshot::take`). A row is freed
        // only by `Entry::release`: freed here, another request could take
        // it before `finished` releases it, and lose it to that release.
        if let Some(e) = self.entry.filter(|_| s != State::Free) {
            e.state.store(s as u32, Ordering::Relaxed);
        }
        let g = &slot.gauges.0;
        if let Some(i) = inflight_index(old) {
            g[i].fetch_sub(1, Ordering::Release);
        }
        if let Some(i) = inflight_index(s as u32) {
            g[i].fetch_add(1, Ordering::Release);
        }
    }

    /// A thread or greenlet took the job, queued since `queued`.
    pub(crate) fn began(&self, queued: Instant) {
        let Some(slot) = self.slot else { return };
        observe(&slot.counters.0, at::QUEUED, queued.elapsed());
        self.to(State::App);
    }

    /// `n` body bytes arrived from the client.
    pub(crate) fn body_read(&self, n: u64) {
        let Some(slot) = self.slot else { return };
        let now = now_ns();
        let read = self.read.fetch_add(n, Ordering::Relaxed) + n;
        self.last_byte_ns.store(now, Ordering::Relaxed);
        if let Some(e) = self.entry {
            e.read.store(read, Ordering::Relaxed);
            e.last_byte_ns.store(now, Ordering::Relaxed);
        }
        slot.counters.0[at::BODY_IN].fetch_add(n, Ordering::Relaxed);
        if let Some(d) = self.declared {
            // Never below zero even if more came than declared.
            let owed = d.saturating_sub(read - n).min(n);
            // Release: after the row and the counter above (see `Snapshot::take`).
            slot.gauges.0[gauge::PENDING].fetch_sub(owed as i64, Ordering::Release);
        }
    }

    /// `n` response body bytes were handed to hyper: counted at once, so a
    /// long download moves the counter as it goes, and on the status page.
    pub(crate) fn sent(&self, n: u64) {
        if let Some(slot) = self.slot {
            slot.counters.0[at::BODY_OUT].fetch_add(n, Ordering::Relaxed);
        }
        if let Some(e) = self.entry {
            e.sent.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A `wsgi.input` read failed.
    pub(crate) fn input_failed(&self, why: InputFailure) {
        if let Some(slot) = self.slot {
            slot.counters.0[at::INPUT + why as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the body came in slower than `rate` bytes/s (measured from
    /// the head to the last byte; a body that came with the head is never slow).
    fn slow(&self, rate: u64) -> bool {
        let read = self.read.load(Ordering::Relaxed);
        let last = self.last_byte_ns.load(Ordering::Relaxed);
        let took = last.saturating_sub(self.started_ns);
        rate > 0
            && read > 0
            && took > 0
            && (read as u128) * 1_000_000_000 < (rate as u128) * took as u128
    }
}

fn inflight_index(state: u32) -> Option<usize> {
    match State::from_u32(state) {
        State::Free => None,
        s => Some(gauge::INFLIGHT + s as usize - 1),
    }
}

fn claim(slot: &'static Slot, id: &Identity<'_>) -> Option<&'static Entry> {
    // A hint, not a count: two threads racing here at worst start at the
    // same row, and the row's own compare-exchange decides.
    let start = slot.hint.load(Ordering::Relaxed);
    slot.hint.store(start.wrapping_add(1), Ordering::Relaxed);
    let start = start as usize;
    for i in 0..ENTRIES {
        let e = &slot.entries[(start + i) % ENTRIES];
        if e.state.load(Ordering::Relaxed) == State::Free as u32 && e.claim(id) {
            return Some(e);
        }
    }
    slot.unlisted.fetch_add(1, Ordering::Relaxed);
    None
}

/// What ended, for `finished`.
pub(crate) struct Ended<'a> {
    pub track: Option<&'a Track>,
    pub method: Option<&'a http::Method>,
    pub status: u16,
    pub sent: u64,
    pub refusal: Option<RequestError>,
    /// The response was cut short (its head may have gone out).
    pub aborted: bool,
    pub elapsed: Duration,
}

/// The end of a request (from `server/end.rs`): count it, drop it from
/// the gauges, free its row.
pub(crate) fn finished(end: &Ended<'_>) {
    let tracked = end.track.and_then(|t| t.slot);
    let Some(slot) = tracked.or_else(super::worker_slot) else {
        return;
    };
    let c = &slot.counters.0;
    if end.aborted && end.refusal == Some(RequestError::StopCut) {
        // Cut short when the stop's time ran out: no complete response, so
        // not a request answered but one lost, as one still in flight when
        // its worker exits is (`master::exited`).
        c[at::CUT].fetch_add(1, Ordering::Relaxed);
    } else {
        let m = end.method.map_or(7, method_index);
        c[at::REQUESTS + m * CLASSES.len() + class_index(end.status)]
            .fetch_add(1, Ordering::Relaxed);
        observe(c, at::DURATION, end.elapsed);
        if let Some(e) = end.refusal {
            c[at::REFUSALS + refusal_index(e)].fetch_add(1, Ordering::Relaxed);
        }
    }
    if tracked.is_none() {
        // Not counted as they went (`Track::sent`).
        c[at::BODY_OUT].fetch_add(end.sent, Ordering::Relaxed);
    }
    let Some(t) = end.track.filter(|t| t.on()) else {
        return;
    };
    if let Some(d) = t.declared {
        let owed = d.saturating_sub(t.read.load(Ordering::Relaxed));
        slot.gauges.0[gauge::PENDING].fetch_sub(owed as i64, Ordering::Relaxed);
    }
    if t.slow(super::slow_upload_rate()) {
        c[at::SLOW_UPLOADS].fetch_add(1, Ordering::Relaxed);
    }
    // Last: a scrape that sees the request gone sees all of the above.
    t.to(State::Free);
    match t.entry {
        Some(e) => e.release(),
        None => {
            slot.unlisted.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An `accept()` that failed and is retried (`server/accept.rs`).
pub(crate) fn accept_failed() {
    if let Some(s) = super::worker_slot() {
        s.counters.0[at::ACCEPT_FAILURES].fetch_add(1, Ordering::Relaxed);
    }
}

/// An open connection, counted while it lives.
pub(crate) struct Connection(Option<&'static Slot>);

impl Connection {
    pub(crate) fn open() -> Connection {
        let slot = super::worker_slot();
        if let Some(s) = slot {
            s.gauges.0[gauge::OPEN].fetch_add(1, Ordering::Relaxed);
            s.counters.0[at::CONNECTIONS].fetch_add(1, Ordering::Relaxed);
        }
        Connection(slot)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            s.gauges.0[gauge::OPEN].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails to compile when a `RequestError` is added: add it to `REFUSALS` too.
    #[test]
    fn every_refusal_has_a_counter() {
        fn listed(e: RequestError) -> bool {
            match e {
                RequestError::MalformedHead
                | RequestError::RequestLineTooLong
                | RequestError::TooManyFields
                | RequestError::FieldTooLarge
                | RequestError::HeadTooLarge
                | RequestError::BodyTooLarge
                | RequestError::HeaderTimeout
                | RequestError::BadHost
                | RequestError::BadTransferEncoding
                | RequestError::BadContentLength
                | RequestError::LengthAndChunked
                | RequestError::DuplicateField
                | RequestError::MalformedBody
                | RequestError::Overloaded
                | RequestError::ShuttingDown
                | RequestError::AppFailed
                | RequestError::NoResponse
                | RequestError::ConflictingScheme
                | RequestError::Connect
                | RequestError::BodyTimeout
                | RequestError::LengthTooLarge
                | RequestError::ClientGone
                | RequestError::StopCut
                | RequestError::ExpectationFailed
                | RequestError::BadMethod
                | RequestError::Fragment => REFUSALS.contains(&e),
            }
        }
        assert!(REFUSALS.iter().all(|e| listed(*e)));
        assert!(REFUSALS.len() < super::super::region::REASONS);
    }

    #[test]
    fn classes() {
        assert_eq!(class_index(200), 1);
        assert_eq!(class_index(503), 4);
        assert_eq!(class_index(0), 5);
        assert_eq!(class_index(999), 5);
    }

    /// What metrics add to one hello-world request, in ns: the calls a GET
    /// makes (start, began, sent, finished) on a real slot. Not a pass/fail
    /// test (tests assert no timings); run it for the figure with
    /// `cargo test --release --lib metrics_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn metrics_cost_per_hello_request() -> std::io::Result<()> {
        let region = super::super::region::Region::map(1)?;
        let slot = region
            .slot(0)
            .ok_or_else(|| std::io::Error::other("no slot"))?;
        let (head, _) = http::Request::get("/hello/world")
            .body(())
            .map_err(std::io::Error::other)?
            .into_parts();
        let peer: SocketAddr = "127.0.0.1:40000".parse().map_err(std::io::Error::other)?;
        let method = http::Method::GET;
        let n = 2_000_000u32;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = Instant::now();
            for _ in 0..n {
                let queued = Instant::now();
                let t = Track::start_in(slot, &head, Some(peer), Some(0), queued);
                t.began(queued);
                t.sent(13);
                finished(&Ended {
                    track: Some(std::hint::black_box(&t)),
                    method: Some(&method),
                    status: 200,
                    sent: 13,
                    refusal: None,
                    aborted: false,
                    elapsed: queued.elapsed(),
                });
            }
            best = best.min(t0.elapsed().as_nanos() as f64 / f64::from(n));
        }
        // The loop's Instant::now() is the record's, not metrics'.
        println!("metrics per hello request: {best:.0} ns (best of 5 x {n})");
        Ok(())
    }

    /// A response's bytes move the counter as they go, and its end does not
    /// count them again.
    #[test]
    fn response_bytes_count_as_they_go_and_once() -> std::io::Result<()> {
        let region = super::super::region::Region::map(1)?;
        let slot = region
            .slot(0)
            .ok_or_else(|| std::io::Error::other("no slot"))?;
        let (head, _) = http::Request::get("/big")
            .body(())
            .map_err(std::io::Error::other)?
            .into_parts();
        let out = || slot.counters.0[at::BODY_OUT].load(Ordering::Relaxed);
        let t = Track::start_in(slot, &head, None, Some(0), Instant::now());
        t.sent(1000);
        t.sent(24);
        assert_eq!(out(), 1024);
        finished(&Ended {
            track: Some(&t),
            method: Some(&http::Method::GET),
            status: 200,
            sent: 1024,
            refusal: None,
            aborted: false,
            elapsed: Duration::ZERO,
        });
        assert_eq!(out(), 1024);
        Ok(())
    }

    #[test]
    fn slow_is_rate_from_head_to_last_byte() {
        let t = Track::off();
        let t = Track {
            started_ns: 1_000_000_000,
            ..t
        };
        t.read.store(1000, Ordering::Relaxed);
        t.last_byte_ns.store(3_000_000_000, Ordering::Relaxed);
        assert!(t.slow(1000), "500 B/s");
        assert!(!t.slow(400));
        assert!(!t.slow(0), "off");
    }
}
