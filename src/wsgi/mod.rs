//! WSGI itself: one request from environ to the last body byte (PEP 3333).
//!
//! `begin` builds the per-request objects (`wsgi.input`, `start_response`,
//! the environ) from a `Job`; `driver.rs` is the thread mode's whole
//! request: call the app, send its iterable, call `close()` exactly once.
//! Gevent mode runs the same steps from `python/siesta/_gevent.py`, where
//! every wait is a greenlet switch, with the same Rust calls for everything
//! but the switching. Waiting goes through `exec::wait`; the HTTP side
//! (parsing, framing on the wire, the access log) is `server/`'s.

pub(crate) mod body;
pub(crate) mod driver;
pub(crate) mod environ;
pub(crate) mod errors;
pub(crate) mod file_wrapper;
pub(crate) mod input;
pub(crate) mod start_response;
pub(crate) mod status;
pub(crate) mod trailers;

use crate::exchange::Job;
use crate::exec::wait::Waiter;
use crate::limits::Limits;
use environ::EnvConstants;
use input::{BodySource, Input};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use start_response::StartResponse;
use std::sync::Arc;

/// Read-only state every request of a worker shares.
pub(crate) struct Context {
    pub limits: Limits,
    pub env: EnvConstants,
    /// The I/O runtime, where leftover bodies are drained.
    pub runtime: tokio::runtime::Handle,
}

/// Makes `start_response`, the environ and its `wsgi.input` for one job.
pub(crate) fn begin<'py>(
    py: Python<'py>,
    ctx: &Arc<Context>,
    job: Job,
    waiter: Waiter,
) -> PyResult<(Bound<'py, StartResponse>, Bound<'py, PyDict>)> {
    let Job {
        record,
        body,
        body_end,
        reply,
        queued,
    } = job;
    record.track.began(queued);
    let expect = record
        .head
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let source = BodySource::new(
        Some(body),
        body_end,
        expect,
        ctx.limits.limit_request_body,
        record.received,
    );
    let input = Bound::new(
        py,
        Input::new(source, ctx.limits.body_timeout, waiter.clone()).metered(&record),
    )?;
    let env = environ::build(
        py,
        &ctx.env,
        &record.head,
        &record.conn,
        input.clone().into_any(),
    )?;
    let sr = StartResponse::new(ctx.clone(), record, reply, input.unbind(), waiter);
    Ok((Bound::new(py, sr)?, env))
}
