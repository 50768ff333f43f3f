//! The master's table of worker processes: spawn bookkeeping, heartbeats, signals, reaping.
//!
//! Each worker gets an unlinked heartbeat file made before the fork; the
//! worker touches it (`worker/heartbeat.rs`) when it is up and then as long
//! as it makes progress, so its modification time tells the master both
//! "booted" and "alive". This module knows nothing of Python: forking and
//! running a worker is the callback's job (`python/siesta/_master.py`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Why the master is ending a worker (for the log line and, later, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retire {
    /// A TERM/INT/QUIT to the master, or TTOU.
    Stop,
    /// Replaced by a new generation (HUP).
    Reload,
    /// Over `--max-worker-rss`.
    Rss,
    /// Silent for `--timeout`.
    Timeout,
    /// Still booting (importing the app, in `post_fork`) `--timeout` after
    /// its fork: whether that fails a reload, is tried again or halts the
    /// server is decided when it has exited (`Master::reap`).
    BootTimeout,
    /// Leaving on its own (`--max-requests`), as its heartbeat file says.
    Recycle,
}

impl Retire {
    /// A `--timeout`: SIGABRT, which writes the worker's stacks (a later
    /// signal of a stop must not overtake it), then SIGKILL.
    pub(crate) fn aborts(self) -> bool {
        matches!(self, Retire::Timeout | Retire::BootTimeout)
    }
}

pub(crate) struct Worker {
    /// Spawn order: the oldest worker has the lowest age.
    pub age: u64,
    /// The reload generation it was started in.
    pub generation: u64,
    /// Keeps the heartbeat's descriptor out of the workers forked later
    /// (first: dropped, so unlisted, before the file is closed).
    _master_only: MasterOnly,
    pub heartbeat: File,
    /// The heartbeat's time when the worker was spawned: a later one means booted.
    born_beat: SystemTime,
    pub booted: bool,
    /// Set once the master decided to end it.
    pub retiring: Option<Retire>,
    /// Held from `--max-requests` (`degraded::hold`): a lone byte from it
    /// (`heartbeat::replace_me`, its last request started as the hold
    /// came) is taken back, not acted on; the worker stays.
    pub held: bool,
    /// When to send SIGKILL if it has not exited by then.
    pub kill_at: Option<Instant>,
    /// The time `kill_at` gave it: a worker retired while it booted kept
    /// the TERM until then (`worker::signals`), and its stop's time counts
    /// from its boot (`check_beats`).
    kill_grace: Duration,
    /// The master sent that SIGKILL (so an exit by SIGKILL is no mystery).
    pub killed: bool,
    /// `Table::boots` when its boot was timed out: a boot after that ends
    /// the hold its hang sets (`Master::hang_is_retried`), also one that
    /// came before it was reaped.
    pub boots_at_abort: u64,
    /// When it was forked (a worker that ends soon after is restarted later).
    pub spawned: Instant,
    /// The config it was forked with, as far as the master's checks of it
    /// go (a HUP changes the master's, not the running workers'): how often
    /// it beats (`Config::beat_interval`), and how long its stop lets its
    /// requests run, and then exit (the master's graceful time).
    pub beat: Duration,
    pub graceful: Duration,
    /// Its RSS in MiB when it booted, as its first beat said (the file's
    /// access time, `worker/heartbeat.rs`): a worker already over
    /// `--max-worker-rss` then is not replaced for memory (its replacement
    /// would be too, for ever).
    pub boot_rss: Option<u64>,
}

impl Worker {
    /// The time a stop by `signo` given `grace` leaves it before SIGKILL: a
    /// graceful one (TERM, or 0: its own leaving) is not cut short of the
    /// worker's own (a HUP may have shortened the master's since its fork).
    pub(crate) fn grace_for(&self, signo: i32, grace: Duration) -> Duration {
        if matches!(signo, 0 | libc::SIGTERM) {
            grace.max(self.graceful)
        } else {
            grace
        }
    }

    /// Whether it booted, looking at its heartbeat now (for a worker just
    /// reaped, which may have booted since the last tick's look).
    pub(crate) fn booted_by_now(&self) -> bool {
        self.booted
            || self
                .heartbeat
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|beat| beat > self.born_beat)
    }
}

