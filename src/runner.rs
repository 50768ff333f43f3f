//! `Server`: the Python-facing handle of one worker, from bound sockets to shutdown.
//!
//! Python makes a `Server` from the settings dict (sockets are bound right
//! away, so "address in use" is reported before the app is imported), then
//! calls `start()` (I/O runtime, accept loops, signal handling, ready line),
//! and either runs threads through `run_thread(app)` plus `wait()` (thread
//! mode) or drives the hub with `hub_fd()`/`hub_take()` (gevent mode). It
//! holds no request logic: that is `server/`, `exec/` and `wsgi/`.

use crate::config::{Config, Mode};
use crate::error::StartupError;
use crate::exec::gevent::{Event, Hub};
use crate::exec::threads::Pool;
use crate::exec::{Executor, Job, Worker};
use crate::log::access::AccessLog;
use crate::net::bind::Listener;
use crate::server::{self, Stop};
use crate::wsgi::environ::EnvConstants;
use crate::wsgi::errors::ErrorStream;
use crate::wsgi::file_wrapper::FileWrapper;
use crate::wsgi::response::Reply;
use crate::wsgi::start_response::StartResponse;
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyType};
use std::sync::{mpsc, Arc, OnceLock};

pyo3::create_exception!(
    _siesta,
    BindError,
    PyOSError,
    "A listening socket could not be opened (address in use, bad address)."
);

#[pyclass(frozen, module = "siesta._siesta")]
pub(crate) struct Server {
    config: Config,
    /// Bound in `__new__`, handed to the runtime in `start`.
    listeners: Mutex<Option<Vec<Listener>>>,
    urls: Vec<String>,
    exec: Arc<Executor>,
    /// The hub queue in gevent mode (also inside `exec`).
    hub: Option<Arc<Hub>>,
    worker: OnceLock<Arc<Worker>>,
    /// The I/O runtime, kept alive while serving.
    runtime: Mutex<Option<Arc<tokio::runtime::Runtime>>>,
    /// Tells `wait` that a stop was asked for, then that the server drained.
    events: Mutex<Option<mpsc::Receiver<Lifecycle>>>,
    /// Asks the I/O side to stop (signals and `stop()`).
    stopper: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Stop>>>,
}

/// What `wait` hears from the server.
enum Lifecycle {
    Stopping(Stop),
    Done,
}

fn startup(e: StartupError) -> PyErr {
    BindError::new_err(e.to_string())
}

