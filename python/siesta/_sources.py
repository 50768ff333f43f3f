"""Where settings come from, and which source wins: the parser, config files, the environment.

Highest precedence first: the command line, ``SIESTA_CMD_ARGS``,
``SIESTA_<NAME>`` variables, ``GUNICORN_CMD_ARGS``, the config file (``-c``,
else ``./gunicorn.conf.py`` when present), then the defaults (some of which
gunicorn's ``WEB_CONCURRENCY`` and ``FORWARDED_ALLOW_IPS`` replace). A
config file may use Siesta's or gunicorn's setting names and define server
hooks; any other public name in it gets a one-line warning. What each
setting means is ``config.py``'s table; what is done with them, ``cli.py``'s.
"""

from __future__ import annotations

import argparse
import importlib
import os
import runpy
import shlex
import sys
import types
from collections.abc import Mapping

from siesta._siesta import __version__, check_bind
from siesta.config import BY_NAME, GUNICORN_NAMES, SETTINGS, ConfigError, Setting
from siesta.hooks import HOOK_NAMES, Hooks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CONFIG_FILE = "gunicorn.conf.py"
USAGE = "siesta [OPTIONS] APP"
PRECEDENCE = (
    "Precedence, highest first: the command line, SIESTA_CMD_ARGS, SIESTA_<NAME> variables "
    "(e.g. SIESTA_THREADS=4), GUNICORN_CMD_ARGS, the config file (-c FILE, else "
    "./gunicorn.conf.py when present), the defaults ($WEB_CONCURRENCY and "
    "$FORWARDED_ALLOW_IPS replace two of them, as in gunicorn)."
)


class UsageError(ConfigError):
    """The command line (or a *_CMD_ARGS variable) is malformed: exit 2, as argparse does."""


