//! `Server`: the Python-facing handle of one worker process, from bound sockets to shutdown.
//!
//! Python makes a `Server` from the settings dict (sockets are bound right
//! away, so "address in use" is reported before the app is imported), then
//! calls `start()` (I/O runtime, accept loops, signal handling, ready line),
//! and either runs threads through `run_thread(app)` plus `wait()` (thread
//! mode, with `grow_with(spawn)` for the threads the pool adds) or drives
//! the hub with `hub_fd()`/`hub_take()` (gevent mode). This is the top of
//! the crate: it wires `server/` (I/O), `exec/` (executors) and `wsgi/`
//! (the request) together and owns the shutdown timing; it holds no
//! request logic. `signals.rs` maps signals to commands,
//! `request.rs` is the hub's handle on one request, `malloc.rs` tunes
//! glibc's malloc (the arena cap, the idle trim), `sched.rs` sets
//! gevent mode's scheduling policy.

pub(crate) mod forked;
pub(crate) mod heartbeat;
mod malloc;
pub(crate) mod request;
mod sched;
pub(crate) mod signals;

use crate::config::{Config, Mode};
use crate::exec::gevent::{Event, Hub};
use crate::exec::threads::{Pool, PoolSize};
use crate::exec::Executor;
use crate::log::access::AccessLog;
use crate::net::bind::Listener;
use crate::net::listeners::Listeners;
use crate::server::end::{Pause, Recorder};
use crate::server::{self, Stop};
use crate::wsgi::environ::EnvConstants;
use crate::wsgi::errors::ErrorStream;
use crate::wsgi::file_wrapper::FileWrapper;
use crate::wsgi::Context;
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyType};
use request::Request;
use signals::Command;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