/// How a worker process ended, from `waitpid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Default)]
pub(crate) struct Table {
    pub workers: BTreeMap<i32, Worker>,
    next_age: u64,
    /// How many workers have booted so far (the heartbeat went on), but
    /// those being aborted for their boot's timeout.
    pub boots: u64,
}

/// Descriptors the master holds for itself: the workers' heartbeat files
/// and the metrics listener. A worker is forked with them all, and closes
/// them (`close_master_only`): they would pile up, one more in each worker
/// than in the one before, and keep the metrics port open in the workers.
static MASTER_ONLY: parking_lot::Mutex<Vec<RawFd>> = parking_lot::Mutex::new(Vec::new());

/// A descriptor listed in `MASTER_ONLY` while its holder lives (dropped with
/// the `File` or socket it names, before the number can be reused).
pub(crate) struct MasterOnly(RawFd);

impl MasterOnly {
    pub(crate) fn new(fd: RawFd) -> MasterOnly {
        MASTER_ONLY.lock().push(fd);
        MasterOnly(fd)
    }
}

impl Drop for MasterOnly {
    fn drop(&mut self) {
        let mut fds = MASTER_ONLY.lock();
        if let Some(i) = fds.iter().position(|fd| *fd == self.0) {
            fds.swap_remove(i);
        }
    }
}

/// In a freshly forked worker: closes the master's own descriptors, but
/// `keep` (its own heartbeat, made for it before the fork and not listed
/// yet). The master's structures that hold them in this copy are never
/// dropped: a worker leaves with `os._exit`.
pub(crate) fn close_master_only(keep: RawFd) {
    let fds = std::mem::take(&mut *MASTER_ONLY.lock());
    for fd in fds.into_iter().filter(|fd| *fd != keep) {
        // SAFETY: a descriptor this process inherited and will not use.
        unsafe { libc::close(fd) };
    }
}

impl Table {
    /// A heartbeat file for the next worker: made in `dir`, unlinked at once,
    /// with its time set far back, and that time: the worker's first touch is
    /// later whatever the clock's grain, and the master reads it before the
    /// fork (read after it, a worker that booted before the master was
    /// scheduled again looked not booted, and so was never timed out).
    /// Without `--worker-tmp-dir`, the first of Python's `tempfile`
    /// directories that takes one ($TMPDIR, $TEMP, $TMP, /tmp, /var/tmp,
    /// /usr/tmp, the working directory), as gunicorn's `tempfile` does: a
    /// $TMPDIR that does not exist or is read-only (left from a login
    /// session, a container's) started no worker, for good.
    pub(crate) fn heartbeat_file(dir: Option<&Path>) -> io::Result<(File, SystemTime)> {
        if let Some(dir) = dir {
            return Self::heartbeat_file_in(dir);
        }
        let mut first = None;
        for dir in temp_dirs() {
            match Self::heartbeat_file_in(&dir) {
                Ok(made) => return Ok(made),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| io::Error::other("no temporary directory")))
    }

