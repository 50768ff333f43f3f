//! `wsgi.input`: the request body, pulled from the socket only when the app reads.
//!
//! `Input` owns hyper's body stream and a `BodyBuffer`. Nothing is polled
//! before the app's first read, which is what makes hyper send `100 Continue`
//! lazily and lets an app refuse a body it never reads. Thread mode blocks in
//! `read()` with the GIL released (`exec::park`); gevent mode calls the
//! `_try_*` methods, which never block and register a wake token instead, and
//! `python/siesta/_gevent.py` parks the greenlet. Draining what the app left
//! unread is `finish()`, called once the response is done.

use crate::error::InputError;
use crate::exec::gevent::Hub;
use crate::exec::park;
use crate::wsgi::body::BodyBuffer;
use bytes::Bytes;
use http_body::Body;
use hyper::body::Incoming;
use parking_lot::Mutex;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pyo3::create_exception!(
    _siesta,
    ClientDisconnected,
    pyo3::exceptions::PyOSError,
    "The client went away before the request body was complete."
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
}

impl BodySource {
    pub(crate) fn new(body: Option<Incoming>, expect_continue: bool) -> Self {
        let eof = body.as_ref().is_none_or(|b| b.is_end_stream());
        BodySource {
            body: if eof { None } else { body },
            buf: BodyBuffer::default(),
            eof,
            error: None,
            polled: false,
            expect_continue,
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
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        *progressed = true;
                        self.buf.push(data);
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
                    self.error = Some(body_error(&e));
                    self.body = None;
                }
            }
        }
    }

    fn take(&mut self, need: Need) -> Bytes {
        match need {
            Need::Bytes(n) => self.buf.take(n),
            Need::All => self.buf.take_all(),
            Need::Line(limit) => self.buf.take_line(limit, true).unwrap_or_default(),
        }
    }

    /// The body turned out to be malformed (the answer is then 400).
    pub(crate) fn malformed(&self) -> bool {
        self.error == Some(InputError::Malformed)
    }

    /// The response is going out while the client still waits for
    /// `100 Continue`: it will never send the body, so stop waiting for it.
    pub(crate) fn expectation_pending(&self) -> bool {
        self.expect_continue && !self.polled && !self.eof
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
    source: Mutex<BodySource>,
    /// `--body-timeout`: idle time allowed between body bytes.
    timeout: Option<Duration>,
    /// The hub to wake in gevent mode.
    hub: Option<Arc<Hub>>,
}

impl Input {
    pub(crate) fn new(
        source: BodySource,
        timeout: Option<Duration>,
        hub: Option<Arc<Hub>>,
    ) -> Self {
        Input {
            source: Mutex::new(source),
            timeout,
            hub,
        }
    }

    /// The body state, unless a read (on another thread) holds it.
    pub(crate) fn try_source(&self) -> Option<parking_lot::MutexGuard<'_, BodySource>> {
        self.source.try_lock()
    }

    /// Blocks the calling thread (GIL released by the caller) until `need`.
    fn read_blocking(&self, need: Need) -> Result<Bytes, InputError> {
        let mut src = self.source.lock();
        let mut last = Instant::now();
        loop {
            let mut progressed = false;
            let deadline = self.timeout.map(|t| last + t);
            let r = park::wait(deadline, |w| {
                src.poll_need(&mut Context::from_waker(w), need, &mut progressed)
            });
            match r {
                Some(Ok(())) => return Ok(src.take(need)),
                Some(Err(e)) => return Err(e),
                None if progressed => last = Instant::now(),
                None => return Err(InputError::Timeout),
            }
        }
    }

    fn read_need(&self, py: Python<'_>, need: Need) -> PyResult<Py<PyBytes>> {
        // Fast path: what is buffered already answers, no GIL release.
        let ready = {
            let mut src = self.source.lock();
            let mut progressed = false;
            let noop = Waker::noop();
            match src.poll_need(&mut Context::from_waker(noop), need, &mut progressed) {
                Poll::Ready(Ok(())) => Some(Ok(src.take(need))),
                Poll::Ready(Err(e)) => Some(Err(e)),
                Poll::Pending => None,
            }
        };
        let data = match ready {
            Some(r) => r,
            None => py.detach(|| self.read_blocking(need)),
        };
        match data {
            Ok(b) => Ok(PyBytes::new(py, &b).unbind()),
            Err(e) => Err(input_error(e)),
        }
    }

    /// Never blocks: the data, or `None` with `token` registered to be woken.
    fn try_read(&self, py: Python<'_>, need: Need, token: u64) -> PyResult<Option<Py<PyBytes>>> {
        let Some(hub) = &self.hub else {
            return self.read_need(py, need).map(Some);
        };
        let waker = hub.waker(token);
        let mut src = self.source.lock();
        let mut progressed = false;
        match src.poll_need(&mut Context::from_waker(&waker), need, &mut progressed) {
            Poll::Ready(Ok(())) => Ok(Some(PyBytes::new(py, &src.take(need)).unbind())),
            Poll::Ready(Err(e)) => Err(input_error(e)),
            Poll::Pending => Ok(None),
        }
    }

    /// Hands what the app left unread to the runtime for a bounded discard.
    pub(crate) fn take_rest(&self) -> Option<Incoming> {
        let mut src = self.source.lock();
        src.buf = BodyBuffer::default();
        if src.eof {
            return None;
        }
        src.error.get_or_insert(InputError::Abandoned);
        src.body.take()
    }

    /// Gives the body up without reading it (pending `100-continue`).
    pub(crate) fn abandon(&self) {
        let mut src = self.source.lock();
        src.body = None;
        src.error.get_or_insert(InputError::Abandoned);
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
        _ => ClientDisconnected::new_err(e.to_string()),
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read(&self, py: Python<'_>, size: Option<isize>) -> PyResult<Py<PyBytes>> {
        self.read_need(py, size_need(size))
    }

    #[pyo3(signature = (size=None))]
    fn readline(&self, py: Python<'_>, size: Option<isize>) -> PyResult<Py<PyBytes>> {
        self.read_need(py, line_need(size))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
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

    /// gevent mode: `read(size)` that returns `None` instead of blocking.
    #[pyo3(signature = (size, token))]
    fn _try_read(
        &self,
        py: Python<'_>,
        size: Option<isize>,
        token: u64,
    ) -> PyResult<Option<Py<PyBytes>>> {
        self.try_read(py, size_need(size), token)
    }

    /// gevent mode: `readline(size)` that returns `None` instead of blocking.
    #[pyo3(signature = (size, token))]
    fn _try_readline(
        &self,
        py: Python<'_>,
        size: Option<isize>,
        token: u64,
    ) -> PyResult<Option<Py<PyBytes>>> {
        self.try_read(py, line_need(size), token)
    }

    /// The body idle timeout in seconds, for the gevent wrapper.
    #[getter]
    fn _timeout(&self) -> Option<f64> {
        self.timeout.map(|t| t.as_secs_f64())
    }
}
