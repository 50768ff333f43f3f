//! WSGI itself: one request from environ to the last body byte (PEP 3333).
//!
//! `begin` builds the per-request objects (`wsgi.input`, `start_response`,
//! the environ); `call_app` is thread mode's whole request: call the app,
//! send its iterable, call `close()` exactly once, finish. Gevent mode runs
//! the same steps from `python/siesta/_gevent.py`, where every wait is a
//! greenlet switch. The HTTP side (parsing, framing on the wire) is hyper's.

pub(crate) mod body;
pub(crate) mod environ;
pub(crate) mod errors;
pub(crate) mod file_wrapper;
pub(crate) mod input;
pub(crate) mod pipe;
pub(crate) mod response;
pub(crate) mod start_response;
pub(crate) mod status;
pub(crate) mod trailers;

use crate::exec::gevent::Hub;
use crate::exec::{Job, Worker};
use crate::wsgi::file_wrapper::FileWrapper;
use crate::wsgi::input::{BodySource, Input};
use crate::wsgi::start_response::{chunk_bytes, Sent, StartResponse};
use bytes::{Bytes, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Makes `wsgi.input`, `start_response` and the environ for one job.
pub(crate) fn begin<'py>(
    py: Python<'py>,
    worker: &Arc<Worker>,
    job: Job,
    hub: Option<Arc<Hub>>,
) -> PyResult<(Bound<'py, StartResponse>, Bound<'py, PyDict>)> {
    let expect = job
        .head
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let timeout = worker.limits.body_timeout;
    // The body moves into `Input`; the rest of the job into `StartResponse`.
    let Job {
        head,
        body,
        conn,
        reply,
        received,
        received_at,
    } = job;
    let source = BodySource::new(Some(body), expect);
    let input = Bound::new(py, Input::new(source, timeout, hub.clone()))?;
    let env = environ::build(py, &worker.env, &head, &conn, input.clone().into_any())?;
    let sr = StartResponse::new(
        worker.clone(),
        head,
        conn.peer,
        reply,
        (received, received_at),
        input.unbind(),
        hub,
    );
    let sr = Bound::new(py, sr)?;
    Ok((sr, env))
}

/// Thread mode: one request, start to finish. Never panics out: a bug in
/// Siesta fails this request only (the client gets a 500 or an abort).
pub(crate) fn call_app(py: Python<'_>, worker: &Arc<Worker>, app: &Bound<'_, PyAny>, job: Job) {
    if job.client_gone() {
        // Queued while every thread was busy, and the client left: there
        // is nobody to answer, so the app is not run for it.
        return;
    }
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| run(py, worker, app, job)));
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => crate::log::error::exception(py, "Error handling request", &e),
        Err(_) => {
            crate::log::error::error("Internal error handling request (panic); request aborted")
        }
    }
}

fn run(py: Python<'_>, worker: &Arc<Worker>, app: &Bound<'_, PyAny>, job: Job) -> PyResult<()> {
    let (sr, env) = begin(py, worker, job, None)?;
    let resp = sr.get();
    let iterable = match app.call1((env, &sr)) {
        Ok(it) => it,
        Err(e) => return resp.fail(py, &e),
    };
    let sent = send_body(py, resp, &iterable);
    match sent {
        Ok(()) => resp.finish(py)?,
        Err(e) => resp.fail(py, &e)?,
    }
    if let Err(e) = call_close(&iterable) {
        crate::log::error::exception(py, "Error closing the response iterable", &e);
    }
    Ok(())
}

/// Calls the iterable's `close()` if it has one (PEP 3333: exactly once).
pub(crate) fn call_close(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    // Lists and tuples have no close(); asking would build an AttributeError.
    if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    if let Ok(close) = iterable.getattr(pyo3::intern!(iterable.py(), "close")) {
        close.call0()?;
    }
    Ok(())
}

/// Thread mode: streams the iterable, waiting on the client as needed.
fn send_body(py: Python<'_>, sr: &StartResponse, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    if send_fast(py, sr, iterable)? {
        return Ok(());
    }
    for item in iterable.try_iter()? {
        let chunk = chunk_bytes(&item?)?;
        if chunk.is_empty() {
            continue;
        }
        if sr.push_blocking(py, chunk)? == Sent::Stop {
            break;
        }
    }
    Ok(())
}

/// Sends a list of bytes as one buffer, or a `wsgi.file_wrapper` from its
/// descriptor. Returns false when the iterable needs the general path.
pub(crate) fn send_fast(
    py: Python<'_>,
    sr: &StartResponse,
    iterable: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    if let Ok(list) = iterable.cast::<PyList>() {
        let body = match list.len() {
            0 => Bytes::new(),
            1 => chunk_bytes(&list.get_item(0)?)?,
            _ => {
                let mut buf = BytesMut::new();
                for item in list.iter() {
                    match item.cast::<PyBytes>() {
                        Ok(b) => buf.extend_from_slice(b.as_bytes()),
                        Err(_) => {
                            return Err(chunk_bytes(&item).err().unwrap_or_else(|| {
                                pyo3::exceptions::PyTypeError::new_err(
                                    "response body items must be bytes",
                                )
                            }))
                        }
                    }
                }
                buf.freeze()
            }
        };
        return sr.send_full(body);
    }
    if let Ok(fw) = iterable.cast::<FileWrapper>() {
        if let Some(file) = fw.get().file_handle(py)? {
            return sr.send_file(file, fw.get().blksize());
        }
    }
    Ok(false)
}
