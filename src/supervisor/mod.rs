//! The master process: starts `-w N` workers, keeps them alive, and acts on gunicorn's signals.
//!
//! `Supervisor.run(callbacks)` is the master's whole life, on one thread
//! with no runtime (workers are forked from it): it waits on the signal
//! pipe (`signals.rs`) with a short tick, turns each signal into a
//! `Command` handled in one `match` (`handle`), and on every tick reaps
//! exited workers, kills silent ones (`--timeout`) and fat ones
//! (`--max-worker-rss`), and starts or retires workers until the count is
//! right. Forking, running a worker and the config's hooks are Python's:
//! `callbacks` is `python/siesta/_master.py`'s `Master`. The table of
//! workers is `workers.rs`. The master never runs app code.

mod backoff;
mod degraded;
pub(crate) mod observer;
pub(crate) mod signals;
pub(crate) mod title;
pub(crate) mod workers;

use crate::config::Config;
use crate::worker::heartbeat::Held;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use signals::{Command, SignalPipe};
use std::time::{Duration, Instant};
use workers::{Exit, Retire, Table, Worker};

/// gunicorn's exit codes for a worker that could not boot or load the app.
const WORKER_BOOT_ERROR: i32 = 3;
const APP_LOAD_ERROR: i32 = 4;

/// After `--graceful-timeout`, how long a worker stopped with TERM gets
/// before SIGKILL. The worker gives up on its own requests one second after
/// the timeout (counted from when it got TERM) and then exits; the rest is
/// room for that exit, so a worker that used its whole grace is not killed
/// in the middle of leaving.
const GRACEFUL_EXTRA: Duration = Duration::from_secs(3);
/// After a fast stop, how long workers get before SIGKILL.
const FAST_GRACE: Duration = Duration::from_secs(2);
/// After a timeout's SIGABRT (which dumps the stacks), how long before SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// How long the next timed-out worker waits for the last one's abort
/// (its stacks are written in milliseconds).
const ABORT_SPACING: Duration = Duration::from_millis(500);
/// How many times a replacement that crashed booting is started again, in a
/// row, while others serve (see `Master::crash_is_retried`).
const BOOT_CRASH_RETRIES: u32 = 3;
/// The first and the longest wait before a replacement whose boot outlasted
/// `--timeout` is tried again (`Master::hang_is_retried`).
const HANG_RETRY_FIRST: Duration = Duration::from_secs(1);
const HANG_RETRY_MAX: Duration = Duration::from_secs(60);

/// A worker that ends of itself within this of its fork (a crash as it
/// starts serving, a resource it cannot get) is replaced after a pause that
/// doubles with each such end (the first aside) less than a minute after
/// the one before, from `QUICK_PAUSE` up to `QUICK_PAUSE_MAX`: no loop of
/// forks as fast as the machine allows (QA, session 30: 55 a second, with a
/// line each, for a worker that could start no app thread). A quiet minute
/// or a HUP starts the count again.
const QUICK_EXIT: Duration = Duration::from_secs(1);
const QUICK_PAUSE: Duration = Duration::from_millis(100);
const QUICK_PAUSE_MAX: Duration = Duration::from_secs(10);
const QUICK_FORGOTTEN: Duration = Duration::from_secs(60);

/// A reload retires the old workers once the new ones are up, or after this.
const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// The master of one server (`siesta -w N`).
#[pyclass(frozen, module = "siesta._siesta")]
pub(crate) struct Supervisor {
    config: Config,
    /// `--metrics-bind`: its listener, bound here, and its process.
    observer: Option<observer::Observer>,
    /// The signal handlers, installed when the master is made (before the
    /// ready line and the pid file), so a signal sent as soon as a deployer
    /// can see the master waits in the pipe instead of killing it.
    pipe: SignalPipe,
    /// In a master a USR2 started: its old master's pid, until that one is
    /// gone (this master is then reparented) and the callbacks' promotion
    /// has run; 0 otherwise.
    old_master: std::sync::atomic::AtomicI32,
}

#[pymethods]
impl Supervisor {
    #[new]
    fn new(settings: &Bound<'_, PyDict>) -> PyResult<Self> {
        let config = Config::from_dict(settings)?;
        let observer = match &config.metrics_bind {
            Some(spec) => Some(
                observer::Observer::bind(
                    spec,
                    crate::observer::Settings {
                        slow_upload_rate: config.slow_upload_rate,
                    },
                    &config.v4_ports(),
                )
                .map_err(crate::net::listeners::startup_error)?,
            ),
            None => None,
        };
        let pipe = SignalPipe::install()
            .map_err(|e| PyOSError::new_err(format!("Cannot install signal handlers: {e}")))?;
        Ok(Supervisor {
            config,
            observer,
            pipe,
            old_master: std::sync::atomic::AtomicI32::new(0),
        })
    }

    /// A master a USR2 started watches its old master, its parent: once
    /// that one is gone, `maybe_promote()` is called at the loop's next turn
    /// (within a heartbeat, before that turn's callbacks), as gunicorn's
    /// master looks each second.
    fn watch_old_master(&self, pid: i32) {
        self.old_master
            .store(pid, std::sync::atomic::Ordering::Relaxed);
    }

    /// `--metrics-bind`'s URL (`http://HOST:PORT` or `unix:PATH`), when set.
    #[getter]
    fn metrics_url(&self) -> Option<String> {
        self.observer.as_ref().map(|o| o.url.clone())
    }

