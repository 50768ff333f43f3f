//! The master's signals, gunicorn's meanings, as `Command`s read from a self-pipe.
//!
//! The master starts no thread and no runtime (its workers are forked from
//! it), so its handlers only write the signal number to a non-blocking pipe;
//! the master loop polls the pipe and turns each number into a `Command`
//! through `command_for`, the one table of what a signal means to the
//! master. `reset_in_child` undoes all of it in a freshly forked worker,
//! which then installs its own handlers (`worker/signals.rs`).

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;
use std::time::Duration;

/// What a signal asks of the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// TERM: stop the workers gracefully within `--graceful-timeout`, then exit.
    GracefulStop,
    /// INT, QUIT: stop the workers now, then exit.
    FastStop,
    /// HUP: re-read the config, start new workers, then retire the old ones.
    Reload,
    /// TTIN: one worker more.
    Incr,
    /// TTOU: one worker fewer.
    Decr,
    /// USR1: reopen the log files, in the master and every worker.
    ReopenLogs,
    /// USR2: start a new master from the current binary on the same sockets.
    Upgrade,
    /// WINCH: stop the workers (kept to one master) when daemonized.
    Winch,
    /// CHLD: a worker exited; the loop reaps it.
    ChildExited,
}

/// Every signal the master handles, with gunicorn's name for the log line.
pub(crate) const SIGNALS: [(i32, &str); 10] = [
    (libc::SIGTERM, "term"),
    (libc::SIGINT, "int"),
    (libc::SIGQUIT, "quit"),
    (libc::SIGHUP, "hup"),
    (libc::SIGTTIN, "ttin"),
    (libc::SIGTTOU, "ttou"),
    (libc::SIGUSR1, "usr1"),
    (libc::SIGUSR2, "usr2"),
    (libc::SIGWINCH, "winch"),
    (libc::SIGCHLD, "chld"),
];

/// The one table from signal to the master's command.
pub(crate) fn command_for(signo: i32) -> Option<Command> {
    Some(match signo {
        libc::SIGTERM => Command::GracefulStop,
        libc::SIGINT | libc::SIGQUIT => Command::FastStop,
        libc::SIGHUP => Command::Reload,
        libc::SIGTTIN => Command::Incr,
        libc::SIGTTOU => Command::Decr,
        libc::SIGUSR1 => Command::ReopenLogs,
        libc::SIGUSR2 => Command::Upgrade,
        libc::SIGWINCH => Command::Winch,
        libc::SIGCHLD => Command::ChildExited,
        _ => return None,
    })
}

/// gunicorn's name of a signal, for `Handling signal: hup`.
pub(crate) fn name(signo: i32) -> &'static str {
    SIGNALS
        .iter()
        .find(|(s, _)| *s == signo)
        .map_or("unknown", |(_, n)| n)
}

/// The write end of the self-pipe, for the handler.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// The read end, so a forked worker can close its inherited copy.
static PIPE_READ: AtomicI32 = AtomicI32::new(-1);
/// The master's pid: a worker forked a moment ago, before it reset the
/// handlers, must not feed the master's pipe.
static MASTER_PID: AtomicI32 = AtomicI32::new(0);

/// The master's pid, in the master and in the workers it forked (set
/// before the fork): a worker whose parent is another has lost its master.
pub(crate) fn master_pid() -> i32 {
    MASTER_PID.load(Ordering::Relaxed)
}

extern "C" fn on_signal(signo: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    // SAFETY: getpid(2) is async-signal-safe and takes no arguments.
    let mine = unsafe { libc::getpid() } == MASTER_PID.load(Ordering::Relaxed);
    if fd >= 0 && mine {
        let b = signo as u8;
        // SAFETY: write(2) is async-signal-safe; one byte from the stack.
        // A full pipe drops the byte: the loop is awake anyway. errno is
        // put back, so the code this handler interrupted sees its own.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&b as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// The master's handlers put back where another took their place (an app
/// that `--preload` imported set its own), and its signals let in should
/// the app have blocked them; the names of those taken back.
pub(crate) fn take_back() -> io::Result<Vec<&'static str>> {
    let mine = on_signal as extern "C" fn(libc::c_int) as usize;
    let mut taken = Vec::new();
    for (signo, name) in SIGNALS {
        // SAFETY: sigaction with a null new action only reads the current
        // one into a zeroed struct we own.
        let current = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signo, std::ptr::null(), &mut sa) < 0 {
                return Err(io::Error::last_os_error());
            }
            sa.sa_sigaction
        };
        if current != mine {
            set_handler(signo, mine)?;
            taken.push(name);
        }
    }
    block(false);
    Ok(taken)
}

/// The read end of the self-pipe, owned by the master loop.
pub(crate) struct SignalPipe {
    read: RawFd,
    write: RawFd,
}

