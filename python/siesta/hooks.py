"""gunicorn's server hooks from a config file, and the objects they are handed.

A ``gunicorn.conf.py`` may define ``on_starting(server)``,
``post_worker_init(worker)`` and the rest of :data:`HOOK_NAMES`; the config
loader collects them into one :class:`Hooks`, which checks that each is
callable with the arguments it will be given (a one-line ``ConfigError`` if
not, at start as in gunicorn, not at the first call). :meth:`Hooks.call` runs one:
an exception from a hook is logged (one error line and its traceback) and
never stops the server; :meth:`Hooks.boot` runs one of a start
(``on_starting``, ``when_ready``, ``post_fork``, ``post_worker_init``), whose
exception fails that start, as in gunicorn. ``Server`` and ``Worker`` carry the gunicorn
attributes hooks commonly read (``cfg``, ``log``, ``pid``, ``address``,
``app``). When each hook runs is ``cli.py``'s business; this module only
knows how.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

from siesta import _siesta
from siesta._pylog import LEVELS, level_name, traceback_text
from siesta.config import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# gunicorn's hooks, in the order a server's life meets them, and the
# arguments each is called with.
HOOK_ARGS = {
    "on_starting": ("server",),
    "on_reload": ("server",),
    "when_ready": ("server",),
    "pre_fork": ("server", "worker"),
    "post_fork": ("server", "worker"),
    "post_worker_init": ("worker",),
    "worker_int": ("worker",),
    "worker_abort": ("worker",),
    "pre_exec": ("server",),
    "pre_request": ("worker", "req"),
    "post_request": ("worker", "req", "environ", "resp"),
    "child_exit": ("server", "worker"),
    "worker_exit": ("server", "worker"),
    "nworkers_changed": ("server", "new_value", "old_value"),
    "on_exit": ("server",),
}
HOOK_NAMES = tuple(HOOK_ARGS)


def _takes(fn: Callable[..., Any], count: int) -> bool:
    """Whether ``fn`` can be called with ``count`` positional arguments."""
    import inspect  # only with a config file's hooks: it is 0.5 MiB of every process

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): trust it
        return True
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def _arity(name: str, fn: Callable[..., Any], source: str) -> int:
    """How many of its arguments hook ``name`` is called with: all of them, once
    ``fn`` is checked to take them. As in gunicorn, ``post_request`` may also
    take only ``(worker, req)`` or ``(worker, req, environ)``."""
    args = HOOK_ARGS[name]
    if _takes(fn, len(args)):
        return len(args)
    if name == "post_request":
        for count in (3, 2):
            if _takes(fn, count):
                return count
        raise ConfigError(
            f"hook {name!r} in {source} must take 2, 3 or 4 arguments ({', '.join(args)})"
        )
    count = f"{len(args)} argument{'s' if len(args) > 1 else ''}"
    raise ConfigError(f"hook {name!r} in {source} must take {count} ({', '.join(args)})")


def _imported(name: str, path: str, source: str) -> Any:
    """The object `path` (``package.module.function``) names, imported now."""
    import importlib

    module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise ConfigError(
            f"hook {name!r} in {source}: {path!r} is not an import path (module.function)"
        )
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as exc:  # the module's own failure too: one line, as for the config
        raise ConfigError(
            f"hook {name!r} in {source}: cannot import {path!r}: {type(exc).__name__}: {exc}"
        ) from None


class Hooks:
    """The hooks a config file defined, by name; calling one that is absent does nothing."""

    def __init__(self, hooks: dict[str, Any] | None = None, source: str = "config file") -> None:
        # Each hook, and how many of its arguments it is called with.
        self._hooks: dict[str, tuple[Callable[..., Any], int]] = {}
        for name, fn in (hooks or {}).items():
            if name not in HOOK_NAMES:
                raise ConfigError(f"{name!r} in {source} is not a server hook")
            if isinstance(fn, str):  # "module.function", as gunicorn takes it
                fn = _imported(name, fn, source)
            if not callable(fn):
                raise ConfigError(
                    f"hook {name!r} in {source} must be a function, not {type(fn).__name__}"
                )
            self._hooks[name] = (fn, _arity(name, fn, source))

    def names(self) -> list[str]:
        """The hooks defined, in :data:`HOOK_NAMES` order."""
        return [n for n in HOOK_NAMES if n in self._hooks]

    def __contains__(self, name: str) -> bool:
        return name in self._hooks

    def get(self, name: str) -> Callable[..., Any] | None:
        """Hook ``name``'s function, None when the config has none."""
        hook = self._hooks.get(name)
        return hook[0] if hook is not None else None

    def run(self, name: str, *args: Any) -> Any:
        """Runs hook ``name`` and lets its exception through (``pre_request``: as in
        gunicorn, a hook that raises fails the request, a 500)."""
        hook = self._hooks.get(name)
        if hook is None:
            return None
        fn, count = hook
        return fn(*args[:count])

    def call(self, name: str, *args: Any) -> Any:
        """Runs hook ``name``; an exception is logged, never raised."""
        return self._logged(name, args)[1]

    def boot(self, name: str, *args: Any) -> bool:
        """Runs hook ``name`` of a start; False when it raised (logged, with its
        traceback): the server (``on_starting``, ``when_ready``) or the worker
        (``post_fork``, ``post_worker_init``) does not start, as in gunicorn, rather
        than serve with what the hook should have set up."""
        return self._logged(name, args)[0]

    def _logged(self, name: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        hook = self._hooks.get(name)
        if hook is None:
            return True, None
        fn, count = hook
        try:
            return True, fn(*args[:count])
        except Exception as exc:
            # The traceback starts in the hook: this frame is Siesta's, not the deployer's.
            tb = traceback_text(exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
            _siesta.log("exception", f"Exception in {name} hook: {type(exc).__name__}: {exc}\n{tb}")
            return False, None


def _no_hook(*_: Any) -> None:
    """A hook the config file does not define (``cfg.post_fork`` and the like)."""


class _Setting:
    """One entry of ``cfg.settings``, as gunicorn's: its ``name``, ``value``, ``get()``."""

    def __init__(self, name: str, value: Any) -> None:
        self.name, self.value = name, value

    def get(self) -> Any:
        return self.value


def _pwd() -> Any:
    import pwd

    return pwd


def _grp() -> Any:
    import grp

    return grp


def parsed_address(spec: str) -> Any:
    """A bind spec (or a listener's URL, ``http://HOST:PORT``) as gunicorn's
    ``address`` has it: the path of a unix socket, the number of an ``fd://``, else
    ``(host, port)``."""
    if spec.startswith("unix:"):
        return spec[len("unix:") :].removeprefix("//")
    if spec.startswith("fd://"):
        return int(spec[len("fd://") :]) if spec[len("fd://") :].isdigit() else spec
    host, _, port = spec.removeprefix("http://").rpartition(":")
    if not host or not port.isdigit():
        return (spec.strip("[]") or "0.0.0.0", 8000)
    return (host.strip("[]"), int(port))


class Config:
    """Attribute access to the settings in force, in Siesta's or gunicorn's names,
    with gunicorn's derived properties (``address``, ``worker_class_str``, ``uid``,
    ``settings``...) and types (whole seconds, lists of addresses) under its names."""

    _WHOLE_SECONDS = ("timeout", "graceful_timeout", "keepalive")
    _LISTS = ("forwarded_allow_ips", "proxy_allow_ips", "forwarder_headers")

    def __init__(self, values: dict[str, Any], aliases: dict[str, str | None]) -> None:
        self._values = values
        self._aliases = aliases
        self._hooks: Hooks | None = None  # set by the master once they are read
        # gunicorn's: the environment as the server found it (the master sets the
        # launch's, from before -e).
        self.env_orig = dict(os.environ)

    def update(self, values: dict[str, Any]) -> None:
        """The settings read again (HUP)."""
        self._values = values

    def hooks_from(self, hooks: Hooks) -> None:
        """The hooks in force, for gunicorn's ``cfg.post_fork`` and the like."""
        self._hooks = hooks

    def __getattr__(self, name: str) -> Any:
        target = self._aliases.get(name) or name
        try:
            value = self._values[target]
        except KeyError:
            return self._unsupported(name)
        if name == "proc_name" and value is None:
            return self._values.get("app")  # gunicorn's default: the app's name
        if name in self._WHOLE_SECONDS and isinstance(value, float) and value.is_integer():
            return int(value)
        if name in self._LISTS and isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if name == "user":
            return self.uid
        if name == "group":
            return self.gid
        if name == "chdir" and value is None:
            from siesta._app import working_dir

            return working_dir()
        if name == "bind":
            return self._bind()
        return value

    def _unsupported(self, name: str) -> Any:
        """A gunicorn setting Siesta has not: gunicorn's default, as its ``cfg`` would
        give it (a hook's name: the hook, else one that does nothing)."""
        if name in HOOK_ARGS:
            hook = self._hooks.get(name) if self._hooks is not None else None
            return hook or _no_hook
        if name in self._aliases:  # gunicorn's name, mapped to nothing
            from siesta._sources import gunicorn_default

            return gunicorn_default(name)
        raise AttributeError(f"no setting {name!r}")

    @property
    def address(self) -> list[Any]:
        """gunicorn's: every bind, parsed (as configured, in a master a USR2 started
        on its old master's sockets too)."""
        return [parsed_address(str(spec)) for spec in self._bind()]

    def _bind(self) -> list[Any]:
        return list(self._values.get("_configured_bind") or self._values.get("bind") or [])

    @property
    def worker_class_str(self) -> str:
        return str(self._values.get("worker_class"))

    @property
    def uid(self) -> int:
        """gunicorn's: the uid the workers run as (``-u``, else this process's)."""
        return self._id("user", os.geteuid, lambda name: _pwd().getpwnam(name).pw_uid)

    @property
    def gid(self) -> int:
        """gunicorn's: the gid the workers run as (``-g``, else this process's)."""
        return self._id("group", os.getegid, lambda name: _grp().getgrnam(name).gr_gid)

    def _id(self, key: str, own: Callable[[], int], lookup: Callable[[str], int]) -> int:
        given = self._values.get(key)
        if given is None:
            return own()
        return int(given) if str(given).isdigit() else lookup(str(given))

    @property
    def env(self) -> dict[str, str]:
        """gunicorn's: ``raw_env`` as a mapping."""
        pairs = (str(item).partition("=") for item in self._values.get("raw_env") or [])
        return {key: value for key, _, value in pairs}

    @property
    def is_ssl(self) -> bool:
        return False  # TLS ends in the proxy

    @property
    def sendfile(self) -> bool:
        return False  # Siesta never calls sendfile(2) (--no-sendfile changes nothing)

    @property
    def default_proc_name(self) -> Any:
        return self._values.get("app")

    @property
    def settings(self) -> dict[str, _Setting]:
        """gunicorn's: every setting by name (Siesta's and gunicorn's), each with
        its ``value``."""
        names = [n for n in self._values if not n.startswith("_")]
        names += [g for g, s in self._aliases.items() if s]
        out = {}
        for name in names:
            try:
                out[name] = _Setting(name, getattr(self, name))
            except (AttributeError, KeyError):
                continue
        return out


class Listener:
    """One of ``server.LISTENERS`` (and ``worker.sockets``), as gunicorn's: ``str()``
    is its URL (``http://HOST:PORT``, ``unix:PATH``), ``getsockname()`` its
    address, ``fileno()`` its descriptor in the master. No socket object is made
    of it: a copy held by a hook would keep the socket listening through a stop."""

    def __init__(self, url: str, fd: int) -> None:
        self._url, self._fd, self._pid = url, fd, os.getpid()

    def __str__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"<Listener {self._url}>"

    def getsockname(self) -> Any:
        """``(host, port)`` (``(host, port, 0, 0)`` for IPv6, as a socket's), or the
        path of a unix socket."""
        address = parsed_address(self._url)
        if isinstance(address, tuple) and ":" in address[0]:
            return (*address, 0, 0)
        return address

    def fileno(self) -> int:
        """The master's descriptor; a worker serves on its own copies, and the
        master's number there may name another file by now."""
        if os.getpid() != self._pid:
            import errno

            raise OSError(errno.EBADF, "a worker has no copy of the master's descriptor")
        return self._fd


class App:
    """``server.app`` and ``worker.app``, as gunicorn's application object: ``cfg``,
    ``app_uri``, and ``wsgi()`` (also ``load()``, ``callable``), the WSGI app (in
    a worker, the one it serves; in the master, the one ``--preload`` imported, or
    imported now; it stays imported there, as in gunicorn, so a HUP's workers get
    that code). ``str()`` is the app's name, and it compares equal to it, as
    Siesta's ``server.app`` was."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.callable: Any = None  # set once the app is loaded (``wsgi()``)

    @property
    def app_uri(self) -> Any:
        """The app's name (``module:app``), as the settings in force give it."""
        return self.cfg.app

    def __str__(self) -> str:
        return str(self.app_uri)

    def __repr__(self) -> str:
        return f"<App {self.app_uri!r}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return str(self) == other
        return self is other

    def __hash__(self) -> int:
        return hash(str(self))

    def wsgi(self) -> Any:
        if self.callable is None:
            from siesta._app import load

            self.callable = load(str(self.app_uri))
        return self.callable

    load = wsgi


class Log:
    """``server.log``: gunicorn logger's methods, written to Siesta's error log."""

    @staticmethod
    def _write(level: str, msg: Any, args: Any) -> None:
        if len(args) == 1 and isinstance(args[0], dict) and args[0]:
            args = args[0]  # as `logging` takes one mapping: log.info("%(x)s", {"x": 5})
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError, KeyError) as exc:
            # As `logging` does, a message that does not take its arguments is
            # logged anyway, and the hook that wrote it carries on.
            text = f"{msg!s} {args!r} (the arguments do not fit the message: {exc})"
        _siesta.log(level, text)

    def debug(self, msg: Any, *args: Any, **_: Any) -> None:
        self._write("debug", msg, args)

    def info(self, msg: Any, *args: Any, **_: Any) -> None:
        self._write("info", msg, args)

    def warning(self, msg: Any, *args: Any, **_: Any) -> None:
        self._write("warning", msg, args)

    warn = warning

    def error(self, msg: Any, *args: Any, **_: Any) -> None:
        self._write("error", msg, args)

    def critical(self, msg: Any, *args: Any, **_: Any) -> None:
        self._write("critical", msg, args)

    def exception(self, msg: Any, *args: Any, **_: Any) -> None:
        """The message, then the traceback of the exception being handled."""
        import traceback

        self._write("error", f"{msg}\n{traceback.format_exc().rstrip()}", args)

    def log(self, lvl: Any, msg: Any, *args: Any, **_: Any) -> None:
        """gunicorn's ``log(lvl, msg)``: ``lvl`` a name (``"warning"``) or a number."""
        if isinstance(lvl, str):
            name = lvl.lower() if lvl.lower() in LEVELS else "info"
        else:
            name = level_name(lvl)
        self._write(name, msg, args)

    @property
    def error_log(self) -> Any:
        """gunicorn's ``error_log``: the ``gunicorn.error`` logger (imports ``logging``,
        which sets it up: ``siesta._pylog``)."""
        import logging

        return logging.getLogger("gunicorn.error")


class Server:
    """What server hooks receive: gunicorn's arbiter (the master)."""

    def __init__(self, values: dict[str, Any], aliases: dict[str, str | None]) -> None:
        self.cfg = Config(values, aliases)
        self.log = Log()
        self.pid = os.getpid()
        self.app = App(self.cfg)
        # The bind specs until the sockets are open, then the addresses bound, as
        # gunicorn has them: (host, port) for TCP, the path for a unix socket.
        self.address: list[Any] = list(values.get("bind") or [])
        # gunicorn's: the listening sockets (`Listener`), once bound.
        self.LISTENERS: list[Listener] = []
        # gunicorn's: the pid file (its `fname`), None without --pid.
        self.pidfile = _PidFile(values["pid"]) if values.get("pid") else None
        self.num_workers = values.get("workers", 1)
        # gunicorn's: the running workers' objects by pid (filled by the master).
        self.WORKERS: dict[int, Any] = {}
        # gunicorn's names for the master: in a master a USR2 started,
        # "Master.2" and its old master's pid while that one runs (then
        # "Master" and 0, once promoted); in the old one, the new master's pid
        # as `reexec_pid` while it runs.
        self.master_name = "Master"
        self.master_pid = 0
        self.reexec_pid = 0

    @property
    def proc_name(self) -> Any:
        """gunicorn's: ``--name``, or the app's name."""
        return self.cfg.proc_name

    @property
    def timeout(self) -> Any:
        """gunicorn's: ``--timeout``."""
        return self.cfg.timeout

    def kill_worker(self, pid: int, sig: int) -> None:
        """gunicorn's: sends ``sig`` to the worker ``pid`` (one already gone is no
        error); the master replaces or retires it as for a signal from outside."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def reload(self) -> None:
        """gunicorn's: a reload, as HUP starts it (the master's own signal: it runs
        once the hook has returned)."""
        os.kill(self.pid, signal.SIGHUP)

    def reexec(self) -> None:
        """gunicorn's: a new master on the same sockets, as USR2 starts it."""
        os.kill(self.pid, signal.SIGUSR2)


