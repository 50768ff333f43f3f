"""The master's Python half: forking workers, running one, and gunicorn's hooks around them.

Rust's ``Supervisor`` (``src/supervisor/``) is the master loop: signals,
the worker table, heartbeats, ``--timeout``, ``--max-worker-rss``, counts.
It calls :class:`Master` for what needs Python: ``spawn`` forks a worker
(the child runs :func:`run_worker` and never returns), ``reload`` re-reads
the config on HUP, ``upgrade`` starts a new master on USR2,
``stopping`` lets go of the sockets on a stop, ``reopened`` hands log files
made anew on USR1 to the workers' user, and the hooks
(``pre_fork``, ``post_fork``, ``child_exit``, ``nworkers_changed``,
``on_reload``, ``pre_exec``). Serving requests is ``_run.py`` (threads) or
``_gevent.py`` (greenlets).
"""

from __future__ import annotations

import errno
import faulthandler
import fcntl
import mmap
import os
import posix
import signal
import stat
import sys
import threading
import time

from siesta import _siesta
from siesta._app import AppLoadError, load
from siesta._pylog import bridge, flush_std, traceback_text
from siesta._request_hooks import wrap as request_hooks
from siesta._run import serve_threads  # imported by the master: a worker may run as -u later
from siesta.config import ConfigError, for_rust
from siesta.hooks import Worker as HookWorker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# gunicorn's exit codes for a worker, read by the master.
WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4

# Set by `Master.spawn` across its fork: the child's first at-fork hook (registered
# here, before any app's with --preload) then resets its signal handling at once, so
# the app's own after-fork hooks, and the threads they start, never run with the
# master's signals blocked (`fork_signals`).
_forking_worker = False


def _in_new_worker() -> None:
    global _forking_worker
    if _forking_worker:
        _forking_worker = False
        _siesta.worker_after_fork()


os.register_at_fork(after_in_child=_in_new_worker)

# Set in a worker once it serves: a crash before that is a boot error (exit 3), as in
# gunicorn, so the master stops instead of restarting a worker that can never start.
_booted = False

# One byte shared by the master and every worker it forks: 1 once a worker has loaded
# the app. With --reload, a load that fails after that (an edit broke the code) leaves
# the worker serving 500s and watching; one that fails first is exit 4, as without.
_loaded_once = mmap.mmap(-1, 1)


def _failed_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """--reload after a failed load: every request gets a 500 until the code is fixed."""
    body = b"Internal Server Error: the app failed to load (--reload); see the error log\n"
    start_response(
        "500 Internal Server Error",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def set_title(role: str, values: dict[str, Any]) -> None:
    """``siesta: master [name]`` in ps and top (cut to the length of the command line)."""
    _siesta.set_title(f"siesta: {role} [{values.get('name') or values.get('app')}]")


def _drop_privileges(values: dict[str, Any], heartbeat_fd: int) -> None:
    """-u/-g: the worker runs as that user and group (the master keeps its own)."""
    uid, gid = values.get("_uid"), values.get("_gid")
    if uid is None and gid is None:
        return
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    os.fchown(heartbeat_fd, uid, gid)  # the worker must still touch it
    if values.get("access_logfile"):  # open while it may: its directory may be root's alone
        _siesta.preopen_access_log(values["access_logfile"])
    if os.getuid() == 0:
        # No supplementary group but -g's unless --initgroups asks for the
        # user's (gunicorn adds them with --initgroups only): a worker never
        # keeps the master's, root's say.
        user = values.get("_user_name")
        if user and values.get("initgroups"):
            os.initgroups(user, gid)
        else:
            os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)
    # The kernel forgets the parent-death signal when the credentials change:
    # asked for again, so that the worker still ends with its master.
    _siesta.worker_dies_with_master()


# The system ran short (threads or processes, memory, descriptors): a worker that
# cannot start for it may start a moment later.
_SHORTAGES = (errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE)


def _boot_failure(exc: BaseException) -> int:
    """A worker's exit code for a start that failed on ``exc``: a shortage of the
    system's is a crash (1), which the master retries while other workers serve (QA,
    session 30: a replacement booted under a pids limit stopped the whole server);
    anything else is a boot error (3), which stops the server, as in gunicorn."""
    if isinstance(exc, OSError) and exc.errno in _SHORTAGES:
        return 1
    return WORKER_BOOT_ERROR


