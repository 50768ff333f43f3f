"""The settings table: every Siesta option, defined once.

Each :class:`Setting` carries its name, flags, type, default and help text;
from the table come the argparse parser (and so ``--help``), the
``SIESTA_<NAME>`` environment variables, the keys of a ``-c`` Python config
file, ``--print-config``, and the one dict handed to Rust. Precedence, lowest
first: default, config file, environment, command line. Loading the app and
running the server are ``_app.py``'s and ``cli.py``'s jobs.
"""

from __future__ import annotations

import argparse
import os
import runpy
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

from siesta._siesta import __version__

ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


class ConfigError(Exception):
    """A setting has a value Siesta cannot use; the message says which and why."""


def _int_from(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(f"{text} is less than {minimum}")
        return value

    parse.__name__ = "int"
    return parse


_positive_int = _int_from(1)
_non_negative_int = _int_from(0)


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0 or value != value:
        raise ValueError(f"{text} is not a number of seconds")
    return value


def _worker_class(text: str) -> str:
    name = text.strip().lower()
    aliases = {"thread": "thread", "gthread": "thread", "sync": "thread", "gevent": "gevent"}
    if name not in aliases:
        raise ValueError(f"{text!r} is not a worker class (thread, gthread, gevent)")
    return aliases[name]


def _log_level(text: str) -> str:
    name = text.strip().lower()
    if name not in {"debug", "info", "warning", "error", "critical"}:
        raise ValueError(f"{text!r} is not a log level (debug, info, warning, error, critical)")
    return name


@dataclass(frozen=True)
class Setting:
    """One option: how it is spelled, parsed, defaulted and explained."""

    name: str
    flags: tuple[str, ...]
    default: Any
    help: str
    type: Callable[[str], Any] = str
    append: bool = False
    flag: bool = False
    metavar: str | None = None
    env: bool = True
    file: bool = True
    # Sent to the Rust core (``for_rust``); the Rust ``Settings`` struct has
    # exactly these fields, and tests/test_settings.py checks both ways.
    rust: bool = False
    cli_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def env_name(self) -> str:
        return "SIESTA_" + self.name.upper()

    def convert(self, value: Any, source: str) -> Any:
        """Parses a value from a config file or the environment."""
        try:
            if self.flag:
                if isinstance(value, str):
                    return value.strip().lower() in {"1", "true", "yes", "on"}
                return bool(value)
            if self.append:
                items = value.split(",") if isinstance(value, str) else list(value)
                return [self.type(str(v).strip()) for v in items if str(v).strip()]
            if value is None:
                return None
            return self.type(str(value))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.name} from {source}: {exc}") from None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "config",
        ("-c", "--config"),
        None,
        "A Python file whose module-level names set options (e.g. bind = ['0.0.0.0:80']). "
        "Lower precedence than SIESTA_* variables and the command line.",
        metavar="FILE",
        file=False,
    ),
    Setting(
        "bind",
        ("-b", "--bind"),
        ["127.0.0.1:8000"],
        "Address to listen on: HOST:PORT, [V6]:PORT, unix:PATH or fd://N. Repeat for more; "
        "port 0 picks a free port.",
        append=True,
        metavar="ADDRESS",
        rust=True,
    ),
    Setting(
        "workers",
        ("-w", "--workers"),
        1,
        "Number of worker processes. This release runs exactly one (more is refused "
        "with a clear error until the master/worker supervisor lands).",
        type=_positive_int,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "worker_class",
        ("-k", "--worker-class"),
        "thread",
        "thread (also gthread): a pool of OS threads runs the app, wsgi.input waits with "
        "the GIL released. gevent: one hub thread, every request a greenlet "
        "(pip install siesta[gevent]).",
        type=_worker_class,
        metavar="CLASS",
        rust=True,
    ),
    Setting(
        "threads",
        ("--threads",),
        8,
        "Python threads per worker in thread mode. 8 by default: measured on 2 cores, "
        "hello-world req/s and CPU per request are the same from 1 to 16 threads (one "
        "thread drives the I/O and runs the app while the others sleep), and 8 lets 8 "
        "requests wait in the app, in wsgi.input or on a slow client at once.",
        type=_positive_int,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "worker_connections",
        ("--worker-connections",),
        1000,
        "gevent mode: most requests running at once per worker; more wait, then get 503.",
        type=_positive_int,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "backlog",
        ("--backlog",),
        2048,
        "Listen backlog: connections the kernel queues before Siesta accepts them.",
        type=_positive_int,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "keep_alive",
        ("--keep-alive",),
        5.0,
        "Seconds a keep-alive connection may idle before its next request head is complete.",
        type=_seconds,
        metavar="SECONDS",
        rust=True,
    ),
    Setting(
        "header_timeout",
        ("--header-timeout",),
        30.0,
        "Seconds a client has to send a complete request head, counted from its first "
        "byte (from the connection's accept for its first request); then 408 and close. "
        "Stops slowloris clients; 0 waits forever.",
        type=_seconds,
        metavar="SECONDS",
        rust=True,
    ),
    Setting(
        "graceful_timeout",
        ("--graceful-timeout",),
        30.0,
        "Seconds TERM waits for in-flight requests before stopping anyway.",
        type=_seconds,
        metavar="SECONDS",
        rust=True,
    ),
    Setting(
        "body_timeout",
        ("--body-timeout",),
        60.0,
        "Seconds wsgi.input.read() waits without receiving a body byte before raising "
        "siesta.ClientTimeout; 0 waits forever.",
        type=_seconds,
        metavar="SECONDS",
        rust=True,
    ),
    Setting(
        "limit_request_line",
        ("--limit-request-line",),
        4094,
        "Longest request line (method, target and version) in bytes; longer gets 414. "
        "0 means no limit beyond the 64 KiB head buffer.",
        type=_non_negative_int,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "limit_request_fields",
        ("--limit-request-fields",),
        100,
        "Most header fields in a request; more gets 431. 0 or more than 32768 means 32768, "
        "as in gunicorn.",
        type=_non_negative_int,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "limit_request_field_size",
        ("--limit-request-field-size", "--limit-request-field_size"),
        8190,
        "Largest header field (name, ': ' and value) in bytes; larger gets 431. "
        "0 means no limit beyond the 64 KiB head buffer.",
        type=_non_negative_int,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "runtime_threads",
        ("--runtime-threads",),
        0,
        "Dedicated network I/O (tokio) threads per worker. 0, the default, lets thread "
        "mode's Python threads drive the I/O themselves: no hand-off between threads per "
        "request. gevent mode always uses at least 1.",
        type=_non_negative_int,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "root_path",
        ("--root-path",),
        "",
        "Mount point of the app: stripped from PATH_INFO and set as SCRIPT_NAME "
        "(a SCRIPT_NAME environment variable sets it too).",
        metavar="PREFIX",
        rust=True,
    ),
    Setting(
        "chdir",
        ("--chdir",),
        None,
        "Change to this directory before loading the app.",
        metavar="DIR",
    ),
    Setting(
        "pythonpath",
        ("--pythonpath",),
        None,
        "Comma-separated directories to add to sys.path before loading the app.",
        metavar="DIRS",
    ),
    Setting(
        "raw_env",
        ("-e", "--env"),
        [],
        "Set an environment variable for the app: KEY=VALUE. Repeat for more.",
        append=True,
        metavar="KEY=VALUE",
    ),
    Setting(
        "log_level",
        ("--log-level",),
        "info",
        "Error log level: debug, info, warning, error, critical.",
        type=_log_level,
        metavar="LEVEL",
        rust=True,
    ),
    Setting(
        "error_logfile",
        ("--error-logfile", "--log-file"),
        "-",
        "Error log file; '-' is stderr.",
        metavar="FILE",
        rust=True,
    ),
    Setting(
        "access_logfile",
        ("--access-logfile",),
        None,
        "Access log file; '-' is stdout. No access log when unset.",
        metavar="FILE",
        rust=True,
    ),
    Setting(
        "access_logformat",
        ("--access-logformat",),
        ACCESS_LOG_FORMAT,
        "Access log line, with gunicorn's atoms: h l u t r m U q H s B b f a T M D L p "
        "and %%({header}i)s.",
        metavar="FORMAT",
        rust=True,
    ),
    Setting(
        "check_config",
        ("--check-config",),
        False,
        "Check the settings and that the app loads, then exit.",
        flag=True,
        env=False,
        file=False,
    ),
    Setting(
        "print_config",
        ("--print-config",),
        False,
        "Print the settings in force, then exit.",
        flag=True,
        env=False,
        file=False,
    ),
)

