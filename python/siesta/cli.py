"""The ``siesta`` command: settings in, one worker serving, gunicorn's exit codes out.

Reads the settings (``config.py``), binds the sockets (an address in use is
reported before the app is imported), loads the app (``_app.py``), and runs
thread mode (``_run.py``) or gevent mode (``_gevent.py``). A deployer's
mistake prints one line and exits: 2 for a bad flag (argparse), 4 when the
app cannot be loaded, 1 for anything else; never a traceback from Siesta.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from siesta import _siesta
from siesta._app import AppLoadError, load, prepare
from siesta.config import ConfigError, for_rust, render, resolve

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


def main(argv: list[str] | None = None) -> None:
    try:
        values = resolve(argv)
    except ConfigError as exc:
        _fail(str(exc), 2)
    if values.get("print_config"):
        print(render(values))
        return
    if not values.get("app"):
        _fail("no app given: siesta [options] module:callable", 2)
    if values["workers"] > 1:
        _fail(
            f"--workers {values['workers']}: this release runs one worker process; the "
            "master/worker supervisor comes next. Run one siesta per worker behind a load "
            "balancer meanwhile.",
            1,
        )
    gevent = _load_gevent() if values["worker_class"] == "gevent" else None
    if gevent is not None and not values.get("check_config"):
        gevent.patch()
    try:
        prepare(values)
        if values.get("check_config"):
            load(values["app"])
            print(f"Configuration OK: {values['app']}")
            return
        try:
            server = _siesta.Server(for_rust(values))
        except _siesta.BindError as exc:
            _fail(str(exc), 1)
        except (ValueError, OSError) as exc:
            _fail(str(exc), 1)
        _siesta.log("info", f"Starting siesta {_siesta.__version__}")
        _siesta.log("info", f"Using worker: {values['worker_class']}")
        app = load(values["app"])
    except AppLoadError as exc:
        _fail(str(exc), EXIT_APP_LOAD)
    # Signals are handled by the Rust runtime (TERM graceful, INT/QUIT fast).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    if gevent is not None:
        gevent.serve(server, app, values["worker_connections"], values["queue_timeout"])
    else:
        from siesta._run import serve_threads

        serve_threads(server, app, values["threads"])
    _siesta.log("info", "Shutting down: Master")
    _exit_now(0)