    /// After `--preload`'s import: the master's handlers take back the
    /// signals whose handling the app changed (gunicorn installs its own
    /// after the preload). A handler the app set at import, SIGCHLD ignored
    /// above all, left a dead worker unnoticed and unreplaced, TERM, INT
    /// and QUIT unheard. Returns the names of the signals taken back.
    fn take_signals_back(&self) -> PyResult<Vec<&'static str>> {
        signals::take_back().map_err(|e| PyOSError::new_err(e.to_string()))
    }

    /// Removes a unix `--metrics-bind`'s socket file, when Siesta made it:
    /// at a stop (unless a new master of a USR2 has the socket) or a start
    /// that failed once bound.
    fn remove_metrics_socket(&self) {
        if let Some(o) = &self.observer {
            o.unlink();
        }
    }

    /// The unix `--metrics-bind` socket file this master created, if any
    /// (a new master of a USR2 removes it once it is the one serving).
    #[getter]
    fn metrics_made_path(&self) -> Option<std::path::PathBuf> {
        self.observer.as_ref()?.made_path().map(Into::into)
    }

    /// The metrics listener's descriptor, for a new master on USR2.
    #[getter]
    fn metrics_fd(&self) -> Option<i32> {
        self.observer.as_ref().map(|o| o.listener_fd())
    }

    /// Runs the master until it stops; returns the exit code and, for a
    /// server that stopped itself, why (logged after the shutdown line, as
    /// gunicorn logs its `Reason:`). `callbacks`
    /// has `spawn(age, heartbeat_fd) -> pid`, `reload() -> workers`,
    /// `reloaded()` (the on_reload hook, once the count was told),
    /// `child_exit(pid, code)`, `nworkers_changed(new, old)`, `upgrade()`,
    /// `stopping()` (close the listening sockets), `reopened()` (USR1: log
    /// files to the workers' user) and `reaped(pid, code)`
    /// (a child that was not a worker exited: a USR2 master).
    fn run(&self, py: Python<'_>, callbacks: &Bound<'_, PyAny>) -> PyResult<(i32, Option<String>)> {
        let pipe = &self.pipe;
        let mut m = Master {
            cfg: self.config.clone(),
            cb: callbacks,
            table: Table::default(),
            target: self.config.workers,
            generation: 1,
            stopping: false,
            reload_started: None,
            reload_pending: None,
            target_before_reload: self.config.workers,
            abandoned: Vec::new(),
            halt: None,
            boot_crashes: 0,
            hang_retries: backoff::Backoff::new(HANG_RETRY_FIRST, HANG_RETRY_MAX),
            hang_slots: 0,
            hang_hold: None,
            boots_seen: 0,
            degraded: None,
            quick_exits: 0,
            last_quick: None,
            respawn_at: None,
            observer: self.observer.as_ref(),
            counted_workers: 0,
            rss_warned: 0,
            beat_failures: crate::log::spaced::Spaced::default(),
            fork_failures: crate::log::spaced::Spaced::default(),
        };
        let tick = self.config.beat_interval();
        m.start_metrics();
        m.maintain(py);
        loop {
            let signos = py.detach(|| pipe.wait(tick));
            // Before any callback of this turn, so its hooks see the names.
            self.promote_if_orphaned(py, callbacks);
            for signo in signos {
                let Some(cmd) = signals::command_for(signo) else {
                    continue;
                };
                if cmd != Command::ChildExited {
                    crate::log::error::info(&format!("Handling signal: {}", signals::name(signo)));
                }
                m.handle(py, cmd);
            }
            m.reap(py);
            m.check(py);
            m.publish();
            if m.stopping && m.table.workers.is_empty() {
                if let Some(o) = m.observer {
                    o.stop();
                }
                if let Some((code, reason)) = m.halt {
                    return Ok((code, Some(reason.to_string())));
                }
                return Ok((0, None));
            }
        }
    }
}

impl Supervisor {
    /// `watch_old_master`'s check: one `getppid` per turn of the loop.
    fn promote_if_orphaned(&self, py: Python<'_>, callbacks: &Bound<'_, PyAny>) {
        use std::sync::atomic::Ordering;
        let old = self.old_master.load(Ordering::Relaxed);
        // SAFETY: getppid(2) takes no arguments.
        if old == 0 || unsafe { libc::getppid() } == old {
            return;
        }
        self.old_master.store(0, Ordering::Relaxed);
        if let Err(e) = callbacks.call_method0("maybe_promote") {
            crate::log::error::exception(py, "Cannot take over as the master", &e);
        }
    }
}

/// The one thing a freshly forked child must do first: drop the master's
/// signal handlers and pipe; a worker (`die_with_master`) also ends when
/// the master does, a new master started by USR2 does not, and keeps a
/// TERM until it has booted. `keep_beat`:
/// a worker's own heartbeat descriptor; the master's others are closed.
#[pyfunction]
#[pyo3(signature = (die_with_master=true, keep_beat=None))]
pub(crate) fn worker_after_fork(die_with_master: bool, keep_beat: Option<i32>) -> PyResult<()> {
    if let Some(fd) = keep_beat {
        workers::close_master_only(fd);
    }
    if die_with_master {
        // A worker's TERM waits for its boot to end: held before the reset,
        // which leaves it (a second call, once signals are let in, would
        // otherwise give TERM its default for a moment).
        crate::worker::signals::hold_term_while_booting(signals::master_pid())
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
    }
    signals::reset_in_child(die_with_master).map_err(|e| PyOSError::new_err(e.to_string()))?;
    // What the master blocked across the fork (`fork_signals`) comes now.
    signals::block(false);
    if die_with_master {
        signals::worker_forks_plainly();
        signals::die_with_master().map_err(|e| PyOSError::new_err(e.to_string()))?;
    }
    Ok(())
}

/// Whether a worker's heartbeat file can be made in `dir` (`None`: the
/// temporary directories, `Table::heartbeat_file`): `OSError` if not.
#[pyfunction]
#[pyo3(signature = (dir=None))]
pub(crate) fn check_worker_tmp_dir(dir: Option<std::path::PathBuf>) -> PyResult<()> {
    Table::heartbeat_dir_usable(dir.as_deref()).map_err(|e| {
        // The reason alone ("Permission denied"), for a line of its own.
        let text = e.to_string();
        PyOSError::new_err(text.split(" (os error").next().unwrap_or(&text).to_owned())
    })
}

/// A worker that changed its user or group (`-u`, `-g`) asks for its
/// parent-death TERM again: the kernel clears it with the credentials, and
/// a worker whose master died (even by SIGKILL) served on for good.
#[pyfunction]
pub(crate) fn worker_dies_with_master() -> PyResult<()> {
    signals::die_with_master().map_err(|e| PyOSError::new_err(e.to_string()))
}

/// `fork_signals(True)` before `os.fork()`, `fork_signals(False)` after it
/// in the master: the master's signals wait across the fork (`signals::block`);
/// the child lets them in with `worker_after_fork`.
#[pyfunction]
pub(crate) fn fork_signals(block: bool) {
    signals::block(block);
}