#[pyclass(frozen, module = "siesta._siesta")]
pub(crate) struct Server {
    config: Config,
    /// Bound in `__new__` (or inherited), handed to the runtime in `start`.
    listeners: Mutex<Option<Vec<Listener>>>,
    urls: Vec<String>,
    /// Log the ready line (a worker of a master does not: the master did).
    announce: bool,
    /// The master's heartbeat file for this worker (`--timeout`).
    heartbeat: Option<i32>,
    /// Hand free memory back once requests stop (`malloc.rs`).
    idle_trim: bool,
    exec: Arc<Executor>,
    /// The hub queue in gevent mode (also inside `exec`).
    hub: Option<Arc<Hub>>,
    /// What every request shares, made in `start`.
    ctx: OnceLock<Arc<Context>>,
    /// The end of every request, made in `start` (it owns the access log).
    recorder: OnceLock<Arc<Recorder>>,
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

#[pymethods]
impl Server {
    /// A worker on `listeners` (the master's, inherited), or on sockets of
    /// its own when none are given (then it logs the ready line itself).
    /// `heartbeat` is the master's heartbeat descriptor for this worker.
    #[new]
    #[pyo3(signature = (settings, listeners=None, heartbeat=None))]
    fn new(
        settings: &Bound<'_, PyDict>,
        listeners: Option<&Listeners>,
        heartbeat: Option<i32>,
    ) -> PyResult<Self> {
        let config = Config::from_dict(settings)?;
        let idle_trim = malloc::tune();
        crate::log::error::configure(
            config.log_level,
            config.error_logfile.as_deref(),
            config.capture_output,
            true,
        )
        .map_err(|e| {
            let path = config.error_logfile.as_deref().unwrap_or("-");
            os_error(&format!("Cannot open error log {path}"), &e)
        })?;
        let (sockets, urls, announce) = match listeners {
            Some(l) => (l.clone_all()?, l.urls().to_vec(), false),
            None => {
                let own = Listeners::open(&config)?;
                (own.clone_all()?, own.urls().to_vec(), true)
            }
        };
        // Thread mode with --runtime-threads 0: the Python threads drive a
        // current-thread runtime (exec/threads/); otherwise dedicated
        // I/O threads run a multi-thread one.
        let driven = config.mode == Mode::Thread && config.runtime_threads == 0;
        let rt = if driven {
            crate::exec::unpanicked(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(config.runtime_threads.max(1))
                .thread_name("siesta-io")
                .enable_all();
            if config.mode == Mode::Gevent {
                b.on_thread_start(sched::batch_this_thread);
            }
            crate::exec::unpanicked(|| b.build())
        }
        .map(Arc::new)
        .map_err(|e| os_error("Cannot start the I/O runtime", &e))?;
        let (exec, hub) = match config.mode {
            Mode::Thread => {
                let size = PoolSize::new(config.threads, config.max_threads);
                let pool = Pool::new(
                    driven.then(|| rt.clone()),
                    config.limits.queue_timeout,
                    size,
                );
                (Executor::Threads(pool), None)
            }
            Mode::Gevent => {
                // A greenlet per request: keep its frame memory between requests.
                crate::exec::arena::install();
                let hub = Arc::new(Hub::new().map_err(|e| os_error("Cannot start the hub", &e))?);
                (Executor::Gevent(hub.clone()), Some(hub))
            }
        };
        Ok(Server {
            config,
            listeners: Mutex::new(Some(sockets)),
            urls,
            announce,
            heartbeat,
            idle_trim,
            exec: Arc::new(exec),
            hub,
            ctx: OnceLock::new(),
            recorder: OnceLock::new(),
            runtime: Mutex::new(Some(rt)),
            events: Mutex::new(None),
            stopper: Mutex::new(None),
        })
    }

    /// Seconds left for the app calls still running once the connections
    /// are closed: the drain closes a connection when its response is sent,
    /// and an app may still be running then (a HEAD's or a 204's iterable,
    /// dropped as it goes; a `close()` that takes its time). They get what
    /// is left of the stop's time (`--graceful-timeout`), `STOP_GRACE` at
    /// least, before the worker exits anyway.
    #[getter]
    fn grace_left(&self) -> f64 {
        STOP_DEADLINE
            .lock()
            .map_or(STOP_GRACE, |d| {
                d.saturating_duration_since(Instant::now()).max(STOP_GRACE)
            })
            .as_secs_f64()
    }

    /// Whether this worker has begun to stop (a signal; a leave acted on,
    /// after a hook's retire say; or the request reaching `--max-requests`
    /// started): gunicorn's `worker.alive` is false from then on.
    #[getter]
    fn stopping(&self) -> bool {
        STOP_DEADLINE.lock().is_some() || self.recorder.get().is_some_and(|r| r.leaving())
    }

    /// Seconds between heartbeats (gevent's hub loop beats this often).
    #[getter]
    fn beat_interval(&self) -> f64 {
        self.config.beat_interval().as_secs_f64()
    }

    /// Seconds between the gevent hub loop's beats while it runs requests.
    #[getter]
    fn hub_tick(&self) -> f64 {
        crate::exec::gevent::TICK.as_secs_f64()
    }

    /// gevent mode: the hub runs requests and beats every `hub_tick` until
    /// `hub_idle`; a hub that misses beats meanwhile stops accepting.
    fn hub_busy(&self) {
        if let (Some(hub), false) = (&self.hub, forked::is_child()) {
            hub.busy();
        }
    }

    /// gevent mode: the hub runs no request (it beats once an interval).
    fn hub_idle(&self) {
        if let (Some(hub), false) = (&self.hub, forked::is_child()) {
            hub.idle();
        }
    }

    /// gevent mode: the hub loop is alive (called from a hub timer); a hub
    /// that stops calling this stops the heartbeat.
    fn hub_beat(&self) {
        if forked::is_child() {
            return; // an app's forked child's hub: not this worker's sign of life
        }
        if let Some(hub) = &self.hub {
            hub.beat();
        }
    }

    /// The listening URLs, real ports included.
    #[getter]
    fn urls(&self) -> Vec<String> {
        self.urls.clone()
    }

    /// Starts serving: accept loops, signal handling; logs the ready line.
    /// `on_int` runs (on the signal thread, with the GIL) when INT or QUIT
    /// arrives, before the worker stops: gunicorn's `worker_int` hook.
    #[pyo3(signature = (on_int=None))]
    fn start(&self, py: Python<'_>, on_int: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let listeners = self
            .listeners
            .lock()
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("server already started"))?;
        // A process the app forks from now on never serves (`forked.rs`).
        let fds: Vec<_> = listeners.iter().map(Listener::raw_fd).collect();
        forked::watch(&fds, self.hub.as_ref().map(|h| h.raw_fd()));
        let rt = self
            .runtime
            .lock()
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("server already stopped"))?;
        let access_log = match &self.config.access_logfile {
            Some(p) => Some(
                AccessLog::open(p, &self.config.access_logformat, &self.config.root_path)
                    .map_err(|e| PyOSError::new_err(format!("Cannot open access log {p}: {e}")))?,
            ),
            None => None,
        };
        let env = EnvConstants::new(
            py,
            "http",
            self.config.workers > 1,
            Py::new(py, ErrorStream::default())?.into_any(),
            PyType::new::<FileWrapper>(py).into_any().unbind(),
            &self.config.root_path,
        )?;
        let ctx = Arc::new(Context {
            limits: self.config.limits.clone(),
            env,
            runtime: rt.handle().clone(),
        });
        let _ = self.ctx.set(ctx);
        let recycle_at = self
            .config
            .max_requests
            .map(|n| n.saturating_add(jitter(self.config.max_requests_jitter)));
        crate::metrics::attach(self.config.slow_upload_rate);
        if let Some(host) = &self.config.statsd_host {
            if let Err(e) = crate::metrics::statsd::start_worker(host, &self.config.statsd_prefix) {
                crate::log::error::error(&format!("StatsD is off: {e}"));
            }
        }
        let master = self
            .heartbeat
            .map(|fd| Box::new(heartbeat::Master(fd)) as Box<dyn server::end::Master>);
        let recorder = Arc::new(Recorder::new(access_log, recycle_at, master));
        let _ = self.recorder.set(recorder.clone());
        let (stop_tx, stop_rx) = tokio::sync::mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::channel();
        *self.events.lock() = Some(events_rx);
        let graceful = self.config.limits.graceful_timeout;
        let (stop, events, log) = (stop_tx.clone(), events_tx.clone(), recorder.clone());
        let on_int = on_int.map(|f| f.clone().unbind());
        signals::listen(move |cmd| {
            if let (Command::FastStop, Some(hook)) = (cmd, &on_int) {
                // gunicorn's worker_int hook, before the worker stops, with
                // `worker.alive` already False (`stopping`), as in gunicorn.
                stop_by(Stop::Fast, graceful);
                Python::attach(|py| {
                    if let Err(e) = hook.call0(py) {
                        crate::log::error::exception(py, "worker_int hook failed", &e);
                    }
                });
            }
            act(cmd, &stop, &events, &log, graceful)
        })
        .map_err(|e| os_error("Cannot install signal handlers", &e))?;
        let (stop, events, log) = (stop_tx.clone(), events_tx.clone(), recorder.clone());
        let beat = self.heartbeat;
        let every = self.config.max_requests;
        let look = self.config.beat_interval();
        rt.spawn(async move {
            let (mut told, mut told_hook) = (None, None);
            let reason = loop {
                let reason = tokio::select! {
                    reason = log.leave_due() => reason,
                    found = look_while_leaving(&log, look, graceful) => match found {
                        // A hold that comes while the last request runs (the
                        // master took back its word): the worker accepts
                        // again now, not once that request is done.
                        Pause::Held => {
                            if STOP_DEADLINE.lock().is_some() {
                                // A fast stop whose `worker_int` hook runs:
                                // no accepting again meanwhile.
                                return;
                            }
                            resume(&log);
                            continue;
                        }
                        Pause::Overdue => "overdue",
                    },
                };
                if STOP_DEADLINE.lock().is_some() {
                    // A signal's stop is under way: it is that stop's exit.
                    return;
                }
                // The master holds recycling while a replacement would not
                // start: a reload was given up (it would load the code that
                // reload could not), or a boot outlasted --timeout. One the
                // master replaced as its last request started is not held
                // (the master holds only the workers that serve on, and
                // takes back a word from them it did not act on). Each
                // hold is told once, and again when its reason changes.
                let held = beat.and_then(heartbeat::recycling_held);
                match (reason, held, every) {
                    ("max_requests", Some(why), Some(n)) => {
                        if told.replace(why) != Some(why) {
                            crate::log::error::info(&why.line("after --max-requests"));
                        }
                        resume(&log);
                        log.recycle_later(n);
                    }
                    // Held as the last request ran past its time: it runs
                    // on, and its end is the leave held as above.
                    ("overdue", Some(_), _) => resume(&log),
                    ("overdue", ..) => {
                        crate::log::error::info(&format!(
                            "The last request before --max-requests still runs after \
                             --graceful-timeout ({}s): the worker stops now, and cuts it if it \
                             runs as long again",
                            graceful.as_secs_f64()
                        ));
                        break "max_requests";
                    }
                    ("hook", Some(why), _) => {
                        // --max-requests due with it stays due (`leave_due`):
                        // held as well, on the next turn.
                        resume(&log);
                        if told_hook.replace(why) != Some(why) {
                            crate::log::error::info(&why.line("for worker.alive = False"));
                        }
                    }
                    _ => break reason,
                }
            };
            if STOP_DEADLINE.lock().is_some() {
                // A signal's stop is under way: it is that stop's exit.
                return;
            }
            if reason == "hook" {
                crate::log::error::info(
                    "Autorestarting worker after current request: a hook set worker.alive = False",
                );
            }
            crate::metrics::worker_leaving(reason);
            if let Some(fd) = beat {
                heartbeat::leaving(fd);
            }
            begin(Stop::Leave, &stop, &events, &log, graceful);
            if let Some(fd) = beat {
                // The master may erase the two bytes as they come (it takes
                // back a held worker's lone byte: a hold that came as this
                // leave began): they are said again until the worker exits.
                loop {
                    tokio::time::sleep(look).await;
                    if heartbeat::said(fd) < 2 {
                        heartbeat::leaving(fd);
                    }
                }
            }
        });
        let kept = (stop_tx.clone(), events_tx.clone(), recorder.clone());
        *self.stopper.lock() = Some(stop_tx);
        let exec = self.exec.clone();
        if self.announce {
            let pid = std::process::id();
            for url in &self.urls {
                crate::log::error::info(&format!("Listening at: {url} ({pid})"));
            }
        }
        if let Some(fd) = self.heartbeat {
            heartbeat::start(fd, self.config.beat_interval(), self.exec.clone())
                .map_err(|e| os_error("Cannot start the heartbeat", &e))?;
        }
        if self.idle_trim {
            let log = recorder.clone();
            if let Err(e) = malloc::trim_when_idle(move || log.served()) {
                crate::log::error::error(&format!("Cannot start the idle trim: {e}"));
            }
        }
        let limits = self.config.limits.clone();
        let proxies = self.config.proxies.clone();
        rt.spawn(async move {
            server::run(listeners, limits, proxies, exec, recorder, stop_rx).await;
            let _ = events_tx.send(Lifecycle::Done);
        });
        crate::metrics::worker_ready();
        if signals::term_kept() {
            // A TERM came while the worker booted: it drains what waits in
            // the backlog for it, as any worker's graceful stop does.
            crate::log::error::write(
                crate::log::error::Level::Debug,
                "Handling signal: term (it came while the worker booted)",
            );
            let (stop, events, log) = kept;
            act(Command::GracefulStop, &stop, &events, &log, graceful);
        }
        Ok(())
    }

