//! `start_response` and everything that follows it: one request's response side.
//!
//! A `StartResponse` is made per request and passed to the app. It stages the
//! head the app asks for (PEP 3333 rules: status `str`, latin-1 headers,
//! `exc_info`, a single call), sends it with the first non-empty body bytes,
//! picks the framing (one buffer, a stream, a file), never sends more than a
//! declared `Content-Length`, and at the end drains the request body and
//! writes the access log line. Blocking waits happen here only in thread
//! mode; gevent mode uses the `_try_*` methods and parks in Python.

use crate::error::ResponseError;
use crate::exec::gevent::Hub;
use crate::exec::{park, Worker};
use crate::log::access::Entry;
use crate::wsgi::input::Input;
use crate::wsgi::pipe::{Pipe, PipeEnd, Push};
use crate::wsgi::response::{FileBody, PipeSender, Reply, ResponseBody};
use crate::wsgi::status::{content_length, parse_header, parse_status};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Instant, SystemTime};
use tokio::sync::oneshot;

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
    reason: Option<String>,
    headers: HeaderMap,
    declared: Option<u64>,
}

struct State {
    /// The other end of the service future; `None` once the head is sent.
    reply: Option<oneshot::Sender<Reply>>,
    /// What the last `start_response` call asked for.
    staged: Option<Staged>,
    head_sent: bool,
    /// The stream, once a streaming head is sent.
    pipe: Option<PipeSender>,
    /// Bytes still allowed by the app's `Content-Length`.
    remaining: Option<u64>,
    /// Response body bytes handed to hyper, for `%(b)s`.
    sent: u64,
    status: u16,
    /// The client went away: nothing more is sent.
    gone: bool,
    finished: bool,
}

/// The `start_response` callable of one request, and its response state.
#[pyclass(frozen, module = "siesta._siesta")]
pub(crate) struct StartResponse {
    state: Mutex<State>,
    worker: Arc<Worker>,
    input: Py<Input>,
    hub: Option<Arc<Hub>>,
    /// The request head and timing, kept for the access log.
    head: http::request::Parts,
    peer: Option<std::net::SocketAddr>,
    received: Instant,
    received_at: SystemTime,
    is_head: bool,
}

impl StartResponse {
    pub(crate) fn new(
        worker: Arc<Worker>,
        head: http::request::Parts,
        peer: Option<std::net::SocketAddr>,
        reply: oneshot::Sender<Reply>,
        (received, received_at): (Instant, SystemTime),
        input: Py<Input>,
        hub: Option<Arc<Hub>>,
    ) -> Self {
        StartResponse {
            state: Mutex::new(State {
                reply: Some(reply),
                staged: None,
                head_sent: false,
                pipe: None,
                remaining: None,
                sent: 0,
                status: 0,
                gone: false,
                finished: false,
            }),
            worker,
            input,
            hub,
            peer,
            is_head: head.method == http::Method::HEAD,
            head,
            received,
            received_at,
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
            .map_err(|_| response_error(ResponseError::BadStatus(repr(status))))?
            .to_str()?
            .to_owned();
        let (code, reason) = parse_status(&status).map_err(response_error)?;
        let list = headers
            .cast::<PyList>()
            .map_err(|_| response_error(ResponseError::BadHeader(repr(headers))))?;
        let mut map = HeaderMap::with_capacity(list.len() + 2);
        for item in list.iter() {
            let pair = item
                .cast::<PyTuple>()
                .ok()
                .filter(|t| t.len() == 2)
                .ok_or_else(|| response_error(ResponseError::BadHeader(repr(&item))))?;
            let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
            let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
                return Err(response_error(ResponseError::BadHeader(repr(&item))));
            };
            let (n, v) = parse_header(name.to_str()?, value.to_str()?).map_err(response_error)?;
            map.append(n, v);
        }
        let declared = map
            .get(http::header::CONTENT_LENGTH)
            .and_then(content_length);
        self.state.lock().staged = Some(Staged {
            status: code,
            reason,
            headers: map,
            declared,
        });
        Ok(())
    }

