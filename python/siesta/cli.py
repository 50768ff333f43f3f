"""The ``siesta`` command: settings in, a master and its workers serving, gunicorn's exit codes out.

Reads the settings (``_sources.py``, from the table in ``config.py``),
binds the sockets in the master (an address in use is reported before the
app is imported), and hands over to the master loop (Rust's
``Supervisor``, with ``_master.py`` forking the workers, each of which
loads the app unless ``--preload`` did, and serves in thread mode,
``_run.py``, or gevent mode, ``_gevent.py``), calling the config file's
server hooks (``hooks.py``) on the way. A deployer's mistake prints one
line and exits: 2 for a malformed command line, 4 when the app cannot be
loaded, 3 when a worker cannot boot, 1 for anything else (a bad config
file, value or bind, a --chdir that cannot be entered); never a traceback
from Siesta.
"""

from __future__ import annotations

import errno
import os
import posix
import stat
import sys
import time

from siesta import _siesta
from siesta._app import AppLoadError, load, prepare, working_dir
from siesta._master import (
    UPGRADE_ENV,
    UPGRADE_PID_ENV,
    Master,
    handed_socket_files,
    own_log_files,
    own_unix_sockets,
    pid_holder,
    real_fork,
    remove_pid_file,
    set_title,
    write_pid_file,
)
from siesta._sources import USAGE, UsageError, resolve
from siesta.config import SETTINGS, GUNICORN_NAMES, ConfigError, current, for_rust, render
from siesta._pylog import bridge, flush_std, traceback_text
from siesta.hooks import Server as HookServer
from siesta.hooks import Listener, parsed_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

EXIT_APP_LOAD = 4
# Tries of a listening address in use before the start fails (gunicorn's).
BIND_ATTEMPTS = 5


# Set once the master's error log is a file (--error-logfile, after it was opened):
# a start that fails after that says why there too, where a daemon's (-D) stderr
# goes nowhere.
_error_log_is_file = False


def _fail(message: str, code: int = 1) -> None:
    if _error_log_is_file:
        _siesta.log("error", message)
    _write_stderr(f"Error: {message}\n")
    sys.exit(code)


def _say(text: str) -> None:
    """Prints `text` on stdout: a reader that left (``| head``) or a full disk ends
    it with exit 1, without a traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        sys.exit(1)
    except OSError as exc:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _fail(f"Cannot write to standard output: {exc.strerror}", 1)


def _log_file_apart(path: str | None) -> bool:
    """Whether the error log is a file other than stderr (``/dev/stderr`` is not)."""
    if path in (None, "", "-"):
        return False
    try:
        mine, err = os.stat(path), os.fstat(2)
    except OSError:
        return True
    return (mine.st_dev, mine.st_ino) != (err.st_dev, err.st_ino)


def _exit_now(code: int) -> NoReturn:
    """Leaves without interpreter teardown: daemon threads may sit inside the app.
    The daemonic ``multiprocessing`` children are ended first."""
    _end_daemonic_children()
    flush_std()
    os._exit(code)


def _check_gevent() -> None:
    """A gevent that cannot be imported is reported now, in one line, not by every
    worker. A child forked for it imports it: in the master itself it would stay for
    the master's life (3.6 MiB), and each worker imports it anyway."""
    read_end, write_end = os.pipe()
    pid = real_fork()
    if pid == 0:  # the child: import, report, leave without the master's teardown
        posix.close(read_end)
        code = 0
        try:
            from siesta import _gevent  # noqa: F401
        except BaseException as exc:  # whatever a broken install raises
            missing = isinstance(exc, ModuleNotFoundError) and exc.name in ("gevent", "greenlet")
            os.write(write_end, (b"M" if missing else b"B") + str(exc).encode(errors="replace"))
            code = 1
        os._exit(code)
    # posix's: gevent's patched os.close (a config file's patch_all) closes a pipe
    # only at its hub's next turn, and the read below would wait for ever.
    posix.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        said = reader.read(4096).decode(errors="replace")
    _, status = posix.waitpid(pid, 0)  # os's may be gevent's (real_fork)
    if status == 0:
        return
    reason = " ".join(said[1:].split()) or "its import failed"  # one line
    if said.startswith("M"):
        _fail(f"-k gevent needs gevent: pip install 'siesta[gevent]' ({reason})", 1)
    _fail(f"-k gevent: gevent cannot be imported: {reason}", 1)