    fn heartbeat_file_in(dir: &Path) -> io::Result<(File, SystemTime)> {
        for attempt in 0..100u32 {
            let path = dir.join(format!(
                "siesta-heartbeat-{}-{}-{attempt}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            ));
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => {
                    let _ = std::fs::remove_file(&path);
                    let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
                    let born = modified(&f)?;
                    return Ok((f, born));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("cannot make a heartbeat file"))
    }

    /// Where a heartbeat file would be made (`None`: `temp_dirs`), checked
    /// by making one: the start refuses what no worker could boot with.
    pub(crate) fn heartbeat_dir_usable(dir: Option<&Path>) -> io::Result<()> {
        Self::heartbeat_file(dir).map(drop)
    }

    pub(crate) fn next_age(&mut self) -> u64 {
        self.next_age += 1;
        self.next_age
    }

    /// A worker just forked, with its heartbeat file and that file's time
    /// before the fork (`heartbeat_file`).
    pub(crate) fn add(
        &mut self,
        pid: i32,
        age: u64,
        generation: u64,
        (heartbeat, born_beat): (File, SystemTime),
    ) {
        self.workers.insert(
            pid,
            Worker {
                age,
                generation,
                _master_only: MasterOnly::new(heartbeat.as_raw_fd()),
                heartbeat,
                born_beat,
                spawned: Instant::now(),
                beat: Duration::ZERO,
                graceful: Duration::ZERO,
                booted: false,
                retiring: None,
                held: false,
                kill_at: None,
                kill_grace: Duration::ZERO,
                killed: false,
                boots_at_abort: 0,
                boot_rss: None,
            },
        );
    }

    /// Workers not being retired.
    pub(crate) fn active(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.retiring.is_none())
            .count()
    }

    /// The oldest active worker.
    pub(crate) fn oldest_active(&self) -> Option<i32> {
        self.workers
            .iter()
            .filter(|(_, w)| w.retiring.is_none())
            .min_by_key(|(_, w)| w.age)
            .map(|(pid, _)| *pid)
    }

    /// The active worker to retire when there is one too many (TTOU): the
    /// youngest still booting, which serves nothing (its import may hang
    /// for good), else the oldest, as gunicorn's; and whether it booted.
    pub(crate) fn next_to_retire(&self) -> Option<(i32, bool)> {
        let booting = self
            .workers
            .iter()
            .filter(|(_, w)| w.retiring.is_none() && !w.booted_by_now())
            .max_by_key(|(_, w)| w.age)
            .map(|(pid, _)| (*pid, false));
        booting.or_else(|| self.oldest_active().map(|pid| (pid, true)))
    }

    /// Marks a worker retiring and sends it `signo` (a later kill if it lingers).
    /// A timeout is the reason whatever came before it (a worker replaced
    /// while its last request runs, say).
    pub(crate) fn retire(&mut self, pid: i32, why: Retire, signo: i32, grace: Duration) {
        if let Some(w) = self.workers.get_mut(&pid) {
            // One of a reload given up or superseded that is still booting
            // has nothing of its own to drain, and its graceful stop would
            // serve what waits in the backlog with the code the reload
            // could not, or no longer should, start: a fast stop (it keeps
            // a TERM until it has booted: `worker::signals`).
            let signo = if signo == libc::SIGTERM && why == Retire::Reload && !w.booted_by_now() {
                libc::SIGINT
            } else {
                signo
            };
            crate::metrics::master::retiring(pid);
            let grace = w.grace_for(signo, grace);
            if why.aborts() {
                w.retiring = Some(why);
            }
            w.retiring.get_or_insert(why);
            if w.kill_at.is_none() {
                w.kill_at = Some(Instant::now() + grace);
                // Only a TERM is kept by a booting worker; a fast stop's
                // time is not counted again from a boot.
                w.kill_grace = if signo == libc::SIGTERM {
                    grace
                } else {
                    Duration::ZERO
                };
            }
            send(pid, signo);
        }
    }

    /// A worker whose last request before `--max-requests` runs: its
    /// replacement starts now (it is no longer active), and it is not
    /// killed for it; `--timeout` still holds while that request runs.
    pub(crate) fn replace(&mut self, pid: i32) {
        if let Some(w) = self.workers.get_mut(&pid) {
            crate::metrics::master::retiring(pid);
            w.retiring.get_or_insert(Retire::Recycle);
        }
    }

    /// Updates `booted` from the heartbeats; returns the pids silent past
    /// `timeout` (a booted worker since its last beat; with `time_boots`,
    /// one still booting since its fork, as gunicorn's `--timeout` counts a
    /// boot), and those that said they are leaving on their own, each
    /// with whether its stop has begun (`heartbeat::replace_me` in the
    /// worker: a byte in the file, its last request started;
    /// `heartbeat::leaving`: two, its stop began).
    /// A worker may be one beat `interval` late (the master's current one,
    /// or the worker's own, `Worker::beat`, if a HUP has shortened it since).
    pub(crate) fn check_beats(
        &mut self,
        timeout: Option<Duration>,
        interval: Duration,
        time_boots: bool,
    ) -> (Vec<i32>, Vec<(i32, bool)>) {
        let now = SystemTime::now();
        let (mut silent, mut leaving) = (Vec::new(), Vec::new());
        for (pid, w) in &mut self.workers {
            let Ok(meta) = w.heartbeat.metadata() else {
                continue;
            };
            let Ok(beat) = meta.modified() else {
                continue;
            };
            if !w.booted && beat > w.born_beat {
                w.booted = true;
                w.boot_rss = boot_rss(&meta);
                // One that booted only as its boot's timeout was aborting it
                // is no boot that the waits of hung or crashed boots restart
                // from (`Master::count_boots`).
                if !w.retiring.is_some_and(Retire::aborts) {
                    self.boots += 1;
                }
                // Retired while it booted: its stop began at its boot (the
                // beat's time), if that came before its deadline; one whose
                // boot outlasted the stop's time is killed all the same,
                // whenever the master looks.
                let ago = now.duration_since(beat).unwrap_or(Duration::ZERO);
                let boot = Instant::now().checked_sub(ago);
                if let (Some(at), Some(boot)) = (w.kill_at.as_mut(), boot) {
                    if boot <= *at {
                        *at = (*at).max(boot + w.kill_grace);
                    }
                }
            }
            // Replaced, its last request running: no kill is due yet.
            let replaced = w.retiring == Some(Retire::Recycle) && w.kill_at.is_none() && !w.killed;
            // Marked to go but not told yet (a reload's new workers are not
            // up; its last request runs): it serves on, so `--timeout` holds
            // (a reload whose import hangs would exempt it for good).
            let serving_on = w.kill_at.is_none()
                && !w.killed
                && matches!(w.retiring, None | Some(Retire::Recycle | Retire::Reload));
            let said = meta.len();
            if said == 1 && w.held && w.retiring.is_none() {
                // Taken back: the worker stays (it sees the hold). The
                // truncate is no beat: the file keeps the worker's time.
                let _ = w.heartbeat.set_len(0);
                let _ = w.heartbeat.set_modified(beat);
            } else if said > 0 && w.retiring.is_none() || said > 1 && replaced {
                leaving.push((*pid, said > 1));
                continue;
            }
            let Some(t) = timeout.map(|t| t + interval.max(w.beat)) else {
                continue;
            };
            let late = now.duration_since(beat).unwrap_or(Duration::ZERO) > t;
            // Still booting: an import that hangs (a database it waits on
            // is down) would hold its place, and a reload's `/readyz`, for
            // good. Not one marked for a reload (its generation's fate is
            // that reload's) nor one already told to stop.
            let hung = time_boots
                && !w.booted
                && w.retiring.is_none()
                && w.kill_at.is_none()
                && !w.killed
                && w.spawned.elapsed() > t;
            if (w.booted && serving_on && late) || hung {
                silent.push(*pid);
            }
        }
        (silent, leaving)
    }

    /// SIGKILLs workers past their `kill_at`.
    pub(crate) fn kill_overdue(&mut self) {
        let now = Instant::now();
        for (pid, w) in &mut self.workers {
            if w.kill_at.is_some_and(|k| now >= k) {
                crate::log::error::info(&format!("Killing worker (pid:{pid}) with SIGKILL"));
                send(*pid, libc::SIGKILL);
                w.kill_at = None;
                w.killed = true;
            }
        }
    }

    pub(crate) fn signal_all(&self, signo: i32) {
        for pid in self.workers.keys() {
            send(*pid, signo);
        }
    }

    /// Collects every exited child without blocking.
    pub(crate) fn reap(&mut self) -> Vec<(i32, Exit, Option<Worker>)> {
        let mut out = Vec::new();
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG writes only `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return out;
            }
            let exit = if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                Exit::Code(libc::WEXITSTATUS(status))
            };
            out.push((pid, exit, self.workers.remove(&pid)));
        }
    }
}

/// Resident memory of a process in MiB, from `/proc/PID/statm`.
pub(crate) fn rss_mib(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes no pointers.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(pages * page / (1024 * 1024))
}

/// The RSS a worker's first beat wrote in its heartbeat file's access time
/// (`worker/heartbeat.rs`, `first_beat`), in MiB; `None` for a time no
/// worker wrote (the file's own, from when the master made it).
fn boot_rss(meta: &std::fs::Metadata) -> Option<u64> {
    let mib = meta
        .accessed()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs();
    // 2^20 MiB is a tebibyte: past it, the time is a date (the file's own,
    // or one a filesystem that keeps dates alone, as vfat, made of it).
    (mib < 1 << 20).then_some(mib)
}

/// Python's `tempfile.gettempdir()` candidates, in its order.
fn temp_dirs() -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = ["TMPDIR", "TEMP", "TMP"]
        .iter()
        .filter_map(std::env::var_os)
        .filter(|v| !v.is_empty())
        .map(Into::into)
        .collect();
    dirs.extend(["/tmp", "/var/tmp", "/usr/tmp"].map(Into::into));
    dirs.extend(std::env::current_dir().ok());
    dirs
}

/// Whether the worker finished a request (`worker/heartbeat.rs`, `served`:
/// the access time's nanoseconds at 1).
pub(crate) fn served(heartbeat: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    heartbeat.metadata().is_ok_and(|m| m.atime_nsec() == 1)
}

fn modified(f: &File) -> io::Result<SystemTime> {
    f.metadata()?.modified()
}

/// A signal's name for the log (`SIGABRT`), its number when unusual.
pub(crate) fn signal_name(signo: i32) -> String {
    let name = match signo {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signo}"),
    };
    name.to_string()
}

pub(crate) fn send(pid: i32, signo: i32) {
    // SAFETY: kill(2) takes no pointers; a gone pid is ESRCH, ignored.
    unsafe {
        libc::kill(pid, signo);
    }
}

/// The descriptor a worker touches (inherited across the fork).
pub(crate) fn heartbeat_fd(f: &File) -> RawFd {
    f.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_mark_booted_then_silent() -> io::Result<()> {
        let mut t = Table::default();
        let (f, born) = Table::heartbeat_file(None)?;
        let old = SystemTime::now() - Duration::from_secs(100);
        assert!(born < old, "made with an old time");
        f.set_modified(old)?;
        let age = t.next_age();
        // A first beat (`old`) before the master looked (`born` was read before the fork).
        t.add(42, age, 1, (f, born));
        let beats =
            |t: &mut Table| t.check_beats(Some(Duration::from_secs(1)), Duration::ZERO, true);
        assert_eq!(
            beats(&mut t),
            (vec![42], vec![]),
            "booted, then silent since"
        );
        assert!(t.workers[&42].booted);
        // Again from a first look before any beat: `born` as the file's time now.
        if let Some(w) = t.workers.get_mut(&42) {
            w.booted = false;
            w.born_beat = old;
        }
        t.boots = 0;
        assert_eq!(beats(&mut t), (vec![], vec![]));
        assert!(!t.workers[&42].booted, "no beat yet");
        t.workers[&42]
            .heartbeat
            .set_modified(old + Duration::from_secs(1))?;
        assert_eq!(beats(&mut t), (vec![42], vec![]));
        assert!(t.workers[&42].booted);
        t.workers[&42].heartbeat.set_modified(SystemTime::now())?;
        assert_eq!(beats(&mut t), (vec![], vec![]));
        assert_eq!(t.active(), 1);
        assert_eq!(t.oldest_active(), Some(42));
        // The worker's last request started (`heartbeat::replace_me`): it
        // is replaced, once, and not killed for it.
        let fd = heartbeat_fd(&t.workers[&42].heartbeat);
        // Held (a given-up reload), its lone byte is taken back: it stays.
        if let Some(w) = t.workers.get_mut(&42) {
            w.held = true;
        }
        let beat = SystemTime::now() - Duration::from_millis(300);
        crate::worker::heartbeat::replace_me(fd);
        t.workers[&42].heartbeat.set_modified(beat)?;
        assert_eq!(beats(&mut t), (vec![], vec![]));
        let taken = t.workers[&42].heartbeat.metadata()?;
        assert_eq!(taken.len(), 0);
        assert_eq!(taken.modified()?, beat, "taking the byte back is no beat");
        t.workers[&42].heartbeat.set_modified(SystemTime::now())?;
        if let Some(w) = t.workers.get_mut(&42) {
            w.held = false;
        }
        crate::worker::heartbeat::replace_me(fd);
        assert_eq!(beats(&mut t), (vec![], vec![(42, false)]));
        t.replace(42);
        assert_eq!(t.active(), 0);
        assert_eq!(t.workers[&42].kill_at, None);
        assert_eq!(beats(&mut t), (vec![], vec![]));
        // Silent meanwhile, it is timed out all the same.
        t.workers[&42]
            .heartbeat
            .set_modified(SystemTime::now() - Duration::from_secs(5))?;
        assert_eq!(beats(&mut t), (vec![42], vec![]));
        t.workers[&42].heartbeat.set_modified(SystemTime::now())?;
        // Its stop begins (`heartbeat::leaving`): once, until its kill is due.
        crate::worker::heartbeat::leaving(fd);
        assert_eq!(beats(&mut t), (vec![], vec![(42, true)]));
        t.retire(42, Retire::Recycle, 0, Duration::from_secs(60));
        assert_eq!(t.workers[&42].retiring, Some(Retire::Recycle));
        assert!(t.workers[&42].kill_at.is_some());
        assert_eq!(beats(&mut t), (vec![], vec![]));
        assert_eq!(t.active(), 0);
        Ok(())
    }

    #[test]
    fn a_boot_past_the_timeout_is_silent_unless_its_generation_is_retired() -> io::Result<()> {
        let mut t = Table::default();
        let long_ago = Instant::now().checked_sub(Duration::from_secs(5));
        for pid in [42, 43, 44, 45] {
            let file = Table::heartbeat_file(None)?;
            let age = t.next_age();
            t.add(pid, age, 1, file);
        }
        for pid in [42, 43, 44] {
            if let (Some(w), Some(at)) = (t.workers.get_mut(&pid), long_ago) {
                w.spawned = at;
            }
        }
        // 43 is marked for a reload under way, 44 already told to stop.
        if let Some(w) = t.workers.get_mut(&43) {
            w.retiring = Some(Retire::Reload);
        }
        t.retire(44, Retire::Stop, 0, Duration::from_secs(60));
        let timeout = Some(Duration::from_secs(1));
        assert_eq!(
            t.check_beats(timeout, Duration::ZERO, true),
            (vec![42], vec![]),
            "45 boots within it"
        );
        assert_eq!(
            t.check_beats(None, Duration::ZERO, true),
            (vec![], vec![]),
            "no --timeout"
        );
        assert_eq!(
            t.check_beats(timeout, Duration::ZERO, false),
            (vec![], vec![]),
            "--reload"
        );
        t.retire(42, Retire::BootTimeout, 0, Duration::from_secs(2));
        assert_eq!(t.workers[&42].retiring, Some(Retire::BootTimeout));
        assert_eq!(
            t.check_beats(timeout, Duration::ZERO, true),
            (vec![], vec![]),
            "once"
        );
        // A stop after it keeps the abort's reason and deadline.
        let deadline = t.workers[&42].kill_at;
        t.retire(42, Retire::Stop, 0, Duration::from_secs(60));
        assert_eq!(t.workers[&42].retiring, Some(Retire::BootTimeout));
        assert_eq!(t.workers[&42].kill_at, deadline);
        // Booting as it is aborted: booted, but no boot the waits restart from.
        t.workers[&42].heartbeat.set_modified(SystemTime::now())?;
        t.check_beats(None, Duration::ZERO, true);
        assert!(t.workers[&42].booted);
        assert_eq!(t.boots, 0);
        Ok(())
    }

    #[test]
    fn a_worker_is_held_to_the_beat_and_grace_it_was_forked_with() -> io::Result<()> {
        // Signals go to no process (pids stop far below).
        const NO_SUCH: i32 = i32::MAX;
        let mut t = Table::default();
        let file = Table::heartbeat_file(None)?;
        t.add(NO_SUCH, 0, 1, file);
        t.workers[&NO_SUCH]
            .heartbeat
            .set_modified(SystemTime::now())?;
        t.check_beats(None, Duration::ZERO, true);
        // Its last beat 0.9 s ago: it beats each second (forked under a
        // long --timeout), and the master's is now 0.5 s (a HUP).
        let beat = SystemTime::now() - Duration::from_millis(900);
        t.workers[&NO_SUCH].heartbeat.set_modified(beat)?;
        let (half, quarter) = (Duration::from_millis(500), Duration::from_millis(125));
        assert_eq!(t.check_beats(Some(half), quarter, true).0, vec![NO_SUCH]);
        if let Some(w) = t.workers.get_mut(&NO_SUCH) {
            w.beat = Duration::from_secs(1);
            w.graceful = Duration::from_secs(33);
        }
        assert_eq!(
            t.check_beats(Some(half), quarter, true).0,
            Vec::<i32>::new()
        );
        // A graceful stop gets its own time; a fast one the one given.
        t.retire(NO_SUCH, Retire::Reload, 0, Duration::from_secs(4));
        let at = t.workers[&NO_SUCH].kill_at;
        assert!(
            at > Some(Instant::now() + Duration::from_secs(30)),
            "{at:?}"
        );
        // A TERM now (`Master::stop_all`) is no faster a stop: its deadline stays.
        let given = t.workers[&NO_SUCH].grace_for(libc::SIGTERM, Duration::from_secs(4));
        assert!(at.is_some_and(|k| Instant::now() + given >= k), "{given:?}");
        let fast = t.workers[&NO_SUCH].grace_for(libc::SIGQUIT, Duration::from_secs(2));
        assert_eq!(fast, Duration::from_secs(2));
        if let Some(w) = t.workers.get_mut(&NO_SUCH) {
            w.kill_at = None;
        }
        t.retire(NO_SUCH, Retire::Stop, libc::SIGCONT, Duration::from_secs(2));
        let at = t.workers[&NO_SUCH].kill_at;
        assert!(at < Some(Instant::now() + Duration::from_secs(3)), "{at:?}");
        Ok(())
    }

    #[test]
    fn the_first_beat_tells_the_rss_at_boot_and_later_beats_keep_it() -> io::Result<()> {
        let mut t = Table::default();
        let file = Table::heartbeat_file(None)?;
        let fd = heartbeat_fd(&file.0);
        t.add(7, 0, 1, file);
        let beats = |t: &mut Table| t.check_beats(None, Duration::ZERO, true);
        beats(&mut t);
        assert_eq!(t.workers[&7].boot_rss, None, "no beat, no figure");
        crate::worker::heartbeat::first_beat(fd);
        beats(&mut t);
        let own = rss_mib(std::process::id().cast_signed());
        assert!(own.is_some_and(|n| n > 0));
        let said = t.workers[&7].boot_rss;
        assert!(
            said.zip(own).is_some_and(|(s, o)| s <= o && s + 64 >= o),
            "{said:?} against {own:?}"
        );
        crate::worker::heartbeat::touch(fd);
        assert_eq!(boot_rss(&t.workers[&7].heartbeat.metadata()?), said);
        Ok(())
    }

    #[test]
    fn a_worker_retired_while_booting_has_its_stops_time_from_its_boot() -> io::Result<()> {
        let mut t = Table::default();
        let grace = Duration::from_secs(30);
        let soon = Instant::now() + Duration::from_secs(5);
        // 42 boots before its deadline, 43 after it (the master looks late).
        for (pid, at) in [(42, Some(soon)), (43, Instant::now().checked_sub(grace))] {
            let (f, born) = Table::heartbeat_file(None)?;
            let age = t.next_age();
            t.add(pid, age, 1, (f, born));
            if let Some(w) = t.workers.get_mut(&pid) {
                w.retiring = Some(Retire::Stop);
                w.kill_at = at;
                w.kill_grace = grace;
            }
        }
        t.workers[&42].heartbeat.set_modified(SystemTime::now())?;
        t.workers[&43].heartbeat.set_modified(SystemTime::now())?;
        t.check_beats(None, Duration::ZERO, true);
        assert!(t.workers[&42].booted && t.workers[&43].booted);
        let pushed = t.workers[&42].kill_at;
        assert!(pushed > Some(soon + Duration::from_secs(20)), "{pushed:?}");
        assert!(
            t.workers[&43].kill_at <= Some(Instant::now()),
            "a late boot got more time"
        );
        // Once: a later look does not push it again.
        t.check_beats(None, Duration::ZERO, true);
        assert_eq!(t.workers[&42].kill_at, pushed);
        Ok(())
    }
}