# Set by a master for the new master a USR2 starts (`upgrade`), which does not detach.
UPGRADE_ENV = "SIESTA_UPGRADE"
# The old master's pid, for its new master (gunicorn's GUNICORN_PID); beside
# SIESTA_UPGRADE=1, which a Siesta of before it still reads.
UPGRADE_PID_ENV = "SIESTA_UPGRADE_PID"
# With it: the unix socket files the old master made (a JSON list), which the new
# master removes at its stop once it is the one serving (its old master gone).
UNLINK_ENV = "SIESTA_UNLINK"


def handed_socket_files() -> list[str]:
    """In a new master started by USR2: the socket files its old master handed over."""
    said = os.environ.pop(UNLINK_ENV, "")
    if not said:
        return []
    import json

    try:
        paths = json.loads(said)
    except ValueError:
        return []
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def _remove_socket_file(path: str) -> None:
    """Removes `path` if it is still a socket (never a file put there since)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def own_unix_sockets(values: dict[str, Any]) -> None:
    """-u/-g: the unix sockets Siesta created belong to the workers' user and group,
    as gunicorn's do, so that a proxy in that group can connect under ``-m 007``.
    Inherited sockets (``fd://``, USR2, systemd) are left as they are."""
    uid, gid = values.get("_uid"), values.get("_gid")
    if uid is None and gid is None:
        return
    binds = [*(values.get("bind") or ()), values.get("metrics_bind") or ""]
    for bind in (b.strip() for b in binds):  # as the server reads them
        if bind.startswith("unix:"):
            try:
                os.chown(bind[5:], -1 if uid is None else uid, -1 if gid is None else gid)
            except OSError as exc:
                _siesta.log("warning", f"Cannot give {bind} to -u/-g: {exc.strerror}")


def own_log_files(values: dict[str, Any]) -> None:
    """-u/-g: the master creates --access-logfile and --error-logfile (as root, say) and
    gives them to the workers' user and group, as gunicorn does, so that a worker can
    open and, after USR1, reopen them where it could not create them itself. Called
    before the first fork, on HUP and on USR1 (after the master's own reopen)."""
    uid, gid = values.get("_uid"), values.get("_gid")
    if uid is None and gid is None:
        return
    for key in ("access_logfile", "error_logfile"):
        path = values.get(key)
        if not path or path in ("-", "/dev/stdout", "/dev/stderr"):
            continue  # the streams: a worker writes through its copy, opens nothing
        try:
            # Only a log file is given away, and only one is opened here: never a
            # device (/dev/null, a tty) nor a FIFO (an open and close would end its
            # reader, and one with no reader would hold the master).
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue
        except FileNotFoundError:
            pass  # created below
        except OSError:
            continue
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError:
            continue  # the worker reports it when it cannot open it either
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        except OSError:
            pass  # not root: the file stays as writable as it was
        finally:
            posix.close(fd)  # not os's, which gevent may have patched (real_fork)


def _enable_faulthandler() -> None:
    """SIGABRT (the master's --timeout) dumps every thread's Python stack to the error log,
    through the error log's own descriptor: it follows a USR1's reopening, and needs no
    opening by path (under -u, the directory may be root's alone)."""
    faulthandler.enable(file=_siesta.error_log_fd(), all_threads=True)


def _module_files() -> list[str]:
    return [
        f for m in list(sys.modules.values()) if (f := getattr(m, "__file__", None)) is not None
    ]


def _mtimes(extra: list[str]) -> dict[str, float | None]:
    """The modification time of every imported module's file, and of `extra`; None for
    a file of `extra` that does not exist yet (a module a failed load did not find), so
    that its appearance counts as a change."""
    seen: dict[str, float | None] = {}
    for path in [*_module_files(), *extra]:
        try:
            seen[path] = os.stat(path).st_mtime
        except OSError:
            if path in extra:
                seen[path] = None
    return seen


def _watch_code(
    server: Any, seen: dict[str, float | None], extra: list[str], interval: float = 1.0
) -> None:
    """--reload: stop this worker (gracefully) once a file of an imported module (or
    of `extra`: the files of a failed load) changes from `seen` (taken before the worker
    served anything, so a change made right after its first answer is never taken for
    the baseline); the master then starts a fresh worker, which imports the new code.
    Modules imported later are timed when first seen."""
    while True:
        for path in [*_module_files(), *extra]:
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if seen.setdefault(path, mtime) != mtime:
                _siesta.log("info", f"Worker reloading: {path} modified")
                server.stop(True)
                return
        time.sleep(interval)


def run_worker(
    values: dict[str, Any],
    hooks: Any,
    arbiter: Any,
    listeners: Any,
    heartbeat_fd: int,
    app: Any,
    worker: Any,
) -> int:
    """One worker's life, in the forked child; returns its exit code. `worker` is
    the object `pre_fork` had, now with this process's pid, as gunicorn passes one
    worker object to all its hooks (what `pre_fork` set on it, `post_fork` finds)."""
    _siesta.worker_after_fork(keep_beat=heartbeat_fd)
    _forget_the_masters_children()
    # From here, a boot past --timeout has its stacks written (post_fork too); the
    # error log is the master's descriptor, inherited.
    _enable_faulthandler()
    set_title("worker", values)
    worker.pid, worker.ppid, worker.wsgi = os.getpid(), os.getppid(), app
    _siesta.log("info", f"Booting worker with pid: {worker.pid}")
    if not hooks.boot("post_fork", arbiter, worker):
        return WORKER_BOOT_ERROR
    _enable_faulthandler()  # again: a hook's own faulthandler.enable() wrote to stderr
    gevent = None
    if values["worker_class"] == "gevent":
        try:
            from siesta import _gevent as gevent  # the master only checked it imports
        except Exception as exc:  # whatever a broken install raises (a HUP's worker too)
            _siesta.log("error", f"-k gevent: gevent cannot be imported: {exc}")
            return WORKER_BOOT_ERROR
        gevent.patch()  # before -u: patching imports modules the new user may not read
    try:
        _drop_privileges(values, heartbeat_fd)
    except OSError as exc:
        _siesta.log("error", f"Cannot switch to user/group: {exc}")
        return WORKER_BOOT_ERROR
    if gevent is not None:
        # An import parked in a greenlet: its stack too, at a boot's --timeout.
        # faulthandler hands the signal on to the handler it found when enabled.
        faulthandler.disable()
        gevent.greenlet_stacks_on_abort(_siesta.error_log_fd())
        _enable_faulthandler()
    bridge(values["log_level"])  # before the app is imported: gunicorn.error as gunicorn's
    failed_files: list[str] = []
    if app is None:
        try:
            app = load(values["app"])
        except AppLoadError as exc:
            _siesta.log("error", str(exc))
            if not (values["reload"] and _loaded_once[0]):
                return APP_LOAD_ERROR
            _siesta.log("error", "Reload: the app failed to load; serving 500 until it is fixed")
            app, failed_files = _failed_app, exc.files
    if app is not _failed_app:
        _loaded_once[0] = 1
    try:
        server = _siesta.Server(for_rust(values), listeners, heartbeat_fd)
        # The server holds its own copies now; the ones inherited from the
        # master would keep the sockets listening after this worker stops
        # accepting (new connections would wait unanswered in the backlog).
        listeners.close(False)
    except (ValueError, OSError) as exc:
        _siesta.log("error", f"Worker failed to boot: {exc}")
        return _boot_failure(exc)
    worker.wsgi = worker.app.callable = app
    worker.attach(server)
    if not hooks.boot("post_worker_init", worker):
        return WORKER_BOOT_ERROR
    worker.booted = True
    app = request_hooks(app, hooks, worker, values["log_level"] == "debug")
    try:
        # Opens the access log, starts the I/O and the heartbeat: a failure
        # here (say, an access log this worker cannot open) is a boot error
        # (exit 3, the master stops), not a crash to restart forever; but
        # a passing shortage is a crash (`_boot_failure`).
        server.start(lambda: hooks.call("worker_int", worker))
    except (ValueError, OSError) as exc:
        _siesta.log("error", f"Worker failed to boot: {exc}")
        return _boot_failure(exc)
    global _booted
    _booted = True
    if gevent is not None:
        # A request past --timeout holds the hub: faulthandler's frames are its,
        # and the signal then ends the worker, with no handler of Python's left
        # (disabling puts back the one found at enabling: Python's, first).
        faulthandler.disable()
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        _enable_faulthandler()
    # Set false by a hook before it served (post_fork, post_worker_init); not the
    # getter, which is false too once a stop or --max-requests came meanwhile.
    if not worker._alive:
        server.retire()
    if values["reload"]:
        threading.Thread(
            target=_watch_code,
            args=(server, _mtimes(failed_files), failed_files),
            name="siesta-reload",
            daemon=True,
        ).start()
    if gevent is not None:
        gevent.serve(server, app, values["worker_connections"], values["queue_timeout"])
    else:
        serve_threads(server, app, values["threads"])
    server.finish()  # StatsD's last batch
    worker._alive = False  # as gunicorn's, once its loop ended
    _siesta.log("info", f"Worker exiting (pid: {worker.pid})")  # then the hook, as gunicorn
    hooks.call("worker_exit", arbiter, worker)
    return 0


def _forget_the_masters_children() -> None:
    """The master's ``multiprocessing`` children (a ``--preload`` app's, a hook's) are
    not this worker's: the exit functions it runs (``run_exit_functions``) would
    SIGTERM the daemonic ones and fail to join the others, as multiprocessing's own
    children forget them (its ``_bootstrap``)."""
    process = sys.modules.get("multiprocessing.process")
    children = getattr(process, "_children", None)
    if isinstance(children, set):
        children.clear()


def run_exit_functions() -> None:
    """What the app registered with ``atexit`` (a Sentry or OpenTelemetry client's
    last flush, ``logging.shutdown`` for buffered handlers, ``weakref.finalize``), run
    as a worker ends, as gunicorn's ``sys.exit`` runs it: ``os._exit`` alone skipped
    it, and what those buffers held was lost at every stop and recycle. The worker
    then still leaves by ``os._exit``, so no thread the app left running holds it. A
    function that fails is logged in the error log (CPython wrote it to fd 2, past
    the log's format and file) and the others run. What the master registered before
    a fork (a config file, a ``--preload`` app) runs in each worker too, as in
    gunicorn's. Not in the master (gunicorn's runs them): multiprocessing's would
    wait for ever for a non-daemonic child a preloaded app or a hook started, as
    Python's own shutdown for a non-daemonic thread (review, session 41)."""
    import atexit

    run = getattr(atexit, "_run_exitfuncs", None)
    if run is None:
        return
    before = sys.unraisablehook
    sys.unraisablehook = _log_unraisable
    try:
        _run_threading_exit_functions()
        run()
    except BaseException as exc:  # a KeyboardInterrupt meanwhile: leave
        _siesta.log("warning", f"Exit functions interrupted: {exc!r}")
    finally:
        sys.unraisablehook = before


def _run_threading_exit_functions() -> None:
    """What ``threading._register_atexit`` registered, run first, as Python's
    shutdown runs it before the ``atexit`` functions (but without joining the app's
    threads): ``concurrent.futures`` ends its executors there. Without it, a
    ``ProcessPoolExecutor`` the app made kept its processes waiting for work, and
    multiprocessing's exit function waited for them until the worker was killed at
    ``--graceful-timeout`` (probe, session 42)."""
    import threading

    calls = getattr(threading, "_threading_atexits", None)
    if not calls:
        return
    threading._SHUTTING_DOWN = True  # what is submitted now is refused, as at shutdown

    def run() -> None:
        for call in reversed(list(calls)):  # one after the other, as CPython's order
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 - the others run, as atexit's do
                _log_exit_failure("Exception ignored in threading exit callback", call, exc)

    # They join the executors' threads, and a task that never ends (a loop the
    # app submitted at import) would hold the exit until the master's SIGKILL: a
    # thread of their own, waited for THREADING_EXIT_WAIT at most. (In turn, not
    # each in a thread: a thread pool's tasks may still submit to a process pool,
    # which CPython shuts down after them; third review, session 42.)
    runner = threading.Thread(target=run, name="siesta-exit", daemon=True)
    runner.start()
    runner.join(THREADING_EXIT_WAIT)
    if runner.is_alive():
        _siesta.log(
            "warning",
            f"Exit: threads the app's executors run did not end within "
            f"{THREADING_EXIT_WAIT:g} s; the worker leaves without them",
        )


# How long a worker's exit waits for threading's exit callbacks (the executors).
THREADING_EXIT_WAIT = 2.0


def _log_unraisable(unraisable: Any) -> None:
    """An exit function's exception, in the error log."""
    what = unraisable.err_msg or "Exception ignored in"
    _log_exit_failure(what, unraisable.object, unraisable.exc_value)


def _log_exit_failure(what: str, function: Any, exc: BaseException | None) -> None:
    try:
        text = traceback_text(exc, exc.__traceback__ if exc is not None else None)
        _siesta.log("error", f"{what}: {function!r}\n{text}")
    except BaseException:  # noqa: BLE001 - the exit goes on
        pass


def _exit_code(exc: SystemExit) -> int:
    """A worker's SystemExit as Python would end with it: its code, its message (a
    ``sys.exit("why")``) logged. Before the worker served it is a boot error whatever
    the code (an app that exits at import would exit again on every respawn)."""
    if exc.code is None or isinstance(exc.code, int):
        code = exc.code or 0
    else:
        _siesta.log("error", str(exc.code))
        code = 1
    if not _booted:  # the master tells a boot failure from a stop it asked for
        _siesta.log("info", f"Worker exiting before it served: SystemExit({exc.code!r})")
        return WORKER_BOOT_ERROR
    return code


def pid_holder(path: str | None) -> int | None:
    """The live process, other than this one, that the pid file names; None when there
    is no file, or it names this process, a dead one, or no number (a stale file)."""
    if not path:
        return None
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            pid = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass  # EPERM: alive, someone else's
    return pid


def write_pid_file(path: str | None) -> None:
    """Writes the pid file atomically (a new file renamed over it), as gunicorn does: a
    reader never sees it empty, even while a USR2 master replaces it; mode 0644, as
    gunicorn's. Raises OSError."""
    if path:
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
            os.chmod(tmp, 0o644)  # readable by all whatever the umask, as gunicorn's
            os.replace(tmp, path)
        except OSError:
            try:
                os.unlink(tmp)  # a full disk leaves a partial one
            except OSError:
                pass
            raise


def real_fork() -> int:
    """The C library's fork, for the master: a config file or a preloaded app may
    have patched ``os`` (gevent's ``patch_all``), whose fork watches the child from a
    hub the master never runs and whose waitpid waits on that hub for ever."""
    return posix.fork()


def remove_pid_file(path: str | None, pid: int | None = None) -> None:
    """Removes the pid file if it still names this process (or ``pid``)."""
    if not path:
        return
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() == str(os.getpid() if pid is None else pid):
                os.unlink(path)
    except OSError:
        pass


class Master:
    """What the Rust master loop calls back for."""

    def __init__(
        self,
        reread: Any,
        values: dict[str, Any],
        hooks: Any,
        arbiter: Any,
        listeners: Any,
        app: Any = None,
        inherited: bool = False,
    ) -> None:
        self.reread, self.values, self.hooks = reread, values, hooks
        self.arbiter, self.listeners, self.app = arbiter, listeners, app
        # The sockets came from systemd or an old master: their files are not ours to remove.
        self.inherited = inherited
        # The pid of a new master started by USR2, if any.
        self.upgraded: int | None = None
        self.upgraded_pid_file: str | None = None  # -p at that USR2
        # The hook objects of the running workers, by pid (child_exit gets its own).
        self.workers: dict[int, Any] = {}
        arbiter.WORKERS = self.workers  # gunicorn's name, for hooks that go through them
        # The --metrics-bind socket, handed to a new master on USR2.
        self.metrics_fd: int | None = None
        # The master loop (its --metrics-bind socket file goes at a stop).
        self.supervisor: Any = None
        # Where siesta was started: a new master (USR2) starts there too, so
        # relative paths on its command line mean what they meant.
        self.launch_dir: str | None = None
        # The environment before -e/raw_env (the new master of a USR2 starts with it).
        self.launch_env: dict[str, str] | None = None
        # Started by USR2: the old master's pid, and the socket files it made (or was
        # handed), removed at this master's stop once the old one is gone, as a
        # promoted gunicorn master removes them.
        self.old_master: int | None = None
        self.handed_files: list[str] = []

    def maybe_promote(self) -> None:
        """gunicorn's: a master a USR2 started is "Master" again, with no old
        master, once that one is gone (it is this master's parent until it
        exits). Called by the master's loop at its first turn after that exit
        (`Supervisor.watch_old_master`), before that turn's callbacks."""
        if self.arbiter.master_pid:
            held = self.pid_file()  # PIDFILE.2, as the old master ran
            self.arbiter.master_pid, self.arbiter.master_name = 0, "Master"
            _siesta.log("info", "Master has been promoted.")
            # gunicorn's rename: PIDFILE names this master, PIDFILE.2 goes (the old
            # master removed its PIDFILE at exit; one a killed old master left names
            # a dead process). Written anew, as gunicorn's, so a PIDFILE.2 removed
            # meanwhile (by hand, by a tmp cleaner) still leaves a pid file.
            if held:
                try:
                    write_pid_file(self.pid_file())
                except OSError as exc:
                    _siesta.log(
                        "error", f"Cannot write the pid file {self.pid_file()}: {exc.strerror}"
                    )
                else:
                    remove_pid_file(held)

    def pid_file(self) -> str | None:
        """Where this master's pid file is: PIDFILE, or PIDFILE.2 while it is a USR2's
        new master and its old master runs, as gunicorn's (the old one keeps PIDFILE
        until it exits)."""
        return self._as_written(self.values.get("pid"))

    def _as_written(self, path: str | None) -> str | None:
        """-p's ``path`` as this master writes it (``pid_file``)."""
        if path and self.arbiter.master_pid:
            return path + ".2"
        return path

    def spawn(self, age: int, heartbeat_fd: int) -> int:
        """Forks a worker; in the child, runs it and exits (never returns there)."""
        # One object for the worker's hooks, in both processes, as gunicorn's.
        worker = HookWorker(self.arbiter, None, age=age, pid="[booting]", ppid=os.getpid())
        worker.heartbeat(heartbeat_fd)
        self.hooks.call("pre_fork", self.arbiter, worker)
        global _forking_worker
        _forking_worker = True
        _siesta.fork_signals(True)  # a stop's TERM waits for the child's own dispositions
        try:
            pid = real_fork()
        except BaseException:
            _forking_worker = False
            _siesta.fork_signals(False)
            raise
        if pid:
            _forking_worker = False
            _siesta.fork_signals(False)  # the child lets them in itself (_in_new_worker)
            worker.pid = pid
            self.workers[pid] = worker  # for child_exit
            return pid
        code = 1
        try:
            code = run_worker(
                self.values,
                self.hooks,
                self.arbiter,
                self.listeners,
                heartbeat_fd,
                self.app,
                worker,
            )
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException as exc:  # the worker's last word, never the master's stack
            _siesta.log("error", "Worker crashed:\n" + traceback_text(exc, exc.__traceback__))
            code = 1 if _booted else WORKER_BOOT_ERROR
        finally:
            # Nothing here may raise: an exception would climb, in this worker,
            # into the master's code it was forked from (a second master).
            try:
                run_exit_functions()
            finally:
                flush_std()
                os._exit(code)
        return 0  # not reached

    def reload(self) -> tuple[int, bool]:
        """HUP: the config read again (binds stay); the new count, and whether the new
        config was refused. ``reread`` checks the new config as a start would and,
        last, switches the error log to it; when it refuses, one line is logged and
        the running config stays."""
        refused = False
        try:
            values, hooks = self.reread()
        except (ConfigError, AppLoadError) as exc:
            _siesta.log("error", f"Reload: {exc}; keeping the running config")
            refused = True
        else:
            # Sockets handed over (USR2, systemd) are fd:// binds: the config's own
            # binds are what a change is seen against.
            configured = self.values.get("_configured_bind", self.values["bind"])
            if values["bind"] != configured:
                _siesta.log("warning", "Reload: -b changes need a restart; keeping the sockets")
            values["_configured_bind"] = configured
            values["bind"] = self.values["bind"]
            values["pid"] = self._moved_pid_file(self.values["pid"], values["pid"])
            self.values, self.hooks = values, hooks
            self.arbiter.cfg.update(values)
            self.arbiter.cfg.hooks_from(hooks)
            own_log_files(values)
            set_title("master", values)  # a new proc_name shows at once
        return self.values["workers"], refused

    def rust_settings(self) -> dict[str, Any]:
        """HUP, once the config was read again: the settings the master's Rust side
        acts on (``--timeout``, ``--graceful-timeout``, ``--max-worker-rss``...)."""
        return for_rust(self.values)

    def reloaded(self) -> None:
        """HUP, once the new count was told (``nworkers_changed``): the on_reload hook,
        in gunicorn's order."""
        self.hooks.call("on_reload", self.arbiter)

    def _moved_pid_file(self, configured: str | None, wanted: str | None) -> str | None:
        """A HUP that names another pid file moves it there, as gunicorn's does; the
        pid file kept (its path returned) when the new one cannot be written. Paths
        as configured (``_as_written`` adds a USR2 master's ``.2``)."""
        if wanted == configured:
            return wanted
        old, new = self._as_written(configured), self._as_written(wanted)
        holder = pid_holder(new)
        if holder is not None:
            _siesta.log("error", f"Reload: pid file {new!r} names PID {holder}; keeping {old!r}")
            return configured
        try:
            write_pid_file(new)
        except OSError as exc:
            _siesta.log(
                "error", f"Reload: cannot write pid file {new!r} ({exc.strerror}); keeping {old!r}"
            )
            return configured
        try:
            same = bool(old and new) and os.path.samefile(old, new)  # another spelling
        except OSError:
            same = False
        if not same:
            remove_pid_file(old)
        return wanted

    def stopping(self) -> None:
        """TERM/INT/QUIT (or a failed boot): the master closes its listening sockets
        first, as gunicorn's does, removing the unix socket files it made (--metrics-bind's
        too) unless a new master (USR2) or systemd owns them. Called again at exit: a no-op
        then."""
        unlink = not self.inherited and self.upgraded is None
        self.listeners.close(unlink)
        # A --metrics-bind socket file this master made is its own, whoever
        # handed it the app's sockets (one handed over is an fd://: no file).
        if self.upgraded is None and self.supervisor is not None:
            self.supervisor.remove_metrics_socket()
        if self.upgraded is None and self.old_master not in (None, os.getppid()):
            for path in self.handed_files:
                _remove_socket_file(path)
            self.handed_files = []

    def _socket_files(self) -> list[str]:
        """The unix socket files this master made or was handed (for a USR2)."""
        made = list(self.listeners.made_paths())
        if self.supervisor is not None and self.supervisor.metrics_made_path:
            made.append(self.supervisor.metrics_made_path)
        return [os.fsdecode(p) for p in made] + self.handed_files

    def reopened(self) -> None:
        """USR1, after the master reopened its error log and before the workers reopen
        theirs: files made anew by the rotation go to the workers' user (-u/-g)."""
        own_log_files(self.values)

    def reaped(self, pid: int, code: int) -> None:
        """A child that was not a worker exited: the new master of a USR2, if it died
        or was stopped while this master runs. This master is the one serving again:
        a later USR2 may try again (its PIDFILE.2 goes if it left one)."""
        if pid != self.upgraded:
            return
        self.upgraded = None
        self.arbiter.reexec_pid = 0
        # Stopped on purpose (a rollback's TERM) is no error; a failed start is.
        said = "info" if code == 0 else "error"
        _siesta.log(said, f"The new master (pid: {pid}) exited with code {code}")
        # Killed, it could not remove its PIDFILE.2: where this master's pid file
        # was at the USR2, or is now (a HUP since may have moved it).
        for pidfile in {self.upgraded_pid_file, self.values.get("pid")}:
            if pidfile:
                remove_pid_file(pidfile + ".2", pid)

    def child_exit(self, pid: int, code: int) -> None:
        gone = self.workers.pop(pid, None)
        if gone is None:  # not forked by this master (one an old master left, USR2)
            gone = HookWorker(self.arbiter, None, pid=pid, ppid=os.getpid())
        # `alive` stays True: gunicorn's child_exit gets the master's copy of the
        # worker, which never changed.
        self.hooks.call("child_exit", self.arbiter, gone)

    def nworkers_changed(self, new: int, old: int | None) -> None:
        self.arbiter.num_workers = new
        self.hooks.call("nworkers_changed", self.arbiter, new, old)

    def upgrade(self) -> None:
        """USR2: a new master from the current code on the same sockets."""
        if self.upgraded is not None:
            _siesta.log("warning", "USR2 ignored: a new master was already started")
            return
        if self.arbiter.master_pid:
            _siesta.log(
                "warning",
                f"USR2 ignored: this master's own old master (pid: {self.arbiter.master_pid}) "
                "still runs; TERM it first",
            )
            return
        fds = self.listeners.fds()
        metrics = [self.metrics_fd] if self.metrics_fd is not None else []
        # The pid file stays this master's while it runs, as gunicorn's: the new
        # master writes PIDFILE.2, and takes PIDFILE once this one is gone.
        me = os.getpid()
        # Signals wait across the fork, as a worker's: one sent to the new master
        # before it drops this master's handlers would be lost (they feed this
        # master's pipe alone), not taken by its own dispositions.
        _siesta.fork_signals(True)
        try:
            pid = real_fork()
        except OSError as exc:
            _siesta.fork_signals(False)
            _siesta.log("error", f"USR2 ignored: cannot fork a new master: {exc}")
            return
        if pid:
            _siesta.fork_signals(False)  # the child lets them in (worker_after_fork)
            self.upgraded, self.upgraded_pid_file = pid, self.values.get("pid")
            self.arbiter.reexec_pid = pid
            _siesta.log("info", f"Started a new master (pid: {pid}) on the same sockets")
            return
        try:
            _siesta.worker_after_fork(die_with_master=False)
            self.hooks.call("pre_exec", self.arbiter)
            # LISTEN_FDS (systemd's convention): the sockets as fds 3, 4, ...
            # and the --metrics-bind socket after them, named by SIESTA_METRICS_FD.
            # Copies out of the way first (close-on-exec: the new master gets
            # only the numbered ones, not a stray copy of each).
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds + metrics]
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i, inheritable=True)
            # An original the exec would keep beside its numbered copy (an
            # `fd://N` socket the deployer handed over inheritable) does not
            # go: a stray copy would hold the port open while the new master
            # drains.
            for fd in fds + metrics:
                if not 3 <= fd < 3 + len(high):
                    os.set_inheritable(fd, False)
            # The environment siesta was launched with, as gunicorn execs with its
            # env_orig: what -e/raw_env set is the new master's config to set
            # (or, if a HUP took it out, not), not an inheritance.
            env = dict(os.environ if self.launch_env is None else self.launch_env)
            for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "SIESTA_METRICS_FD"):
                env.pop(key, None)
            env.update(LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid()))
            # A new master stays this master's child, -D or not (it is detached
            # already): this one then sees it exit, and removes its PIDFILE.2. It
            # is told this master's pid (gunicorn's GUNICORN_PID): one that finds
            # its parent gone already at its start is promoted at once.
            # "OLD:NEW", NEW this process (the exec keeps its pid): a value an
            # older Siesta passed on unread from its own start is not taken.
            env[UPGRADE_ENV], env[UPGRADE_PID_ENV] = "1", f"{me}:{os.getpid()}"
            import json

            env[UNLINK_ENV] = json.dumps(self._socket_files())
            if metrics:
                env["SIESTA_METRICS_FD"] = str(3 + len(fds))
            argv = [sys.executable, "-m", "siesta", *sys.argv[1:]]
            if self.launch_dir:
                try:
                    os.chdir(self.launch_dir)
                except OSError:
                    pass  # removed since: the new master starts where this one is
            os.execve(sys.executable, argv, env)
        except BaseException:
            import traceback

            _siesta.log("error", "Cannot start a new master:\n" + traceback.format_exc().rstrip())
        finally:
            os._exit(1)