    /// Blocks (GIL released) until the server has stopped and drained, or
    /// the stop's time is up (an app stuck in a request cannot hold a TERM
    /// past `--graceful-timeout`, nor an INT at all). Thread mode calls it
    /// on the main thread, the one where Python runs signal handlers: every
    /// `HANDLERS_LOOK` it takes the GIL to run those the app's signals have
    /// pending (`heed_app_signals`). Before, they ran only once the worker
    /// stopped: a handler the app set (USR2 to dump its state, an interval
    /// timer) never ran while it served.
    fn wait(&self, py: Python<'_>) {
        let Some(events) = self.events.lock().take() else {
            return;
        };
        let graceful = self.config.limits.graceful_timeout;
        let mut deadline: Option<Instant> = None;
        let mut events = events;
        loop {
            // The receiver goes into the detached closure and comes back
            // (it may be used from one thread at a time, not shared).
            let (done, back, later) = py.detach(move || {
                let done = wait_a_look(&events, &mut deadline, graceful);
                (done, events, deadline)
            });
            (events, deadline) = (back, later);
            // Also once more at the end: a handler that came during a drain
            // shorter than a look (an app's own TERM handler ending in
            // `sys.exit()`) raised in the code after `wait`, which skipped
            // the worker's exit line and `worker_exit`.
            self.heed_app_signals(py);
            if done {
                return;
            }
        }
    }