struct Master<'a, 'py> {
    /// The config the master acts on: the start's, then each HUP's
    /// (`--timeout`, `--graceful-timeout`, `--max-worker-rss` and the like
    /// apply to every worker from that HUP on, as in gunicorn).
    cfg: Config,
    cb: &'a Bound<'py, PyAny>,
    table: Table,
    /// How many workers there should be (`-w`, TTIN/TTOU, a reload).
    target: usize,
    /// Bumped by every reload; older workers are retired.
    generation: u64,
    /// Every worker is being stopped; the master exits when none is left.
    stopping: bool,
    /// A reload is under way: the old workers go once the new ones are up.
    reload_started: Option<Instant>,
    /// The generation the last HUP started, until its outcome is counted
    /// (`siesta_reloads_total`), and whether its config was refused.
    reload_pending: Option<(u64, bool)>,
    /// `target` before the reload under way (restored if it is given up).
    target_before_reload: usize,
    /// The generations of reloads given up because their workers could not
    /// boot or load the app: their exits are expected, not a reason to halt.
    abandoned: Vec<u64>,
    /// A worker could not boot: exit with this code once all are gone.
    halt: Option<(i32, &'static str)>,
    /// Replacements that crashed booting while others served, since
    /// `boots_seen` (a worker's boot starts the count again).
    boot_crashes: u32,
    /// Replacements whose boot outlasted `--timeout`, likewise: none while
    /// the wait runs and others serve, for the `hang_slots` places of those
    /// that hung in its round.
    hang_retries: backoff::Backoff,
    hang_slots: usize,
    /// The workers that serve on are held from `--max-requests` after a
    /// boot that hung, until a worker boots (`Table::boots` past this):
    /// each replacement would hang too while its cause lasts, and once
    /// none served the next hang would stop the server.
    hang_hold: Option<u64>,
    boots_seen: u64,
    /// A reload was given up and its old workers serve on (`degraded.rs`).
    degraded: Option<degraded::Degraded>,
    /// Workers that ended of themselves soon after their fork, in a row
    /// (`QUICK_EXIT`), the last one's time, and no fork before `respawn_at`.
    quick_exits: u32,
    last_quick: Option<Instant>,
    respawn_at: Option<Instant>,
    /// The metrics process (`--metrics-bind`).
    observer: Option<&'a observer::Observer>,
    /// The worker count last sent to StatsD.
    counted_workers: usize,
    /// The generation whose workers were found over `--max-worker-rss`
    /// once booted (warned once per generation; 0: none).
    rss_warned: u64,
    /// A worker that cannot be started (a pids, memory or descriptor
    /// limit) is tried again every tick: its lines go out once per period,
    /// the heartbeat file's and the fork's each on its own.
    beat_failures: crate::log::spaced::Spaced,
    fork_failures: crate::log::spaced::Spaced,
}

impl Master<'_, '_> {
    /// A HUP's config, for the master's own checks (`Config::from_dict`
    /// of the settings the callbacks now hold; the sockets, `--metrics-bind`
    /// and StatsD stay the start's). One it cannot read leaves the running one.
    fn take_settings(&mut self, py: Python<'_>) {
        let read = self.cb.call_method0("rust_settings").and_then(|d| {
            let d = d.cast_into::<PyDict>()?;
            Config::from_dict(&d)
        });
        match read {
            Ok(cfg) => {
                let (statsd_host, statsd_prefix) = (
                    self.cfg.statsd_host.take(),
                    std::mem::take(&mut self.cfg.statsd_prefix),
                );
                // Detached or not is the start's (a foreground master told
                // it is a daemon would stop its workers on a terminal's WINCH).
                self.cfg = Config {
                    statsd_host,
                    statsd_prefix,
                    daemon: self.cfg.daemon,
                    ..cfg
                };
            }
            Err(e) => crate::log::error::exception(
                py,
                "Reload: the master keeps its running timeouts",
                &e,
            ),
        }
    }

    /// Whether `--timeout` bounds a boot (`Table::check_beats`).
    fn boots_timed(&self) -> bool {
        self.cfg.timeout.is_some() && !self.cfg.reload
    }

    /// `--timeout` as a log line says it (`30 s`).
    fn timeout_shown(&self) -> String {
        self.cfg
            .timeout
            .map_or_else(|| "off".to_string(), |t| format!("{} s", t.as_secs_f64()))
    }

    fn graceful(&self) -> Duration {
        self.cfg.limits.graceful_timeout + GRACEFUL_EXTRA
    }

    /// Replaces the workers over `--max-worker-rss`. One already over it
    /// when it booted (the app alone is that big: its replacement would be
    /// too, and workers would be replaced for ever) is held to what it
    /// booted with plus `--max-worker-rss` instead; that is warned once per
    /// generation.
    fn replace_fat(&mut self, max: u64) {
        let mut fat = Vec::new();
        let mut over_at_boot = None;
        for (pid, w) in &self.table.workers {
            if !w.booted || w.retiring.is_some() {
                continue;
            }
            let limit = match w.boot_rss.filter(|&rss| rss > max) {
                Some(at_boot) => {
                    over_at_boot = Some((*pid, at_boot, w.generation));
                    at_boot.saturating_add(max)
                }
                None => max,
            };
            let Some(rss) = workers::rss_mib(*pid) else {
                continue;
            };
            if rss > limit {
                fat.push((*pid, rss, limit));
            }
        }
        if let Some((pid, rss, generation)) = over_at_boot {
            if self.rss_warned != generation {
                self.rss_warned = generation;
                crate::log::error::write(
                    crate::log::error::Level::Warning,
                    &format!(
                        "Worker (pid:{pid}) already used {rss} MiB when it booted, over \
                         --max-worker-rss {max} MiB: such a worker is replaced once it grows \
                         by {max} MiB past what it booted with; raise --max-worker-rss"
                    ),
                );
            }
        }
        for (pid, rss, limit) in fat {
            let over = if limit == max {
                format!("--max-worker-rss {max} MiB")
            } else {
                format!("{limit} MiB (what it booted with, plus --max-worker-rss {max} MiB)")
            };
            crate::log::error::info(&format!(
                "Worker (pid:{pid}) uses {rss} MiB, over {over}: replacing it"
            ));
            self.table
                .retire(pid, Retire::Rss, libc::SIGTERM, self.graceful());
        }
    }