class Resolved:
    """The settings in force, the hooks, where each value came from, and what to warn about."""

    def __init__(
        self,
        values: dict[str, Any],
        hooks: Hooks,
        sources: dict[str, str] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.values = values
        self.hooks = hooks
        self.sources = sources if sources is not None else {}
        self.warnings = warnings if warnings is not None else []


# gunicorn's options Siesta does not have (README, "Coming from gunicorn"):
# refused as any unknown option is, with a word on why.
_GUNICORN_ONLY = frozenset(
    (
        "--keyfile --certfile --ca-certs --cert-reqs --ssl-version --ciphers "
        "--suppress-ragged-eofs --do-handshake-on-connect --dogstatsd-tags "
        "--enable-backlog-metric --logger-class --log-config --log-config-json "
        "--log-syslog --log-syslog-to --log-syslog-prefix "
        "--log-syslog-facility --disable-redirect-access-to-syslog -R "
        "--enable-stdio-inheritance --http-protocols --protocol --uwsgi-allow-from "
        "--permit-obsolete-folding --strip-header-spaces --permit-unconventional-http-method "
        "--permit-unconventional-http-version --casefold-http-method --header-map "
        "--paste --paster --paste-global --spew "
        "--reload-extra-file --control-socket --control-socket-mode "
        "--websocket-max-message-size"
    ).split()
)

# gunicorn options that ask for what Siesta does anyway (no sendfile: file
# responses are read in Rust; no control socket), or whose one value taken is
# gunicorn's default, which is Siesta's way too (headers with `_` dropped,
# plain HTTP/1.1): accepted and ignored, so a unit file that spells them out
# starts. Any other value is refused, as an unknown option is.
_AS_SIESTA_DOES: dict[str, str | None] = {
    "--no-sendfile": None,
    "--no-control-socket": None,
    "--header-map": "drop",
    "--protocol": "http",
    "--http-protocols": "h1",
    "--http-parser": "auto",
    "--reload-engine": "auto",
}
_IGNORED = "_ignored_"


def _gunicorn_only(flag: str) -> bool:
    name = flag.split("=", 1)[0]
    return name in _GUNICORN_ONLY or name.startswith(("--http2-", "--asgi-", "--dirty-"))


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing a usage block and exiting."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            # argparse lists the words after an unknown option too (its value,
            # the app): name the options alone when there are some.
            words = message[len(prefix) :].split()
            flags = [w for w in words if w.startswith("-")]
            message = prefix + " ".join(flags or words)
            if flags and all(_gunicorn_only(f) for f in flags):
                message += (
                    " (gunicorn options Siesta does not support: README, Coming from gunicorn)"
                )
        raise UsageError(message)


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized as it sizes itself but without importing
    ``shutil`` (which brings bz2, lzma and zlib: 0.8 MiB of the master and of every
    worker it forks, for the width of a --help that is rarely asked for)."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
            except (AttributeError, ValueError, OSError):
                columns = 0
        super().__init__(prog, width=(columns or 80) - 2)


# The types of the numeric settings, by name (`config._int_from` makes "int"s).
_NUMERIC_TYPES = {"int", "_seconds", "_umask"}


def _is_number(text: str, kind: str) -> bool:
    """Whether `text` is a number of the setting's kind at all (argparse's own
    `type=int` in gunicorn refuses `1.5`)."""
    try:
        if kind == "int":
            int(text)
        elif kind == "_umask":
            try:
                int(text, 0)  # 0o022, 18
            except ValueError:
                int(text, 8)  # 022, as _umask itself reads it
        else:
            float(text)
    except ValueError:
        return False
    return True


class _BadValue(ConfigError):
    """An option's value that its type refuses: a bad setting (exit 1, as the
    same value in a config file), not a malformed command line (exit 2)."""


def _cli_type(s: Setting) -> Any:
    """The setting's type; a value it refuses leaves argparse as ``_BadValue``."""
    flag = next((f for f in s.flags if f.startswith("--")), s.flags[0])

    kind = getattr(s.type, "__name__", "")
    numeric = kind in _NUMERIC_TYPES

    def parse(text: str) -> Any:
        try:
            return s.type(text)
        except ValueError as exc:
            if numeric and not _is_number(text, kind):
                # Not a number at all: a malformed command line, as argparse's
                # own `type=int` makes it in gunicorn (exit 2).
                raise argparse.ArgumentTypeError(str(exc)) from None
            raise _BadValue(f"argument {flag}: {exc}") from None

    parse.__name__ = getattr(s.type, "__name__", "value")
    return parse


def parser() -> argparse.ArgumentParser:
    """The command-line parser, generated from the table."""
    p = _Parser(
        prog="siesta",
        usage=USAGE,
        description="Serve a WSGI app. wsgi.input streams: the app runs as soon as the "
        "request head arrives and read() waits for just that request's bytes.",
        epilog="Every option can also be set as SIESTA_<NAME> in the environment, in "
        "SIESTA_CMD_ARGS or GUNICORN_CMD_ARGS (options as on the command line), or in a "
        "config file (a gunicorn.conf.py works as is). " + PRECEDENCE,
        argument_default=argparse.SUPPRESS,
        formatter_class=_Formatter,
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
        kwargs: dict[str, Any] = {"dest": s.name, "help": s.help_text, **s.cli_extra}
        if s.flag:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = _cli_type(s)
            kwargs["metavar"] = s.metavar
            if s.append:
                kwargs["action"] = "append"
        p.add_argument(*s.flags, **kwargs)
    for flag, value in _AS_SIESTA_DOES.items():
        dest = _IGNORED + flag.lstrip("-").replace("-", "_")
        if value is None:
            p.add_argument(flag, dest=dest, action="store_true", help=argparse.SUPPRESS)
        else:
            p.add_argument(flag, dest=dest, type=str.lower, choices=[value], help=argparse.SUPPRESS)
    return p


def _flags_alone(args: list[str]) -> list[str]:
    """An option whose value is optional (``--proxy-protocol [MODE]``) followed by
    an app (``module:callable``) stands alone, so ``--proxy-protocol app:app``
    serves ``app:app`` as it does with gunicorn's flag; any other word stays
    its value, so a mistyped mode is reported as such."""
    optional = {f: s for s in SETTINGS if s.cli_extra.get("nargs") == "?" for f in s.flags}
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        s = optional.get(arg)
        following = out[i + 1]
        if s is None or following.startswith("-") or ":" not in following:
            continue
        try:
            s.type(following)
        except ValueError:
            out[i] = f"{arg}={s.cli_extra['const']}"
    return out


def _parse(args: list[str], source: str) -> dict[str, Any]:
    try:
        parsed = parser().parse_args(_flags_alone(args))
        return {
            k: v for k, v in vars(parsed).items() if v is not None and not k.startswith(_IGNORED)
        }
    except _BadValue as exc:
        where = "" if source == "the command line" else f"{source}: "
        raise ConfigError(f"{where}{exc}") from None
    except UsageError as exc:
        where = "" if source == "the command line" else f"{source}: "
        raise UsageError(f"{where}{exc}") from None


def _cmd_args(environ: Mapping[str, str], name: str) -> dict[str, Any]:
    if not environ.get(name):
        return {}
    try:
        args = shlex.split(environ[name])
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None
    return _parse(args, name)


def _imported_names(source: str) -> set[str]:
    """Names a config file binds with ``import``: its tools, not its settings."""
    import ast  # with a config file only: 0.6 MiB of the master and every worker

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
    return names


def _failure_line(exc: BaseException, path: str) -> str:
    """``Type: message (line N)`` for an exception raised while running a config file."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    import traceback

    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == path
    ]
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _gunicorn_hint(exc: BaseException) -> str:
    """What to do about a config file that imports gunicorn (for a type hint, a
    logger class, its ``SERVER_SOFTWARE``) where gunicorn is not installed."""
    name = getattr(exc, "name", None) or ""
    if isinstance(exc, ImportError) and name.split(".")[0] == "gunicorn":
        return "; Siesta does not need gunicorn: drop the import, or install gunicorn beside it"
    return ""


def _run_config(location: str) -> tuple[dict[str, Any], set[str], str]:
    """The namespace of a config file (``PATH``, ``file:PATH``) or ``python:MODULE``."""
    if location.startswith("python:"):
        name = location[len("python:") :]
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(
                f"config module {name!r} failed: {type(exc).__name__}: {exc}" + _gunicorn_hint(exc)
            ) from None
        path = getattr(module, "__file__", None) or name
        source = ""
        if path.endswith(".py") and os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                source = f.read()
        return vars(module), _imported_names(source), name
    path = location[len("file:") :] if location.startswith("file:") else location
    # Not only a regular file: `-c /dev/null` is how a deployer skips the
    # ./gunicorn.conf.py of the directory.
    if os.path.isdir(path):
        raise ConfigError(f"config file {path!r} is a directory")
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} not found")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
        # Its __file__ absolute, as gunicorn gives it: paths a config builds from
        # os.path.dirname(__file__) stay next to it whatever --chdir is.
        namespace = runpy.run_path(os.path.abspath(path), run_name="__config__")
    except Exception as exc:  # the deployer's file: report it in one line
        raise ConfigError(
            f"config file {path!r} failed: {_failure_line(exc, os.path.abspath(path))}"
            + _gunicorn_hint(exc)
        ) from None
    return namespace, _imported_names(source), path


def _config_import_path(layers: list[dict[str, Any]]) -> None:
    """A config file imports the deployer's modules as the app does (gunicorn puts
    --chdir, the working directory by default, first on sys.path before it reads
    the file): that directory, and --pythonpath's from the same layers, go first."""
    chdir = next((layer["chdir"] for layer in layers if layer.get("chdir")), None)
    pythonpath = next((layer["pythonpath"] for layer in layers if layer.get("pythonpath")), "")
    from siesta._app import working_dir

    base = os.path.normpath(os.path.join(working_dir(), chdir or "."))
    paths = [base]
    # Relative to --chdir, as prepare() reads them for the app.
    paths += [os.path.join(base, p.strip()) for p in pythonpath.split(",") if p.strip()]
    paths = [os.path.normpath(p) for p in paths]
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)


