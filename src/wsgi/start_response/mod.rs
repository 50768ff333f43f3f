//! `start_response` and everything that follows it: one request's response side.
//!
//! A `StartResponse` is made per request and passed to the app. It stages the
//! head the app asks for (PEP 3333 rules: status `str`, latin-1 headers,
//! `exc_info`, a single call), sends it with the first non-empty body bytes,
//! picks the framing (one buffer, a stream, a file), never sends more than a
//! declared `Content-Length`, and at the end drains the request body and
//! lets go of the request's record (the server writes the access log when
//! the last holder lets go). Waiting for a slow client goes through the
//! request's `Waiter`: a blocked thread, or a greenlet told to park by the
//! `_try_*` methods. Sending the body and ending the exchange are in
//! `sending.rs`.

use crate::error::ResponseError;
use crate::exchange::record::Record;
use crate::exchange::reply::{PipeSender, Reply, ReplySender, ResponseBody};
use crate::exec::wait::{Park, Waited, Waiter};
use crate::wsgi::input::Input;
use crate::wsgi::status::{parse_header, parse_status, DeclaredLength};
use crate::wsgi::Context;

mod chunk;
mod sending;
use bytes::Bytes;
pub(crate) use chunk::chunk_bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString, PyTuple};
use std::sync::Arc;
use std::time::Instant;

/// The most headers a response may have: far beyond any real one, and below
/// what an `http::HeaderMap` holds (it panics past about 24k entries).
const MAX_HEADERS: usize = 10_000;

/// What happened to a pushed chunk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Taken; the app may go on.
    Ok,
    /// The client is gone or the declared length is reached: stop iterating.
    Stop,
}

struct Staged {
    status: StatusCode,
    reason: Option<Vec<u8>>,
    headers: HeaderMap,
    declared: Option<u64>,
}

struct State {
    /// The other end of the service future; `None` once the head is sent.
    reply: Option<ReplySender>,
    /// What the last `start_response` call asked for.
    staged: Option<Staged>,
    head_sent: bool,
    /// The stream, once a streaming head is sent.
    pipe: Option<PipeSender>,
    /// Bytes still allowed by the app's `Content-Length`.
    remaining: Option<u64>,
    /// The head sent is of a response with a body (`bodied`).
    bodied: bool,
    /// When the current wait for room in the stream began (`--body-timeout`).
    push_since: Instant,
    /// The stream's `Pipe::popped` when that wait began: a client that took
    /// a chunk since is slow, not gone, and the wait starts over.
    push_popped: u64,
    /// The connection's writes that went through when that wait began
    /// (`ConnInfo::write_progress`).
    push_writes: u64,
    /// The client went away: nothing more is sent.
    gone: bool,
    /// The request's record, held until the response is finished: the
    /// request ends (and is logged) once this and the I/O side let go.
    record: Option<Arc<Record>>,
}

/// The `start_response` callable of one request, and its response state.
#[pyclass(frozen, module = "siesta._siesta")]
pub(crate) struct StartResponse {
    state: Mutex<State>,
    ctx: Arc<Context>,
    input: Py<Input>,
    waiter: Waiter,
    is_head: bool,
}

impl StartResponse {
    pub(crate) fn new(
        ctx: Arc<Context>,
        record: Arc<Record>,
        reply: ReplySender,
        input: Py<Input>,
        waiter: Waiter,
    ) -> Self {
        let is_head = record.is_head();
        // Every wait for room restarts this (no clock is read here).
        let push_since = record.received;
        StartResponse {
            state: Mutex::new(State {
                reply: Some(reply),
                staged: None,
                head_sent: false,
                pipe: None,
                remaining: None,
                bodied: false,
                push_since,
                push_popped: 0,
                push_writes: 0,
                gone: false,
                record: Some(record),
            }),
            ctx,
            input,
            waiter,
            is_head,
        }
    }

