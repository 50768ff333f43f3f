//! `wsgi.input`: the request body, pulled from the socket only when the app reads.
//!
//! `Input` owns hyper's body stream and a `BodyBuffer`. Nothing is polled
//! before the app's first read, which is what makes hyper send `100 Continue`
//! lazily and lets an app refuse a body it never reads. Every read that must
//! wait goes through the request's `Waiter` with one `--body-timeout` rule
//! for both modes: thread mode blocks in `read()` with the GIL released;
//! gevent mode calls the `_try_*` methods, which never block and hand back a
//! park order instead, and `python/siesta/_gevent.py` parks the greenlet.
//! What the app left unread is handed over by `take_rest()` for draining.
//! `BodySource` is the one place body bytes are counted, so
//! `--limit-request-body` for bodies without a declared length is enforced
//! here for both modes (a declared length over it never reaches the app:
//! `server/service.rs` refuses it). With metrics on, `Input` also tells
//! the request's metrics track (through a weak handle on its `Record`)
//! the bytes that came, a read that parks, and a read that failed.

use crate::error::InputError;
use crate::exchange::record::Record;
use crate::exchange::BodyEnd;
use crate::exec::wait::{Waited, Waiter};
use crate::metrics::{InputFailure, State};
use crate::wsgi::body::BodyBuffer;
use http_body::Body;
use hyper::body::Incoming;
use parking_lot::Mutex;
use pyo3::exceptions::{PyOverflowError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pyo3::create_exception!(
    _siesta,
    ClientDisconnected,
    pyo3::exceptions::PyConnectionResetError,
    "The client went away before the request body was complete, or while the response \
     was written (a ConnectionResetError, as a socket's, so an OSError)."
);

pyo3::create_exception!(
    _siesta,
    RequestTooLarge,
    pyo3::exceptions::PyOSError,
    "The request body grew past --limit-request-body (uncaught, the answer is 413)."
);

pyo3::create_exception!(
    _siesta,
    ClientTimeout,
    pyo3::exceptions::PyTimeoutError,
    "The client sent no body bytes within the body timeout (a TimeoutError, so an OSError)."
);

/// What a read is waiting for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Need {
    Bytes(usize),
    Line(usize),
    All,
}

/// The network side of the body and what was buffered from it.
pub(crate) struct BodySource {
    /// hyper's stream; `None` once it ended, failed or was given up.
    body: Option<Incoming>,
    buf: BodyBuffer,
    eof: bool,
    error: Option<InputError>,
    /// Whether the body was ever polled (after which hyper has answered any
    /// `Expect: 100-continue`).
    polled: bool,
    /// The request asked for `100 Continue`.
    expect_continue: bool,
    /// Since when the current read has waited without a body byte
    /// (`--body-timeout` counts from here).
    idle_since: Instant,
    /// A read gave up after `--body-timeout` (the answer is then 408).
    timed_out: bool,
    /// Body bytes received from hyper so far.
    received: u64,
    /// `--limit-request-body`: more than this and reads fail with `TooLarge`.
    limit: Option<u64>,
    /// The request's record, for its metrics (`None` when they are off);
    /// weak, so a kept `wsgi.input` never holds the request open.
    meter: Option<Weak<Record>>,
    /// Told when the body has been read to its end (the connection may
    /// then rest, `server/`'s `drive`).
    end: Option<BodyEnd>,
    /// The pump the waiting read left with hyper. hyper may keep it after
    /// the read is answered another way (the reader's own poll), so it is
    /// retired then: left armed, it would read on for a read already done.
    pump: Option<Arc<BodyPump>>,
}

impl BodySource {
    /// `received`: when the head was parsed, the idle clock's start until
    /// the first read restarts it (every read does: no clock is read here).
    pub(crate) fn new(
        body: Option<Incoming>,
        end: Option<BodyEnd>,
        expect_continue: bool,
        limit: Option<u64>,
        received: Instant,
    ) -> Self {
        let eof = body.as_ref().is_none_or(|b| b.is_end_stream());
        BodySource {
            body: if eof { None } else { body },
            buf: BodyBuffer::default(),
            eof,
            error: None,
            timed_out: false,
            polled: false,
            expect_continue,
            idle_since: received,
            received: 0,
            limit,
            meter: None,
            end,
            pump: None,
        }
    }