impl SignalPipe {
    /// Makes the pipe and installs the handlers (they replace Python's).
    pub(crate) fn install() -> io::Result<SignalPipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        PIPE_WRITE.store(fds[1], Ordering::Relaxed);
        PIPE_READ.store(fds[0], Ordering::Relaxed);
        // SAFETY: getpid(2) takes no arguments.
        MASTER_PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
        defaults_in_forked_children();
        for (signo, _) in SIGNALS {
            set_handler(signo, on_signal as extern "C" fn(libc::c_int) as usize)?;
        }
        Ok(SignalPipe {
            read: fds[0],
            write: fds[1],
        })
    }

    /// Waits up to `timeout` for signals; returns the numbers that came.
    pub(crate) fn wait(&self, timeout: Duration) -> Vec<i32> {
        let mut p = libc::pollfd {
            fd: self.read,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd; EINTR just returns early.
        unsafe { libc::poll(&mut p, 1, ms) };
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a live buffer from our own non-blocking pipe.
            let n = unsafe { libc::read(self.read, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend(buf[..n as usize].iter().map(|&b| i32::from(b)));
        }
        out
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        PIPE_WRITE.store(-1, Ordering::Relaxed);
        PIPE_READ.store(-1, Ordering::Relaxed);
        // SAFETY: closing our own descriptors once.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

fn set_handler(signo: i32, handler: usize) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler is an extern "C" fn
    // (or SIG_DFL/SIG_IGN); SA_RESTART keeps the master's syscalls going.
    // The master's other signals wait while a handler runs: the kernel
    // would otherwise start the handlers of signals pending together last
    // first (HUP then TTIN became TTIN, then HUP, which reset the count).
    // Signals pending together are then handled in signal-number order.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for (other, _) in SIGNALS {
            libc::sigaddset(&mut sa.sa_mask, other);
        }
        if libc::sigaction(signo, &sa, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The process that forks, stored just before each fork (`pthread_atfork`'s
/// prepare, in the parent) and read in the child.
static FORKER: AtomicI32 = AtomicI32::new(0);
/// A worker's own pid, once it set its dispositions (`worker_forks_plainly`).
static WORKER_PID: AtomicI32 = AtomicI32::new(0);

thread_local! {
    /// The forking thread's signal mask before `before_fork` blocked the
    /// signals, put back in the parent and in the child after the fork.
    static MASK_BEFORE_FORK: Cell<Option<libc::sigset_t>> = const { Cell::new(None) };
}

/// In the parent, just before a fork of the master or a worker: its
/// signals wait (in the forking thread) until the child has its own
/// dispositions. A signal sent to the child before it ran its first
/// instruction was otherwise taken by the parent's handler it still had:
/// a `multiprocessing` child terminated at once ignored the TERM.
extern "C" fn before_fork() {
    // SAFETY: getpid(2) is async-signal-safe and takes no arguments.
    let me = unsafe { libc::getpid() };
    FORKER.store(me, Ordering::Relaxed);
    if me != MASTER_PID.load(Ordering::Relaxed) && me != WORKER_PID.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: zeroed sigsets filled by sigemptyset/sigaddset; the old mask
    // is written into our own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for (signo, _) in SIGNALS {
            libc::sigaddset(&mut set, signo);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) == 0 {
            MASK_BEFORE_FORK.set(Some(old));
        }
    }
}

/// In the parent, after the fork: the mask as it was.
extern "C" fn after_fork_in_parent() {
    mask_as_before_fork();
}

fn mask_as_before_fork() {
    if let Some(old) = MASK_BEFORE_FORK.take() {
        // SAFETY: a mask pthread_sigmask itself wrote.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
}

/// In the child of every fork, first (only async-signal-safe calls): a
/// process the master or a worker forks that is not a worker (a preloaded
/// app's `multiprocessing` helper, a hook's or a request's `os.fork`) gets
/// the default of every signal its parent handles. It kept its parent's
/// handlers before: the master's drops a signal another process gets, and
/// a worker's feeds the worker's signal thread, so TERM never ended it
/// (`Process.terminate()` never came back, and a stop under systemd waited
/// for its SIGKILL), nor did INT, QUIT or USR1, and HUP, USR2 and the like
/// were ignored. The master's self-pipe is closed there too. A worker the
/// master forks sets its own next (`reset_in_child`), its signals still
/// blocked (`fork_signals`). SIGCHLD in a worker's child is gevent's, left
/// alone.
extern "C" fn in_forked_child() {
    let forker = FORKER.load(Ordering::Relaxed);
    let master = forker == MASTER_PID.load(Ordering::Relaxed);
    if forker == 0 || !(master || forker == WORKER_PID.load(Ordering::Relaxed)) {
        return;
    }
    for (signo, _) in SIGNALS {
        if master || signo != libc::SIGCHLD {
            // SAFETY: signal(2) with SIG_DFL is async-signal-safe.
            unsafe { libc::signal(signo, libc::SIG_DFL) };
        }
    }
    if master {
        for fd in [&PIPE_WRITE, &PIPE_READ].map(|a| a.swap(-1, Ordering::Relaxed)) {
            if fd >= 0 {
                // SAFETY: the child's inherited copies, closed once.
                unsafe { libc::close(fd) };
            }
        }
    }
    // What `before_fork` held back comes now, to the defaults.
    mask_as_before_fork();
}

/// Registers `in_forked_child`, once per process image (the master's).
fn defaults_in_forked_children() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: handlers that only make async-signal-safe calls.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(in_forked_child),
            )
        };
    });
}