    /// The worker is leaving (its requests ended or given up): what it
    /// still holds for StatsD goes out first, as gunicorn's counts went per
    /// request.
    fn finish(&self, py: Python<'_>) {
        py.detach(|| crate::metrics::statsd::flush(Duration::from_millis(500)));
    }

    /// gunicorn's `worker.alive = False` from a hook: the worker leaves
    /// after the requests it has and the master replaces it at once, as
    /// after `--max-requests`. Nothing before `start`.
    fn retire(&self) {
        if let Some(recorder) = self.recorder.get() {
            recorder.retire();
        }
    }

    /// gunicorn's `worker.notify()`: a heartbeat now. Nothing before
    /// `start` (the master times a worker from its first beat).
    fn notify(&self) {
        if let (Some(fd), Some(_)) = (self.heartbeat, self.recorder.get()) {
            heartbeat::touch(fd);
        }
    }

    /// Requests this worker has taken, the ones running too (gunicorn's
    /// `worker.nr`, counted as a request starts).
    #[getter]
    fn started(&self) -> u64 {
        self.recorder.get().map_or(0, |r| r.started())
    }

    /// Asks the server to stop, as TERM (graceful) or INT (fast) would.
    #[pyo3(signature = (graceful=true))]
    fn stop(&self, graceful: bool) {
        if let Some(tx) = self.stopper.lock().as_ref() {
            let how = if graceful { Stop::Graceful } else { Stop::Fast };
            if let Some(r) = self.recorder.get() {
                r.stop_begun();
            }
            stop_by(how, self.config.limits.graceful_timeout);
            let _ = tx.send(how);
        }
    }