    /// The waker a read waiting for `need` leaves with hyper: a new pump,
    /// which retires the one before it.
    fn arm(&mut self, source: Weak<Mutex<BodySource>>, need: Need, then: Waker) -> Waker {
        self.retire();
        let pump = Arc::new(BodyPump {
            source,
            need,
            then,
            done: AtomicBool::new(false),
        });
        self.pump = Some(pump.clone());
        Waker::from(pump)
    }

    /// The body is given up while a read may wait for it (a thread or
    /// greenlet of the app's own, reading after the app returned): its pump
    /// stands down, and the reader, woken, finds the body's error.
    fn release_reader(&mut self) -> Option<Waker> {
        let pump = self.pump.take()?;
        (!pump.done.swap(true, Ordering::AcqRel)).then(|| pump.then.clone())
    }

    /// The waiting read is over: its pump, if hyper still has it, does nothing.
    fn retire(&mut self) {
        if let Some(pump) = self.pump.take() {
            pump.done.store(true, Ordering::Release);
        }
    }

    /// Tells the request's metrics about body bytes or a failure.
    fn meter(&self, f: impl FnOnce(&crate::metrics::Track)) {
        if let Some(rec) = self.meter.as_ref().and_then(Weak::upgrade) {
            f(&rec.track);
        }
    }

    fn satisfied(&self, need: Need) -> bool {
        self.eof
            || match need {
                Need::Bytes(n) => self.buf.len() >= n,
                Need::Line(0) => true,
                Need::Line(limit) => self.buf.line_len(limit).is_some(),
                Need::All => false,
            }
    }

    /// Pulls frames until `need` is met, the body ends, or hyper has nothing
    /// yet. `progressed` is set whenever a data frame arrived.
    fn poll_need(
        &mut self,
        cx: &mut Context<'_>,
        need: Need,
        progressed: &mut bool,
    ) -> Poll<Result<(), InputError>> {
        loop {
            if self.satisfied(need) {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &self.error {
                return Poll::Ready(Err(e.clone()));
            }
            let Some(body) = self.body.as_mut() else {
                self.eof = true;
                continue;
            };
            self.polled = true;
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.eof = true;
                    self.body = None;
                    if let Some(end) = self.end.take() {
                        end.reached();
                    }
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        *progressed = true;
                        self.received += data.len() as u64;
                        self.meter(|t| t.body_read(data.len() as u64));
                        if self.limit.is_some_and(|max| self.received > max) {
                            self.over_limit();
                        } else {
                            self.buf.push(data);
                            if self.body.as_ref().is_some_and(|b| b.is_end_stream()) {
                                // The declared length is in: the end is known
                                // now, not only at a read past it (which an
                                // app reading exactly CONTENT_LENGTH never
                                // makes), so the connection is not taken for
                                // one with a body still coming.
                                self.eof = true;
                                self.body = None;
                                if let Some(end) = self.end.take() {
                                    end.reached();
                                }
                            }
                        }
                    }
                    Err(frame) => {
                        if frame
                            .trailers_ref()
                            .is_some_and(|t| !super::trailers::allowed(t))
                        {
                            self.error = Some(InputError::Malformed);
                            self.body = None;
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    let e = match body_error(&e) {
                        InputError::Disconnected
                            if self.end.as_ref().is_some_and(|end| end.cut_by_keep_alive()) =>
                        {
                            InputError::KeepAliveCut
                        }
                        e => e,
                    };
                    self.meter(|t| {
                        t.input_failed(match e {
                            InputError::Malformed => InputFailure::Malformed,
                            _ => InputFailure::Disconnected,
                        })
                    });
                    self.error = Some(e);
                    self.body = None;
                }
            }
        }
    }

    /// The body passed `--limit-request-body`: stop reading it (hyper then
    /// closes the connection after the response), drop what is buffered,
    /// and fail every later read.
    fn over_limit(&mut self) {
        self.meter(|t| t.input_failed(InputFailure::TooLarge));
        self.body = None;
        self.buf = BodyBuffer::default();
        self.error = Some(InputError::TooLarge);
    }

    /// How many buffered bytes a satisfied read of `need` hands out.
    fn available(&self, need: Need) -> usize {
        match need {
            Need::Bytes(n) => self.buf.available(n),
            Need::All => self.buf.len(),
            Need::Line(limit) => self.buf.line_available(limit, true).unwrap_or(0),
        }
    }

