//! Signals of a worker process, as a `Command` the lifecycle acts on.
//!
//! A thread of its own (with a tiny runtime) listens, so a signal is heard
//! even while every app thread is busy. Each signal maps to one `Command`
//! in `command_for`, the single table of what a signal means to a worker
//! (the master has its own in `supervisor/signals.rs`: the two processes
//! give the same signals different meanings). Acting on a command is
//! `worker/mod.rs`'s job.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// TERM: finish in-flight requests within `--graceful-timeout`.
    GracefulStop,
    /// INT, QUIT: stop now.
    FastStop,
    /// USR1: reopen the log files (after rotation).
    ReopenLogs,
}

/// The signals a worker handles, with gunicorn's names for the log line.
const SIGNALS: [(i32, &str); 4] = [
    (libc::SIGTERM, "term"),
    (libc::SIGINT, "int"),
    (libc::SIGQUIT, "quit"),
    (libc::SIGUSR1, "usr1"),
];

/// The one table from signal to command.
pub(crate) fn command_for(signo: i32) -> Option<Command> {
    match signo {
        libc::SIGTERM => Some(Command::GracefulStop),
        libc::SIGINT | libc::SIGQUIT => Some(Command::FastStop),
        libc::SIGUSR1 => Some(Command::ReopenLogs),
        _ => None,
    }
}

/// A TERM came while the worker booted (`hold_term_while_booting`).
static TERM_WHILE_BOOTING: AtomicBool = AtomicBool::new(false);

/// The booting worker's pid, 0 once its own handlers are in (`listen`):
/// signal-hook calls the handler it replaced too, which then does nothing.
static BOOTING: AtomicI32 = AtomicI32::new(0);

/// The booting worker's master (`hold_term_while_booting`).
static MASTER: AtomicI32 = AtomicI32::new(0);

extern "C" fn term_while_booting(_: libc::c_int) {
    let booting = BOOTING.load(Ordering::Relaxed);
    if booting == 0 {
        return;
    }
    // SAFETY: getpid(2), getppid(2), signal(2) and raise(3) are
    // async-signal-safe and take plain integers.
    unsafe {
        // A process the app forked while it was imported, or a worker whose
        // master died (the kernel's TERM, `die_with_master`: nobody would
        // ever kill it): TERM's default, as before the hold.
        if libc::getpid() != booting || libc::getppid() != MASTER.load(Ordering::Relaxed) {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::raise(libc::SIGTERM);
            return;
        }
    }
    TERM_WHILE_BOOTING.store(true, Ordering::Relaxed);
}

/// In a freshly forked worker, until `listen`: a TERM from its master (the
/// master's stop) is kept, not acted on, and the worker's stop begins as
/// soon as it has booted (`term_kept`). A TERM that killed it there closed
/// the last copy of the listening sockets with connections still queued
/// in their backlog (those that came while the replacement of a worker
/// that left for `--max-requests` booted): they were reset, not drained,
/// as a booted worker's graceful stop drains them. A boot that never ends
/// is killed by the master at its stop's deadline. INT and QUIT keep their
/// default: a fast stop ends a booting worker at once, and the master
/// sends INT to one it retires that has nothing to drain (a reload given
/// up, a halt).
pub(crate) fn hold_term_while_booting(master: i32) -> std::io::Result<()> {
    MASTER.store(master, Ordering::Relaxed);
    // SAFETY: getpid(2) takes no arguments.
    BOOTING.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    // SAFETY: a zeroed sigaction is valid; the handler is an extern "C" fn
    // that only calls async-signal-safe functions. SA_RESTART keeps the
    // boot's system calls going.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = term_while_booting as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut()) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether a TERM came while the worker booted: its stop begins now, once
/// it shows as ready (the stop's draining comes after). Once.
pub(crate) fn term_kept() -> bool {
    TERM_WHILE_BOOTING.swap(false, Ordering::Relaxed)
}

/// Starts the signal thread; `act` runs for every command, on that thread.
pub(crate) fn listen(mut act: impl FnMut(Command) + Send + 'static) -> std::io::Result<()> {
    let rt = crate::exec::unpanicked(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    })?;
    // Register now, so a signal that arrives right after start is not lost.
    let mut streams: Vec<(Signal, i32, &'static str)> = Vec::with_capacity(SIGNALS.len());
    crate::exec::unpanicked(|| {
        rt.block_on(async {
            for (signo, name) in SIGNALS {
                streams.push((signal(SignalKind::from_raw(signo))?, signo, name));
            }
            Ok::<(), std::io::Error>(())
        })
    })?;
    // The streams above hear TERM from here; one kept from before is
    // acted on by the caller (`term_kept`), not sent again: an app that
    // installed its own TERM handler at import would run it.
    BOOTING.store(0, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("siesta-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    let (signo, name) = next_signal(&mut streams).await;
                    // At debug: the master logs the signals it hands on, and
                    // gunicorn's workers log none (eight workers, eight lines).
                    // USR1's line comes once the logs are reopened (it is the
                    // new error log's first, and what follows it goes there);
                    // a stop's before the stop begins.
                    let cmd = command_for(signo);
                    let said = || {
                        crate::log::error::write(
                            crate::log::error::Level::Debug,
                            &format!("Handling signal: {name}"),
                        )
                    };
                    match cmd {
                        Some(Command::ReopenLogs) => {
                            act(Command::ReopenLogs);
                            said();
                        }
                        Some(cmd) => {
                            said();
                            act(cmd);
                        }
                        None => said(),
                    }
                }
            })
        })?;
    Ok(())
}

/// Waits for whichever signal comes first.
async fn next_signal(streams: &mut [(Signal, i32, &'static str)]) -> (i32, &'static str) {
    std::future::poll_fn(|cx| {
        for (s, signo, name) in streams.iter_mut() {
            if s.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready((*signo, *name));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handled_signal_has_a_command() {
        for (signo, name) in SIGNALS {
            assert!(command_for(signo).is_some(), "{name}");
        }
        assert_eq!(command_for(libc::SIGTERM), Some(Command::GracefulStop));
        assert_eq!(command_for(libc::SIGQUIT), Some(Command::FastStop));
        assert_eq!(command_for(libc::SIGUSR1), Some(Command::ReopenLogs));
        assert_eq!(command_for(libc::SIGWINCH), None);
    }
}
