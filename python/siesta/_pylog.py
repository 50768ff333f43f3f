"""gunicorn's ``gunicorn.error`` logger, for apps that log through it.

Many apps written for gunicorn hand their own logger gunicorn's handlers::

    gunicorn_logger = logging.getLogger("gunicorn.error")
    app.logger.handlers = gunicorn_logger.handlers
    app.logger.setLevel(gunicorn_logger.level)

Under Siesta that logger is set up as gunicorn sets it up: its level is
``--log-level``'s, it does not propagate, and its one handler writes to
Siesta's error log, in its line format and through its reopening on USR1.

The master and its workers import ``logging`` only when the app or the
config file does (it costs a megabyte of memory), so the logger is set up
either at once, when ``logging`` is imported already, or when it is first
imported: an entry on ``sys.meta_path`` that configures the module right
after it has run, then takes itself off.
"""

from __future__ import annotations

import sys

from siesta import _siesta

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_NAME = "gunicorn.error"
_state: dict[str, Any] = {"level": "info", "handler": None, "finding": False}


def traceback_text(exc: BaseException, tb: Any) -> str:
    """``exc`` with its traceback from ``tb``; ``exc`` alone when ``traceback``
    cannot be imported (a worker switched by -u to a user who cannot read the
    standard library), so that what failed is still what the log says."""
    try:
        import traceback
    except BaseException:
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def flush_std() -> None:
    """Flushes ``sys.stdout`` and ``sys.stderr`` before an ``os._exit``, whatever
    they are: None (the descriptor was closed at launch), or a pipe whose reader
    left (a BrokenPipeError). A flush that fails must not keep a process from its
    exit: a worker's exception would climb into the master's code it forked from."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:
            pass


def bridge(level: str) -> None:
    """Sets up ``gunicorn.error`` at ``level`` now, or when ``logging`` is imported."""
    _state["level"] = level
    logging = sys.modules.get("logging")
    if logging is not None:
        _configure(logging)
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def level_name(levelno: int) -> str:
    """The error log's level for a `logging` level number."""
    if levelno >= 50:
        return "critical"
    if levelno >= 40:
        return "error"
    if levelno >= 30:
        return "warning"
    return "info" if levelno >= 20 else "debug"


def _configure(logging: ModuleType) -> None:
    handler_class = _state["handler"]
    if handler_class is None:

        class SiestaErrorLog(logging.Handler):  # type: ignore[name-defined,misc]
            """Writes a record to Siesta's error log, which stamps it as gunicorn's
            handler would (``[time] [pid] [LEVEL] message``)."""

            def emit(self, record: Any) -> None:
                try:
                    _siesta.log(level_name(record.levelno), self.format(record))
                except Exception:
                    self.handleError(record)

        handler_class = _state["handler"] = SiestaErrorLog
    log = logging.getLogger(_NAME)
    log.setLevel(LEVELS.get(_state["level"], 20))
    log.propagate = False
    if not any(isinstance(h, handler_class) for h in log.handlers):
        log.addHandler(handler_class())


def _unlist() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]


class _Loader:
    """The ``logging`` module's own loader, then :func:`_configure`."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # The module as a plain import leaves it (Python 3.12 warns when
        # `__loader__` and `__spec__.loader` differ).
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        _unlist()
        try:
            _configure(module)
        except Exception as exc:  # never the app's import failing for it
            _siesta.log("warning", f"Cannot set up the gunicorn.error logger: {exc!r}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Finder:
    """On ``sys.meta_path`` until ``logging`` is imported."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        # Listed until `logging` is loaded (a `find_spec("logging")` alone,
        # `importlib.util.find_spec`, loads nothing).
        if name != "logging" or _state.get("finding"):
            return None  # not entered again by a finder that asks the others in turn
        _state["finding"] = True
        try:
            for finder in sys.meta_path:
                if isinstance(finder, _Finder):
                    continue
                find = getattr(finder, "find_spec", None)
                spec = find(name, path, target) if find is not None else None
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _Loader(spec.loader)
                    return spec
            return None
        finally:
            _state["finding"] = False