    /// Hands a satisfied read its bytes: one `bytes` object, filled
    /// straight from the buffered chunks (one copy per byte).
    fn take_bytes<'py>(&mut self, py: Python<'py>, need: Need) -> PyResult<Bound<'py, PyBytes>> {
        let n = self.available(need);
        new_bytes(py, n, |sink| self.buf.drain(n, sink))
    }

    /// The body turned out to be malformed (the answer is then 400).
    pub(crate) fn malformed(&self) -> bool {
        self.error == Some(InputError::Malformed)
    }

    /// The client went away (or its connection was cut) before the body
    /// was complete.
    pub(crate) fn disconnected(&self) -> bool {
        matches!(
            self.error,
            Some(InputError::Disconnected | InputError::KeepAliveCut)
        )
    }

    /// The body passed `--limit-request-body` (the answer is then 413).
    pub(crate) fn too_large(&self) -> bool {
        self.error == Some(InputError::TooLarge)
    }

    /// A read waited `--body-timeout` for the client (the answer is then 408).
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// The response is going out while the client still waits for
    /// `100 Continue`: it will never send the body, so stop waiting for it.
    pub(crate) fn expectation_pending(&self) -> bool {
        self.expect_continue && !self.polled && !self.eof
    }

    /// Whether the rest of the body is in memory: it ended, or the
    /// connection has read its end from the socket (a chunked body sent
    /// whole, and what followed it), so discarding it takes no wait.
    pub(crate) fn end_read_in(&self) -> bool {
        self.eof || self.end.as_ref().is_some_and(BodyEnd::read_in)
    }

    /// How many body bytes hyper has yet to hand over: 0 once the body
    /// ended, failed or was given up; `None` when that is not known (a
    /// chunked body not read to its end).
    pub(crate) fn owed(&self) -> Option<u64> {
        match &self.body {
            Some(body) if !self.eof => body.size_hint().exact(),
            _ => Some(0),
        }
    }
}

/// The waker a waiting read leaves with hyper's body (both modes).
///
/// Without it, each frame hyper delivers would wake the reader (a parked
/// greenlet through the hub: an eventfd write and a switch; a blocked pool
/// thread: a futex wake and a switch) only for a `read(65536)` that got a
/// few KiB to wait again. hyper calls this waker where the I/O is driven
/// when a frame is ready; it takes the frame into the buffer there and
/// wakes the reader once, when the read can be answered (or the body ended
/// or failed). It polls only while the pending read's need
/// is unmet, so it reads no further ahead than the reader would. If the
/// body is busy (the reader itself is polling) or gone, it just wakes
/// the reader, which polls again.
struct BodyPump {
    /// Weak: hyper's channel holds this waker, and the body holds hyper's
    /// channel, so a strong handle would be a cycle.
    source: Weak<Mutex<BodySource>>,
    /// What the parked read waits for.
    need: Need,
    /// The waiting reader: its greenlet's token, or its thread.
    then: Waker,
    /// `then` was woken: the reader polls again (and leaves a new waker
    /// if it must park again), so this one only stays registered with
    /// hyper. From here on it does nothing: polling on with the old need
    /// would read the body ahead of the app, and waking would wake nobody.
    done: AtomicBool,
}

impl std::task::Wake for BodyPump {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.done.load(Ordering::Acquire) {
            return;
        }
        if let Some(source) = self.source.upgrade() {
            if let Some(mut src) = source.try_lock() {
                if self.done.load(Ordering::Acquire) {
                    // Retired (`arm`, `retire`) while this wake began.
                    return;
                }
                let waker = Waker::from(self.clone());
                let mut progressed = false;
                let polled =
                    src.poll_need(&mut Context::from_waker(&waker), self.need, &mut progressed);
                if progressed {
                    src.idle_since = Instant::now();
                }
                if polled.is_pending() {
                    return;
                }
            }
        }
        if !self.done.swap(true, Ordering::AcqRel) {
            self.then.wake_by_ref();
        }
    }
}

/// What a failed body read means: hyper reports bad chunked framing as an
/// `InvalidData` or `InvalidInput` I/O error; anything else (EOF mid-body,
/// a reset) is the client going away.
fn body_error(e: &hyper::Error) -> InputError {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) {
                return InputError::Malformed;
            }
        }
        source = err.source();
    }
    InputError::Disconnected
}

