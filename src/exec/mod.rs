//! Executors: how a parsed request reaches Python, and the state every request shares.
//!
//! The I/O side (`server/`) turns each request head into a `Job` and hands it
//! to the `Executor`: a queue that a pool of Python threads takes from
//! (`threads.rs`), or a queue plus an eventfd that gevent's hub watches
//! (`gevent.rs`). `Worker` is the read-only context of one worker process:
//! limits, environ constants, logs and the runtime handle. Running the app
//! and speaking WSGI is `wsgi/`'s job.

pub(crate) mod gevent;
pub(crate) mod park;
pub(crate) mod threads;

use crate::limits::Limits;
use crate::log::access::AccessLog;
use crate::wsgi::environ::{ConnInfo, EnvConstants};
use crate::wsgi::response::Reply;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::oneshot;

/// One request waiting for the app.
pub(crate) struct Job {
    pub head: http::request::Parts,
    pub body: Incoming,
    pub conn: Arc<ConnInfo>,
    /// Where the response head goes; the service future waits on the other end.
    pub reply: oneshot::Sender<Reply>,
    /// When the head was parsed, for `%(D)s` and `%(t)s`.
    pub received: Instant,
    pub received_at: SystemTime,
}

impl Job {
    /// The connection is gone (hyper dropped the reply's receiver).
    pub(crate) fn client_gone(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Read-only state of one worker, shared by the I/O runtime and every request.
pub(crate) struct Worker {
    pub limits: Limits,
    pub env: EnvConstants,
    /// The I/O runtime, where leftover bodies are drained.
    pub runtime: tokio::runtime::Handle,
    /// `--access-logfile`; `None` logs nothing.
    pub access_log: Option<AccessLog>,
}

/// Where requests go: the running mode's queue.
pub(crate) enum Executor {
    Threads(Arc<threads::Pool>),
    Gevent(Arc<gevent::Hub>),
}

impl Executor {
    /// Queues a request; false (the job dropped) when shutting down.
    pub(crate) fn submit(&self, job: Job) -> bool {
        match self {
            Executor::Threads(q) => q.push(job),
            Executor::Gevent(h) => h.push_request(job),
        }
    }

    /// No more requests: idle Python threads (or the hub loop) return.
    pub(crate) fn close(&self) {
        match self {
            Executor::Threads(q) => q.close(),
            Executor::Gevent(h) => h.close(),
        }
    }
}