/// A worker, once its dispositions are set: what it forks from now on gets
/// the defaults (`in_forked_child`).
pub(crate) fn worker_forks_plainly() {
    // SAFETY: getpid(2) takes no arguments.
    WORKER_PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    defaults_in_forked_children();
}

/// A handler that does nothing: how a worker ignores HUP, USR2, WINCH and
/// (until its own handler) USR1 while what it execs gets their defaults. A
/// signal ignored stays ignored across `exec`, a caught one does not: a
/// program the app ran (`subprocess`, which does not fork the way `os.fork`
/// does) could not be hung up or ended by HUP or USR2, nor trap any of them
/// (a shell cannot trap a signal ignored when it started).
extern "C" fn unheeded(_: libc::c_int) {}

/// In a freshly forked worker: the master's handlers and pipe are gone.
/// Signals a worker has no use for (HUP, TTIN, TTOU, USR2, WINCH) are
/// ignored, so a stray one cannot stop or freeze it, and so is USR1 until
/// the worker's own handler reopens logs (a logrotate USR1 during a reload
/// must not kill a worker still importing the app); TERM, INT and QUIT get
/// their default until the worker installs its own. `keep_term`: TERM's
/// handler is left as it is (a worker's hold, installed first:
/// `worker::signals::hold_term_while_booting`), and HUP, USR1, USR2 and
/// WINCH are `unheeded`, not ignored. TTIN and TTOU stay ignored
/// (under a handler, a background write to a terminal set to `tostop` is
/// retried for ever). A new master (USR2) and the metrics process keep them
/// all ignored across their start.
pub(crate) fn reset_in_child(keep_term: bool) -> io::Result<()> {
    let fds = [
        PIPE_WRITE.swap(-1, Ordering::Relaxed),
        PIPE_READ.swap(-1, Ordering::Relaxed),
    ];
    for (signo, _) in SIGNALS {
        if keep_term && signo == libc::SIGTERM {
            continue;
        }
        let ignored = matches!(
            signo,
            libc::SIGHUP
                | libc::SIGTTIN
                | libc::SIGTTOU
                | libc::SIGUSR1
                | libc::SIGUSR2
                | libc::SIGWINCH
        );
        let unheed = keep_term
            && matches!(
                signo,
                libc::SIGHUP | libc::SIGUSR1 | libc::SIGUSR2 | libc::SIGWINCH
            );
        set_handler(
            signo,
            if unheed {
                unheeded as extern "C" fn(libc::c_int) as usize
            } else if ignored {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            },
        )?;
    }
    for fd in fds.into_iter().filter(|&fd| fd >= 0) {
        // SAFETY: the inherited copies of the master's pipe are closed
        // once, here; the master's own copies live in its process.
        unsafe {
            libc::close(fd);
        }
    }
    Ok(())
}

/// Blocks (`true`) or unblocks the master's signals in the calling thread.
/// The master blocks them across a fork: a signal that came between the
/// fork and the child's `reset_in_child` ran the master's handler in the
/// child, which drops it (not the master's pid), so a TERM of a stop was
/// lost and the new worker served on until the graceful timeout killed it.
/// Blocked, it waits, and the child meets it with its own dispositions.
pub(crate) fn block(on: bool) {
    // SAFETY: a zeroed sigset filled by sigemptyset/sigaddset; no old set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for (signo, _) in SIGNALS {
            libc::sigaddset(&mut set, signo);
        }
        let how = if on {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// A worker ends with its master: the kernel sends it TERM (a graceful
/// stop) when the master dies, even by SIGKILL, so orphans never keep
/// serving on the sockets. Not for a new master started by USR2, which
/// must outlive the old one.
pub(crate) fn die_with_master() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // The master may have died before the line above: then stop now.
    // SAFETY: getppid(2) and kill(2) take no pointers.
    unsafe {
        if libc::getppid() != MASTER_PID.load(Ordering::Relaxed) {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_has_one_meaning() {
        for (signo, n) in SIGNALS {
            assert!(command_for(signo).is_some(), "{n}");
            assert_eq!(name(signo), n);
        }
        let table = [
            (libc::SIGTERM, Command::GracefulStop),
            (libc::SIGINT, Command::FastStop),
            (libc::SIGQUIT, Command::FastStop),
            (libc::SIGHUP, Command::Reload),
            (libc::SIGTTIN, Command::Incr),
            (libc::SIGTTOU, Command::Decr),
            (libc::SIGUSR1, Command::ReopenLogs),
            (libc::SIGUSR2, Command::Upgrade),
            (libc::SIGWINCH, Command::Winch),
        ];
        for (signo, cmd) in table {
            assert_eq!(command_for(signo), Some(cmd));
        }
        assert_eq!(command_for(libc::SIGPIPE), None);
    }
}