/// The `wsgi.input` object (thread mode) and the raw reader under gevent's wrapper.
#[pyclass(frozen, module = "siesta._siesta")]
pub(crate) struct Input {
    /// Shared with the `BodyPump` a waiting read leaves with hyper.
    source: Arc<Mutex<BodySource>>,
    /// `--body-timeout`: idle time allowed between body bytes.
    timeout: Option<Duration>,
    /// How this request waits for bytes.
    waiter: Waiter,
    /// Whether the request's metrics are on (then `BodySource::meter` is set).
    metered: bool,
    /// One blocking read at a time (thread mode).
    turn: Turn,
}

/// One reader at a time (thread mode): hyper's body keeps a single waker,
/// so a second thread's read polling the body while a first one waits would
/// take its place there and leave it asleep. A read waiting for its turn
/// waits as a read waits for bytes (`Waiter::Thread`): with the GIL
/// released and, on a pool thread, driving the I/O meanwhile, so the turn's
/// holder gets its bytes even when this is the only thread that could
/// drive. (Gevent mode takes turns in `python/siesta/_gevent.py`.)
#[derive(Default)]
struct Turn(Mutex<TurnState>);

#[derive(Default)]
struct TurnState {
    busy: bool,
    /// Reads waiting for the turn, woken when it is given back.
    waiting: Vec<Waker>,
}

/// A turn taken; ends when dropped.
struct TurnHeld<'a>(&'a Turn);

impl Turn {
    fn take(&self, py: Python<'_>) -> TurnHeld<'_> {
        let ask = |w: &Waker| {
            let mut st = self.0.lock();
            if !st.busy {
                st.busy = true;
                return Poll::Ready(());
            }
            if !st.waiting.iter().any(|x| x.will_wake(w)) {
                st.waiting.push(w.clone());
            }
            Poll::Pending
        };
        if ask(Waker::noop()).is_pending() {
            py.detach(|| Waiter::Thread.wait(None, ask));
        }
        TurnHeld(self)
    }
}

impl Drop for TurnHeld<'_> {
    fn drop(&mut self) {
        let waiting = {
            let mut st = self.0 .0.lock();
            st.busy = false;
            std::mem::take(&mut st.waiting)
        };
        for w in waiting {
            w.wake();
        }
    }
}

impl Input {
    pub(crate) fn new(source: BodySource, timeout: Option<Duration>, waiter: Waiter) -> Self {
        Input {
            source: Arc::new(Mutex::new(source)),
            timeout,
            waiter,
            metered: false,
            turn: Turn::default(),
        }
    }

    /// Reports body progress to `record`'s metrics track (if metrics are on).
    pub(crate) fn metered(mut self, record: &Arc<Record>) -> Self {
        if record.track.on() {
            self.source.lock().meter = Some(Arc::downgrade(record));
            self.metered = true;
        }
        self
    }