    fn stage(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        {
            let st = self.state.lock();
            match exc_info {
                Some(info) if !info.is_none() => {
                    if st.head_sent {
                        // PEP 3333: too late to change the response; re-raise.
                        let exc = info.get_item(1)?;
                        return Err(PyErr::from_value(exc));
                    }
                }
                _ => {
                    if st.staged.is_some() || st.head_sent {
                        return Err(response_error(ResponseError::AlreadyStarted));
                    }
                }
            }
        }
        let status = status
            .cast::<PyString>()
            .map_err(|_| response_error(ResponseError::BadStatus(repr(status))))?;
        let (code, reason) = parse_status(status.to_str()?).map_err(response_error)?;
        // PEP 3333 says a list; gunicorn takes any iterable of pairs (a tuple,
        // `dict.items()`, a generator), and so does Siesta. A mapping or a
        // string is refused whole: iterating one gives its keys or characters.
        let list = headers.cast::<PyList>().ok();
        let tuple = if list.is_none() {
            headers.cast::<PyTuple>().ok()
        } else {
            None
        };
        let other = if list.is_none() && tuple.is_none() {
            let refused = headers.is_instance_of::<PyString>()
                || headers.is_instance_of::<PyBytes>()
                || headers.is_instance_of::<PyDict>();
            match headers.try_iter() {
                Ok(iter) if !refused => Some(iter),
                _ => {
                    return Err(response_error(ResponseError::HeadersNotList(type_name(
                        headers,
                    ))))
                }
            }
        } else {
            None
        };
        let count = match (&list, &tuple) {
            (Some(l), _) => l.len(),
            (None, Some(t)) => t.len(),
            (None, None) => 8,
        };
        let mut map = HeaderMap::with_capacity(count.min(MAX_HEADERS) + 2);
        let mut declared = DeclaredLength::default();
        let mut add = |item: Bound<'_, PyAny>| -> PyResult<()> {
            // PEP 3333 says tuples; a two-item list is taken too (gunicorn
            // unpacks any iterable of two, a generator too; Siesta takes
            // the two sequences apps send).
            let pair = if let Ok(t) = item.cast::<PyTuple>() {
                (t.len() == 2).then(|| (t.get_item(0), t.get_item(1)))
            } else if let Ok(l) = item.cast::<PyList>() {
                (l.len() == 2).then(|| (l.get_item(0), l.get_item(1)))
            } else {
                None
            };
            let Some((name, value)) = pair else {
                return Err(response_error(ResponseError::BadHeader(repr(&item))));
            };
            let (name, value) = (name?, value?);
            let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
                return Err(response_error(ResponseError::BadHeader(repr(&item))));
            };
            let (n, v) = parse_header(name.to_str()?, value.to_str()?).map_err(response_error)?;
            if n == http::header::CONTENT_LENGTH {
                declared.add(&v).map_err(response_error)?;
            }
            if map.len() >= MAX_HEADERS || map.try_append(n, v).is_err() {
                return Err(response_error(ResponseError::TooManyHeaders(MAX_HEADERS)));
            }
            Ok(())
        };
        if let Some(l) = list {
            for item in l.iter() {
                add(item)?;
            }
        } else if let Some(t) = tuple {
            for item in t.iter() {
                add(item)?;
            }
        } else if let Some(iter) = other {
            for item in iter {
                add(item?)?;
            }
        }
        if let Some(n) = declared.length() {
            // One header, in its plain form (`" 3"` and a repeated `3` are one
            // `3`); the usual single plain one is left as it is (no allocation).
            if !declared.plain() {
                map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        let declared = declared.length();
        self.state.lock().staged = Some(Staged {
            status: code,
            reason,
            headers: map,
            declared,
        });
        Ok(())
    }

    /// Whether the response going out now must close its connection
    /// because of the request body: the client still waits for `100
    /// Continue` (RFC 9110 §10.1.1: it holds its body back; the body is
    /// given up), the body broke its framing or its limit, a read of it
    /// waited `--body-timeout` for the client (the app caught that), or the
    /// app leaves more of it than the discard after the response takes
    /// (`drain_input`), or an unknown amount (chunked, unless its end was
    /// read already). The client is told so in the head, rather than
    /// finding the connection closed under its next request.
    pub(super) fn body_closes(&self, input: &Input) -> bool {
        // A read polling the body holds the lock, and a read means the
        // expectation was answered: never wait on it here.
        let Some(src) = input.try_source() else {
            return false;
        };
        let pending = src.expectation_pending();
        let max = self.ctx.limits.drain_bytes;
        let closes = pending
            || src.malformed()
            || src.too_large()
            || src.timed_out()
            || match src.owed() {
                Some(n) => n > max,
                // Chunked: kept when its end was read with it already.
                None => !src.end_read_in(),
            };
        drop(src);
        if pending {
            input.abandon();
        }
        closes
    }

    /// Sends the staged head with `body`. Must be called with the state lock held.
    fn send_head(&self, st: &mut State, body: ResponseBody) -> Result<(), ResponseError> {
        let staged = st.staged.take().ok_or(ResponseError::NotStarted)?;
        let mut headers = staged.headers;
        // RFC 9110 §8.6: no Content-Length in a 204, whatever the app said
        // (a 304's may stay: it is the length a 200 would have had).
        if staged.status == StatusCode::NO_CONTENT {
            headers.remove(http::header::CONTENT_LENGTH);
        }
        // RFC 9110 §15.3.6: a 205 has no content, and says so with
        // `Content-Length: 0` (hyper does not know it is bodiless).
        let reset = staged.status == StatusCode::RESET_CONTENT;
        let body = if reset {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            match body {
                // A stream's receiver stays: hyper drops it unpolled, and the
                // app's next chunk finds the pipe closed.
                ResponseBody::Stream(_) => body,
                _ => ResponseBody::Empty,
            }
        } else {
            body
        };
        if self.body_closes(self.input.get()) {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if !headers.contains_key(http::header::SERVER) {
            headers.insert(http::header::SERVER, HeaderValue::from_static("siesta"));
        }
        st.remaining = if reset { Some(0) } else { staged.declared };
        st.bodied = self.bodied(staged.status);
        st.head_sent = true;
        let reply = Reply {
            status: staged.status,
            reason: staged.reason.map(Bytes::from),
            headers,
            body,
            refusal: None,
        };
        if let Some(tx) = st.reply.take() {
            if !self.waiter.hand_over(|| tx.send(reply)) {
                st.gone = true;
            }
        }
        Ok(())
    }

    /// Whether a response with `status` to this request carries a body:
    /// not to HEAD, and not 1xx, 204, 205 or 304 (RFC 9110 §6.4.1, §15.3.6).
    fn bodied(&self, status: StatusCode) -> bool {
        !self.is_head
            && !status.is_informational()
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::RESET_CONTENT
            && status != StatusCode::NOT_MODIFIED
    }

    /// `write()` before `start_response()` is the app's error.
    fn check_started(&self) -> PyResult<()> {
        let st = self.state.lock();
        if !st.head_sent && st.staged.is_none() {
            return Err(response_error(ResponseError::NotStarted));
        }
        Ok(())
    }

    /// Clips a chunk to the declared length; `None` once it is reached.
    fn clip(st: &mut State, mut chunk: Bytes) -> Option<Bytes> {
        if let Some(rem) = st.remaining.as_mut() {
            if *rem == 0 {
                return None;
            }
            if chunk.len() as u64 > *rem {
                chunk.truncate(*rem as usize);
            }
            *rem -= chunk.len() as u64;
        }
        Some(chunk)
    }
}

/// A park order as Python sees it: `(token, timeout seconds or None)`.
pub(crate) fn park_tuple<'py>(py: Python<'py>, p: Park) -> PyResult<Bound<'py, PyAny>> {
    Ok((p.token, p.timeout.map(|t| t.as_secs_f64()))
        .into_pyobject(py)?
        .into_any())
}