    fn handle(&mut self, py: Python<'_>, cmd: Command) {
        match cmd {
            Command::GracefulStop => self.stop_all(py, libc::SIGTERM, self.graceful()),
            Command::FastStop => self.stop_all(py, libc::SIGQUIT, FAST_GRACE),
            Command::Reload if !self.stopping => {
                // gunicorn's line, which a deploy script may wait for.
                crate::log::error::info("Hang up: Master");
                if self.reload_started.is_none() {
                    self.target_before_reload = self.target;
                }
                let log_before = crate::log::error::destination();
                if self.reload_pending.take().is_some() {
                    // The HUP before this one had not ended: it never will.
                    crate::metrics::master::reloaded("superseded");
                }
                let refused = match self
                    .cb
                    .call_method0("reload")
                    .and_then(|n| n.extract::<(usize, bool)>())
                {
                    Ok((n, refused)) => {
                        if !refused {
                            self.take_settings(py);
                        }
                        // As gunicorn: the count is set again, told even when the same.
                        let old = self.target;
                        self.target = n.max(1);
                        self.tell_count(py, Some(old));
                        // on_reload after nworkers_changed, as gunicorn's
                        // reload calls them.
                        if let Err(e) = self.cb.call_method0("reloaded") {
                            crate::log::error::exception(py, "on_reload hook failed", &e);
                        }
                        refused
                    }
                    Err(e) => {
                        crate::log::error::exception(py, "Reload failed", &e);
                        true
                    }
                };
                if let Some(o) = self
                    .observer
                    .filter(|_| log_before != crate::log::error::destination())
                {
                    // It keeps the error log it was forked with, and reopens
                    // that path on USR1: a new one needs a new process (none
                    // while a new master has the port: `take_back` starts it).
                    o.stop();
                    if !o.handed() {
                        o.start();
                    }
                }
                self.generation += 1;
                let old: Vec<i32> = self.table.workers.keys().copied().collect();
                for pid in old {
                    if let Some(w) = self.table.workers.get_mut(&pid) {
                        w.retiring.get_or_insert(Retire::Reload);
                    }
                }
                self.reload_started = Some(Instant::now());
                self.reload_pending = Some((self.generation, refused));
                if let Some(d) = &mut self.degraded {
                    d.hup();
                }
                // A fix deployed: its workers start now, and count afresh.
                self.respawn_at = None;
                self.hang_retries.end_wait();
                self.quick_exits = 0;
                self.maintain(py);
            }
            Command::Incr if !self.stopping => self.resize(py, self.target + 1),
            // Never below one; at one, nothing changes and no hook is called.
            Command::Decr if !self.stopping && self.target > 1 => self.resize(py, self.target - 1),
            Command::ReopenLogs => {
                if let Err(e) = crate::log::error::reopen() {
                    crate::log::error::error(&format!("Cannot reopen the error log: {e}"));
                }
                if let Err(e) = self.cb.call_method0("reopened") {
                    crate::log::error::exception(py, "Cannot hand over the log files", &e);
                }
                self.table.signal_all(libc::SIGUSR1);
                if let Some(o) = self.observer {
                    o.signal(libc::SIGUSR1); // its error log too
                }
            }
            Command::Upgrade if !self.stopping => {
                if let Err(e) = self.cb.call_method0("upgrade") {
                    crate::log::error::exception(py, "Upgrade failed", &e);
                }
                if let Some(o) = self.observer.as_ref().filter(|_| self.upgraded()) {
                    o.hand_over();
                }
            }
            Command::Winch if self.cfg.daemon && !self.stopping => {
                crate::log::error::info("graceful stop of workers");
                self.resize(py, 0);
            }
            // At debug, as gunicorn's: a terminal resized sends it too.
            Command::Winch => crate::log::error::write(
                crate::log::error::Level::Debug,
                "SIGWINCH ignored. Not daemonized",
            ),
            Command::Reload | Command::Incr | Command::Decr | Command::Upgrade => {}
            Command::ChildExited => {}
        }
    }

    /// Whether a new master started by USR2 runs (the callback's `upgraded`).
    fn upgraded(&self) -> bool {
        self.cb.getattr("upgraded").is_ok_and(|pid| !pid.is_none())
    }

    fn resize(&mut self, py: Python<'_>, n: usize) {
        let old = self.target;
        self.target = n;
        if self.reload_started.is_some() {
            // Kept if the reload is given up (`abandon_generation`).
            self.target_before_reload = (self.target_before_reload + n).saturating_sub(old).max(1);
        }
        self.tell_count(py, Some(old));
        self.maintain(py);
    }

    /// The `nworkers_changed` hook, with the count now and before (its
    /// first call, with `None`, is the start's, before `on_starting`).
    fn tell_count(&self, py: Python<'_>, old: Option<usize>) {
        if let Err(e) = self.cb.call_method1("nworkers_changed", (self.target, old)) {
            crate::log::error::exception(py, "nworkers_changed hook failed", &e);
        }
    }

    fn stop_all(&mut self, py: Python<'_>, signo: i32, grace: Duration) {
        if !self.stopping {
            // The master's own copies of the listening sockets close first,
            // as gunicorn's do: once the workers stop accepting, a new
            // connection is refused at once instead of waiting in the
            // backlog of a socket nobody accepts on until the master exits.
            if let Err(e) = self.cb.call_method0("stopping") {
                crate::log::error::exception(py, "Cannot close the listening sockets", &e);
            }
        }
        self.stopping = true;
        let pids: Vec<i32> = self.table.workers.keys().copied().collect();
        for pid in pids {
            // A second, faster stop re-signals workers already retiring and
            // brings their kill forward; one as slow keeps it (a TERM every
            // few seconds would otherwise put it off for good).
            let mut signo = signo;
            if let Some(w) = self.table.workers.get_mut(&pid) {
                if w.retiring.is_some_and(Retire::aborts) {
                    // Its SIGABRT is writing its stacks, and its kill is no
                    // later than any stop's: a signal now, taken first (a
                    // lower number), would end it before they are written.
                    continue;
                }
                // A halt (a worker could not boot or load the app) does not
                // wait for the others' imports, nor lets them serve: a
                // booting worker keeps a TERM until it has booted.
                if self.halt.is_some() && signo == libc::SIGTERM && !w.booted_by_now() {
                    signo = libc::SIGINT;
                }
                // Against the time this stop would give it (its own, if
                // longer), not the master's alone: a worker forked before a
                // HUP shortened --graceful-timeout had its kill put off by
                // every TERM.
                let given = w.grace_for(signo, grace);
                if w.kill_at.is_some_and(|k| Instant::now() + given < k) {
                    w.kill_at = None;
                }
            }
            self.table.retire(pid, Retire::Stop, signo, grace);
        }
    }

    /// Starts or retires workers until `target` are active.
    fn maintain(&mut self, py: Python<'_>) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        // Only the places of boots that hung wait (the others: a worker
        // that died, TTIN, are filled at once), and only while one serves.
        let held = if self.hang_retries.waiting(now) && self.serving() {
            self.hang_slots
        } else {
            0
        };
        // A worker whose boot timed out is no longer active, but whether its
        // place is taken again (a retry), given up with its reload, or the
        // server halts is decided once it has exited (`reap`): a worker
        // forked meanwhile would be of the code that just failed.
        let verdict_due = self
            .table
            .workers
            .values()
            .any(|w| w.retiring == Some(Retire::BootTimeout));
        while self.table.active() + held < self.target && !verdict_due {
            let wait = self.respawn_at.is_some_and(|at| now < at)
                || self
                    .degraded
                    .as_ref()
                    .is_some_and(|d| !d.may_start(now, self.serving()));
            if wait || !self.spawn(py) {
                break;
            }
        }
        while self.table.active() > self.target {
            let Some((pid, booted)) = self.table.next_to_retire() else {
                break;
            };
            // One still booting has nothing to drain (the others serve the
            // backlog): a fast stop, not a TERM it would keep until booted.
            let signo = if booted { libc::SIGTERM } else { libc::SIGINT };
            self.table.retire(pid, Retire::Stop, signo, self.graceful());
        }
    }

