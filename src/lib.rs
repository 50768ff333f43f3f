//! Siesta: a WSGI server whose `wsgi.input.read()` puts one request to sleep, not a thread.
//!
//! The architecture, in the order one request travels (docs/ARCHITECTURE.md
//! walks it file by file). Calls go down this list, never up:
//! - `supervisor`: the master process of `-w N`: forks workers (through a
//!   Python callback), gunicorn's signals → `Command`, heartbeats, recycling.
//! - `worker`: `Server`, the Python-facing handle of one worker process:
//!   wires the layers below together, signals → `Command`, shutdown timing.
//! - `server`: accept loops and hyper HTTP/1 connections; the `Service`
//!   turns each request head into a `Job`; `end` is where every request,
//!   answered or refused, ends (access log, later metrics).
//! - `wsgi`: environ, `wsgi.input` (streamed, pulled only when the app reads),
//!   `start_response`, response framing and streaming, `wsgi.file_wrapper`,
//!   and thread mode's request driver.
//! - `exec`: a leaf: the executors (thread pool, which grows while requests
//!   are parked; gevent hub queue) that run the jobs they are handed, and
//!   `Waiter`, the one way a request waits.
//! - `exchange`: what crosses between the I/O side and the app side: `Job`,
//!   `Record` (a request's bookkeeping), `Reply`, the response `Pipe`.
//! - `observer`: the metrics process (`--metrics-bind`): `/metrics`,
//!   `/status`, `/healthz`, `/readyz`, read from the shared region.
//! - `metrics`: a leaf like `log`: the region of shared memory every
//!   process writes its counters and in-flight requests into, and StatsD.
//! - `net`: bind specs and listening sockets (opened before the app loads).
//! - `forwarded`: the rules for trusted proxies (`--forwarded-allow-ips`,
//!   `--secure-scheme-headers`, RFC 7239 `Forwarded`) and the PROXY
//!   protocol parser; pure, applied by `server/proxy.rs`.
//! - `config`, `limits`, `error`, `log`: settings from Python typed once,
//!   every bound with its option name, the error kinds and their one status
//!   table, the error and access logs.
//!
//! This file registers the Python module `siesta._siesta` and holds no logic.

pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod exchange;
pub(crate) mod exec;
pub(crate) mod forwarded;
pub(crate) mod limits;
pub(crate) mod log;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod observer;
pub(crate) mod server;
pub(crate) mod supervisor;
pub(crate) mod worker;
pub(crate) mod wsgi;

use pyo3::prelude::*;

/// Writes one line to the error log (for the Python layer); `"exception"`
/// is an error line with its traceback, counted as StatsD's
/// `gunicorn.log.exception`.
#[pyfunction(name = "log")]
fn log_line(level: &str, message: &str) {
    if level == "exception" {
        return log::error::write_exception(message);
    }
    let level = log::error::Level::parse(level).unwrap_or(log::error::Level::Info);
    log::error::write(level, message);
}

/// Checks a bind spec the way the server will parse it (`--check-config`
/// and the settings table use it); with `resolve`, a host name must also
/// resolve; with `opened`, an `fd://N` must name an open descriptor (checked
/// before `--metrics-bind` is bound, which would take a free number).
#[pyfunction]
#[pyo3(signature = (spec, resolve = false, opened = false))]
fn check_bind(spec: &str, resolve: bool, opened: bool) -> PyResult<()> {
    let parsed = net::bind::BindSpec::parse(spec)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    if resolve {
        parsed
            .resolve()
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    }
    if let (true, net::bind::BindSpec::Fd(fd)) = (opened, &parsed) {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        if unsafe { libc::fcntl(*fd, libc::F_GETFD) } < 0 {
            let e = error::StartupError::Bind {
                addr: format!("fd://{fd}"),
                source: std::io::Error::last_os_error(),
            };
            return Err(pyo3::exceptions::PyValueError::new_err(e.to_string()));
        }
    }
    Ok(())
}