#[pymethods]
impl Server {
    #[new]
    fn new(settings: &Bound<'_, PyDict>) -> PyResult<Self> {
        let config = Config::from_dict(settings)?;
        crate::log::error::configure(config.log_level, config.error_logfile.as_deref())
            .map_err(|e| PyOSError::new_err(format!("Cannot open error log: {e}")))?;
        let listeners = config
            .binds
            .iter()
            .map(|b| b.open(config.backlog))
            .collect::<Result<Vec<_>, _>>()
            .map_err(startup)?;
        let urls = listeners.iter().map(Listener::url).collect();
        // Thread mode with --runtime-threads 0: the Python threads drive a
        // current-thread runtime (exec/threads.rs); otherwise dedicated
        // I/O threads run a multi-thread one.
        let driven = config.mode == Mode::Thread && config.runtime_threads == 0;
        let rt = if driven {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.runtime_threads.max(1))
                .thread_name("siesta-io")
                .enable_all()
                .build()
        }
        .map(Arc::new)
        .map_err(|e| startup(StartupError::Runtime(e)))?;
        let (exec, hub) = match config.mode {
            Mode::Thread => {
                let pool = Pool::new(driven.then(|| rt.clone()));
                (Executor::Threads(pool), None)
            }
            Mode::Gevent => {
                let hub = Arc::new(Hub::new().map_err(|e| PyOSError::new_err(e.to_string()))?);
                (Executor::Gevent(hub.clone()), Some(hub))
            }
        };
        Ok(Server {
            config,
            listeners: Mutex::new(Some(listeners)),
            urls,
            exec: Arc::new(exec),
            hub,
            worker: OnceLock::new(),
            runtime: Mutex::new(Some(rt)),
            events: Mutex::new(None),
            stopper: Mutex::new(None),
        })
    }

    /// The listening URLs, real ports included.
    #[getter]
    fn urls(&self) -> Vec<String> {
        self.urls.clone()
    }

    /// Starts serving: accept loops, signal handling; logs the ready line.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let listeners = self
            .listeners
            .lock()
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("server already started"))?;
        let rt = self
            .runtime
            .lock()
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("server already stopped"))?;
        let access_log = match &self.config.access_logfile {
            Some(p) => Some(
                AccessLog::open(p, &self.config.access_logformat)
                    .map_err(|e| PyOSError::new_err(format!("Cannot open access log {p}: {e}")))?,
            ),
            None => None,
        };
        let env = EnvConstants::new(
            py,
            "http",
            self.config.mode == Mode::Thread,
            self.config.workers > 1,
            Py::new(py, ErrorStream::default())?.into_any(),
            PyType::new::<FileWrapper>(py).into_any().unbind(),
            &self.config.root_path,
        )?;
        let worker = Arc::new(Worker {
            limits: self.config.limits.clone(),
            env,
            runtime: rt.handle().clone(),
            access_log,
        });
        let _ = self.worker.set(worker.clone());
        let (stop_tx, mut stop_rx) = tokio::sync::mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::channel();
        *self.events.lock() = Some(events_rx);
        spawn_signal_thread(stop_tx.clone(), events_tx.clone())?;
        *self.stopper.lock() = Some(stop_tx);
        let exec = self.exec.clone();
        let pid = std::process::id();
        for url in &self.urls {
            crate::log::error::info(&format!("Listening at: {url} ({pid})"));
        }
        rt.spawn(async move {
            let shutdown = async move { stop_rx.recv().await.unwrap_or(Stop::Fast) };
            server::run(listeners, worker, exec, shutdown).await;
            let _ = events_tx.send(Lifecycle::Done);
        });
        Ok(())
    }

    /// Blocks (GIL released) until the server has stopped and drained, or
    /// the stop's time is up (an app stuck in a request cannot hold a TERM
    /// past `--graceful-timeout`, nor an INT at all).
    fn wait(&self, py: Python<'_>) {
        let Some(events) = self.events.lock().take() else {
            return;
        };
        let graceful = self.config.limits.graceful_timeout;
        py.detach(move || {
            let mut deadline: Option<std::time::Instant> = None;
            loop {
                let ev = match deadline {
                    None => events.recv().ok(),
                    Some(d) => events
                        .recv_timeout(d.saturating_duration_since(std::time::Instant::now()))
                        .ok(),
                };
                match ev {
                    Some(Lifecycle::Done) | None => return,
                    Some(Lifecycle::Stopping(how)) => {
                        let grace = match how {
                            Stop::Graceful => graceful + std::time::Duration::from_secs(1),
                            Stop::Fast => std::time::Duration::from_secs(1),
                        };
                        deadline = Some(std::time::Instant::now() + grace);
                    }
                }
            }
        });
    }

    /// Asks the server to stop, as TERM (graceful) or INT (fast) would.
    #[pyo3(signature = (graceful=true))]
    fn stop(&self, graceful: bool) {
        if let Some(tx) = self.stopper.lock().as_ref() {
            let _ = tx.send(if graceful { Stop::Graceful } else { Stop::Fast });
        }
    }

    /// Thread mode: one Python thread's request loop; returns at shutdown.
    fn run_thread(&self, py: Python<'_>, app: &Bound<'_, PyAny>) -> PyResult<()> {
        let (Executor::Threads(queue), Some(worker)) = (&*self.exec, self.worker.get()) else {
            return Err(PyRuntimeError::new_err(
                "run_thread needs a started thread-mode server",
            ));
        };
        queue.run(py, worker, app);
        Ok(())
    }

    /// Gevent mode: the descriptor the hub watches for new events.
    fn hub_fd(&self) -> PyResult<i32> {
        self.hub
            .as_ref()
            .map(|h| h.raw_fd())
            .ok_or_else(|| PyRuntimeError::new_err("not a gevent-mode server"))
    }

    /// Gevent mode: every pending event. Items are `Request` objects, int
    /// wake tokens, or `None` for stop.
    fn hub_take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let (Some(hub), Some(worker)) = (&self.hub, self.worker.get()) else {
            return Err(PyRuntimeError::new_err(
                "hub_take needs a started gevent-mode server",
            ));
        };
        let out = PyList::empty(py);
        for ev in hub.take() {
            match ev {
                Event::Request(job) if job.client_gone() => {}
                Event::Request(job) => out.append(Request {
                    job: Mutex::new(Some(*job)),
                    worker: worker.clone(),
                    hub: hub.clone(),
                })?,
                Event::Wake(token) => out.append(token)?,
                Event::Stop => out.append(py.None())?,
            }
        }
        Ok(out)
    }
}

/// A request handed to the gevent hub, not yet begun.
#[pyclass(frozen, module = "siesta._siesta")]
pub(crate) struct Request {
    job: Mutex<Option<Job>>,
    worker: Arc<Worker>,
    hub: Arc<Hub>,
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
        let (sr, env) = crate::wsgi::begin(py, &self.worker, job, Some(self.hub.clone()))?;
        Ok((env, sr))
    }

    /// Answers 503 without running the app (gevent mode, over
    /// `--worker-connections` for too long).
    fn reject(&self) {
        if let Some(job) = self.job.lock().take() {
            let mut reply = Reply::error(http::StatusCode::SERVICE_UNAVAILABLE, true);
            reply.headers.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            let _ = job.reply.send(reply);
        }
    }
}

/// Handles TERM (graceful), INT and QUIT (fast) on a thread of its own, so
/// a stop is heard even while every app thread is busy.
fn spawn_signal_thread(
    stop: tokio::sync::mpsc::UnboundedSender<Stop>,
    events: mpsc::Sender<Lifecycle>,
) -> PyResult<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| startup(StartupError::Runtime(e)))?;
    // Register now, so a signal that arrives right after start is not lost.
    let (term, int, quit) = rt.block_on(async {
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        )
    });
    let (mut term, mut int, mut quit) = match (term, int, quit) {
        (Ok(t), Ok(i), Ok(q)) => (t, i, q),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return Err(PyOSError::new_err(format!(
                "Cannot install signal handlers: {e}"
            )))
        }
    };
    std::thread::Builder::new()
        .name("siesta-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    let how = tokio::select! {
                        _ = term.recv() => { crate::log::error::info("Handling signal: term"); Stop::Graceful }
                        _ = int.recv() => { crate::log::error::info("Handling signal: int"); Stop::Fast }
                        _ = quit.recv() => { crate::log::error::info("Handling signal: quit"); Stop::Fast }
                    };
                    let _ = events.send(Lifecycle::Stopping(how));
                    let _ = stop.send(how);
                }
            })
        })
        .map(|_| ())
        .map_err(|e| PyOSError::new_err(format!("Cannot start the signal thread: {e}")))
}