    fn spawn(&mut self, py: Python<'_>) -> bool {
        let heartbeat = match Table::heartbeat_file(self.cfg.worker_tmp_dir.as_deref()) {
            Ok(f) => f,
            Err(e) => {
                self.beat_failures
                    .error(&format!("Cannot make a worker heartbeat file: {e}"));
                return false;
            }
        };
        let age = self.table.next_age();
        let fd = workers::heartbeat_fd(&heartbeat.0);
        let slot = crate::metrics::master::reserve();
        match self
            .cb
            .call_method1("spawn", (age, fd))
            .and_then(|p| p.extract::<i32>())
        {
            Ok(pid) => {
                crate::metrics::master::spawned(slot, Some(pid), age);
                self.table.add(pid, age, self.generation, heartbeat);
                let (beat, graceful) = (self.cfg.beat_interval(), self.graceful());
                if let Some(w) = self.table.workers.get_mut(&pid) {
                    w.beat = beat;
                    w.graceful = graceful;
                }
                true
            }
            Err(e) => {
                crate::metrics::master::spawned(slot, None, age);
                if e.is_instance_of::<PyOSError>(py) {
                    // fork() failing (a pids or memory limit): one line.
                    self.fork_failures
                        .error(&format!("Cannot start a worker: {e}"));
                } else {
                    crate::log::error::exception(py, "Cannot start a worker", &e);
                }
                false
            }
        }
    }

    fn reap(&mut self, py: Python<'_>) {
        for (pid, exit, worker) in self.table.reap() {
            let code = match exit {
                Exit::Code(c) => c,
                Exit::Signal(s) => -s,
            };
            let Some(worker) = worker else {
                // Not a worker: the metrics process, or a new master started
                // by USR2 that exited while this one still runs.
                if let Some(o) = self.observer {
                    if o.reaped(pid, self.stopping) {
                        continue;
                    }
                }
                if let Err(e) = self.cb.call_method1("reaped", (pid, code)) {
                    crate::log::error::exception(py, "Cannot handle a child's exit", &e);
                }
                // The new master of a USR2 gone, this one serves on.
                if let Some(o) = self.observer.as_ref().filter(|_| !self.upgraded()) {
                    if !self.stopping {
                        o.take_back();
                    }
                }
                continue;
            };
            // One replaced as its last request started, whose stop never
            // began, that did not exit 0: not the recycling's doing (a
            // crash in that request, say).
            let replaced_only = worker.retiring == Some(Retire::Recycle)
                && worker.kill_at.is_none()
                && !worker.killed
                && exit != Exit::Code(0);
            let why = worker.retiring.filter(|_| !replaced_only);
            crate::metrics::master::exited(pid, why.map(observer::retire_reason), code);
            // A worker that ended before it booted, of its own doing: an
            // exit code of the app's or the process's (Python turns a
            // `SystemExit` then into 3; `os._exit(0)` at import is 0), or a
            // crash (a fault signal); not a SIGKILL or TERM from outside
            // (the OOM killer, an operator). It could not start, as exit 3
            // says, and would not on a respawn. One the master was ending
            // ended as asked, whatever the way.
            let booted = worker.booted_by_now();
            // Signalled by the master (a stop, a retired reload, a timeout):
            // a reload only marks the workers it will retire, until its own
            // are up, and those may fail on their own meanwhile.
            // Still booting after --timeout (`check`): a failure to start,
            // whatever signal it ended by.
            let boot_timed_out = worker.retiring == Some(Retire::BootTimeout);
            let asked_booting =
                (worker.kill_at.is_some() || worker.killed) && !booted && !boot_timed_out;
            let own_end = match exit {
                Exit::Code(c) => !matches!(c, APP_LOAD_ERROR | WORKER_BOOT_ERROR),
                Exit::Signal(s) => matches!(
                    s,
                    libc::SIGSEGV | libc::SIGBUS | libc::SIGABRT | libc::SIGFPE | libc::SIGILL
                ),
            };
            let crashed_booting = (own_end && !booted && !asked_booting) || boot_timed_out;
            let how = if boot_timed_out {
                format!(
                    "it was still booting (importing the app, or in a boot hook) after \
                     --timeout ({})",
                    self.timeout_shown()
                )
            } else {
                ended(exit)
            };
            let failed_to_start =
                crashed_booting || matches!(exit, Exit::Code(APP_LOAD_ERROR | WORKER_BOOT_ERROR));
            if failed_to_start && self.abandoned.contains(&worker.generation) {
                // A worker of a reload given up: its failure is known.
            } else if asked_booting && worker.killed {
                // It kept the stop's TERM while it booted (`worker::signals`),
                // and its import outlasted the stop's time.
                crate::log::error::write(
                    crate::log::error::Level::Warning,
                    &format!(
                        "Worker (pid:{pid}) was still booting (importing the app) when the \
                         stop's time ran out, and was killed"
                    ),
                );
            } else if asked_booting {
                crate::log::error::info(&match exit {
                    Exit::Code(c) => {
                        format!("Worker (pid:{pid}) stopped while booting (exit code {c})")
                    }
                    Exit::Signal(s) => format!(
                        "Worker (pid:{pid}) stopped by {} while booting",
                        workers::signal_name(s)
                    ),
                });
            } else if boot_timed_out && self.stopping {
                // A stop came while it was aborted: the stop's, not a halt.
                crate::log::error::error(&format!("Worker (pid:{pid}) failed to boot: {how}"));
            } else if boot_timed_out
                && self.reload_started.is_some()
                && worker.generation < self.generation
            {
                // Timed out as a HUP came: that reload's workers replace it
                // (the first start's import hung, and the deployer sent the
                // fix), and decide on their own.
                crate::log::error::error(&format!(
                    "Worker (pid:{pid}) failed to boot: {how}; the reload under way \
                     replaces it"
                ));
            } else if failed_to_start && self.reload_fails(&worker) {
                if crashed_booting {
                    crate::log::error::error(&format!("Worker (pid:{pid}) failed to boot: {how}"));
                } else if matches!(exit, Exit::Code(WORKER_BOOT_ERROR)) {
                    crate::log::error::error(&format!("Worker (pid:{pid}) failed to boot"));
                }
                let why = if boot_timed_out {
                    Unbooted::Timeout
                } else if matches!(exit, Exit::Code(APP_LOAD_ERROR)) {
                    Unbooted::App
                } else {
                    Unbooted::Boot
                };
                self.abandon_generation(worker.generation, why);
            } else if failed_to_start && self.serves_degraded(&worker) {
                let wait = self
                    .degraded
                    .as_mut()
                    .map_or(Duration::ZERO, |d| d.failed(Instant::now()));
                crate::log::error::error(&format!(
                    "Worker (pid:{pid}) failed to boot ({}): it has the code the last \
                     reload could not start; the others serve, trying again in {} s \
                     (fix the app and send HUP)",
                    match exit {
                        _ if boot_timed_out =>
                            format!("still booting after --timeout ({})", self.timeout_shown()),
                        Exit::Code(c) => format!("exit code {c}"),
                        Exit::Signal(s) => workers::signal_name(s),
                    },
                    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
                ));
            } else if let Some(wait) = boot_timed_out
                .then(|| self.hang_is_retried(worker.boots_at_abort))
                .flatten()
            {
                crate::log::error::error(&format!(
                    "Worker (pid:{pid}) failed to boot: {how}; the others serve, starting \
                     another in {} s",
                    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
                ));
            } else if crashed_booting && !boot_timed_out && self.crash_is_retried(exit) {
                crate::log::error::error(&format!(
                    "Worker (pid:{pid}) failed to boot: {how}; the others serve, starting \
                     another (retry {} of {BOOT_CRASH_RETRIES}) in {} s",
                    self.boot_crashes,
                    1u32 << (self.boot_crashes.saturating_sub(1)).min(8)
                ));
            } else if crashed_booting {
                let hint = if boot_timed_out {
                    ": raise --timeout above the app's boot time (its import and boot \
                     hooks), or see the stacks above for what it waits on"
                } else {
                    ""
                };
                crate::log::error::error(&format!(
                    "Worker (pid:{pid}) failed to boot: {how}{hint}"
                ));
                self.halt
                    .get_or_insert((WORKER_BOOT_ERROR, "Worker failed to boot."));
            } else {
                self.note_exit(pid, &worker, exit);
                self.pause_if_quick(pid, &worker, exit);
            }
            if let Err(e) = self.cb.call_method1("child_exit", (pid, code)) {
                crate::log::error::exception(py, "child_exit hook failed", &e);
            }
        }
        if self.halt.is_some() && !self.stopping {
            self.stop_all(py, libc::SIGTERM, self.graceful());
        }
    }

