//! The master's handle on the metrics process: bind its listener, fork it, restart it, stop it.
//!
//! With `--metrics-bind`, the master binds the metrics listener when it is
//! made (an address in use is reported at startup, like `-b`), maps the
//! shared region before its first fork, and forks the metrics process
//! from Rust: the child resets the master's signal handlers, asks the
//! kernel for SIGTERM if the master dies, and runs `observer::serve`; it
//! never runs Python. The master restarts it if it dies (at most once a
//! second) and stops it last, after the workers. What the process serves
//! is `observer/`'s business.

use crate::net::bind::{BindSpec, Listener};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// How long the master waits for the metrics process to exit at the end.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// The shortest time between two starts (a process that dies at once
/// must not make the master spin).
const RESTART_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Observer {
    /// Keeps the listener out of the workers (`workers::close_master_only`;
    /// first: dropped, so unlisted, before the socket is closed).
    _master_only: super::workers::MasterOnly,
    listener: Listener,
    pub(crate) url: String,
    settings: crate::observer::Settings,
    pid: AtomicI32,
    /// When it was last started, to pace restarts.
    started: Mutex<Option<Instant>>,
    /// Handed to a new master (USR2): stopped, and not kept up, until that
    /// master is gone while this one serves on.
    handed: AtomicBool,
}

impl Observer {
    /// Binds `--metrics-bind`.
    pub(crate) fn bind(
        spec: &str,
        settings: crate::observer::Settings,
        v4_ports: &[u16],
    ) -> Result<Observer, crate::error::StartupError> {
        let listener = BindSpec::parse(spec)?.open(64, false, v4_ports)?;
        let url = listener.url();
        Ok(Observer {
            _master_only: super::workers::MasterOnly::new(listener.raw_fd()),
            listener,
            url,
            settings,
            pid: AtomicI32::new(0),
            started: Mutex::new(None),
            handed: AtomicBool::new(false),
        })
    }

    pub(crate) fn listener_fd(&self) -> i32 {
        self.listener.raw_fd()
    }

    /// Sends the metrics process `signo`, if it runs.
    pub(crate) fn signal(&self, signo: i32) {
        let pid = self.pid();
        if pid > 0 {
            super::workers::send(pid, signo);
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Forks the metrics process (the region must be mapped already).
    pub(crate) fn start(&self) {
        let Some(region) = crate::metrics::region() else {
            return;
        };
        let listener = match self.listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                crate::log::error::error(&format!("Cannot share the metrics listener: {e}"));
                return;
            }
        };
        *self.started.lock() = Some(Instant::now());
        // The master's signals wait across the fork, as for a worker
        // (`signals::block`): the child lets them in with its own handling.
        super::signals::block(true);
        // SAFETY: the master has one thread and no runtime, so the child
        // is a consistent copy; it runs only Rust and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid != 0 {
            super::signals::block(false);
        }
        if pid < 0 {
            crate::log::error::error(&format!(
                "Cannot start the metrics process: {}",
                std::io::Error::last_os_error()
            ));
            return;
        }
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                child(listener, region, self.settings)
            }))
            .unwrap_or(1);
            // SAFETY: leaving the forked child without Python's teardown.
            unsafe { libc::_exit(code) };
        }
        self.pid.store(pid, Ordering::Relaxed);
        region.header().observer_pid.store(pid, Ordering::Relaxed);
        crate::log::error::info(&format!("Metrics at: {} (pid: {pid})", self.url));
    }

    /// The reaped child `pid` was this process: start it again (paced).
    /// Returns whether it was.
    pub(crate) fn reaped(&self, pid: i32, stopping: bool) -> bool {
        if pid == 0 || pid != self.pid() {
            return false;
        }
        self.pid.store(0, Ordering::Relaxed);
        if !stopping {
            crate::log::error::error(&format!(
                "Metrics process (pid:{pid}) exited; restarting it"
            ));
        }
        true
    }

    /// A new master (USR2) has the listener and starts its own metrics
    /// process: this one stops, so that one port never answers for two
    /// masters in turn (counters going back and forth between them). Until
    /// the new one accepts, connections wait in the listener's backlog.
    pub(crate) fn hand_over(&self) {
        if !self.handed.swap(true, Ordering::Relaxed) {
            self.stop();
            crate::log::error::info("Metrics: handed over to the new master");
        }
    }

    /// Removes the socket file of a unix `--metrics-bind` Siesta created
    /// (not one inherited, `fd://`); the socket itself stays open.
    pub(crate) fn unlink(&self) {
        self.listener.unlink();
    }

    /// The socket file of a unix `--metrics-bind` Siesta created here.
    pub(crate) fn made_path(&self) -> Option<&std::path::Path> {
        self.listener.made_path()
    }

    /// Whether a new master has the port (`hand_over`).
    pub(crate) fn handed(&self) -> bool {
        self.handed.load(Ordering::Relaxed)
    }

    /// The new master is gone and this one serves on: its metrics again.
    pub(crate) fn take_back(&self) {
        if self.handed.swap(false, Ordering::Relaxed) {
            self.start();
        }
    }

    /// Every tick: a dead metrics process is started again, at most once a second.
    pub(crate) fn keep_up(&self, stopping: bool) {
        if stopping || self.pid() != 0 || self.handed() {
            return;
        }
        let due = self
            .started
            .lock()
            .is_none_or(|t| t.elapsed() >= RESTART_EVERY);
        if due {
            self.start();
        }
    }

    /// At the master's exit: TERM, a bounded wait, then KILL.
    pub(crate) fn stop(&self) {
        let pid = self.pid.swap(0, Ordering::Relaxed);
        if pid <= 0 {
            return;
        }
        super::workers::send(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child; WNOHANG writes only `status`.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r != 0 {
                return;
            }
            if Instant::now() >= deadline {
                super::workers::send(pid, libc::SIGKILL);
                // SAFETY: as above, now blocking until the killed child is reaped.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The forked child: default signal handling, die with the master, serve.
fn child(
    listener: Listener,
    region: crate::metrics::region::Region,
    settings: crate::observer::Settings,
) -> i32 {
    if super::signals::reset_in_child(false).is_err() {
        return 1;
    }
    // USR1 (reopen the log), ignored by `reset_in_child`, is taken by `serve`.
    super::signals::block(false);
    // SAFETY: prctl with integer arguments; a SIGTERM when the parent dies,
    // and a name for ps/top (15 bytes and a NUL).
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        libc::prctl(libc::PR_SET_NAME, c"siesta-metrics".as_ptr());
    }
    // The master may have died between the fork and the prctl.
    // SAFETY: getppid(2) takes no arguments.
    if unsafe { libc::getppid() } == 1 {
        return 0;
    }
    super::workers::close_master_only(listener.raw_fd());
    close_app_listeners(listener.raw_fd());
    retitle();
    let reopen = || {
        if let Err(e) = crate::log::error::reopen() {
            crate::log::error::error(&format!(
                "Metrics process: cannot reopen the error log: {e}"
            ));
        }
    };
    match crate::observer::serve(listener, region, settings, reopen) {
        Ok(()) => 0,
        Err(e) => {
            crate::log::error::error(&format!("Metrics process: {e}"));
            1
        }
    }
}

/// Closes the listening sockets the fork brought along but `keep` (the
/// master's `-b` sockets): held here, they would keep taking connections
/// into their backlog while a stopping server drains, where the kernel
/// should refuse them (the master and its workers have closed theirs).
fn close_app_listeners(keep: i32) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|fd| *fd > 2 && *fd != keep) {
        let mut listening: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a live local of the size given; an fd that
        // is no socket (or the directory's, closed by now) fails, untouched.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut listening as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r == 0 && listening == 1 {
            // SAFETY: a listening socket this process inherited and never uses.
            unsafe { libc::close(fd) };
        }
    }
}