    /// Thread mode: one Python thread's request loop; returns at shutdown.
    fn run_thread(&self, py: Python<'_>, app: &Bound<'_, PyAny>) -> PyResult<()> {
        let (Executor::Threads(pool), Some(ctx)) = (&*self.exec, self.ctx.get()) else {
            return Err(PyRuntimeError::new_err(
                "run_thread needs a started thread-mode server",
            ));
        };
        pool.run(py, |py, job| crate::wsgi::driver::serve(py, ctx, app, job));
        Ok(())
    }

    /// Thread mode: lets the pool grow past `--threads` while requests are
    /// parked on the network. `spawn()` must start one more thread running
    /// `run_thread`; the pool calls it from its monitor thread, holding the
    /// GIL only for that call. An exception it raises is logged and the pool
    /// tries again a second later.
    fn grow_with(&self, spawn: &Bound<'_, PyAny>) -> PyResult<()> {
        let Executor::Threads(pool) = &*self.exec else {
            return Err(PyRuntimeError::new_err(
                "grow_with needs a thread-mode server",
            ));
        };
        let spawn = spawn.clone().unbind();
        let failures = parking_lot::Mutex::new(crate::log::spaced::Spaced::default());
        pool.set_spawner(Box::new(move || {
            Python::attach(|py| match spawn.call0(py) {
                Ok(_) => true,
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyRuntimeError>(py) => {
                    // "can't start new thread": a limit (pids, memory), one
                    // line per period, however often the pool tries.
                    failures
                        .lock()
                        .error(&format!("Cannot start one more thread: {e}"));
                    false
                }
                Err(e) => {
                    crate::log::error::exception(py, "Cannot start one more thread", &e);
                    false
                }
            })
        }));
        Ok(())
    }