    /// A worker that ended of itself soon after its fork: the next fork
    /// waits, longer each time in a row (`QUICK_EXIT`).
    fn pause_if_quick(&mut self, pid: i32, worker: &Worker, exit: Exit) {
        let lived = worker.spawned.elapsed();
        // Exit 0 is a worker that left as asked or of its own accord
        // (`--max-requests` may come within the second under load).
        let asked = worker.retiring.is_some()
            || worker.killed
            || worker.kill_at.is_some()
            || exit == Exit::Code(0);
        if asked || lived >= QUICK_EXIT || self.stopping || self.halt.is_some() {
            return;
        }
        let now = Instant::now();
        if workers::served(&worker.heartbeat) {
            // It served before it died: the app works, and a request kills
            // the worker that takes it (a fault in an extension). The next
            // fork waits for nothing, as gunicorn's, and the count starts
            // again: pausing took the whole server down for a request.
            self.quick_exits = 0;
            return;
        }
        if self
            .last_quick
            .is_some_and(|t| now.duration_since(t) > QUICK_FORGOTTEN)
        {
            self.quick_exits = 0;
        }
        self.last_quick = Some(now);
        self.quick_exits += 1;
        if self.quick_exits < 2 {
            return; // one is a mishap: replaced at once
        }
        let pause = QUICK_PAUSE
            .saturating_mul(1 << (self.quick_exits - 2).min(16))
            .min(QUICK_PAUSE_MAX);
        self.pause_spawns(now + pause);
        crate::log::error::error(&format!(
            "Worker (pid:{pid}) ended {:.2} s after it started, {} within a minute \
             of each other: the next starts in {:.1} s",
            lived.as_secs_f64(),
            self.quick_exits,
            pause.as_secs_f64()
        ));
    }

    /// No fork before `at` (the later of two pauses wins).
    fn pause_spawns(&mut self, at: Instant) {
        self.respawn_at = Some(self.respawn_at.map_or(at, |before| before.max(at)));
    }

    /// Whether a worker that could not start is tried again later rather
    /// than the server halted: it has the code of a given-up reload, and
    /// booted workers of the code before it still serve (`degraded.rs`).
    fn serves_degraded(&mut self, worker: &Worker) -> bool {
        let Some(since) = self.degraded.as_ref().map(|d| d.since) else {
            return false;
        };
        let _ = self.table.check_beats(None, Duration::ZERO, false); // the others' boots, as of now
        !self.stopping && worker.generation >= since && self.serving()
    }

    /// Whether a booted worker serves on (not being retired or killed).
    fn serving(&self) -> bool {
        self.table
            .workers
            .values()
            .any(|w| w.booted && w.retiring.is_none() && w.kill_at.is_none())
    }

    /// Whether a worker that crashed booting (a fault signal, or exit code
    /// 1: a shortage of threads, memory or descriptors, `_master.py`'s
    /// `_boot_failure`, or the app's own `os._exit(1)` at import; other
    /// codes are the app's verdict; a shortage met once the heartbeat went
    /// on looks booted, and takes `pause_if_quick`'s way) is replaced
    /// rather than the server halted: when booted workers still serve, a
    /// crash may be a one-off (a flaky C extension, a limit reached for a
    /// moment), so a replacement of a long-running server is tried again,
    /// up to `BOOT_CRASH_RETRIES` crashes in a row without a boot between
    /// them, after 1, 2 and 4 s. A crash every time then halts it, as at a
    /// start.
    fn crash_is_retried(&mut self, exit: Exit) -> bool {
        self.count_boots();
        if !matches!(exit, Exit::Signal(_) | Exit::Code(1))
            || !self.serving()
            || self.boot_crashes >= BOOT_CRASH_RETRIES
        {
            return false;
        }
        self.boot_crashes += 1;
        let pause = Duration::from_secs(1 << (self.boot_crashes - 1).min(8));
        self.pause_spawns(Instant::now() + pause);
        true
    }

    /// Whether a worker whose boot outlasted `--timeout` is replaced rather
    /// than the server halted, and after how long: while booted workers
    /// still serve, unlike a crash, for as long as they do. An import that hangs waits
    /// on something (a database, a service that is down), which may come
    /// back: the workers that serve are worth more than a loud stop. The
    /// wait doubles from 1 s up to a minute, and a boot starts it again.
    /// Workers that hung in one round (started together) share its wait,
    /// which doubles once per round; it holds back their places alone, and
    /// only while a worker serves (with none, one is started at once, as
    /// degraded mode does, and if it hangs too the server stops). Those
    /// that serve are held from `--max-requests` meanwhile (`hang_hold`):
    /// their replacements would hang too; one may still die or be killed.
    fn hang_is_retried(&mut self, boots_at_abort: u64) -> Option<Duration> {
        self.count_boots();
        if !self.serving() {
            return None;
        }
        let (wait, new_round) = self.hang_retries.failed(Instant::now());
        self.hang_slots = if new_round { 1 } else { self.hang_slots + 1 };
        // From the boots counted when it was timed out, not now: a worker
        // that booted before this one was reaped ends the hold (review,
        // session 41). With a hold on already, the later count: only a boot
        // after the latest hang shows its cause is gone (reaped out of
        // order, an earlier hang's count would end it at a boot between the
        // two).
        self.hang_hold = Some(
            self.hang_hold
                .map_or(boots_at_abort, |b| b.max(boots_at_abort)),
        );
        for w in self.table.workers.values_mut() {
            // A given-up reload's hold says the more: it stays.
            if w.retiring.is_none() && !(w.held && self.degraded.is_some()) {
                w.held |= degraded::hold(&w.heartbeat, Some(Held::Hang));
            }
        }
        Some(wait)
    }