/// The name of the master's reason for ending a worker, for `siesta_worker_exits_total`.
pub(crate) fn retire_reason(r: super::workers::Retire) -> &'static str {
    use super::workers::Retire;
    match r {
        Retire::Stop => "stop",
        Retire::Reload => "reload",
        Retire::Rss => "max_worker_rss",
        Retire::Timeout => "timeout",
        // It could not boot in time: no request of its was lost to it.
        Retire::BootTimeout => "boot_error",
        Retire::Recycle => "max_requests",
    }
}

impl super::Master<'_, '_> {
    /// Before the first fork: the shared region, the metrics process, StatsD.
    pub(super) fn start_metrics(&mut self) {
        if let Some(o) = self.observer {
            match crate::metrics::master::init(self.cfg.workers) {
                Ok(()) => {
                    // The phase and target from the first scrape on, not
                    // from the first tick.
                    crate::metrics::master::phase(false, false, self.target);
                    o.start()
                }
                Err(e) => crate::log::error::error(&format!(
                    "Cannot map the metrics region: {e}; --metrics-bind is off"
                )),
            }
        }
        if let Some(host) = &self.cfg.statsd_host {
            if let Err(e) = crate::metrics::statsd::start_master(host, &self.cfg.statsd_prefix) {
                crate::log::error::error(&format!("StatsD is off: {e}"));
            }
        }
    }

    /// Every tick: the master's phase for `/readyz`, the metrics process
    /// kept up, the worker count for StatsD (and a debug line).
    pub(super) fn publish(&mut self) {
        crate::metrics::master::phase(self.stopping, self.reload_started.is_some(), self.target);
        if let Some(o) = self.observer {
            o.keep_up(self.stopping);
        }
        let n = self.table.active();
        if n != self.counted_workers {
            self.counted_workers = n;
            crate::metrics::statsd::workers(n);
            // gunicorn's debug line when its count changes (not while stopping).
            if !self.stopping {
                crate::log::error::write(crate::log::error::Level::Debug, &format!("{n} workers"));
            }
        }
    }
}

/// `siesta: metrics [NAME]` in ps, where the fork left the master's title:
/// a deployer's `pkill -HUP -f 'siesta: master'` is meant for the master.
fn retitle() {
    let Ok(shown) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    let shown = String::from_utf8_lossy(&shown);
    if let Some(rest) = shown.trim_end_matches('\0').strip_prefix("siesta: master") {
        super::title::set_title(&format!("siesta: metrics{rest}"));
    }
}