    /// The body state, unless a read (on another thread) holds it.
    pub(crate) fn try_source(&self) -> Option<parking_lot::MutexGuard<'_, BodySource>> {
        self.source.try_lock()
    }

    /// Waits until `need` is met, the body fails, or `--body-timeout`
    /// passes without a byte; a greenlet gets a park order instead of
    /// waiting. `fresh` starts a new read (the idle clock restarts). The
    /// bytes stay buffered: the caller takes them with the GIL (`read_now`).
    fn read_wait(&self, need: Need, fresh: bool) -> Result<Waited<()>, InputError> {
        if !self.metered {
            return self.wait_need(need, fresh);
        }
        self.source.lock().meter(|t| t.to(State::Reading));
        let out = self.wait_need(need, fresh);
        self.source.lock().meter(|t| {
            if matches!(out, Err(InputError::Timeout)) {
                t.input_failed(InputFailure::Timeout);
            }
            if !matches!(out, Ok(Waited::Park(_))) {
                t.to(State::App);
            }
        });
        out
    }

    /// `read_wait` without the metrics. Each poll leaves hyper a `BodyPump`
    /// and the body is locked only while polled, so frames that arrive
    /// while the read waits are taken by whoever drives the I/O (the I/O
    /// thread for a parked greenlet, the driving pool thread for a blocked
    /// one), and the reader wakes once, when its read can be answered,
    /// instead of once per frame.
    fn wait_need(&self, need: Need, fresh: bool) -> Result<Waited<()>, InputError> {
        let mut since = {
            let mut src = self.source.lock();
            if fresh {
                src.idle_since = Instant::now();
            }
            src.idle_since
        };
        loop {
            let deadline = self.timeout.map(|t| since + t);
            let waited = self.waiter.wait(deadline, |w| {
                let mut src = self.source.lock();
                let pump = src.arm(Arc::downgrade(&self.source), need, w.clone());
                let mut progressed = false;
                let polled = src.poll_need(&mut Context::from_waker(&pump), need, &mut progressed);
                if progressed {
                    src.idle_since = Instant::now();
                }
                polled
            });
            return match waited {
                Waited::Ready(Ok(())) => Ok(Waited::Ready(())),
                Waited::Ready(Err(e)) => Err(e),
                Waited::TimedOut => {
                    // Bytes that came meanwhile (polled here or pumped)
                    // moved the idle clock: the read waits on from there.
                    let mut src = self.source.lock();
                    let now_since = src.idle_since;
                    if now_since == since {
                        src.timed_out = true;
                        Err(InputError::Timeout)
                    } else {
                        since = now_since;
                        continue;
                    }
                }
                Waited::Park(p) => Ok(Waited::Park(p)),
            };
        }
    }

    /// What is buffered (or hyper already has) answers at once: no GIL
    /// release, no waker, no token. `None` when the read must wait.
    fn read_now<'py>(&self, py: Python<'py>, need: Need) -> Option<PyResult<Bound<'py, PyBytes>>> {
        let mut src = self.source.lock();
        let mut progressed = false;
        let noop = Waker::noop();
        let answer = match src.poll_need(&mut Context::from_waker(noop), need, &mut progressed) {
            Poll::Ready(Ok(())) => src.take_bytes(py, need),
            Poll::Ready(Err(e)) => Err(input_error(e)),
            Poll::Pending => return None,
        };
        src.retire();
        Some(answer)
    }

    /// One read: the bytes, or (gevent mode) a park order `(token,
    /// timeout)`. Thread mode blocks with the GIL released instead; what is
    /// buffered already answers without releasing it.
    fn read_or_park<'py>(
        &self,
        py: Python<'py>,
        need: Need,
        fresh: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        loop {
            if let Some(r) = self.read_now(py, need) {
                if !fresh && self.metered {
                    // Back from a park (gevent): the read ends here, not in
                    // `read_wait`, which left the request `Reading`.
                    self.source.lock().meter(|t| t.to(State::App));
                }
                return r.map(Bound::into_any);
            }
            // Ready: the need is met (or the body ended or failed), and the
            // next `read_now` answers; it waits again only if another
            // thread took the bytes in between.
            let failed = match self.waiter.outside_gil(py, || self.read_wait(need, fresh)) {
                Ok(Waited::Ready(())) => continue,
                Ok(Waited::Park(p)) => {
                    return crate::wsgi::start_response::park_tuple(py, p);
                }
                Ok(Waited::TimedOut) => InputError::Timeout,
                Err(e) => e,
            };
            // The read is over: its pump must not read on for it.
            self.source.lock().retire();
            return Err(input_error(failed));
        }
    }

    /// A read that blocks (thread mode).
    fn read_need(&self, py: Python<'_>, need: Need) -> PyResult<Py<PyBytes>> {
        crate::exec::threads::app_called(); // an upload read on is no stuck app
        let _turn = self.turn.take(py);
        let got = self.read_or_park(py, need, true)?;
        got.cast_into::<PyBytes>().map(Bound::unbind).map_err(|_| {
            pyo3::exceptions::PyRuntimeError::new_err(
                "a greenlet must read wsgi.input through its gevent wrapper",
            )
        })
    }

    /// Hands what the app left unread to the runtime for a bounded discard,
    /// with the token to tell when it has all been read.
    pub(crate) fn take_rest(&self) -> Option<(Incoming, Option<BodyEnd>)> {
        let (rest, reader) = {
            let mut src = self.source.lock();
            src.buf = BodyBuffer::default();
            if src.eof {
                return None;
            }
            src.error.get_or_insert(InputError::Abandoned);
            let end = src.end.take();
            (src.body.take().map(|b| (b, end)), src.release_reader())
        };
        if let Some(w) = reader {
            w.wake();
        }
        rest
    }

    /// Gives the body up without reading it (pending `100-continue`).
    pub(crate) fn abandon(&self) {
        let reader = {
            let mut src = self.source.lock();
            src.body = None;
            src.error.get_or_insert(InputError::HeldBack);
            src.release_reader()
        };
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// A new `bytes` object of `len` bytes, filled by `fill` through the sink it
/// is handed (pieces appended in order): the one copy of a body byte into
/// Python, with no zeroing first (`PyBytes::new_with` zeroes). Bytes `fill`
/// leaves unwritten are zeroed, so no uninitialised memory ever reaches Python.
fn new_bytes<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut dyn FnMut(&[u8])),
) -> PyResult<Bound<'py, PyBytes>> {
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("read too large"))?;
    // SAFETY: with the GIL held, `PyBytes_FromStringAndSize(NULL, size)`
    // returns a new, uniquely owned bytes object (or NULL with an exception
    // set, turned into `Err`) whose buffer holds `len` bytes plus a NUL.
    // Nothing else sees the object until this function returns it, and
    // every write below stays inside `base[..len]`.
    unsafe {
        let ptr = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        let obj = Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyBytes>();
        let base = pyo3::ffi::PyBytes_AsString(ptr).cast::<u8>();
        let mut at = 0usize;
        fill(&mut |piece: &[u8]| {
            let n = piece.len().min(len - at);
            std::ptr::copy_nonoverlapping(piece.as_ptr(), base.add(at), n);
            at += n;
        });
        if at < len {
            std::ptr::write_bytes(base.add(at), 0, len - at);
        }
        Ok(obj)
    }
}

