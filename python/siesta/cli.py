"""The ``siesta`` command: settings in, one worker serving, gunicorn's exit codes out.

Reads the settings (``_sources.py``, from the table in ``config.py``), binds
the sockets (an address in use is reported before the app is imported),
loads the app (``_app.py``), and runs thread mode (``_run.py``) or gevent
mode (``_gevent.py``), calling the config file's server hooks
(``hooks.py``) on the way. A deployer's mistake prints one line and exits:
2 for a malformed command line, 4 when the app cannot be loaded, 1 for
anything else (a bad config file, value or bind); never a traceback from
Siesta.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from siesta import _siesta
from siesta._app import AppLoadError, load, prepare
from siesta._sources import USAGE, UsageError, resolve
from siesta.config import GUNICORN_NAMES, ConfigError, for_rust, render
from siesta.hooks import Server as HookServer
from siesta.hooks import Worker as HookWorker

EXIT_APP_LOAD = 4


def _fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def _exit_now(code: int) -> None:
    """Leaves without interpreter teardown: daemon threads may sit inside the app."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _load_gevent() -> Any:
    try:
        from siesta import _gevent
    except ImportError as exc:
        _fail(f"-k gevent needs gevent: pip install 'siesta[gevent]' ({exc})", 1)
    return _gevent


def _check_binds(binds: list[str]) -> None:
    """--check-config: every bind parses and its host resolves."""
    for spec in binds:
        try:
            _siesta.check_bind(spec, True)
        except ValueError as exc:
            _fail(str(exc), 1)


def _write_pid(path: str | None) -> None:
    if path:
        try:
            with open(path, "w", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as exc:
            _fail(f"Cannot write pid file {path!r}: {exc.strerror}", 1)


def _remove_pid(path: str | None) -> None:
    """Removes the pid file if it is still ours."""
    if not path:
        return
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass


def _capture_output(error_logfile: str | None) -> None:
    """--capture-output: the app's prints go to the error log file, as in gunicorn."""
    if not error_logfile or error_logfile == "-":
        return
    try:
        fd = os.open(error_logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        _fail(f"Cannot open {error_logfile!r} for --capture-output: {exc.strerror}", 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> None:
    try:
        resolved = resolve(argv)
    except UsageError as exc:
        _fail(f"{exc} (usage: {USAGE}; siesta --help lists the options)", 2)
    except ConfigError as exc:
        _fail(str(exc), 1)
    values, hooks = resolved.values, resolved.hooks
    for warning in resolved.warnings:
        sys.stderr.write(f"Warning: {warning}\n")
    if values.get("print_config"):
        print(render(values, hooks.names()))
        return
    if not values.get("app"):
        _fail(f"no app given: {USAGE}", 2)
    if values["workers"] > 1:
        _fail(
            f"--workers {values['workers']} (from {resolved.sources['workers']}): this "
            "release runs exactly one worker process, so set -w 1. The master/worker "
            "supervisor that runs more comes next; meanwhile use --threads or -k gevent "
            "for concurrency, or one siesta per core behind a load balancer.",
            1,
        )
    if values.get("check_config"):
        _check_binds(values["bind"])
    gevent = _load_gevent() if values["worker_class"] == "gevent" else None
    if gevent is not None and not values.get("check_config"):
        gevent.patch()
    try:
        prepare(values)
        if values.get("check_config"):
            load(values["app"])
            print(f"Configuration OK: {values['app']}")
            return
        if values["umask"]:
            os.umask(values["umask"])
        arbiter = HookServer(values, GUNICORN_NAMES)
        hooks.call("on_starting", arbiter)
        try:
            server = _siesta.Server(for_rust(values))
        except _siesta.BindError as exc:
            _fail(str(exc), 1)
        except (ValueError, OSError) as exc:
            _fail(str(exc), 1)
        arbiter.address = [url.removeprefix("http://") for url in server.urls]
        _write_pid(values["pid"])
        if values["capture_output"]:
            _capture_output(values["error_logfile"])
        if values["error_logfile"] not in (None, "-"):
            for warning in resolved.warnings:  # stderr had them; the log file gets them too
                _siesta.log("warning", warning)
        _siesta.log("info", f"Starting siesta {_siesta.__version__}")
        _siesta.log("info", f"Using worker: {values['worker_class']}")
        app = load(values["app"])
    except AppLoadError as exc:
        _remove_pid(values["pid"])
        _fail(str(exc), EXIT_APP_LOAD)
    worker = HookWorker(arbiter, app)
    hooks.call("post_worker_init", worker)
    # Signals are handled by the Rust runtime (TERM graceful, INT/QUIT fast).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)

    def ready() -> None:
        hooks.call("when_ready", arbiter)

    if gevent is not None:
        gevent.serve(server, app, values["worker_connections"], values["queue_timeout"], ready)
    else:
        from siesta._run import serve_threads

        serve_threads(server, app, values["threads"], ready)
    hooks.call("worker_exit", arbiter, worker)
    hooks.call("on_exit", arbiter)
    _remove_pid(values["pid"])
    _siesta.log("info", "Shutting down: Master")
    _exit_now(0)