def _check_binds(values: dict[str, Any]) -> None:
    """--check-config: every bind and --metrics-bind parses and its host resolves
    (nothing is bound)."""
    named = [("", spec, True) for spec in values["bind"]]
    named += [("--metrics-bind: ", spec, False) for spec in filter(None, [values["metrics_bind"]])]
    for what, spec, opened in named:
        try:
            _siesta.check_bind(spec, True, opened)
        except ValueError as exc:
            _fail(f"{what}{exc}", 1)  # as a start words it


def _sd_notify(state: str) -> None:
    """Tells systemd (`Type=notify`: the unit's `$NOTIFY_SOCKET`) the master's state,
    as gunicorn's arbiter does once it listens: a unit written for gunicorn waits
    for READY=1, and without it `systemctl start` hangs until its timeout and fails.
    Outside systemd nothing is sent; a failure is logged at debug, as gunicorn's."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    import socket

    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError as exc:
        _siesta.log("debug", f"Cannot notify systemd at {addr!r}: {exc}")


def _is_socket(path: str) -> bool:
    """Whether `path` is a socket, which cannot be opened as a file."""
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _log_file_problem(path: str | None) -> str | None:
    """Why a log file could not be opened for appending (as Rust words an OS error), or
    None when it could; checked without creating it, so a worker running as -u still
    creates it as its own user."""
    if not path or path in ("-", "/dev/stdout", "/dev/stderr"):
        return None  # the streams themselves, whatever they are (Rust's open_append)
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        code = errno.EISDIR
    elif _is_socket(path):  # /dev/fd/2 on a socket: open() says ENXIO
        code = errno.ENXIO
    elif os.path.exists(path):
        code = 0 if os.access(path, os.W_OK) else errno.EACCES
    elif not os.path.isdir(parent):
        code = errno.ENOENT
    else:
        code = 0 if os.access(parent, os.W_OK | os.X_OK) else errno.EACCES
    return f"{os.strerror(code)} (os error {code})" if code else None


def _access_log_problem(values: dict[str, Any]) -> str | None:
    """The line a worker would fail to boot with on this --access-logfile, if any."""
    path = values["access_logfile"]
    if path == "":  # set, but to nothing: refused, as gunicorn refuses it
        return "Cannot open access log '': the path is empty (- is stdout; unset, no access log)"
    problem = _log_file_problem(path)
    return f"Cannot open access log {path}: {problem}" if problem else None


def _check_pid(path: str | None) -> None:
    """-p naming a running process: refuse to start, as gunicorn does, rather than take
    over (and at exit delete) the pid file of a server that keeps running."""
    holder = pid_holder(path)
    if holder is not None:
        _fail(f"Already running on PID {holder} (or pid file {path!r} is stale)", 1)


def _write_pid(path: str | None) -> None:
    """Writes the pid file (`write_pid_file`); whether another server holds it was
    checked at the start (`_check_pid`), before -D detaches."""
    try:
        write_pid_file(path)
    except OSError as exc:
        _fail(f"Cannot write pid file {path!r}: {exc.strerror}", 1)


def _capture_output(error_logfile: str | None) -> None:
    """--capture-output: the app's prints go to the error log file, as in gunicorn."""
    try:
        _point_output_at(error_logfile)
    except OSError as exc:
        _fail(f"Cannot open {error_logfile!r} for --capture-output: {exc.strerror}", 1)


