//! The gevent hub's handle on one queued request.
//!
//! `Server.hub_take()` wraps each queued `Job` in a `Request`; the hub loop
//! (`python/siesta/_gevent.py`) either begins it in a fresh greenlet, which
//! makes the environ and `start_response` with a greenlet `Waiter`, or
//! refuses it with 503 when it waited too long for a slot. The request
//! itself is then `wsgi/`'s.

use crate::error::RequestError;
use crate::exchange::Job;
use crate::exec::gevent::Hub;
use crate::exec::wait::Waiter;
use crate::wsgi::start_response::StartResponse;
use crate::wsgi::Context;
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// A request handed to the gevent hub, not yet begun.
#[pyclass(frozen, module = "siesta._siesta")]
pub(crate) struct Request {
    job: Mutex<Option<Job>>,
    ctx: Arc<Context>,
    hub: Arc<Hub>,
}

impl Request {
    pub(crate) fn new(job: Job, ctx: Arc<Context>, hub: Arc<Hub>) -> Request {
        Request {
            job: Mutex::new(Some(job)),
            ctx,
            hub,
        }
    }
}

#[pymethods]
impl Request {
    /// `(environ, start_response)`; callable once.
    fn begin<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, StartResponse>)> {
        let job = self
            .job
            .lock()
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("request already begun"))?;
        let waiter = Waiter::Greenlet(self.hub.clone());
        let (sr, env) = crate::wsgi::begin(py, &self.ctx, job, waiter)?;
        Ok((env, sr))
    }

    /// Whether the client left while the request waited for a slot (then
    /// it is dropped, its connection cut: `Job::client_gone`).
    fn gone(&self) -> bool {
        let mut job = self.job.lock();
        if job.as_ref().is_some_and(Job::client_gone) {
            job.take();
            return true;
        }
        false
    }

    /// Answers 503 without running the app (no slot within the queue timeout).
    fn reject(&self) {
        if let Some(job) = self.job.lock().take() {
            job.refuse(RequestError::Overloaded);
        }
    }
}