    /// Sends the staged head with `body`. Must be called with the state lock held.
    fn send_head(&self, st: &mut State, body: ResponseBody) -> Result<(), ResponseError> {
        let staged = st.staged.take().ok_or(ResponseError::NotStarted)?;
        let mut headers = staged.headers;
        {
            let input = self.input.get();
            let pending = input.source().expectation_pending();
            if pending {
                // RFC 9110 §10.1.1: the client holds its body back; close
                // after this response instead of waiting for it.
                headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                input.abandon();
            }
        }
        if !headers.contains_key(http::header::SERVER) {
            headers.insert(http::header::SERVER, HeaderValue::from_static("siesta"));
        }
        st.status = staged.status.as_u16();
        st.remaining = staged.declared;
        st.head_sent = true;
        let reply = Reply {
            status: staged.status,
            reason: staged.reason.map(Bytes::from),
            headers,
            body,
        };
        if let Some(tx) = st.reply.take() {
            if tx.send(reply).is_err() {
                st.gone = true;
            }
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
        st.sent += chunk.len() as u64;
        Some(chunk)
    }

    /// The fast path: the whole body in one buffer, no channel.
    pub(crate) fn send_full(&self, chunk: Bytes) -> PyResult<bool> {
        let mut st = self.state.lock();
        if st.head_sent {
            return Ok(false);
        }
        let declared = st.staged.as_ref().and_then(|s| s.declared);
        let body = match declared {
            Some(n) if (chunk.len() as u64) > n => chunk.slice(..n as usize),
            _ => chunk,
        };
        st.sent = body.len() as u64;
        self.send_head(&mut st, ResponseBody::Full(Some(body)))
            .map_err(response_error)?;
        st.remaining = Some(0);
        Ok(true)
    }

    /// Sends a file from its descriptor; false when the head is already out.
    pub(crate) fn send_file(&self, file: std::fs::File, block: usize) -> PyResult<bool> {
        let mut st = self.state.lock();
        if st.head_sent {
            return Ok(false);
        }
        let size = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let declared = st.staged.as_ref().and_then(|s| s.declared);
        // Never more than declared; the file's size when nothing is declared.
        let len = match (declared, size) {
            (Some(d), _) => Some(d),
            (None, Some(s)) => Some(s),
            (None, None) => None,
        };
        if declared.is_none() {
            if let (Some(staged), Some(n)) = (st.staged.as_mut(), len) {
                staged
                    .headers
                    .insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        st.sent = len.unwrap_or(0);
        self.send_head(&mut st, ResponseBody::File(FileBody::new(file, len, block)))
            .map_err(response_error)?;
        st.remaining = Some(0);
        Ok(true)
    }

    /// Tries to queue a chunk without blocking. `Err(chunk)`: the queue is
    /// full and `waker` will be woken when there is room.
    pub(crate) fn try_push(
        &self,
        chunk: Bytes,
        waker: &std::task::Waker,
    ) -> PyResult<Result<Sent, Bytes>> {
        let mut st = self.state.lock();
        if chunk.is_empty() {
            return Ok(Ok(Sent::Ok));
        }
        if st.gone || st.finished {
            return Ok(Ok(Sent::Stop));
        }
        if !st.head_sent {
            let pipe = Arc::new(Pipe::new(self.worker.limits.response_buffer));
            let body = ResponseBody::Stream(crate::wsgi::response::PipeReceiver(pipe.clone()));
            self.send_head(&mut st, body).map_err(response_error)?;
            st.pipe = Some(PipeSender(pipe));
        }
        let Some(pipe) = st.pipe.as_ref().map(|p| p.0.clone()) else {
            // The head went out with a full body already; nothing more fits.
            return Ok(Ok(Sent::Stop));
        };
        if self.is_head {
            return Ok(Ok(Sent::Ok));
        }
        let before = (st.remaining, st.sent);
        let Some(clipped) = Self::clip(&mut st, chunk) else {
            return Ok(Ok(Sent::Stop));
        };
        match pipe.try_push(clipped, waker) {
            Push::Sent => Ok(Ok(if st.remaining == Some(0) {
                Sent::Stop
            } else {
                Sent::Ok
            })),
            Push::Full(back) => {
                // Not taken: undo the accounting so the retry counts it once.
                (st.remaining, st.sent) = before;
                Ok(Err(back))
            }
            Push::Closed => {
                st.gone = true;
                Ok(Ok(Sent::Stop))
            }
        }
    }

    /// Thread mode: queues a chunk, waiting with the GIL released while the
    /// client is slower than the app.
    pub(crate) fn push_blocking(&self, py: Python<'_>, chunk: Bytes) -> PyResult<Sent> {
        let mut slot = Some(chunk);
        py.detach(|| {
            park::wait(None, |w| {
                let Some(c) = slot.take() else {
                    return Poll::Ready(Ok(Sent::Ok));
                };
                match self.try_push(c, w) {
                    Ok(Ok(sent)) => Poll::Ready(Ok(sent)),
                    Ok(Err(back)) => {
                        slot = Some(back);
                        Poll::Pending
                    }
                    Err(e) => Poll::Ready(Err(e)),
                }
            })
            .unwrap_or(Ok(Sent::Stop))
        })
    }

    /// Ends the response normally: sends a head with an empty body if none
    /// went out, closes the stream, drains the request body, logs.
    pub(crate) fn finish(&self, py: Python<'_>) -> PyResult<()> {
        let result = {
            let mut st = self.state.lock();
            if st.finished {
                return Ok(());
            }
            let r = if !st.head_sent {
                self.send_head(&mut st, ResponseBody::Empty)
                    .map_err(response_error)
            } else {
                Ok(())
            };
            st.finished = true;
            if let Some(p) = &st.pipe {
                p.0.finish(PipeEnd::Done);
            }
            r
        };
        if let Err(e) = result {
            // The app returned without calling start_response.
            self.fail(py, &e)?;
        }
        self.drain_input();
        self.log_access();
        Ok(())
    }

    /// The app failed: a 500 if nothing was sent yet, else abort the stream
    /// so the client can tell the body is incomplete. The traceback is logged.
    pub(crate) fn fail(&self, py: Python<'_>, err: &PyErr) -> PyResult<()> {
        crate::log::error::app_exception(py, err, &self.head);
        let mut st = self.state.lock();
        if !st.head_sent {
            st.staged = None;
            // An app that failed because the body was malformed gets the
            // client's fault answered as such, and the connection closed.
            let malformed = self.input.get().source().malformed();
            let mut reply = if malformed {
                Reply::error(StatusCode::BAD_REQUEST, true)
            } else {
                Reply::error(StatusCode::INTERNAL_SERVER_ERROR, false)
            };
            if self.input.get().source().expectation_pending() {
                reply
                    .headers
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                self.input.get().abandon();
            }
            st.status = reply.status.as_u16();
            st.head_sent = true;
            if let Some(tx) = st.reply.take() {
                let _ = tx.send(reply);
            }
        } else if let Some(p) = &st.pipe {
            p.0.finish(PipeEnd::Aborted);
        }
        st.finished = true;
        drop(st);
        self.drain_input();
        self.log_access();
        Ok(())
    }

    /// Discards what the app left of the request body, within the limits,
    /// on the I/O runtime; past them hyper closes the connection.
    fn drain_input(&self) {
        let Some(mut body) = self.input.get().take_rest() else {
            return;
        };
        let (max, time) = (
            self.worker.limits.drain_bytes,
            self.worker.limits.drain_time,
        );
        self.worker.runtime.spawn(async move {
            use http_body_util::BodyExt;
            let mut seen = 0u64;
            let _ = tokio::time::timeout(time, async {
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(d) = frame.data_ref() {
                        seen += d.len() as u64;
                        if seen > max {
                            break;
                        }
                    }
                }
            })
            .await;
            drop(body);
        });
    }

    fn log_access(&self) {
        let Some(log) = &self.worker.access_log else {
            return;
        };
        let st = self.state.lock();
        log.write(&Entry {
            head: &self.head,
            peer: self.peer,
            status: st.status,
            sent: st.sent,
            received_at: self.received_at,
            elapsed: self.received.elapsed(),
        });
    }
}

fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<object>".into())
}

pub(crate) fn response_error(e: ResponseError) -> PyErr {
    match e {
        ResponseError::NotBytes(_) => pyo3::exceptions::PyTypeError::new_err(e.to_string()),
        ResponseError::AlreadyStarted | ResponseError::NotStarted => {
            pyo3::exceptions::PyAssertionError::new_err(e.to_string())
        }
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// Body items must be bytes (PEP 3333); copied out so no GIL is needed later.
pub(crate) fn chunk_bytes(item: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    match item.cast::<PyBytes>() {
        Ok(b) => Ok(Bytes::copy_from_slice(b.as_bytes())),
        Err(_) => Err(response_error(ResponseError::NotBytes(
            item.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ))),
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
            None if status.is_instance_of::<PyBytes>() => {
                slf.get().write(slf.py(), status)?;
                Ok(None)
            }
            None => Err(pyo3::exceptions::PyTypeError::new_err(
                "start_response() needs status and headers; write() needs bytes",
            )),
            Some(headers) => {
                slf.get().stage(status, headers, exc_info)?;
                Ok(Some(slf.clone()))
            }
        }
    }

    /// The `write()` callable returned by `start_response` (thread mode).
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let chunk = chunk_bytes(data)?;
        {
            let st = self.state.lock();
            if !st.head_sent && st.staged.is_none() {
                return Err(response_error(ResponseError::NotStarted));
            }
        }
        match self.push_blocking(py, chunk)? {
            Sent::Ok => Ok(()),
            Sent::Stop if self.state.lock().gone => {
                Err(crate::wsgi::input::ClientDisconnected::new_err(
                    "client disconnected while the response was being written",
                ))
            }
            Sent::Stop => Ok(()),
        }
    }

    /// gevent mode: `write()` that never blocks. True: taken, go on. False:
    /// stop (client gone or declared length reached; `write()` raises then).
    /// None: the queue is full and `token` will be woken when it has room.
    fn _try_push(&self, data: &Bound<'_, PyAny>, token: u64) -> PyResult<Option<bool>> {
        let chunk = chunk_bytes(data)?;
        {
            let st = self.state.lock();
            if !st.head_sent && st.staged.is_none() {
                return Err(response_error(ResponseError::NotStarted));
            }
        }
        let waker = match &self.hub {
            Some(hub) => hub.waker(token),
            None => std::task::Waker::noop().clone(),
        };
        Ok(match self.try_push(chunk, &waker)? {
            Ok(Sent::Ok) => Some(true),
            Ok(Sent::Stop) => Some(false),
            Err(_) => None,
        })
    }

    /// Whether the client went away (for gevent's `write()` to raise).
    #[getter]
    fn _client_gone(&self) -> bool {
        self.state.lock().gone
    }

    /// Sends a list or a file wrapper without a stream; false otherwise.
    fn _send_fast(&self, py: Python<'_>, iterable: &Bound<'_, PyAny>) -> PyResult<bool> {
        crate::wsgi::send_fast(py, self, iterable)
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