    /// Gevent mode: the descriptor the hub watches for new events. The
    /// hub's thread calls it once, and is put under `SCHED_BATCH` (`sched.rs`).
    fn hub_fd(&self) -> PyResult<i32> {
        let hub = self
            .hub
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("not a gevent-mode server"))?;
        sched::batch_this_thread();
        Ok(hub.raw_fd())
    }

    /// Gevent mode: every pending event. Items are `Request` objects, int
    /// wake tokens, or `None` for stop.
    fn hub_take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let (Some(hub), Some(ctx)) = (&self.hub, self.ctx.get()) else {
            return Err(PyRuntimeError::new_err(
                "hub_take needs a started gevent-mode server",
            ));
        };
        let out = PyList::empty(py);
        if forked::is_child() {
            return Ok(out); // the parent's queue, copied: never served here
        }
        for ev in hub.take() {
            match ev {
                Event::Request(job) if job.client_gone() => {}
                Event::Request(job) => out.append(Request::new(*job, ctx.clone(), hub.clone()))?,
                Event::Wake(token) => out.append(token)?,
                Event::Stop => out.append(py.None())?,
            }
        }
        Ok(out)
    }
}

impl Server {
    /// Runs the Python handlers of the signals that came (on the main
    /// thread). One that raises `SystemExit` or `KeyboardInterrupt` (an
    /// app's TERM handler ending in `sys.exit()`) stops the worker
    /// gracefully, as TERM does; another exception is logged, and the
    /// worker serves on.
    fn heed_app_signals(&self, py: Python<'_>) {
        let Err(err) = py.check_signals() else {
            return;
        };
        if err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
            || err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        {
            if !self.stopping() {
                crate::log::error::write(
                    crate::log::error::Level::Info,
                    &format!(
                        "A signal handler of the app raised {}: the worker stops gracefully",
                        err.get_type(py)
                            .name()
                            .map_or_else(|_| "an exception".to_owned(), |n| n.to_string())
                    ),
                );
                self.stop(true);
            }
        } else {
            let context = if self.stopping() {
                "Exception in a signal handler of the app:"
            } else {
                "Exception in a signal handler of the app (the worker serves on):"
            };
            crate::log::error::exception(py, context, &err);
        }
    }
}

/// Waits up to `HANDLERS_LOOK` for the worker's lifecycle events;
/// whether the wait is over (drained, or the stop's time is up).
fn wait_a_look(
    events: &mpsc::Receiver<Lifecycle>,
    deadline: &mut Option<Instant>,
    graceful: Duration,
) -> bool {
    loop {
        let now = Instant::now();
        let look = now + HANDLERS_LOOK;
        let until = deadline.map_or(look, |d| d.min(look));
        match events.recv_timeout(until.saturating_duration_since(now)) {
            Ok(Lifecycle::Done) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return true;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return deadline.is_some_and(|d| Instant::now() >= d);
            }
            Ok(Lifecycle::Stopping(how)) => {
                let grace = match how {
                    Stop::Graceful | Stop::Leave => graceful + STOP_GRACE,
                    Stop::Fast => STOP_GRACE,
                };
                // A later stop only shortens the wait: a graceful
                // one after INT (`--max-requests` or a hook's
                // retire coming due meanwhile) does not lengthen it.
                let by = Instant::now() + grace;
                *deadline = Some(deadline.map_or(by, |d| d.min(by)));
            }
        }
    }
}