/// Checks an address list (`--forwarded-allow-ips`, `--proxy-allow-from`)
/// the way the server will parse it.
#[pyfunction]
fn check_addresses(text: &str) -> PyResult<()> {
    forwarded::AllowList::parse(text)
        .map(|_| ())
        .map_err(pyo3::exceptions::PyValueError::new_err)
}

/// Checks a `--statsd-host` the way the server will parse it.
#[pyfunction]
fn check_statsd_host(text: &str) -> PyResult<()> {
    metrics::statsd::parse_target(text)
        .map(|_| ())
        .map_err(pyo3::exceptions::PyValueError::new_err)
}

/// Sets the error log's level and file from the settings (the master does
/// this first, and again on HUP; workers inherit it), then warns about the
/// `--access-logformat` atoms Siesta does not know.
#[pyfunction]
fn configure_log(settings: &Bound<'_, pyo3::types::PyDict>) -> PyResult<()> {
    let config = config::Config::from_dict(settings)?;
    log::error::configure(
        config.log_level,
        config.error_logfile.as_deref(),
        config.capture_output,
        false,
    )
    .map_err(|e| {
        pyo3::exceptions::PyOSError::new_err(format!(
            "Cannot open error log {}: {e}",
            config.error_logfile.as_deref().unwrap_or("-")
        ))
    })?;
    if config.access_logfile.is_some() {
        log::access::warn_unknown(&config.access_logformat);
    }
    Ok(())
}

/// The descriptor the error log goes through, for `faulthandler` (it
/// follows a USR1's reopening).
#[pyfunction]
fn error_log_fd() -> i32 {
    log::error::fd()
}

#[pymodule]
fn _siesta(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    log::error::route_panics();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "ClientDisconnected",
        py.get_type::<wsgi::input::ClientDisconnected>(),
    )?;
    m.add("ClientTimeout", py.get_type::<wsgi::input::ClientTimeout>())?;
    m.add(
        "RequestTooLarge",
        py.get_type::<wsgi::input::RequestTooLarge>(),
    )?;
    m.add("BindError", py.get_type::<net::listeners::BindError>())?;
    m.add(
        "AddrInUseError",
        py.get_type::<net::listeners::AddrInUseError>(),
    )?;
    m.add("SETTINGS_FIELDS", config::SETTINGS_FIELDS.to_vec())?;
    m.add_class::<worker::Server>()?;
    m.add_class::<net::listeners::Listeners>()?;
    m.add_class::<supervisor::Supervisor>()?;
    m.add_function(wrap_pyfunction!(supervisor::worker_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(supervisor::check_worker_tmp_dir, m)?)?;
    m.add_function(wrap_pyfunction!(supervisor::worker_dies_with_master, m)?)?;
    m.add_function(wrap_pyfunction!(supervisor::fork_signals, m)?)?;
    m.add_function(wrap_pyfunction!(supervisor::title::set_title, m)?)?;
    m.add_class::<worker::request::Request>()?;
    m.add_class::<wsgi::input::Input>()?;
    m.add_class::<wsgi::start_response::StartResponse>()?;
    m.add_class::<wsgi::file_wrapper::FileWrapper>()?;
    m.add_class::<wsgi::errors::ErrorStream>()?;
    m.add_function(wrap_pyfunction!(log_line, m)?)?;
    m.add_function(wrap_pyfunction!(configure_log, m)?)?;
    m.add_function(wrap_pyfunction!(error_log_fd, m)?)?;
    m.add_function(wrap_pyfunction!(log::access::preopen_access_log, m)?)?;
    m.add_function(wrap_pyfunction!(check_bind, m)?)?;
    m.add_function(wrap_pyfunction!(check_addresses, m)?)?;
    m.add_function(wrap_pyfunction!(check_statsd_host, m)?)?;
    m.add_function(wrap_pyfunction!(worker::forked::leave_if_forked, m)?)?;
    Ok(())
}