/// A size argument as a file's `read` takes it: None, or any int. One past
/// `isize` either way asks for as much as there is, as a negative one does
/// (the body is bounded; a huge `read(2**70)` raised OverflowError).
fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<isize>> {
    let Some(size) = size.filter(|s| !s.is_none()) else {
        return Ok(None);
    };
    match size.extract::<isize>() {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.is_instance_of::<PyOverflowError>(size.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

fn size_need(size: Option<isize>) -> Need {
    match size {
        Some(n) if n >= 0 => Need::Bytes(n as usize),
        _ => Need::All,
    }
}

fn line_need(size: Option<isize>) -> Need {
    match size {
        Some(n) if n >= 0 => Need::Line(n as usize),
        _ => Need::Line(usize::MAX),
    }
}

pub(crate) fn input_error(e: InputError) -> PyErr {
    match e {
        InputError::Timeout => ClientTimeout::new_err(e.to_string()),
        InputError::TooLarge => RequestTooLarge::new_err(e.to_string()),
        _ => ClientDisconnected::new_err(e.to_string()),
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read(&self, py: Python<'_>, size: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyBytes>> {
        self.read_need(py, size_need(size_arg(size)?))
    }

    #[pyo3(signature = (size=None))]
    fn readline(&self, py: Python<'_>, size: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyBytes>> {
        self.read_need(py, line_need(size_arg(size)?))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint)?;
        let lines = PyList::empty(py);
        let mut total = 0usize;
        loop {
            let line = self.read_need(py, Need::Line(usize::MAX))?;
            let n = line.bind(py).as_bytes().len();
            if n == 0 {
                break;
            }
            lines.append(line)?;
            total += n;
            if matches!(hint, Some(h) if h > 0 && total >= h as usize) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        let line = self.read_need(py, Need::Line(usize::MAX))?;
        if line.bind(py).as_bytes().is_empty() {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(line)
    }

    /// gevent mode: `read(size)` that never blocks: bytes, or a park order
    /// `(token, timeout)` after which it is called again with `fresh=False`.
    #[pyo3(signature = (size, fresh=true))]
    fn _try_read<'py>(
        &self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
        fresh: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.read_or_park(py, size_need(size_arg(size)?), fresh)
    }

    /// gevent mode: a parked read ended by an exception thrown into its
    /// greenlet (a `gevent.Timeout`, a kill): its pump must not read on,
    /// and the request is back in the app, not `Reading`.
    fn _retire(&self) {
        let mut src = self.source.lock();
        src.retire();
        if self.metered {
            src.meter(|t| t.to(State::App));
        }
    }

    /// gevent mode: `readline(size)` that never blocks (see `_try_read`).
    #[pyo3(signature = (size, fresh=true))]
    fn _try_readline<'py>(
        &self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
        fresh: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.read_or_park(py, line_need(size_arg(size)?), fresh)
    }
}
