"""Loading the WSGI app from ``module:callable`` or ``module:factory(args)``.

Applies ``--chdir``, ``--pythonpath`` and ``-e`` first (a --chdir that
cannot be entered is a config error: exit 1), imports the module, finds
the callable and, for the factory form, calls it with literal arguments.
Every failure to load becomes an :class:`AppLoadError` with one line that
says what went wrong, which the CLI prints before exiting with gunicorn's
code 4. Running the app is the server's job.
"""

from __future__ import annotations

import importlib
import keyword
import os
import sys

from siesta._pylog import traceback_text
from siesta.config import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class AppLoadError(Exception):
    """The app could not be loaded; the message is the one line to print. ``files``
    are the source files the failure went through (for --reload to watch: a module
    that failed to import is not in ``sys.modules``)."""

    def __init__(self, message: str, files: list[str] | None = None) -> None:
        super().__init__(message)
        self.files = files or []


def _module_paths(module_name: str) -> list[str]:
    """Where on ``sys.path`` the files of ``module_name`` and its packages would be: a
    --reload that could not find the module watches for one of them to appear."""
    parts = module_name.split(".")
    paths = []
    for entry in sys.path:
        base = os.path.abspath(entry or os.curdir)
        for i in range(1, len(parts) + 1):
            stem = os.path.join(base, *parts[:i])
            paths += [stem + ".py", os.path.join(stem, "__init__.py")]
    return paths


def _source_files(exc: BaseException) -> list[str]:
    """The files of the exception's traceback, and a SyntaxError's own file."""
    files = []
    filename = getattr(exc, "filename", None) if isinstance(exc, SyntaxError) else None
    if filename:
        files.append(filename)
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name != __file__ and not name.startswith("<") and name not in files:
            files.append(name)
        tb = tb.tb_next
    return files


def prepare(values: dict[str, Any], sources: dict[str, str] | None = None) -> None:
    """Working directory, import path and environment, in gunicorn's order. A
    --chdir that cannot be entered is a bad setting (:class:`ConfigError`,
    naming where it came from in ``sources``), not an app that fails to load."""
    if values.get("chdir"):
        # As given (made absolute), not as the kernel resolves it: a deploy that
        # points a symlink at a new release and sends HUP is served the new one.
        cwd = os.path.normpath(os.path.join(working_dir(), values["chdir"]))
        try:
            os.chdir(cwd)  # the path as named, as gunicorn's: `..` after a symlink too
        except OSError as exc:
            source = (sources or {}).get("chdir", "the settings")
            raise ConfigError(
                f"chdir from {source}: cannot change to {values['chdir']!r} ({exc.strerror})"
            ) from None
    else:
        cwd = working_dir()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for path in reversed((values.get("pythonpath") or "").split(",")):
        if path.strip():
            sys.path.insert(0, os.path.abspath(path.strip()))
    for item in values.get("raw_env") or []:  # each KEY=VALUE, checked by the table
        key, _, value = item.partition("=")
        os.environ[key] = value


def working_dir() -> str:
    """The working directory as the shell named it (``$PWD``, which may go through a
    symlink such as ``/srv/app/current``) when that is where the process is, else
    the resolved one, as gunicorn takes it: a symlink pointed at a new release
    before a HUP or USR2 is followed again, where the resolved path kept the old."""
    cwd = os.getcwd()
    pwd = os.environ.get("PWD")
    if pwd and os.path.isabs(pwd) and pwd != cwd:
        try:
            here, named = os.stat(cwd), os.stat(pwd)
        except OSError:
            return cwd
        if (here.st_dev, here.st_ino) == (named.st_dev, named.st_ino):
            return os.path.normpath(pwd)
    return cwd


def _parse_target(spec: str) -> tuple[str, str, tuple, dict, bool]:
    module, _, target = spec.partition(":")
    target = target or "application"
    if not module:
        raise AppLoadError(f"Invalid app {spec!r}: expected module:callable")
    if target.isascii() and target.isidentifier() and not keyword.iskeyword(target):
        return module, target, (), {}, False
    import ast  # for a factory call only: it is 0.6 MiB of the master and every worker

    try:
        expr = ast.parse(target, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"Invalid app {spec!r}: {target!r} is not a name or a call") from None
    if isinstance(expr, ast.Name):
        return module, expr.id, (), {}, False
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        try:
            args = tuple(ast.literal_eval(a) for a in expr.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in expr.keywords if k.arg}
        except ValueError:
            raise AppLoadError(
                f"Invalid app {spec!r}: factory arguments must be literals"
            ) from None
        return module, expr.func.id, args, kwargs, True
    raise AppLoadError(f"Invalid app {spec!r}: {target!r} is not a name or a call")


def _app_traceback(exc: BaseException) -> str:
    """The exception's traceback without Siesta's own frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return traceback_text(exc, tb)


def load(spec: str) -> Any:
    """Imports and returns the app callable named by ``spec``."""
    module_name, attr, args, kwargs, call = _parse_target(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(
                f"Failed to import app module {module_name!r}: {exc}",
                _module_paths(module_name),
            ) from None
        raise AppLoadError(
            f"Failed to import app module {module_name!r}: {exc}\n{_app_traceback(exc)}",
            _source_files(exc),
        ) from None
    except Exception as exc:
        raise AppLoadError(
            f"Failed to import app module {module_name!r}: {type(exc).__name__}: {exc}\n"
            f"{_app_traceback(exc)}",
            _source_files(exc),
        ) from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise AppLoadError(f"Failed to find attribute {attr!r} in {module_name!r}") from None
    if call:
        try:
            obj = obj(*args, **kwargs)
        except Exception as exc:
            raise AppLoadError(
                f"App factory {spec!r} failed: {type(exc).__name__}: {exc}\n{_app_traceback(exc)}",
                _source_files(exc),
            ) from None
    if not callable(obj):
        raise AppLoadError(f"App {spec!r} is not callable (got {type(obj).__name__})")
    return obj
