//! Thread mode's request driver: call the app, stream its iterable, `close()` it once.
//!
//! A pool thread hands each job to `serve`, which never panics out: a bug in
//! Siesta fails that request only. The fast paths (`send_fast`: a list of
//! bytes as one buffer, a `wsgi.file_wrapper` from its descriptor) and
//! `close_iterable` are shared with gevent mode, whose loop lives in
//! `python/siesta/_gevent.py` because only Python may switch greenlets;
//! tests/test_driver_modes.py checks both drivers give the same bytes and
//! log lines for every way an app can end.

use super::start_response::{chunk_bytes, Sent, StartResponse};
use super::Context;
use crate::exchange::Job;
use crate::exec::wait::{Waited, Waiter};
use crate::worker::forked;
use crate::wsgi::file_wrapper::FileWrapper;
use bytes::{Bytes, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Thread mode: one request, start to finish. Never panics out: a bug in
/// Siesta fails this request only (the client gets a 500 or an abort).
pub(crate) fn serve(py: Python<'_>, ctx: &Arc<Context>, app: &Bound<'_, PyAny>, job: Job) {
    if job.client_gone() {
        // Queued while every thread was busy, and the client left: there
        // is nobody to answer, so the app is not run for it.
        return;
    }
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| run(py, ctx, app, job)));
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => crate::log::error::exception(py, "Error handling request", &e),
        Err(_) => {
            crate::log::error::error("Internal error handling request (panic); request aborted")
        }
    }
}

fn run(py: Python<'_>, ctx: &Arc<Context>, app: &Bound<'_, PyAny>, job: Job) -> PyResult<()> {
    let (sr, env) = super::begin(py, ctx, job, Waiter::Thread)?;
    let resp = sr.get();
    let called = app.call1((env, &sr));
    if forked::is_child() {
        // The app forked, and its child came back here: it must not serve.
        forked::leave(forked::exit_code(py, called.as_ref().err()));
    }
    let iterable = match called {
        Ok(it) => it,
        Err(e) => {
            resp.fail(py, &e)?;
            resp.drain_input();
            return Ok(());
        }
    };
    let sent = send_body(py, resp, &iterable);
    if forked::is_child() {
        forked::leave(forked::exit_code(py, sent.as_ref().err()));
    }
    match sent {
        Ok(()) => resp.finish(py)?,
        Err(e) => resp.fail(py, &e)?,
    }
    close_iterable(py, &iterable);
    resp.drain_input();
    Ok(())
}

/// Calls the iterable's `close()` if it has one (PEP 3333: exactly once),
/// logging what it raises with its traceback. Both modes call this.
pub(crate) fn close_iterable(py: Python<'_>, iterable: &Bound<'_, PyAny>) {
    // Lists and tuples have no close(); asking would build an AttributeError.
    if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
        return;
    }
    if let Ok(close) = iterable.getattr(pyo3::intern!(py, "close")) {
        if let Err(e) = close.call0() {
            crate::log::error::exception(py, "Error closing the response iterable", &e);
        }
    }
}

/// Thread mode: streams the iterable, waiting on the client as needed.
fn send_body(py: Python<'_>, sr: &StartResponse, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    if send_fast(py, sr, iterable)? {
        return Ok(());
    }
    for item in iterable.try_iter()? {
        if forked::is_child() {
            forked::leave(forked::exit_code(py, item.as_ref().err()));
        }
        let chunk = chunk_bytes(&item?)?;
        if chunk.is_empty() {
            continue;
        }
        if push(py, sr, chunk)? != Sent::Ok {
            break;
        }
    }
    Ok(())
}

/// Queues one chunk: at once when it fits (the GIL kept), else with the GIL
/// released while the client makes room.
pub(crate) fn push(py: Python<'_>, sr: &StartResponse, chunk: Bytes) -> PyResult<Sent> {
    crate::exec::threads::app_called(); // a stream that goes on is no stuck app
    Ok(match sr.push_now(chunk)? {
        Ok(sent) => {
            // The chunks hyper already wrote were dropped on the I/O side
            // without the GIL, so their `bytes` wait in PyO3's queue of
            // deferred references; nothing else here releases that queue
            // while every chunk fits (`chunk.rs`). Attaching again, while
            // attached, releases it: without this, an app slower than its
            // client would keep its whole response alive until the end.
            Python::attach(|_| ());
            sent
        }
        Err(back) => match py.detach(|| sr.push_wait(back, true))? {
            Waited::Ready(sent) => sent,
            Waited::Park(_) | Waited::TimedOut => Sent::Stop,
        },
    })
}

/// The most a list response's items are joined into (one copy) instead of
/// being sent one by one.
const LIST_JOINED_MAX: usize = 256 * 1024;

/// The bytes in a list's items; `None` when one is not `bytes` (the join
/// then refuses it, before anything is sent).
fn list_bytes(list: &Bound<'_, PyList>) -> Option<usize> {
    let mut total = 0usize;
    for item in list.iter() {
        total += item.cast::<PyBytes>().ok()?.as_bytes().len();
    }
    Some(total)
}

/// Sends a list of bytes as one buffer, or a `wsgi.file_wrapper` from its
/// descriptor. Returns false when the iterable needs the general path.
pub(crate) fn send_fast(
    py: Python<'_>,
    sr: &StartResponse,
    iterable: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    // A list exactly: a subclass may iterate otherwise than its items.
    if let Ok(list) = iterable.cast_exact::<PyList>() {
        let body = match list.len() {
            0 => Bytes::new(),
            1 => chunk_bytes(&list.get_item(0)?)?,
            // Many items are copied into one buffer only while that stays
            // small: a list of a million small items (one object repeated)
            // took its whole size in the server's memory until a slow
            // client was done. Past it they go out one by one, with the
            // client's backpressure, as any iterable.
            _ => match list_bytes(list) {
                Some(total) if total > LIST_JOINED_MAX => {
                    sr.declare_length(total as u64);
                    return Ok(false);
                }
                _ => join(list)?,
            },
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

/// A list's items in one buffer (one copy); a `TypeError` for an item that
/// is not `bytes`.
fn join(list: &Bound<'_, PyList>) -> PyResult<Bytes> {
    let mut buf = BytesMut::new();
    for item in list.iter() {
        match item.cast::<PyBytes>() {
            Ok(b) => buf.extend_from_slice(b.as_bytes()),
            Err(_) => {
                return Err(chunk_bytes(&item).err().unwrap_or_else(|| {
                    pyo3::exceptions::PyTypeError::new_err("response body items must be bytes")
                }))
            }
        }
    }
    Ok(buf.freeze())
}