    /// A worker booted since the last look: the counts of boots that
    /// crashed or hung in a row start again.
    fn count_boots(&mut self) {
        let _ = self.table.check_beats(None, Duration::ZERO, false); // the others' boots, as of now
        if self.table.boots != self.boots_seen {
            self.boots_seen = self.table.boots;
            self.boot_crashes = 0;
            self.hang_retries.reset(); // what hung may boot now
        }
    }

    /// A worker started by a reload could not boot or load the app while
    /// workers of an older generation still serve: that reload is given up
    /// rather than the server (gunicorn halts), as a config a start would
    /// refuse keeps the running one. The worker may be of the latest
    /// reload, or of one a later HUP superseded before it failed.
    fn reload_fails(&self, worker: &Worker) -> bool {
        // With no reload under way, a worker that cannot start (one
        // replacing another after a given-up reload) is no reload's: it is
        // tried again later while others serve (`serves_degraded`), else
        // it stops the server as at a start.
        self.reload_started.is_some()
            && !self.stopping
            && self.table.workers.values().any(|w| {
                // One still booting (the first start's import hangs as
                // the HUP comes) serves nothing to fall back on.
                w.generation < worker.generation && w.kill_at.is_none() && w.booted_by_now()
            })
    }

    /// Gives up the reload that started generation `failed`: its workers
    /// go. If it was the latest reload, the booted workers it was to
    /// replace serve on (the count above `target` then retires the oldest
    /// of them), with the worker count they had, and those of an earlier
    /// reload still starting go too; if a later reload is under way, it
    /// goes on, and replaces them once its workers are up. Workers started
    /// after a given-up reload get a generation of their own (`degraded`'s
    /// `since`): their failure is retried while others serve, and the boot
    /// of one ends the degraded state.
    fn abandon_generation(&mut self, failed: u64, why: Unbooted) {
        if self.reload_pending.is_some_and(|(g, _)| g == failed) {
            self.reload_pending = None;
            crate::metrics::master::reloaded("given_up");
        }
        crate::log::error::error(&format!(
            "Reload failed: a new worker could not {}; the running workers keep \
             serving with their code, not restarted by --max-requests, and one that \
             dies is replaced with the new code, tried again while others serve: \
             fix it and send HUP again",
            match why {
                Unbooted::App => "load the app",
                Unbooted::Boot => "boot",
                Unbooted::Timeout => {
                    "boot within --timeout (it hung importing the app, or in a boot hook)"
                }
            }
        ));
        self.abandoned.push(failed);
        let doomed: Vec<i32> = self
            .table
            .workers
            .iter()
            // One timed out is being aborted: a stop's signal would overtake
            // its SIGABRT and lose its stacks.
            .filter(|(_, w)| w.generation == failed && !w.retiring.is_some_and(Retire::aborts))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in doomed {
            self.table
                .retire(pid, Retire::Reload, libc::SIGTERM, self.graceful());
        }
        if failed != self.generation {
            return; // a later reload is under way
        }
        // The workers that serve, serve on; those of a superseded reload
        // still starting go the same way as this one's.
        let mut starting = Vec::new();
        for (pid, w) in &mut self.table.workers {
            if w.kill_at.is_none()
                && w.retiring == Some(Retire::Reload)
                && !self.abandoned.contains(&w.generation)
            {
                // Its heartbeat, not the last tick's look: one that served
                // since that tick is no worker still starting.
                if w.booted_by_now() {
                    w.retiring = None;
                } else {
                    starting.push((*pid, w.generation));
                }
            }
        }
        for (pid, generation) in starting {
            if !self.abandoned.contains(&generation) {
                self.abandoned.push(generation);
            }
            self.table
                .retire(pid, Retire::Reload, libc::SIGTERM, self.graceful());
        }
        self.generation += 1;
        self.reload_started = None;
        self.target = self.target_before_reload;
        // Those that serve on are held from --max-requests until a worker
        // of a later generation boots.
        for w in self.table.workers.values_mut() {
            if w.retiring.is_none() {
                // A second hold that fails leaves the first's mode.
                w.held |= degraded::hold(&w.heartbeat, Some(Held::Reload));
            }
        }
        self.degraded = Some(degraded::Degraded::new(self.generation));
    }

    /// Logs how a worker ended, and halts when it could not boot or load the app.
    fn note_exit(&mut self, pid: i32, worker: &Worker, exit: Exit) {
        match exit {
            Exit::Code(0) => {}
            Exit::Code(WORKER_BOOT_ERROR) => {
                crate::log::error::error(&format!("Worker (pid:{pid}) failed to boot"));
                self.halt
                    .get_or_insert((WORKER_BOOT_ERROR, "Worker failed to boot."));
            }
            Exit::Code(APP_LOAD_ERROR) => {
                self.halt
                    .get_or_insert((APP_LOAD_ERROR, "App failed to load."));
            }
            Exit::Code(c) => {
                crate::log::error::error(&format!("Worker (pid:{pid}) exited with code {c}."))
            }
            Exit::Signal(libc::SIGKILL) if worker.killed => crate::log::error::error(&format!(
                "Worker (pid:{pid}) did not stop in time and was killed: \
                 the requests it was serving were cut"
            )),
            Exit::Signal(libc::SIGKILL) => crate::log::error::error(&format!(
                "Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?"
            )),
            // The master's own stop reached a worker still booting (before
            // its handlers): what it asked for, not a mystery.
            Exit::Signal(s @ (libc::SIGTERM | libc::SIGINT | libc::SIGQUIT))
                if worker.retiring.is_some() && !worker.booted =>
            {
                crate::log::error::info(&format!(
                    "Worker (pid:{pid}) stopped by {} while booting",
                    workers::signal_name(s)
                ))
            }
            // A fault signal the master did not send (its --timeout sends
            // SIGABRT): the worker's own crash, not a signal from outside.
            Exit::Signal(
                s @ (libc::SIGSEGV | libc::SIGBUS | libc::SIGABRT | libc::SIGFPE | libc::SIGILL),
            ) if worker.retiring != Some(Retire::Timeout) => crate::log::error::error(&format!(
                "Worker (pid:{pid}) crashed with {} (a fault in native code, or an \
                     allocation that failed)",
                workers::signal_name(s)
            )),
            Exit::Signal(s) => crate::log::error::error(&format!(
                "Worker (pid:{pid}) was sent {}!",
                workers::signal_name(s)
            )),
        }
    }