BY_NAME = {s.name: s for s in SETTINGS}


def parser() -> argparse.ArgumentParser:
    """The command-line parser, generated from the table."""
    p = argparse.ArgumentParser(
        prog="siesta",
        description="Serve a WSGI app. wsgi.input streams: the app runs as soon as the "
        "request head arrives and read() waits for just that request's bytes.",
        epilog="Every option can also be set as SIESTA_<NAME> in the environment "
        "(e.g. SIESTA_THREADS=4) or in a -c config file.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "app",
        nargs="?",
        metavar="APP",
        help="The WSGI app: module:callable or module:factory(); "
        "SIESTA_APP or wsgi_app in a config file also work.",
    )
    p.add_argument("-v", "--version", action="version", version=f"siesta {__version__}")
    for s in SETTINGS:
        kwargs: dict[str, Any] = {"dest": s.name, "help": s.help, **s.cli_extra}
        if s.flag:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = s.type
            kwargs["metavar"] = s.metavar
            if s.append:
                kwargs["action"] = "append"
        p.add_argument(*s.flags, **kwargs)
    return p


def load_file(path: str) -> dict[str, Any]:
    """Module-level names of a Python config file that are settings (plus wsgi_app)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found")
    try:
        namespace = runpy.run_path(path)
    except Exception as exc:  # the deployer's file: report it in one line
        raise ConfigError(f"config file {path!r} failed: {type(exc).__name__}: {exc}") from None
    out = {}
    for key, value in namespace.items():
        if key == "wsgi_app":
            out["app"] = value
        elif key in BY_NAME and BY_NAME[key].file:
            out[key] = BY_NAME[key].convert(value, path)
    return out


def resolve(argv: list[str] | None) -> dict[str, Any]:
    """All settings in force: defaults < config file < environment < command line."""
    cli = vars(parser().parse_args(argv))
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    values["app"] = None
    config_path = cli.get("config") or os.environ.get("SIESTA_CONFIG")
    if config_path:
        values.update(load_file(config_path))
        values["config"] = config_path
    if os.environ.get("SCRIPT_NAME"):
        # gunicorn's habit: a SCRIPT_NAME in the environment is the mount point.
        values["root_path"] = os.environ["SCRIPT_NAME"]
    for s in SETTINGS:
        if s.env and s.env_name in os.environ:
            values[s.name] = s.convert(os.environ[s.env_name], s.env_name)
    if os.environ.get("SIESTA_APP"):
        values["app"] = os.environ["SIESTA_APP"]
    for name, value in cli.items():
        if value is not None:
            values[name] = value
    return values


def for_rust(values: dict[str, Any]) -> dict[str, Any]:
    """The settings the Rust core reads (those marked ``rust=True``), as one dict."""
    return {s.name: values[s.name] for s in SETTINGS if s.rust}


def render(values: dict[str, Any]) -> str:
    """``--print-config``: one ``name = value`` line per setting, sorted."""
    lines = [f"{'app':<20} = {values.get('app')!r}"]
    lines += [f"{s.name:<20} = {values[s.name]!r}" for s in sorted(SETTINGS, key=lambda s: s.name)]
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's options table, made from the settings table (``python -m siesta.config``)."""
    rows = ["| Option | Environment | Default | What it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        flags = ", ".join(f"`{f}`" for f in s.flags)
        env = f"`{s.env_name}`" if s.env else ""
        if s.default is None or s.default is False or s.default in ([], ""):
            default = ""
        elif isinstance(s.default, list):
            default = f"`{','.join(s.default)}`"
        else:
            default = f"`{s.default}`"
        text = s.help.replace("|", "\\|").replace("%%", "%")
        rows.append(f"| {flags} | {env} | {default} | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