class _PidFile:
    """``server.pidfile``: gunicorn's names for the pid file's path."""

    def __init__(self, fname: str) -> None:
        self.fname = fname

    def __repr__(self) -> str:
        return f"<PidFile {self.fname!r}>"


class _Tmp:
    """``worker.tmp``, as gunicorn's: the worker's heartbeat file, which the master
    reads for ``--timeout``."""

    def __init__(self, worker: Worker, fd: int) -> None:
        self._worker, self._fd = worker, fd

    def notify(self) -> None:
        self._worker.notify()

    def last_update(self) -> float:
        return os.fstat(self._fd).st_mtime

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """The file is the master's: it stays open."""


class Worker:
    """What worker hooks receive (gunicorn's worker): its pid, settings, log and app."""

    def __init__(
        self,
        server: Server,
        wsgi: Any,
        age: int = 0,
        pid: int | str | None = None,
        ppid: int | None = None,
    ) -> None:
        self.cfg = server.cfg
        self.log = server.log
        # Made in the worker, its own pid and its master's; made by the master
        # (pre_fork, before there is a pid: "[booting]", as gunicorn's; child_exit),
        # the master passes both.
        self.pid = os.getpid() if pid is None else pid
        self.ppid = os.getppid() if ppid is None else ppid
        self.age = age
        # As gunicorn's: True once post_worker_init has run, in the worker.
        self.booted = False
        # The worker's Rust server and heartbeat, once made (`attach`).
        self._server: Any = None
        self.tmp: _Tmp | None = None
        self._alive = True
        self.app = server.app
        self.sockets = server.LISTENERS
        self.wsgi = wsgi
        self.started = time.time()
        # gunicorn's: half --timeout (its beat), --max-requests (sys.maxsize for
        # none; without the jitter, which Siesta draws in the worker), and
        # whether it was aborted (a worker past --timeout is killed here).
        self.timeout = self.cfg.timeout / 2 if self.cfg.timeout else self.cfg.timeout
        self.max_requests = self.cfg.max_requests or sys.maxsize
        self.aborted = False

    def attach(self, server: Any) -> None:
        """In the worker: the server it serves with."""
        self._server = server

    def heartbeat(self, fd: int | None) -> None:
        """The worker's heartbeat file (``tmp``), known from before its fork."""
        self.tmp = _Tmp(self, fd) if fd is not None else None

    @property
    def alive(self) -> bool:
        """gunicorn's: setting it false (in ``post_request``, say) makes the worker
        leave after the requests it has, and the master start a new one. False
        too once the worker has begun to stop (a signal, ``--max-requests``)."""
        if self._alive and self._server is not None and self.pid == os.getpid():
            return not self._server.stopping
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        self._alive = bool(value)
        if not value and self._server is not None and self.pid == os.getpid():
            self._server.retire()

    def notify(self) -> None:
        """gunicorn's: tells the master the worker is alive (a heartbeat now, once
        it serves; before, it does not put off --timeout's bound on the boot)."""
        if self._server is not None and self.pid == os.getpid():
            self._server.notify()

    @property
    def nr(self) -> int:
        """gunicorn's: the requests this worker has taken, the current one too."""
        return self._server.started if self._server is not None else 0