    /// Lets the held workers restart at `--max-requests` again once what
    /// held them is over: a worker of the code after a given-up reload
    /// booted (`degraded`), or any worker booted after a hang (`hang_hold`).
    fn end_holds(&mut self) {
        let code_works = self
            .degraded
            .as_ref()
            .is_some_and(|d| self.table.workers.values().any(|w| d.ended_by(w)));
        if code_works {
            self.degraded = None;
        }
        // Only a boot ends a hang's hold: with no place left to try again
        // (a TTOU took it) it stays until one comes (a TTIN, a HUP, a worker
        // that died replaced), since a worker let go at --max-requests
        // would be replaced by one that hangs while its cause lasts, and
        // with none left serving the server would stop (review, session 41).
        let booted = self.hang_hold.is_some_and(|b| self.table.boots != b);
        if booted {
            self.hang_hold = None;
        }
        if !(code_works || booted) {
            return;
        }
        // What still holds (the other reason) keeps its workers held.
        let still = if self.degraded.is_some() {
            Some(Held::Reload)
        } else {
            self.hang_hold.map(|_| Held::Hang)
        };
        for w in self.table.workers.values_mut() {
            if w.held && degraded::hold(&w.heartbeat, still) {
                w.held = still.is_some();
            }
        }
        if still.is_none() {
            crate::log::error::info(if code_works {
                "A worker booted with the new code: recycling resumes"
            } else {
                "A worker booted: recycling resumes"
            });
        }
    }

    /// One tick's checks: heartbeats, memory, the reload, the count.
    fn check(&mut self, py: Python<'_>) {
        // A worker beats once per interval while it makes progress, so its
        // last beat can be up to one interval older than the moment it got
        // stuck: allowing that interval, no worker is killed before it has
        // been stuck for the whole --timeout (at most two intervals after).
        let (silent, leaving) = self.table.check_beats(
            self.cfg.timeout,
            self.cfg.beat_interval(),
            self.boots_timed(),
        );
        self.end_holds();
        for (pid, stopping) in leaving {
            // Its replacement starts now (`maintain`), while its last request
            // runs; once its stop begins it drains on its own. Signal 0 sends
            // nothing: only the deadline for a drain that outlasts the
            // graceful timeout is set.
            if stopping {
                self.table.retire(pid, Retire::Recycle, 0, self.graceful());
            } else {
                self.table.replace(pid);
            }
        }
        // One abort at a time: a worker writes its stacks as it gets
        // SIGABRT, and two at once mixed theirs line by line in the log
        // (workers stuck on one thing, a database that stopped answering,
        // time out together). The next is aborted once this one has exited
        // (its SIGCHLD wakes the master), or ABORT_SPACING after it was
        // aborted (one whose SIGABRT writes nothing and ends nothing: an
        // app's own handler, a core dump being written, waits for its
        // SIGKILL alone). For workers that hung booting, the first's
        // failure usually decides the others' fate anyway.
        let now = Instant::now();
        let mut aborting = self.table.workers.values().any(|w| {
            w.retiring.is_some_and(Retire::aborts)
                && !w.killed
                && w.kill_at
                    .is_some_and(|kill| now + ABORT_GRACE < kill + ABORT_SPACING)
        });
        for pid in silent {
            if std::mem::replace(&mut aborting, true) {
                continue;
            }
            let booting = self.table.workers.get(&pid).is_some_and(|w| !w.booted);
            let (why, line) = if booting {
                (
                    Retire::BootTimeout,
                    format!(
                        "WORKER TIMEOUT (pid:{pid}): still booting (importing the app, or \
                         in post_fork or post_worker_init) after --timeout ({}); its stacks \
                         follow",
                        self.timeout_shown()
                    ),
                )
            } else {
                (Retire::Timeout, format!("WORKER TIMEOUT (pid:{pid})"))
            };
            crate::log::error::write(crate::log::error::Level::Critical, &line);
            self.table.retire(pid, why, libc::SIGABRT, ABORT_GRACE);
            let boots = self.table.boots;
            if let Some(w) = self.table.workers.get_mut(&pid) {
                w.boots_at_abort = boots;
            }
        }
        if let Some(max) = self.cfg.max_worker_rss {
            self.replace_fat(max);
        }
        if let Some(started) = self.reload_started {
            let current = self.generation;
            let booted = self
                .table
                .workers
                .values()
                .filter(|w| {
                    w.generation == current
                        && w.booted
                        && w.retiring.is_none()
                        && w.kill_at.is_none()
                })
                .count();
            // The old workers go once the new ones serve in full number; past
            // RELOAD_WAIT once any does. While none could start (fork
            // failing, no heartbeat file), the old ones serve on.
            let new_up = booted >= self.target;
            // One of its workers still booting boots, or is timed out and the
            // reload given up (`reap`): whichever --timeout is, a hang gives
            // the reload up. With no --timeout (or with --reload), a boot
            // may never end: the wait is the bound.
            // (One timed out just now, not reaped yet, gives it up then.)
            let booting = self.boots_timed()
                && self.table.workers.values().any(|w| {
                    w.generation == current
                        && !w.booted
                        && (w.kill_at.is_none() && !w.killed
                            || w.retiring == Some(Retire::BootTimeout))
                });
            if new_up || (booted > 0 && !booting && started.elapsed() > RELOAD_WAIT) {
                let old: Vec<i32> = self
                    .table
                    .workers
                    .iter()
                    .filter(|(_, w)| w.generation < current && w.kill_at.is_none())
                    .map(|(pid, _)| *pid)
                    .collect();
                for pid in old {
                    self.table
                        .retire(pid, Retire::Reload, libc::SIGTERM, self.graceful());
                }
                self.reload_started = None;
                if let Some((g, refused)) = self.reload_pending {
                    if g == current {
                        self.reload_pending = None;
                        let outcome = if refused { "config_refused" } else { "done" };
                        crate::metrics::master::reloaded(outcome);
                    }
                }
            }
        }
        self.table.kill_overdue();
        self.maintain(py);
    }
}

/// Why a reload's worker did not come up (`abandon_generation`).
#[derive(Clone, Copy)]
enum Unbooted {
    /// It could not load the app (exit 4).
    App,
    /// It failed to boot otherwise.
    Boot,
    /// It still booted after `--timeout`.
    Timeout,
}

/// How a worker that never booted ended, for its log line.
fn ended(exit: Exit) -> String {
    match exit {
        Exit::Code(c) => format!("it exited with code {c} before serving"),
        Exit::Signal(s) => format!(
            "it was killed by {} before serving",
            workers::signal_name(s)
        ),
    }
}
