//! `Listeners`: the sockets of one server, opened once by the master and shared by its workers.
//!
//! The master makes a `Listeners` from the settings before any worker
//! exists (an address in use is reported before the app is imported), logs
//! the ready line, and forks; each worker's `Server` takes its own copy of
//! the inherited sockets (`clone_all`). At exit the master removes the unix
//! socket files it created, unless a new master (USR2) inherited them.
//! Accepting connections is `server/`'s job.

use super::bind::{BindSpec, Listener};
use crate::config::Config;
use crate::error::StartupError;
use parking_lot::Mutex;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

pyo3::create_exception!(
    _siesta,
    BindError,
    PyOSError,
    "A listening socket could not be opened (address in use, bad address)."
);

pyo3::create_exception!(
    _siesta,
    AddrInUseError,
    BindError,
    "The address is in use (by another server, or one still stopping)."
);

pub(crate) fn startup_error(e: StartupError) -> PyErr {
    match e {
        StartupError::AddrInUse(_) => AddrInUseError::new_err(e.to_string()),
        e => BindError::new_err(e.to_string()),
    }
}

#[pyclass(frozen, module = "siesta._siesta")]
pub(crate) struct Listeners {
    sockets: Mutex<Vec<Listener>>,
    urls: Vec<String>,
}

impl Listeners {
    pub(crate) fn open(config: &Config) -> PyResult<Listeners> {
        let mut sockets = Vec::with_capacity(config.binds.len());
        // `-b 0.0.0.0:8000 -b [::]:8000` binds both, the second IPv6 only.
        let v4_ports = config.v4_ports();
        for bind in &config.binds {
            match bind.open(config.backlog, config.reuse_port, &v4_ports) {
                Ok(socket) => sockets.push(socket),
                Err(e) => {
                    // An `fd://` socket is the caller's, and a start tried
                    // again (an address in use) opens it again: not closed.
                    for (spec, socket) in config.binds.iter().zip(sockets) {
                        if matches!(spec, BindSpec::Fd(_)) {
                            socket.leave_open();
                        }
                    }
                    return Err(startup_error(e));
                }
            }
        }
        let urls = sockets.iter().map(Listener::url).collect();
        Ok(Listeners {
            sockets: Mutex::new(sockets),
            urls,
        })
    }

    /// A worker's own handles on every socket.
    pub(crate) fn clone_all(&self) -> PyResult<Vec<Listener>> {
        self.sockets
            .lock()
            .iter()
            .map(Listener::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| crate::worker::os_error("Cannot share a listening socket", &e))
    }

    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }
}

#[pymethods]
impl Listeners {
    /// Opens every `bind` of the settings.
    #[new]
    fn new(settings: &Bound<'_, PyDict>) -> PyResult<Self> {
        let config = Config::from_dict(settings)?;
        Listeners::open(&config)
    }

    /// Logs `Listening at: URL (PID)` for each socket: once it is ready for
    /// a client (a unix socket given to `-u/-g`) and the pid file names this
    /// master, so a script that waits for the line finds both, as gunicorn's.
    fn announce(&self) {
        let pid = std::process::id();
        for url in &self.urls {
            crate::log::error::info(&format!("Listening at: {url} ({pid})"));
        }
    }

    /// The listening URLs, real ports included.
    #[getter(urls)]
    fn py_urls(&self) -> Vec<String> {
        self.urls.clone()
    }

    /// The descriptors, in bind order (for a new master after USR2).
    fn fds(&self) -> Vec<i32> {
        self.sockets.lock().iter().map(Listener::raw_fd).collect()
    }

    /// The unix socket files this master created, for a new master (USR2)
    /// to remove once it is the one serving.
    fn made_paths(&self) -> Vec<std::path::PathBuf> {
        let sockets = self.sockets.lock();
        sockets
            .iter()
            .filter_map(|s| s.made_path().map(Into::into))
            .collect()
    }

    /// Closes the sockets; with `unlink`, removes the unix socket files
    /// Siesta created.
    fn close(&self, unlink: bool) {
        let sockets = std::mem::take(&mut *self.sockets.lock());
        if unlink {
            sockets.iter().for_each(Listener::unlink);
        }
    }
}
