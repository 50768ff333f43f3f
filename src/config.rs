//! The validated configuration of one worker, received once from Python.
//!
//! `python/siesta/config.py` owns the settings table (names, defaults, help,
//! environment variables, config files) and hands Rust one dict; this module
//! turns it into typed values and rejects what Python's checks cannot see
//! (a bind spec Rust cannot parse). No option is defined here a second time:
//! the table is the only place with defaults.

use crate::error::StartupError;
use crate::limits::{HeadLimits, Limits};
use crate::net::bind::BindSpec;
use pyo3::conversion::FromPyObjectOwned;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::time::Duration;

/// How the app runs (`-k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Thread,
    Gevent,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub binds: Vec<BindSpec>,
    pub backlog: i32,
    pub mode: Mode,
    pub workers: usize,
    pub runtime_threads: usize,
    pub limits: Limits,
    pub root_path: String,
    pub access_logfile: Option<String>,
    pub access_logformat: String,
    pub error_logfile: Option<String>,
    pub log_level: crate::log::error::Level,
}

fn get<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    match d.get_item(key)? {
        Some(v) => v.extract().map_err(|e| {
            PyValueError::new_err(format!("setting {key}: {}", Into::<PyErr>::into(e)))
        }),
        None => Err(PyValueError::new_err(format!("setting {key} is missing"))),
    }
}

fn seconds(d: &Bound<'_, PyDict>, key: &str) -> PyResult<Duration> {
    let s: f64 = get(d, key)?;
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!(
            "setting {key}: {s} is not a valid number of seconds"
        ))
    })
}

impl Config {
    pub(crate) fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Config> {
        let binds: Vec<String> = get(d, "bind")?;
        let binds = binds
            .iter()
            .map(|b| BindSpec::parse(b))
            .collect::<Result<Vec<_>, StartupError>>()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mode = match get::<String>(d, "worker_class")?.as_str() {
            "thread" | "gthread" | "sync" => Mode::Thread,
            "gevent" => Mode::Gevent,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown worker class {other:?}"
                )))
            }
        };
        let level: String = get(d, "log_level")?;
        let log_level = crate::log::error::Level::parse(&level)
            .ok_or_else(|| PyValueError::new_err(format!("unknown log level {level:?}")))?;
        let body_timeout = seconds(d, "body_timeout")?;
        let header_timeout = seconds(d, "header_timeout")?;
        let head = HeadLimits::from_options(
            get(d, "limit_request_line")?,
            get(d, "limit_request_fields")?,
            get(d, "limit_request_field_size")?,
        );
        let limits = Limits::new(
            seconds(d, "keep_alive")?,
            seconds(d, "graceful_timeout")?,
            (!body_timeout.is_zero()).then_some(body_timeout),
            (!header_timeout.is_zero()).then_some(header_timeout),
            head,
        );
        Ok(Config {
            binds,
            backlog: get(d, "backlog")?,
            mode,
            workers: get::<usize>(d, "workers")?.max(1),
            runtime_threads: get::<usize>(d, "runtime_threads")?,
            limits,
            root_path: get(d, "root_path")?,
            access_logfile: get(d, "access_logfile")?,
            access_logformat: get(d, "access_logformat")?,
            error_logfile: get(d, "error_logfile")?,
            log_level,
        })
    }
}