/// The name of an object's type, for an error that says what was given.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<object>".into())
}

pub(crate) fn response_error(e: ResponseError) -> PyErr {
    match e {
        ResponseError::NotBytes(_) | ResponseError::HeadersNotList(_) => {
            pyo3::exceptions::PyTypeError::new_err(e.to_string())
        }
        ResponseError::AlreadyStarted | ResponseError::NotStarted => {
            pyo3::exceptions::PyAssertionError::new_err(e.to_string())
        }
        _ => PyValueError::new_err(e.to_string()),
    }
}

#[pymethods]
impl StartResponse {
    /// `start_response(status, headers, exc_info=None)`. It returns this
    /// same object as the `write()` callable: called with one bytes argument
    /// it writes (no bound method is made per request).
    #[pyo3(signature = (status, headers=None, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: Option<&Bound<'py, PyAny>>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, Self>>> {
        match headers {
            // One argument once the response started: a write, whose own
            // check names what it got (QA: `write(bytearray)` said only that
            // start_response needs headers).
            None if status.is_instance_of::<PyBytes>()
                || !status.is_instance_of::<PyString>() && slf.get().check_started().is_ok() =>
            {
                slf.get().write(slf.py(), status)?;
                Ok(None)
            }
            None if status.is_instance_of::<PyString>() => {
                Err(pyo3::exceptions::PyTypeError::new_err(
                    "start_response() needs status and headers; write() needs bytes, not str",
                ))
            }
            None => Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "start_response() needs status and headers, not one {}",
                type_name(status)
            ))),
            Some(headers) => {
                slf.get().stage(status, headers, exc_info)?;
                Ok(Some(slf.clone()))
            }
        }
    }

    /// The `write()` callable returned by `start_response` (thread mode;
    /// gevent mode's `write()` parks in Python around `_try_push`).
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        crate::exec::threads::app_called(); // a stream that goes on is no stuck app
        let chunk = chunk_bytes(data)?;
        self.check_started()?;
        if chunk.is_empty() {
            return self.head_for_write();
        }
        let sent = match self.push_now(chunk)? {
            Ok(sent) => sent,
            Err(back) => match self.waiter.outside_gil(py, || self.push_wait(back, true))? {
                Waited::Ready(sent) => sent,
                // Only a greenlet parks, and greenlets write through `_try_push`.
                Waited::Park(_) | Waited::TimedOut => Sent::Stop,
            },
        };
        if sent == Sent::Stop && self.state.lock().gone {
            return Err(crate::wsgi::input::ClientDisconnected::new_err(
                "client disconnected while the response was being written",
            ));
        }
        Ok(())
    }

    /// gevent mode: `write()` that never blocks. True: taken, go on. False:
    /// stop (client gone, gave up after `--body-timeout`, or the declared
    /// length reached; `write()` raises if the client is gone). A tuple
    /// `(token, timeout)`: park on `token` for at most `timeout` seconds,
    /// then call again with `fresh=False`. `written`: a `write()`'s data.
    #[pyo3(signature = (data, fresh=true, written=false))]
    fn _try_push<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        fresh: bool,
        written: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let chunk = chunk_bytes(data)?;
        self.check_started()?;
        if written && chunk.is_empty() {
            // write(b""), not an empty item of the iterable: the head goes.
            self.head_for_write()?;
            return Ok(PyBool::new(py, true).to_owned().into_any());
        }
        Ok(match self.push_wait(chunk, fresh)? {
            Waited::Ready(sent) => PyBool::new(py, sent == Sent::Ok).to_owned().into_any(),
            Waited::TimedOut => PyBool::new(py, false).to_owned().into_any(),
            Waited::Park(p) => park_tuple(py, p)?,
        })
    }

    /// Whether the client went away (for gevent's `write()` to raise).
    #[getter]
    fn _client_gone(&self) -> bool {
        self.state.lock().gone
    }

    /// Sends a list or a file wrapper without a stream; false otherwise.
    fn _send_fast(&self, py: Python<'_>, iterable: &Bound<'_, PyAny>) -> PyResult<bool> {
        crate::wsgi::driver::send_fast(py, self, iterable)
    }

    /// Calls the iterable's `close()`, logging what it raises (the same for
    /// both modes), then drains what is left of the request body (`None`:
    /// the app's call raised, there is no iterable).
    #[pyo3(signature = (iterable))]
    fn _close(&self, py: Python<'_>, iterable: Option<&Bound<'_, PyAny>>) {
        if let Some(it) = iterable {
            crate::wsgi::driver::close_iterable(py, it);
        }
        self.drain_input();
    }

    /// Ends the response normally (see `finish`).
    fn _finish(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py)
    }

    /// Ends the response after the app raised `exc` (see `fail`).
    fn _fail(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        self.fail(py, &PyErr::from_value(exc.clone()))
    }
}