def load_file(location: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """A config file's settings (by Siesta's names), its hooks, and its warnings."""
    namespace, imported, shown = _run_config(location)
    settings: dict[str, Any] = {}
    hooks: dict[str, Any] = {}
    warnings: list[str] = []
    unknown: list[str] = []
    for key, value in namespace.items():
        if key.startswith("_"):
            continue
        if key in HOOK_NAMES:
            hooks[key] = value
            if key == "worker_abort":
                warnings.append(
                    f"hook 'worker_abort' in {shown} is never called: a worker past --timeout "
                    "has every thread's stack written to the error log instead"
                )
            continue
        # Siesta's name, else gunicorn's mapped (None: unsupported), else "": not a setting.
        target = key if key in BY_NAME else GUNICORN_NAMES.get(key, "")
        if target is None:
            if key in ("certfile", "keyfile") and value:
                # Serving plain HTTP where the deployer asked for TLS would
                # break every client while a plain health check passes.
                raise ConfigError(
                    f"{key} in {shown}: TLS is not supported; terminate it in the proxy "
                    "or load balancer"
                )
            if _unset(value) or _at_gunicorn_default(key, value):
                # `spew = False`, `tmp_upload_dir = None`, `reload_engine =
                # "auto"`: nothing asked beyond what Siesta does anyway.
                continue
            warnings.append(f"gunicorn setting {key!r} in {shown} is not supported, ignored")
        elif target == "app":
            settings["app"] = value if value is None else str(value)
        elif target in BY_NAME and not BY_NAME[target].file:
            warnings.append(f"setting {key!r} cannot be set in a config file ({shown}), ignored")
        elif target in BY_NAME:
            settings[target] = BY_NAME[target].convert(value, shown, whole=True)
        elif target:
            warnings.append(f"setting {key!r} in {shown} is not supported by this build, ignored")
        elif key in imported or isinstance(value, types.ModuleType) or callable(value):
            continue
        elif key.isupper() and (
            key.lower() in namespace  # `WORKERS = ...` then `workers = WORKERS`
            or not (key.lower() in BY_NAME or key.lower() in GUNICORN_NAMES)
        ):
            continue  # a constant of the file's own; `WORKERS = 4` alone is a mistake
        else:
            unknown.append(repr(key))
    if unknown:
        # One line for them all: a config file's helper variables (`cores`,
        # `host`, `use_bind`...) are many, and gunicorn says nothing of them.
        names = ", ".join(unknown)
        warnings.append(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {names} in {shown}, ignored"
        )
    return settings, hooks, warnings


# gunicorn's defaults for the settings Siesta does not support, as a config
# file spells them: a file that writes one out (often from a generated
# template) asks for nothing. `sendfile = True` and `control_socket_disable =
# True` ask for what Siesta does anyway.
_GUNICORN_DEFAULTS: dict[str, Any] = {
    "asgi_disconnect_grace_period": 3,
    "asgi_lifespan": "auto",
    "asgi_loop": "auto",
    "control_socket_disable": True,
    "control_socket_mode": 0o600,
    "default_proc_name": "gunicorn",
    "dirty_graceful_timeout": 30,
    "dirty_threads": 1,
    "dirty_timeout": 300,
    "header_map": "drop",
    "http2_cleartext": "off",
    "http2_initial_window_size": 65535,
    "http2_max_concurrent_streams": 100,
    "http2_max_frame_size": 16384,
    "http2_max_header_list_size": 65536,
    "http_parser": "auto",
    "http_protocols": "h1",
    "logger_class": "gunicorn.glogging.Logger",
    "protocol": "http",
    "reload_engine": "auto",
    "sendfile": True,
    "ssl_version": 2,  # ssl.PROTOCOL_TLS
    "suppress_ragged_eofs": True,
    "syslog_addr": "udp://localhost:514",
    "syslog_facility": "user",
    "uwsgi_allow_ips": "127.0.0.1,::1",
    "websocket_max_message_size": 16777216,
}


def gunicorn_default(key: str) -> Any:
    """gunicorn's default for a setting Siesta does not have (None for the many
    whose default is None, False or empty)."""
    return _GUNICORN_DEFAULTS.get(key)


def _at_gunicorn_default(key: str, value: Any) -> bool:
    if key not in _GUNICORN_DEFAULTS:
        return False
    default = _GUNICORN_DEFAULTS[key]
    if isinstance(value, (list, tuple)) and isinstance(default, str):
        value = ",".join(str(v) for v in value)  # `http_protocols = ["h1"]`
    if isinstance(default, bool) or isinstance(value, bool):
        return value is default  # 1 is not True here
    try:
        return bool(value == default)
    except Exception:  # an object whose == raises: not a default
        return False


def _unset(value: Any) -> bool:
    """A config value that asks for nothing: None, False, 0 or empty."""
    return isinstance(value, (type(None), bool, int, float, str, list, tuple, dict)) and not value


def _config_location(layers: list[dict[str, Any]], environ: Mapping[str, str]) -> str | None:
    """-c from the highest source that names one, else ./gunicorn.conf.py if it exists."""
    cli, siesta_args, gunicorn_args = layers
    for found in (
        cli.get("config"),
        siesta_args.get("config"),
        environ.get("SIESTA_CONFIG"),
        gunicorn_args.get("config"),
    ):
        if found:
            return found
    return DEFAULT_CONFIG_FILE if os.path.isfile(DEFAULT_CONFIG_FILE) else None


def resolve(argv: list[str] | None, environ: Mapping[str, str] | None = None) -> Resolved:
    """All settings in force, by the precedence in :data:`PRECEDENCE`."""
    environ = os.environ if environ is None else environ
    cli = _parse(sys.argv[1:] if argv is None else list(argv), "the command line")
    siesta_args = _cmd_args(environ, "SIESTA_CMD_ARGS")
    gunicorn_args = _cmd_args(environ, "GUNICORN_CMD_ARGS")

    values: dict[str, Any] = {}
    # A default from the environment that is no value for its setting
    # (WEB_CONCURRENCY=0) is refused only if nothing else sets that setting,
    # as gunicorn reads it only then (`-w 2` with WEB_CONCURRENCY=0 starts).
    unusable: dict[str, ConfigError] = {}
    for s in SETTINGS:
        try:
            values[s.name] = s.initial(environ)
        except ConfigError as exc:
            values[s.name], unusable[s.name] = s.default, exc
    values["app"] = None
    from_env = {s.name for s in SETTINGS if values[s.name] != s.default} | set(unusable)
    sources = {s.name: f"${s.default_env}" if s.name in from_env else "default" for s in SETTINGS}
    result = Resolved(values, Hooks(), sources)

    def apply(layer: dict[str, Any], source: str) -> None:
        values.update(layer)
        sources.update(dict.fromkeys(layer, source))

    location = _config_location([cli, siesta_args, gunicorn_args], environ)
    if location:
        _config_import_path([cli, siesta_args, gunicorn_args])
        settings, hooks, warnings = load_file(location)
        apply(settings, location)
        result.hooks = Hooks(hooks, location)
        result.warnings += warnings
        values["config"] = location
    apply(gunicorn_args, "GUNICORN_CMD_ARGS")
    if environ.get("SCRIPT_NAME"):
        # gunicorn's habit: a SCRIPT_NAME in the environment is the mount point.
        apply(
            {"root_path": BY_NAME["root_path"].convert(environ["SCRIPT_NAME"], "$SCRIPT_NAME")},
            "$SCRIPT_NAME",
        )
    for s in SETTINGS:
        if s.env and s.env_name in environ:
            apply({s.name: s.convert(environ[s.env_name], s.env_name)}, f"${s.env_name}")
    if environ.get("SIESTA_APP"):
        apply({"app": environ["SIESTA_APP"]}, "$SIESTA_APP")
    apply(siesta_args, "SIESTA_CMD_ARGS")
    apply(cli, "the command line")
    # gunicorn takes the mount point from the worker's environment, which
    # -e/raw_env sets: a SCRIPT_NAME there mounts the app over the launch
    # environment's (empty: not mounted), under an explicit --root-path.
    mounts = [i.partition("=")[2] for i in values["raw_env"] or [] if i.startswith("SCRIPT_NAME=")]
    if mounts and sources["root_path"] in ("default", "$SCRIPT_NAME"):
        values["root_path"] = BY_NAME["root_path"].convert(mounts[-1], "SCRIPT_NAME")
        sources["root_path"] = f"SCRIPT_NAME in raw_env ({sources['raw_env']})"

    if values["error_logfile"] == "/dev/stderr" and not values["capture_output"]:
        # The stream itself, which works where opening /dev/stderr fails (a
        # socket: journald). With --capture-output it stays a file, whose
        # descriptor the app's stdout is pointed at, as gunicorn points it.
        values["error_logfile"] = "-"
    for name, exc in unusable.items():
        if sources[name] == f"${BY_NAME[name].default_env}":
            raise exc
    port = environ.get("PORT", "")
    if sources["bind"] == "$PORT" and not (port.isascii() and port.isdigit() and int(port) < 65536):
        # Checked only when the bind comes from it: PORT may be another tool's.
        raise ConfigError(f"bind from $PORT: {port!r} is not a port")
    for spec in values["bind"]:
        try:
            check_bind(spec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    result.warnings += pending_warnings(result)
    for name in values["forwarder_headers"].split(","):
        if "_" in name and name not in ("SCRIPT_NAME", "PATH_INFO"):
            # gunicorn passes such a header on as HTTP_<NAME>; Siesta drops
            # every header with an underscore (X_Forwarded could pose as X-Forwarded).
            result.warnings.append(
                f"--forwarder-headers: {name} is not passed to the app (only SCRIPT_NAME "
                "is read; a header with an underscore is dropped)"
            )
    return result


def pending_warnings(resolved: Resolved) -> list[str]:
    """One line for each option set to something Siesta does not apply yet."""
    out = []
    for s in SETTINGS:
        value = resolved.values[s.name]
        if s.pending and value != s.default:
            flag = next(f for f in s.flags if f.startswith("--"))
            source = resolved.sources.get(s.name, "default")
            out.append(f"{flag} {value!r} (from {source}) is {s.pending}")
    return out