def _point_output_at(error_logfile: str | None) -> None:
    """Points fds 1 and 2 at the error log file (none, or ``-``: left as they are).
    ``/dev/stdout`` and ``/dev/stderr`` are that descriptor itself, as the error log
    writes through it (Rust's ``open_append``): the path opened again would write
    from an offset of its own, over the log's lines, in a file the shell redirected
    there without append."""
    if not error_logfile or error_logfile == "-":
        return
    flush_std()
    stream = {"/dev/stdout": 1, "/dev/stderr": 2}.get(error_logfile)
    if stream is not None:
        os.dup2(stream, 3 - stream)
        return
    fd = os.open(error_logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    posix.close(fd)  # not os's, which gevent may have patched (real_fork)


def _systemd_binds(values: dict[str, Any]) -> bool:
    """Socket activation (systemd's LISTEN_FDS, or a USR2 upgrade): fds 3, 4, ... as binds."""
    count, pid = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID")
    if not count or pid != str(os.getpid()):
        return False
    try:
        n = int(count)
    except ValueError:
        _fail(f"LISTEN_FDS={count!r} is not a number", 1)
    values["_configured_bind"] = values["bind"]  # what a HUP's config is compared with
    values["bind"] = [f"fd://{3 + i}" for i in range(n)]
    metrics = os.environ.pop("SIESTA_METRICS_FD", None)
    if metrics and metrics.isdigit() and values.get("metrics_bind"):
        values["metrics_bind"] = f"fd://{metrics}"  # the old master's, on USR2
    for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    return True


def _user_and_group(values: dict[str, Any]) -> None:
    """-u/-g by name or number, checked in the master (ConfigError when there is no
    such user or group); workers switch after the fork. A user's group is its primary
    one unless -g says otherwise. A number is used as it is, with or without an entry in
    the user or group database (containers run under arbitrary ids): a user number
    without one keeps the current group."""
    import grp
    import pwd

    user, group = values.get("user"), values.get("group")
    values["_uid"] = values["_gid"] = values["_user_name"] = None

    def number(given: Any) -> bool:
        return str(given).isascii() and str(given).isdigit()  # not "²", a digit too

    for flag, given in (("-u", user), ("-g", group)):
        if number(given) and int(str(given)) >= 2**32 - 1:
            raise ConfigError(f"{flag} {given}: not a valid id")
    if user is not None:
        try:
            entry = pwd.getpwuid(int(user)) if number(user) else pwd.getpwnam(str(user))
        except KeyError:
            if not number(user):
                raise ConfigError(f"-u {user}: no such user") from None
            values["_uid"] = int(user)
        except ValueError:
            raise ConfigError(f"-u {user}: no such user") from None
        else:
            values["_uid"], values["_gid"], values["_user_name"] = (
                entry.pw_uid,
                entry.pw_gid,
                entry.pw_name,
            )
    if group is not None:
        if number(group):
            values["_gid"] = int(group)
            return
        try:
            values["_gid"] = grp.getgrnam(str(group)).gr_gid
        except KeyError:
            raise ConfigError(f"-g {group}: no such group") from None


def _check_utf8(values: dict[str, Any]) -> None:
    """What the Rust core reads, and the process title, is UTF-8 text: a value that
    is not (a path of other bytes, which Python decodes with surrogate escapes) is
    refused in one line, where it failed with a traceback (ops probe, session 42)."""
    for setting in SETTINGS:
        if not (setting.rust or setting.name in ("name", "bind")):
            continue
        value = values.get(setting.name)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(item, str):
                continue
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                shown = item.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                flag = next((f for f in setting.flags if f.startswith("--")), setting.flags[0])
                raise ConfigError(
                    f"{flag} {shown}: not valid UTF-8 (a name of other bytes cannot be used here)"
                ) from None


def _check_worker_tmp_dir(path: str | None) -> None:
    """--worker-tmp-dir, or without it one of the temporary directories ($TMPDIR,
    /tmp, ...), must take the heartbeat files, or no worker could start
    (ConfigError)."""
    try:
        _siesta.check_worker_tmp_dir(path or None)
    except OSError as exc:
        if path:
            raise ConfigError(
                f"--worker-tmp-dir {path}: cannot create a file there ({exc})"
            ) from None
        raise ConfigError(
            "Cannot create a worker heartbeat file in $TMPDIR, /tmp, /var/tmp, /usr/tmp or "
            f"the working directory ({exc}): set --worker-tmp-dir to a writable directory"
        ) from None


def _check_before_serving(values: dict[str, Any]) -> None:
    """What the start refuses before a worker runs, checked without binding or
    switching user (a start, --check-config and a HUP): raises ConfigError."""
    _user_and_group(values)
    _check_utf8(values)
    _check_worker_tmp_dir(values["worker_tmp_dir"])
    metrics = (values.get("metrics_bind") or "").strip()
    if metrics and not metrics.endswith(":0") and metrics in (b.strip() for b in values["bind"]):
        # Else the second bind would wait for the first, then fail as "in use".
        raise ConfigError(f"--metrics-bind {metrics} is a -b address too")


def _leave_nothing(listeners: Any, supervisor: Any, pidfile: str | None) -> None:
    """A start that fails once bound: the pid file and the unix socket files go."""
    listeners.close(True)
    supervisor.remove_metrics_socket()
    remove_pid_file(pidfile)


def _old_master(upgrade: str | None, told: str) -> int | None:
    """The old master's pid for a master a USR2 started (``SIESTA_UPGRADE=1``; None
    for any other start), as that old master gave it (``SIESTA_UPGRADE_PID``,
    ``OLD:NEW`` with NEW this process's pid), else the parent, as a Siesta that did
    not give it read it (one that passed a stale value on unread names another NEW)."""
    if upgrade != "1":
        return None
    old, _, new = told.partition(":")
    digits = old.isascii() and old.isdigit() and new.isascii() and new.isdigit()
    if digits and int(new) == os.getpid() and int(old) > 1:
        return int(old)
    return os.getppid()


def _daemonize() -> None:
    """-D: detach from the terminal, as gunicorn does (two forks, a new session,
    umask 022)."""
    if real_fork():
        os._exit(0)
    os.setsid()
    if real_fork():
        os._exit(0)
    os.umask(0o022)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    posix.close(devnull)  # not os's, which gevent may have patched (real_fork)


def _in_use_tried(make: Callable[[], Any], what: str = "") -> Any:
    """``make()``, which binds: an address in use is tried again, as gunicorn
    does (5 times, 1 s apart), since the server before may still be letting
    go of it. ``what`` names the address's option in the lines."""
    attempt = 1
    while True:
        try:
            return make()
        except _siesta.AddrInUseError as exc:
            if attempt == BIND_ATTEMPTS:
                raise _siesta.AddrInUseError(f"{what}{exc}") from None
            _siesta.log("warning", f"{what}{exc}; retrying in 1 second")
        except _siesta.BindError as exc:
            raise _siesta.BindError(f"{what}{exc}") from None
        try:
            # Once the Supervisor is made, a stop signal waits in its pipe
            # and is taken when the sockets are open; before, INT lands here.
            time.sleep(1)
        except KeyboardInterrupt:
            _fail("interrupted while waiting for an address in use", 1)
        attempt += 1


def _check(values: dict[str, Any], sources: dict[str, str]) -> None:
    """--check-config: what a start would refuse (with its message and exit code),
    without binding a socket, opening a log or switching user, then the app import."""
    _check_binds(values)
    try:
        prepare(values, sources)
    except ConfigError as exc:
        _fail(str(exc), 1)
    _check_worker_class(values)
    problem = _log_file_problem(values["error_logfile"])  # relative ones from --chdir
    if problem:
        _fail(f"Cannot open error log {values['error_logfile']}: {problem}", 1)
    problem = _access_log_problem(values)
    if problem:
        _fail(problem, 1)
    try:
        load(values["app"])
    except AppLoadError as exc:
        _fail(str(exc), 1)  # gunicorn's --check-config exits 1 too
    _say(f"Configuration OK: {values['app']}")


# As under gunicorn, gevent patches the standard library in each worker, after
# the fork: an app --preload imports in the master, unpatched, keeps what it made.
PRELOAD_UNPATCHED = (
    "--preload with -k gevent: the app was imported before gevent patched the "
    "standard library, so what it made at import (a threading.local, a lock, a "
    "socket) is not gevent's and is shared by every request; patch at the top of "
    "the app's module (from gevent import monkey; monkey.patch_all()) or drop --preload"
)


# A config file's (or a preloaded app's) patch_all() in the master reaches thread
# mode's workers: their threads become greenlets of hubs nobody runs, and a request
# that sleeps or waits on I/O never ends. Refused, as a server that hangs is worse.
THREAD_PATCHED = (
    "gevent patched the standard library in the master (a config file's or a preloaded "
    "app's monkey.patch_all()) but the worker class is thread, whose requests would "
    "then never end once they sleep or wait on I/O: use -k gevent, or patch only where "
    "gevent is the worker class"
)


def _check_worker_class(values: dict[str, Any]) -> None:
    """-k gevent: gevent imports, on the import path the workers will have; thread
    mode: the config file did not patch the standard library with gevent."""
    if values["worker_class"] == "gevent":
        _check_gevent()
    elif _gevent_patched():
        _fail(THREAD_PATCHED, 1)


def _gevent_patched() -> bool:
    """Whether gevent patched `threading` in the master (the config file, the app
    preloaded)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def _std_descriptors() -> None:
    """Descriptors 0, 1 and 2 closed at launch (``1>&-``) are /dev/null from here,
    with ``sys.stdout``/``sys.stderr`` over them: else the next file opened took
    the number (an epoll descriptor, a socket), and what went to "stdout" (a log at
    /dev/stdout, an app's print) went into it, and a flush of a None stream failed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                posix.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (for the process's life)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")  # noqa: SIM115


def main(argv: list[str] | None = None) -> None:
    """The ``siesta`` command. It leaves by ``os._exit``, its own ``sys.exit`` included
    (a failed start, after its clean-up ran): the master runs no exit functions, which
    would wait for ever for a non-daemonic ``multiprocessing`` child or thread that a
    preloaded app or a hook started (review, session 41). Its daemonic
    ``multiprocessing`` children are ended, as multiprocessing's exit function ends
    them (`_end_daemonic_children`)."""
    try:
        _main(argv)
    except SystemExit as exc:
        code = exc.code
        if code is not None and not isinstance(code, int):
            _write_stderr(f"{code}\n")
            code = 1
        _exit_now(code or 0)
    except KeyboardInterrupt:  # ^C before the master's own handlers
        _exit_now(130)
    except BaseException as exc:  # Siesta's own failure: its traceback, then out
        _write_stderr(traceback_text(exc, exc.__traceback__) + "\n")
        _exit_now(1)


# How long the master's exit waits for its daemonic children to end on TERM.
DAEMONIC_CHILDREN_GRACE = 5.0


def _end_daemonic_children() -> None:
    """What multiprocessing's exit function does, but for waiting on a non-daemonic
    child: its finalizers run (a ``Manager()``'s server process is shut down, a
    ``Pool`` terminated), then the daemonic children of this process (a preloaded
    app's helper, a hook's) get TERM, and those still running after
    `DAEMONIC_CHILDREN_GRACE` get KILL. Without it they outlived the master (probe,
    session 42). Each step in a thread of its own, waited for a bounded time (a
    finalizer can block: a Pool whose killed worker held its queue's lock); never
    raises."""
    mp = sys.modules.get("multiprocessing")
    if mp is None:
        return
    util = sys.modules.get("multiprocessing.util")
    run_finalizers = getattr(util, "_run_finalizers", None)
    _forget_reaped(mp)
    if run_finalizers is not None:
        _bounded(lambda: run_finalizers(0), FINALIZERS_WAIT)  # before the children
    _bounded(lambda: _end_daemons(mp), DAEMONIC_CHILDREN_GRACE + 2.0)
    if run_finalizers is not None:
        _bounded(run_finalizers, FINALIZERS_WAIT)


# How long the master's exit waits for multiprocessing's finalizers, each time.
FINALIZERS_WAIT = 3.0


def _bounded(step: Callable[[], Any], seconds: float) -> None:
    import threading

    def run() -> None:
        try:
            step()
        except BaseException:  # noqa: BLE001 - the master's exit must not stop here
            pass

    runner = threading.Thread(target=run, name="siesta-exit", daemon=True)
    runner.start()
    runner.join(seconds)


def _forget_reaped(mp: Any) -> None:
    """The children the master's loop reaped (it reaps every child it sees exit,
    waitpid(-1)) are marked ended for multiprocessing, which never learnt of it: its
    finalizers and terminate() would otherwise signal a pid that may belong to
    another process by now (review, session 42)."""
    try:
        for p in list(mp.process._children):
            popen = getattr(p, "_popen", None)
            if popen is None or popen.returncode is not None:
                continue
            if type(popen).__module__.endswith("forkserver"):
                continue  # the forkserver's child, not this process's: never reaped here
            status = _unreaped(p.pid)
            if status is not True:
                popen.returncode = status
    except Exception:  # noqa: BLE001 - private names: nothing marked, as before
        pass


def _end_daemons(mp: Any) -> None:
    daemons = [p for p in mp.active_children() if p.daemon]
    for p in daemons:
        p.terminate()
    deadline = time.monotonic() + DAEMONIC_CHILDREN_GRACE
    for p in daemons:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.exitcode is None and _unreaped(p.pid) is True:
            p.kill()
            p.join(1.0)


def _unreaped(pid: int | None) -> bool | int:
    """True if `pid` is a child of this process still running; else its exit code
    (reaped here if it had just exited, -1 if it was reaped before)."""
    if pid is None:
        return -1
    try:
        done, status = posix.waitpid(pid, os.WNOHANG)  # not gevent's (a preload's patch_all)
    except ChildProcessError:
        return -1
    return True if done == 0 else os.waitstatus_to_exitcode(status)


def _write_stderr(text: str) -> None:
    """Writes to stderr; a reader gone (``2>&1 | head``) is no reason not to exit."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _main(argv: list[str] | None) -> None:
    _std_descriptors()
    # Relative paths on the command line and in the config (--chdir, -c,
    # --pythonpath...) name what they named here, also when a HUP rereads
    # them after --chdir moved the master.
    launch_dir = working_dir()
    # The environment before -e: a HUP puts back what -e had set, then sets the new
    # config's, as gunicorn's does (a variable taken out of raw_env is gone).
    launch_env = dict(os.environ)
    try:
        resolved = resolve(argv)
    except UsageError as exc:
        _fail(f"{exc} (usage: {USAGE}; siesta --help lists the options)", 2)
    except ConfigError as exc:
        _fail(str(exc), 1)
    values, hooks = resolved.values, resolved.hooks
    # In the process's environment too, as gunicorn's arbiter sets it once the
    # config is read: the app (and what it starts) may look there, not in environ.
    os.environ["SERVER_SOFTWARE"] = f"siesta/{_siesta.__version__}"
    for warning in resolved.warnings:
        sys.stderr.write(f"Warning: {warning}\n")
    if values.get("print_config"):
        _say(render(values, hooks.names()))
        return
    if not values.get("app"):
        _fail(f"no app given: {USAGE}", 1)  # gunicorn's "No application module specified."
    try:
        _check_before_serving(values)
    except ConfigError as exc:
        _fail(str(exc), 1)
    activated = os.environ.get("LISTEN_PID") == str(os.getpid())
    if not values["bind"] and not (activated and os.environ.get("LISTEN_FDS", "0") != "0"):
        _fail("bind: no address to listen on", 1)  # `bind = []` in a config file
    if values.get("check_config"):
        _check(values, resolved.sources)
        return
    inherited = _systemd_binds(values)
    try:
        prepare(values, resolved.sources)  # before -D: its error still reaches the terminal
    except ConfigError as exc:
        _fail(str(exc), 1)
    # Before binding, as gunicorn opens it in its master: no worker could boot.
    problem = _access_log_problem(values)
    if problem:
        _fail(problem, 1)
    _check_worker_class(values)  # before binding
    # A master started by USR2 is detached already, and stays its old master's
    # child; it is given that one's pid (which may have exited since).
    old_master = _old_master(os.environ.pop(UPGRADE_ENV, None), os.environ.pop(UPGRADE_PID_ENV, ""))
    upgrade = old_master is not None
    # Its pid file is PIDFILE.2 while the old master runs (which keeps PIDFILE), as
    # gunicorn's; it becomes PIDFILE at the promotion (`Master.maybe_promote`).
    pidfile = values["pid"] + ".2" if upgrade and values["pid"] else values["pid"]
    # Before binding (a second server reports this, not the port) and before
    # -D (the message still reaches the terminal).
    _check_pid(pidfile)
    handed = handed_socket_files()  # out of the environment either way
    if values["daemon"] and not upgrade:
        # Its opening below fails after -D, where the line would reach nobody.
        path = values["error_logfile"]
        if problem := _log_file_problem(path):
            _fail(f"Cannot open error log {path}: {problem}", 1)
        _daemonize()
    # -m applies to the unix sockets alone (below), as gunicorn's umask does:
    # the app's files, the logs and the pid file keep the launch's umask.
    arbiter = HookServer(values, GUNICORN_NAMES)
    arbiter.cfg.hooks_from(hooks)
    arbiter.cfg.env_orig = dict(launch_env)
    if upgrade:  # gunicorn's names for a new master while its old one runs
        arbiter.master_pid, arbiter.master_name = old_master, "Master.2"
    # The error log first, as gunicorn sets up its logger: on_starting's
    # lines and its failure go there (with -D, stderr is gone already).
    try:
        _siesta.configure_log(for_rust(values))
    except (ValueError, OSError) as exc:
        _fail(str(exc), 1)
    global _error_log_is_file
    _error_log_is_file = _log_file_apart(values["error_logfile"])
    if values["log_level"] == "debug":
        _siesta.log("debug", current(values, hooks.names()))
    # As gunicorn's arbiter, which sets its worker count as it is made.
    hooks.call("nworkers_changed", arbiter, values["workers"], None)
    _siesta.log("info", f"Starting siesta {_siesta.__version__}")
    bridge(values["log_level"])  # an app's or hook's logging.getLogger("gunicorn.error")
    if not hooks.boot("on_starting", arbiter):
        _fail("the on_starting hook failed (above): not starting", 1)
    # An fd:// bind that is not open is refused before --metrics-bind takes its number.
    for spec in values["bind"]:
        try:
            _siesta.check_bind(spec, opened=True)
        except ValueError as exc:
            _fail(str(exc), 1)
    try:
        # The master's signal handlers are installed here, before the ready
        # line and the pid file; it binds --metrics-bind too, so its address
        # in use is reported now.
        # A unix socket's file is 0777 less -m, as gunicorn's (it binds under
        # -m, default 0): a proxy running as another user (nginx's workers)
        # must be able to connect, whatever umask Siesta was started with.
        # The same for a unix --metrics-bind, which the Supervisor binds.
        before = os.umask(values["umask"])
        try:
            supervisor = _in_use_tried(
                lambda: _siesta.Supervisor(for_rust(values)), "--metrics-bind: "
            )
            try:
                listeners = _in_use_tried(lambda: _siesta.Listeners(for_rust(values)))
            except BaseException:  # no unix --metrics-bind file left behind
                supervisor.remove_metrics_socket()
                raise
        finally:
            os.umask(before)
        if supervisor.metrics_url:  # workers inherit it: an app may link to its status page
            os.environ["SIESTA_METRICS_URL"] = supervisor.metrics_url
    except _siesta.BindError as exc:
        _fail(str(exc), 1)
    except (ValueError, OSError) as exc:
        _fail(str(exc), 1)
    arbiter.address = [parsed_address(url) for url in listeners.urls]  # the ports bound
    urls_fds = zip(listeners.urls, listeners.fds(), strict=True)
    arbiter.LISTENERS[:] = [Listener(url, fd) for url, fd in urls_fds]
    app = None
    # A start that fails from here on (the pid file, --capture-output, the
    # preloaded app or when_ready, their own sys.exit too) leaves nothing behind.
    try:
        _write_pid(pidfile)
        if values["capture_output"]:
            _capture_output(values["error_logfile"])
        own_unix_sockets(values)  # -u/-g: a proxy in the workers' group can connect
        own_log_files(values)  # -u/-g: the workers can open (and reopen) the log files
        listeners.announce()  # the socket is the workers' and the pid file written
        _siesta.log("info", f"Using worker: {values['worker_class']}")  # after, as gunicorn
        if values["error_logfile"] not in (None, "-"):
            for warning in resolved.warnings:  # stderr had them; the log file gets them too
                _siesta.log("warning", warning)
        set_title("master", values)
        if values["preload_app"] and values["reload"]:
            _siesta.log("warning", "--reload ignores --preload: each worker imports the app")
        elif values["preload_app"]:
            try:
                app = arbiter.app.callable = load(values["app"])
            except AppLoadError as exc:
                _fail(str(exc), EXIT_APP_LOAD)
            taken = supervisor.take_signals_back()
            if taken:
                names = ", ".join(f"SIG{name.upper()}" for name in taken)
                _siesta.log(
                    "warning",
                    f"The preloaded app set its own handling of {names}: the master "
                    "puts its own back, as gunicorn's does",
                )
            if values["worker_class"] == "gevent" and not _gevent_patched():
                _siesta.log("warning", PRELOAD_UNPATCHED)
        if values["worker_class"] != "gevent" and _gevent_patched():
            _fail(THREAD_PATCHED, 1)  # the app preloaded patched it
        # Once listening and past --preload's import (gunicorn's order: its preload
        # comes first), so a unit's start fails when the app cannot load.
        _sd_notify("READY=1\nSTATUS=Siesta master booted")
        if not hooks.boot("when_ready", arbiter):
            _fail("the when_ready hook failed (above): not starting", 1)
    except BaseException:
        _leave_nothing(listeners, supervisor, pidfile)  # the pid file only if it is ours
        raise

    running_env = [list(values.get("raw_env") or [])]

    def reread() -> tuple[dict[str, Any], Any]:
        try:
            here: str | None = os.getcwd()
        except OSError:  # removed (the old release, deleted after a symlink swap)
            here = None
        try:
            os.chdir(launch_dir)
        except OSError as exc:  # a release directory removed since: read from here
            _siesta.log(
                "warning",
                f"Reload: cannot go back to the launch directory {launch_dir!r} "
                f"({exc.strerror}); relative paths are read from "
                f"{repr(here) if here is not None else 'a removed directory'}",
            )
        # What prepare() changes (-e, --pythonpath, --chdir), put back if the new
        # config is refused after it: the running config stays, all of it.
        env, path = dict(os.environ), list(sys.path)

        def keep_running_config() -> None:
            if here is not None:
                try:
                    os.chdir(here)
                except OSError:  # removed meanwhile: stay where the reread went
                    pass
            os.environ.clear()
            os.environ.update(env)
            sys.path[:] = path

        try:
            for item in running_env[0]:
                key = item.partition("=")[0]
                if key in launch_env:
                    os.environ[key] = launch_env[key]
                else:
                    os.environ.pop(key, None)
            again = resolve(argv)
            _check_before_serving(again.values)
            prepare(again.values, again.sources)
            problem = _access_log_problem(again.values)
            if problem:
                raise ConfigError(problem)
            # Last, as it opens the new error log: nothing can fail after it.
            _siesta.configure_log(for_rust(again.values))
            if again.values["log_level"] == "debug":
                _siesta.log("debug", current(again.values, again.hooks.names()))
            bridge(again.values["log_level"])
        except (ValueError, TypeError, OSError) as exc:  # from Rust: the values it refused
            keep_running_config()
            raise ConfigError(str(exc)) from None
        except BaseException:
            keep_running_config()
            raise
        if again.values["capture_output"]:
            # The next workers inherit fds 1 and 2: the app's prints follow the new file.
            try:
                _point_output_at(again.values["error_logfile"])
            except OSError as exc:
                _siesta.log("warning", f"Reload: --capture-output stays on the old file: {exc}")
        running_env[0] = list(again.values.get("raw_env") or [])
        return again.values, again.hooks

    master = Master(reread, values, hooks, arbiter, listeners, app, inherited)
    master.launch_dir = launch_dir
    master.launch_env = launch_env
    master.metrics_fd = supervisor.metrics_fd
    master.supervisor = supervisor
    if upgrade:
        master.old_master, master.handed_files = old_master, handed
        supervisor.watch_old_master(master.old_master)
    code, reason = supervisor.run(master)
    master.stopping()
    # gunicorn's halt: the shutdown line, why (an error, as the exit code
    # says), the pid file, then on_exit.
    _siesta.log("error" if code else "info", f"Shutting down: {master.arbiter.master_name}")
    if reason:
        _siesta.log("error", f"Reason: {reason}")
    # The hooks and pid file of the last HUP, in gunicorn's order: the pid file
    # goes, then on_exit runs; one that raises makes the exit a failure (1).
    remove_pid_file(master.pid_file())  # PIDFILE.2 if never promoted
    if not master.hooks.boot("on_exit", master.arbiter) and code == 0:
        code = 1
    _exit_now(code)