/// Time a stopping worker gives its threads after the drain, or after a
/// fast stop: what they still hold then is abandoned.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How often a thread-mode worker's main thread, waiting for the stop, runs
/// the Python handlers of the signals that came (`Server::wait`).
const HANDLERS_LOOK: Duration = Duration::from_millis(200);

/// When this worker's stop must be over (`stop_by`): `--graceful-timeout`
/// and `STOP_GRACE` from a graceful stop, `STOP_GRACE` from a fast one.
static STOP_DEADLINE: Mutex<Option<Instant>> = Mutex::new(None);

/// Sets `STOP_DEADLINE` for a stop asked for now; the earliest stop counts
/// (an INT during a graceful stop cuts it short).
fn stop_by(how: Stop, graceful: Duration) {
    let by = Instant::now()
        + match how {
            Stop::Graceful | Stop::Leave => graceful + STOP_GRACE,
            Stop::Fast => STOP_GRACE,
        };
    let mut deadline = STOP_DEADLINE.lock();
    *deadline = Some(deadline.map_or(by, |d| d.min(by)));
}

/// This worker's share of `--max-requests-jitter`: 0 to `max`, from the
/// clock and the pid (no random crate for one number per process).
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(17);
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (max + 1)
}

/// Carries out one signal's command (on the signal thread).
fn act(
    cmd: Command,
    stop: &tokio::sync::mpsc::UnboundedSender<Stop>,
    events: &mpsc::Sender<Lifecycle>,
    recorder: &Recorder,
    graceful: Duration,
) {
    let how = match cmd {
        Command::GracefulStop => Stop::Graceful,
        Command::FastStop => Stop::Fast,
        Command::ReopenLogs => {
            if let Err(e) = crate::log::error::reopen() {
                crate::log::error::error(&format!("Cannot reopen the error log: {e}"));
            }
            if let Some(log) = recorder.access_log() {
                if let Err(e) = log.reopen() {
                    crate::log::error::error(&format!("Cannot reopen the access log: {e}"));
                }
            }
            return;
        }
    };
    begin(how, stop, events, recorder, graceful);
}

/// Resolves with what the worker finds while it pauses for its last
/// request (`Recorder::look_while_leaving`), looked at every `look`.
async fn look_while_leaving(log: &Recorder, look: Duration, own: Duration) -> Pause {
    let mut paused = log.paused();
    loop {
        if paused.wait_for(|p| *p).await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep(look).await;
        if let Some(found) = log.look_while_leaving(own) {
            return found;
        }
    }
}

/// The master holds recycling: the worker that paused to leave stays, and
/// accepts again; it shows as ready again unless a stop began meanwhile
/// (the deadline's lock is held across, so that a stop's `begin`, which
/// sets it first, shows draining after this).
fn resume(log: &Recorder) {
    log.resume();
    let deadline = STOP_DEADLINE.lock();
    if deadline.is_none() {
        crate::metrics::worker_resumed();
    }
}

/// Begins a stop: a signal's (`act`), or the worker's own leave.
fn begin(
    how: Stop,
    stop: &tokio::sync::mpsc::UnboundedSender<Stop>,
    events: &mpsc::Sender<Lifecycle>,
    recorder: &Recorder,
    graceful: Duration,
) {
    stop_by(how, graceful);
    recorder.stop_begun();
    crate::metrics::worker_draining();
    let _ = events.send(Lifecycle::Stopping(how));
    let _ = stop.send(how);
}

/// A worker's start failing on the system: an `OSError` with its errno, so
/// that the worker's caller (`_master.py`) can tell a passing shortage
/// (threads, memory, descriptors: a replacement booted under a pids limit)
/// from a lasting failure.
pub(crate) fn os_error(what: &str, e: &std::io::Error) -> PyErr {
    let said = format!("{what}: {e}");
    match e.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, said)),
        None => PyOSError::new_err(said),
    }
}
