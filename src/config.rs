//! The validated configuration of one worker, received once from Python.
//!
//! `python/siesta/config.py` owns the settings table (names, defaults, help,
//! aliases, environment variables, config files) and hands Rust one dict of
//! the settings marked `rust=True`. `Settings` is that dict as a typed
//! struct, extracted in one step; `SETTINGS_FIELDS` lists its keys so a
//! test can check the table and this struct agree both ways, and extraction
//! refuses a key it does not read. `Config` is what the rest of the crate
//! uses: parsed binds, the mode, the limits. No default is written here.

use crate::error::StartupError;
use crate::forwarded::proxy_protocol::Version as ProxyVersion;
use crate::forwarded::{AllowList, Proxies, SchemeHeaders};
use crate::limits::{HeadLimits, Limits};
use crate::log::error::Level;
use crate::net::bind::BindSpec;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::time::Duration;

/// Declares `Settings` and `SETTINGS_FIELDS` from one list, so the two
/// cannot drift apart.
macro_rules! settings {
    ($($(#[doc = $doc:expr])* $name:ident: $ty:ty,)*) => {
        /// The settings dict from Python, field for field.
        #[derive(Debug, FromPyObject)]
        #[pyo3(from_item_all)]
        pub(crate) struct Settings {
            $($(#[doc = $doc])* pub $name: $ty,)*
        }

        /// The keys `Settings` reads.
        pub(crate) const SETTINGS_FIELDS: &[&str] = &[$(stringify!($name)),*];
    };
}

settings! {
    /// `-b`: HOST:PORT, [V6]:PORT, unix:PATH, fd://N.
    bind: Vec<String>,
    /// `--backlog`.
    backlog: i32,
    /// `-k`, already canonical: `thread` or `gevent`.
    worker_class: String,
    /// `-w`, for `wsgi.multiprocess`.
    workers: usize,
    /// `--runtime-threads`.
    runtime_threads: usize,
    /// `--threads`: app slots per worker in thread mode.
    threads: usize,
    /// `--max-threads`; 0: derived from `--threads` (`exec/threads/growth.rs`).
    max_threads: usize,
    /// `--keep-alive`, seconds.
    keep_alive: f64,
    /// `--header-timeout`, seconds; 0 waits forever.
    header_timeout: f64,
    /// `--limit-request-line`, bytes; 0: only the read buffer.
    limit_request_line: usize,
    /// `--limit-request-fields`; 0 or over 32768: 32768.
    limit_request_fields: usize,
    /// `--limit-request-field-size`, bytes; 0: only the read buffer.
    limit_request_field_size: usize,
    /// `--graceful-timeout`, seconds.
    graceful_timeout: f64,
    /// `--body-timeout`, seconds; 0 waits forever.
    body_timeout: f64,
    /// `--limit-request-body`, bytes; 0 is unlimited.
    limit_request_body: u64,
    /// `--queue-timeout`, seconds; 0 waits forever.
    queue_timeout: f64,
    /// `--max-connections`.
    max_connections: usize,
    /// `-t/--timeout`, seconds; 0 disables.
    timeout: f64,
    /// `--max-requests`; 0 disables.
    max_requests: u64,
    /// `--max-requests-jitter`.
    max_requests_jitter: u64,
    /// `--max-worker-rss`, MiB; 0 disables.
    max_worker_rss: u64,
    /// `--worker-tmp-dir`.
    worker_tmp_dir: Option<String>,
    /// `-D/--daemon`, for WINCH.
    daemon: bool,
    /// `--reload` (development): a boot is not timed.
    reload: bool,
    /// `--reuse-port`.
    reuse_port: bool,
    /// `--root-path`.
    root_path: String,
    /// `--log-level`, already canonical.
    log_level: String,
    /// `--error-logfile`.
    error_logfile: Option<String>,
    /// `--capture-output`: fds 1 and 2 follow the error log file when it is reopened.
    capture_output: bool,
    /// `--access-logfile`.
    access_logfile: Option<String>,
    /// `--access-logformat`.
    access_logformat: String,
    /// `--metrics-bind`: where Siesta serves its own metrics and status page.
    metrics_bind: Option<String>,
    /// `--slow-upload-rate`, bytes/s; 0 disables.
    slow_upload_rate: u64,
    /// `--statsd-host`.
    statsd_host: Option<String>,
    /// `--statsd-prefix`.
    statsd_prefix: String,
    /// `--forwarded-allow-ips`: addresses, networks or `*`.
    forwarded_allow_ips: String,
    /// `--secure-scheme-headers`: header name to the value meaning HTTPS.
    secure_scheme_headers: std::collections::BTreeMap<String, String>,
    /// `--forwarder-headers`: upper-case names, comma-separated.
    forwarder_headers: String,
    /// `--proxy-protocol`, already canonical: `off`, `v1`, `v2` or `auto`.
    proxy_protocol: String,
    /// `--proxy-allow-from`: addresses, networks or `*`.
    proxy_allow_from: String,
}

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
    /// `--threads` and `--max-threads` as given (the pool resolves a 0).
    pub threads: usize,
    pub max_threads: usize,
    pub limits: Limits,
    pub root_path: String,
    pub access_logfile: Option<String>,
    pub access_logformat: String,
    pub error_logfile: Option<String>,
    /// `--capture-output`: USR1 points fds 1 and 2 at the reopened error log.
    pub capture_output: bool,
    pub log_level: Level,
    /// `-t/--timeout`: a worker silent this long is killed and replaced.
    pub timeout: Option<Duration>,
    /// `--max-requests` plus this worker's share of the jitter; `None` never.
    pub max_requests: Option<u64>,
    pub max_requests_jitter: u64,
    /// `--max-worker-rss` in MiB.
    pub max_worker_rss: Option<u64>,
    pub worker_tmp_dir: Option<std::path::PathBuf>,
    pub daemon: bool,
    /// `--reload`: a worker's boot is not timed by `--timeout` (a
    /// `breakpoint()` at import, an edit mid-way).
    pub reload: bool,
    pub reuse_port: bool,
    /// `--metrics-bind`, as given (the master binds it).
    pub metrics_bind: Option<String>,
    /// `--slow-upload-rate` in bytes/s; 0 disables.
    pub slow_upload_rate: u64,
    /// `--statsd-host` and `--statsd-prefix`.
    pub statsd_host: Option<String>,
    pub statsd_prefix: String,
    /// Who may tell the client's scheme and address, and how.
    pub proxies: Proxies,
}

/// The longest any setting waits: longer ones mean "forever" and are cut to
/// this, so that `Instant` arithmetic on them cannot overflow.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn seconds(key: &str, s: f64) -> PyResult<Duration> {
    let d = Duration::try_from_secs_f64(s).or_else(|e| if s > 0.0 { Ok(LONGEST) } else { Err(e) });
    d.map(|d| d.min(LONGEST)).map_err(|_| {
        PyValueError::new_err(format!(
            "setting {key}: {s} is not a valid number of seconds"
        ))
    })
}

/// A zero timeout means "no timeout".
fn optional_seconds(key: &str, s: f64) -> PyResult<Option<Duration>> {
    Ok(Some(seconds(key, s)?).filter(|d| !d.is_zero()))
}

impl Config {
    /// The ports of the IPv4 binds and `--metrics-bind`: an IPv6 socket of
    /// the same port beside one of them is IPv6 only, so both can be bound.
    pub(crate) fn v4_ports(&self) -> Vec<u16> {
        let metrics = self
            .metrics_bind
            .as_deref()
            .and_then(|m| crate::net::bind::BindSpec::parse(m).ok());
        crate::net::bind::v4_ports(self.binds.iter().chain(metrics.as_ref()))
    }

    /// How often a worker beats and the master checks (`--timeout` / 4,
    /// from 50 ms to 1 s).
    pub(crate) fn beat_interval(&self) -> Duration {
        self.timeout
            .map_or(Duration::from_secs(1), |t| t / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    pub(crate) fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Config> {
        for key in d.keys() {
            let key: String = key.extract()?;
            if !SETTINGS_FIELDS.contains(&key.as_str()) {
                return Err(PyValueError::new_err(format!(
                    "setting {key} is sent to Rust but not read there"
                )));
            }
        }
        let s: Settings = d.extract()?;
        Config::from_settings(s)
    }

    pub(crate) fn from_settings(s: Settings) -> PyResult<Config> {
        let binds = s
            .bind
            .iter()
            .map(|b| BindSpec::parse(b))
            .collect::<Result<Vec<_>, StartupError>>()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mode = match s.worker_class.as_str() {
            "thread" => Mode::Thread,
            "gevent" => Mode::Gevent,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown worker class {other:?}"
                )))
            }
        };
        let log_level = Level::parse(&s.log_level)
            .ok_or_else(|| PyValueError::new_err(format!("unknown log level {:?}", s.log_level)))?;
        let limits = Limits {
            keep_alive: seconds("keep_alive", s.keep_alive)?,
            header_timeout: optional_seconds("header_timeout", s.header_timeout)?,
            head: HeadLimits::from_options(
                s.limit_request_line,
                s.limit_request_fields,
                s.limit_request_field_size,
            ),
            graceful_timeout: seconds("graceful_timeout", s.graceful_timeout)?,
            body_timeout: optional_seconds("body_timeout", s.body_timeout)?,
            queue_timeout: optional_seconds("queue_timeout", s.queue_timeout)?,
            limit_request_body: Some(s.limit_request_body).filter(|&n| n > 0),
            max_connections: s.max_connections.max(1),
            response_buffer_max: match mode {
                Mode::Gevent => 4 * Limits::FIXED.response_buffer,
                Mode::Thread => Limits::FIXED.response_buffer,
            },
            ..Limits::FIXED
        };
        Ok(Config {
            binds,
            backlog: s.backlog,
            mode,
            workers: s.workers.max(1),
            runtime_threads: s.runtime_threads,
            threads: s.threads,
            max_threads: s.max_threads,
            limits,
            root_path: s.root_path,
            access_logfile: s.access_logfile,
            access_logformat: s.access_logformat,
            error_logfile: s.error_logfile,
            capture_output: s.capture_output,
            log_level,
            timeout: optional_seconds("timeout", s.timeout)?,
            max_requests: Some(s.max_requests).filter(|&n| n > 0),
            max_requests_jitter: s.max_requests_jitter,
            max_worker_rss: Some(s.max_worker_rss).filter(|&n| n > 0),
            worker_tmp_dir: s.worker_tmp_dir.map(std::path::PathBuf::from),
            daemon: s.daemon,
            reload: s.reload,
            reuse_port: s.reuse_port,
            metrics_bind: s.metrics_bind.filter(|b| !b.is_empty()),
            slow_upload_rate: s.slow_upload_rate,
            statsd_host: s.statsd_host.filter(|h| !h.is_empty()),
            statsd_prefix: s.statsd_prefix,
            proxies: proxies(
                &s.forwarded_allow_ips,
                &s.secure_scheme_headers,
                &s.forwarder_headers,
                &s.proxy_protocol,
                &s.proxy_allow_from,
            )?,
        })
    }
}

fn proxies(
    forwarded_allow_ips: &str,
    secure_scheme_headers: &std::collections::BTreeMap<String, String>,
    forwarder_headers: &str,
    proxy_protocol: &str,
    proxy_allow_from: &str,
) -> PyResult<Proxies> {
    fn invalid(key: &'static str) -> impl Fn(String) -> PyErr {
        move |e| PyValueError::new_err(format!("setting {key}: {e}"))
    }
    Ok(Proxies {
        forwarded_allow: AllowList::parse(forwarded_allow_ips)
            .map_err(invalid("forwarded_allow_ips"))?,
        scheme_headers: SchemeHeaders::new(
            secure_scheme_headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(invalid("secure_scheme_headers"))?,
        mount_header: forwarder_headers
            .split(',')
            .any(|n| matches!(n.trim(), "SCRIPT_NAME" | "*")),
        protocol: match proxy_protocol {
            "off" => None,
            "v1" => Some(ProxyVersion::V1),
            "v2" => Some(ProxyVersion::V2),
            "auto" => Some(ProxyVersion::Auto),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown PROXY protocol mode {other:?}"
                )))
            }
        },
        proxy_allow: AllowList::parse(proxy_allow_from).map_err(invalid("proxy_allow_from"))?,
    })
}
