"""The settings table: every Siesta option, defined once.

Each :class:`Setting` carries its name, flags, type, default and help text;
from the table come the argparse parser (and so ``--help``), the
``SIESTA_<NAME>`` environment variables, the keys of a ``-c`` config file,
``--print-config``, and the one dict handed to Rust. Beside the table, as
data: the names ``-k`` and ``--log-level`` accept, and gunicorn's config-file
names mapped to Siesta's. Reading the sources in precedence order is
``_sources.py``'s job; loading the app and running the server are
``_app.py``'s and ``cli.py``'s.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from types import MappingProxyType

# The master and every worker import this module: ``typing`` (0.5 MiB of a
# process) and ``dataclasses`` (which brings ``inspect`` and ``ast``, 1 MiB
# more) are kept out of it, and out of every module they import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


class ConfigError(Exception):
    """A setting has a value Siesta cannot use; the message says which and why."""


# Every name `-k` accepts and the mode it runs; Rust sees only the mode.
# gunicorn's sync and gthread both run as thread mode: a pool of --threads
# threads (sync's one-request-at-a-time is never what a deployer wants here).
WORKER_CLASSES = {"sync": "thread", "gthread": "thread", "thread": "thread", "gevent": "gevent"}
# gunicorn's other spellings of them (`worker_class = "gunicorn.workers..."`
# in config files), taken as the mode each is (listed in no choice).
GUNICORN_WORKER_CLASSES = {
    "gunicorn.workers.sync.syncworker": "thread",
    "gunicorn.workers.gthread.threadworker": "thread",
    "gunicorn.workers.ggevent.geventworker": "gevent",
    "gunicorn.workers.ggevent.geventpywsgiworker": "gevent",
    "egg:gunicorn#sync": "thread",
    "egg:gunicorn#gthread": "thread",
    "egg:gunicorn#gevent": "gevent",
    "gevent_pywsgi": "gevent",
    "gevent_wsgi": "gevent",
}

# Log levels, canonical names first; Rust sees only the canonical ones.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Names other servers' configs use (uvicorn's trace, syslog's notice, Python's
# fatal), which gunicorn takes (as info: it takes any name); a name of none is refused.
LOG_LEVEL_ALIASES = {
    "warn": "warning",
    "trace": "debug",
    "notice": "info",
    "fatal": "critical",
    "crit": "critical",
    "err": "error",
}

PROXY_PROTOCOL_MODES = ("off", "v1", "v2", "auto")
_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}

# What a setting that is accepted but not applied yet says (the CLI warns when it is set).
NOT_YET = "not applied yet"


# The largest integer a setting takes: what Rust's 64-bit fields hold.
_MAX_INT = 2**63 - 1
# The most workers or threads of one kind: more than any system starts.
_MAX_COUNT = 100_000


def _int_from(minimum: int, maximum: int = _MAX_INT) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise ValueError(f"{text} is less than {minimum}")
        if value > maximum:
            raise ValueError(f"{text} is more than {maximum}")
        return value

    parse.__name__ = "int"
    return parse


_positive_int = _int_from(1)
_non_negative_int = _int_from(0)
_count = _int_from(1, _MAX_COUNT)
_count_or_zero = _int_from(0, _MAX_COUNT)
_backlog = _int_from(1, 2**31 - 1)  # listen(2) takes an int


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if value < 0 or value != value:
        raise ValueError(f"{text} is not a number of seconds")
    return value


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise ValueError(f"{text!r} is not true or false")


def _worker_class(text: str) -> str:
    name = text.strip().lower()
    mode = WORKER_CLASSES.get(name) or GUNICORN_WORKER_CLASSES.get(name)
    if mode is None:
        choices = ", ".join(WORKER_CLASSES)
        raise ValueError(f"{text!r} is not a worker class (choose from {choices})")
    return mode


def _log_level(text: str) -> str:
    name = text.strip().lower()
    name = LOG_LEVEL_ALIASES.get(name, name)
    if name not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not a log level (choose from {', '.join(LOG_LEVELS)})")
    return name


def _umask(text: str) -> int:
    """gunicorn's ``int(value, 0)``, plus the octal ``0022`` that Python 3 refuses there."""
    try:
        value = int(text, 0)
    except ValueError:
        try:
            value = int(text, 8)
        except ValueError:
            raise ValueError(f"{text!r} is not a umask (e.g. 0o022)") from None
    if not 0 <= value <= 0o777:
        raise ValueError(f"{text!r} is not a umask from 0 to 0o777")
    return value


def _proxy_protocol(text: str) -> str:
    """gunicorn's modes; true/false (an older gunicorn's flag) mean auto/off."""
    word = text.strip().lower()
    if word in PROXY_PROTOCOL_MODES:
        return word
    if word in _TRUE | _FALSE:
        return "auto" if word in _TRUE else "off"
    raise ValueError(f"{text!r} is not a PROXY protocol mode ({', '.join(PROXY_PROTOCOL_MODES)})")


def _header_names(value: str | list[str] | tuple[str, ...]) -> str:
    """A comma-separated list of header names, upper-cased, as gunicorn keeps them."""
    if not isinstance(value, (str, list, tuple)):
        raise ValueError(f"{value!r} is not a list of header names")
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    names = [n.strip().upper() for n in items if n.strip()]
    for name in names:
        if name != "*" and not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
            raise ValueError(f"{name!r} is not a header name")
    return ",".join(names)


def _addresses(value: str | list[str] | tuple[str, ...]) -> str:
    """An address list as the server parses it: IPs, CIDR networks, '*'; comma-separated,
    or a list of them (from a config file, as gunicorn takes it)."""
    from siesta._siesta import check_addresses

    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    check_addresses(text)
    return text


def _statsd_host(text: str) -> str:
    """HOST:PORT, HOST or unix://PATH, as the server parses it."""
    from siesta._siesta import check_statsd_host

    check_statsd_host(str(text))
    return str(text)


def _stdout_or_path(text: str) -> str:
    """An access log path; '/dev/stdout' is '-', the stream itself, which works where
    opening /dev/stdout fails (stdout a socket: journald under systemd)."""
    return "-" if str(text) == "/dev/stdout" else str(text)


def _header_values(value: str | dict[str, str]) -> dict[str, str]:
    """A dict of header name to value (from a config file), or ``NAME=VALUE,NAME=VALUE``."""
    if isinstance(value, dict):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        items = []
        for part in filter(str.strip, str(value).split(",")):
            name, sep, val = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{part.strip()!r} is not NAME=VALUE")
            items.append((name, val))
    return {k.strip().upper(): v.strip() for k, v in items}


def _mount_point(text: str) -> str:
    """``--root-path``/``SCRIPT_NAME``: a path from the root (PEP 3333: SCRIPT_NAME is
    empty or starts with ``/``), so ``app`` is ``/app``."""
    text = text.strip()
    return f"/{text}" if text and not text.startswith("/") else text


def _env_item(text: str) -> str:
    """One ``-e``/``raw_env`` item: ``KEY=VALUE`` with a non-empty KEY."""
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{text!r} is not KEY=VALUE")
    return text


# Types handed a config file's value as it is (a list, a dict), not its str().
_TAKES_OBJECTS = (_addresses, _header_values, _header_names)


_FIELDS = (
    "name flags default help type append flag metavar env file rust default_env pending cli_extra"
    " env_form"
)
# Defaults from `type` on: str, not a list, not a flag, no metavar, read from the
# environment and from a config file, not sent to Rust, no default_env, applied,
# no more argparse keywords.
_DEFAULTS = (str, False, False, None, True, True, False, None, "", MappingProxyType({}), "{}")


class Setting(namedtuple("Setting", _FIELDS, defaults=_DEFAULTS)):
    """One option: how it is spelled, parsed, defaulted and explained.

    ``rust``: sent to the Rust core (``for_rust``); the Rust ``Config`` reads
    exactly these fields (src/config.rs). ``default_env``: an environment
    variable (gunicorn's, e.g. WEB_CONCURRENCY) that, when set, replaces the
    default, written into ``env_form`` (``PORT`` is the bind ``0.0.0.0:$PORT``,
    as gunicorn reads it). ``pending``: why a value other than the default is not applied
    yet; the CLI warns when one is set. Empty once Siesta does what the
    option says. ``cli_extra``: more keywords for argparse's ``add_argument``.
    A named tuple: immutable, without importing ``dataclasses``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Setting({self.name!r})"

    @property
    def env_name(self) -> str:
        return "SIESTA_" + self.name.upper()

    def convert(self, value: Any, source: str, whole: bool = False) -> Any:
        """Parses a value from a config file (``whole``: a string is one item of a
        list, as gunicorn takes it) or the environment.

        None (``os.environ.get(...)`` of an unset variable, say) is a value
        where the default is None, and, as gunicorn's validators take it,
        false for a flag, an empty list for a list and an empty address list
        (trust nobody). Elsewhere (numbers, names) it is refused, as gunicorn
        refuses it, rather than reaching Rust as a hole in a typed field."""
        try:
            if value is None:
                if self.default is None:
                    return None
                if self.flag:
                    return False
                if self.append and self.name != "bind":  # no address is not a server
                    return []
                if self.type is _addresses:
                    return self.type("")
                if self.name == "error_logfile":
                    # `errorlog = os.environ.get("ERROR_LOG")`, unset: gunicorn
                    # starts, and its warnings reach stderr.
                    return "-"
                raise ValueError("None is not allowed (leave it unset for the default)")
            if self.flag:
                return value if isinstance(value, bool) else _boolean(str(value))
            if self.append:
                if isinstance(value, str):
                    # A config file's string is one item, as gunicorn takes it
                    # (`raw_env = "OPTS=a=1,b=2"`); a SIESTA_* variable's is a
                    # comma-separated list (an environment has no lists).
                    items = [value] if whole else value.split(",")
                elif isinstance(value, dict) and self.type is _env_item:
                    items = [f"{k}={v}" for k, v in value.items()]
                elif isinstance(value, (list, tuple)):
                    items = list(value)
                    if self.type is _env_item:
                        # `raw_env = ["A=1", ""]`: an item that is not KEY=VALUE,
                        # refused as gunicorn refuses it, not dropped unsaid.
                        return [self.type(str(v).strip()) for v in items]
                else:
                    raise ValueError(f"{value!r} is not a list or a comma-separated string")
                return [self.type(str(v).strip()) for v in items if str(v).strip()]
            if self.type in _TAKES_OBJECTS:
                return self.type(value)
            return self.type(str(value))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.name} from {source}: {exc}") from None

    def initial(self, environ: Mapping[str, str]) -> Any:
        """The default, or the value of ``default_env`` when that is set (even
        empty, as gunicorn reads it: ``FORWARDED_ALLOW_IPS=`` trusts nobody)."""
        if self.default_env and self.default_env in environ:
            value = self.env_form.format(environ[self.default_env])
            return self.convert(value, f"${self.default_env}")
        return self.default

    @property
    def help_text(self) -> str:
        """The help with what is not applied yet, for --help and the README."""
        return f"{self.help} ({self.pending}.)" if self.pending else self.help


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "config",
        ("-c", "--config"),
        None,
        "A Python config file whose module-level names set options, in Siesta's or "
        "gunicorn's names (a gunicorn.conf.py works as is, server hooks included); "
        "python:MODULE names a module instead. Without -c, ./gunicorn.conf.py is read "
        "when present, as gunicorn does. Lowest precedence after the defaults.",
        metavar="FILE",
        file=False,
    ),
    Setting(
        "bind",
        ("-b", "--bind"),
        ["127.0.0.1:8000"],
        "Address to listen on: HOST:PORT, [V6]:PORT, unix:PATH or fd://N. Repeat for more; "
        "port 0 picks a free port. With $PORT set (a platform's port), the default is "
        "0.0.0.0:$PORT, as in gunicorn.",
        append=True,
        metavar="ADDRESS",
        rust=True,
        default_env="PORT",
        env_form="0.0.0.0:{}",
    ),
    Setting(
        "workers",
        ("-w", "--workers"),
        1,
        "Number of worker processes the master starts and keeps alive (TTIN/TTOU add or "
        "remove one); $WEB_CONCURRENCY, when set, is the default.",
        type=_count,
        metavar="INT",
        rust=True,
        default_env="WEB_CONCURRENCY",
    ),
    Setting(
        "worker_class",
        ("-k", "--worker-class"),
        "thread",
        "thread: a pool of --threads OS threads runs the app, wsgi.input waits with the "
        "GIL released; gunicorn's sync and gthread are accepted and run as thread "
        "(and gunicorn's class paths for them, and for gevent). "
        "gevent: one hub thread, every request a greenlet (pip install siesta[gevent]).",
        type=_worker_class,
        metavar="CLASS",
        rust=True,
    ),
    Setting(
        "threads",
        ("--threads",),
        8,
        "Python threads per worker in thread mode: at most this many run the app at once. "
        "A request waiting on the network (in wsgi.input or on a slow client) does not "
        "count: the pool grows for it, see --max-threads. 8 by default: measured on 2 "
        "cores, hello-world req/s and CPU per request are the same from 1 to 16 threads "
        "(one thread drives the I/O and runs the app while the others sleep).",
        type=_count,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "max_threads",
        ("--max-threads",),
        0,
        "Thread mode: most Python threads per worker. While requests wait on the network "
        "(in wsgi.input or on a slow client), each holding a thread, the pool starts more "
        "threads so that --threads stay free for the app; threads it has not needed for "
        "3 s leave, down to --threads. 0 derives it: four times --threads or --threads + "
        "128, whichever is more, at most 1024. --threads or less turns growth off. Past it, "
        "requests wait, then --queue-timeout sheds them.",
        type=_count_or_zero,
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
    ),
    Setting(
        "timeout",
        ("-t", "--timeout"),
        30.0,
        "Seconds a worker may stay silent (an app stuck in one request) before the master "
        "kills and replaces it, or take to boot (import the app; not with --reload) before "
        "it is killed and the boot counts as failed; 0 disables.",
        type=_seconds,
        metavar="SECONDS",
        rust=True,
    ),
    Setting(
        "max_requests",
        ("--max-requests",),
        0,
        "Requests a worker serves before it is replaced by a fresh one (a cap on leaks); "
        "0 disables.",
        type=_non_negative_int,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "max_requests_jitter",
        ("--max-requests-jitter",),
        0,
        "A random 0 to N added to --max-requests per worker, so workers do not all "
        "restart at once.",
        type=_non_negative_int,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "max_worker_rss",
        ("--max-worker-rss",),
        0,
        "Siesta's own: MiB of resident memory past which a worker is replaced after its "
        "current requests; a worker already over it when it booted is held to that much "
        "past what it booted with, with a warning; 0 disables.",
        type=_non_negative_int,
        metavar="MIB",
        rust=True,
    ),
    Setting(
        "backlog",
        ("--backlog",),
        2048,
        "Listen backlog: connections the kernel queues before Siesta accepts them.",
        type=_backlog,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "reuse_port",
        ("--reuse-port",),
        False,
        "Set SO_REUSEPORT on the listening sockets.",
        flag=True,
        rust=True,
    ),
    Setting(
        "keep_alive",
        ("--keep-alive",),
        5.0,
        "Seconds a keep-alive connection may idle between a response and the first byte "
        "of its next request head (which then has --header-timeout); 0: none, every "
        "response says Connection: close.",
        type=_seconds,
        metavar="SECONDS",
        rust=True,
    ),
    Setting(
        "header_timeout",
        ("--header-timeout",),
        30.0,
        "Seconds a client has to send a complete request head, counted from its first "
        "byte (from the connection's accept for its first request); then the connection "
        "closes, after a 408 if nothing was sent on it before (a connection that sent "
        "nothing is closed quietly). "
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
        "siesta.ClientTimeout, and a response waits for the client to take a byte before "
        "its connection is reset; 0 waits forever.",
        type=_seconds,
        metavar="SECONDS",
        rust=True,
    ),
    Setting(
        "limit_request_body",
        ("--limit-request-body",),
        0,
        "Largest request body in bytes; 0 is unlimited. A larger Content-Length is "
        "answered 413 before the app runs (no 100 Continue, no body byte read); a chunked "
        "body that grows past it makes wsgi.input raise siesta.RequestTooLarge (413 if "
        "the app lets it propagate). The app may still refuse smaller bodies itself.",
        type=_non_negative_int,
        metavar="BYTES",
        rust=True,
    ),
    Setting(
        "queue_timeout",
        ("--queue-timeout",),
        30.0,
        "Seconds a request may wait for a free thread (thread mode) or greenlet slot "
        "(gevent mode) before Siesta answers 503 with Retry-After (load shedding); "
        "0 waits forever.",
        type=_seconds,
        metavar="SECONDS",
        rust=True,
    ),
    Setting(
        "max_connections",
        ("--max-connections",),
        10000,
        "Connections one worker serves at once; more wait in the kernel's listen "
        "backlog until one closes.",
        type=_positive_int,
        metavar="INT",
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
        type=_count_or_zero,
        metavar="INT",
        rust=True,
    ),
    Setting(
        "root_path",
        ("--root-path",),
        "",
        "Mount point of the app: stripped from PATH_INFO and set as SCRIPT_NAME "
        "(a SCRIPT_NAME environment variable sets it too, as does one set by -e/raw_env).",
        type=_mount_point,
        metavar="PREFIX",
        rust=True,
    ),
    Setting(
        "forwarded_allow_ips",
        ("--forwarded-allow-ips",),
        "127.0.0.1,::1",
        "Comma-separated proxy addresses or networks (10.0.0.0/8) trusted to set "
        "wsgi.url_scheme through --secure-scheme-headers or Forwarded: proto=; '*' trusts "
        "all, '' none. Connections on a unix socket are always trusted, as in gunicorn. "
        "$FORWARDED_ALLOW_IPS, when set, is the default.",
        type=_addresses,
        metavar="ADDRESSES",
        default_env="FORWARDED_ALLOW_IPS",
        rust=True,
    ),
    Setting(
        "secure_scheme_headers",
        ("--secure-scheme-headers",),
        {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"},
        "Headers and values by which a trusted proxy says the request came over HTTPS: "
        "NAME=VALUE,NAME=VALUE (a dict in a config file). Headers that disagree get 400; "
        "when none is present, RFC 7239 Forwarded: proto= decides. Empty turns both off.",
        type=_header_values,
        metavar="NAME=VALUE,...",
        rust=True,
    ),
    Setting(
        "forwarder_headers",
        ("--forwarder-headers",),
        "SCRIPT_NAME,PATH_INFO",
        "Headers a trusted proxy (--forwarded-allow-ips) may set for the environ, gunicorn's "
        "setting: with SCRIPT_NAME in the list, its SCRIPT_NAME header mounts the request "
        "under that prefix (PATH_INFO is the path past it). Empty trusts none; other names "
        "change nothing (their headers are dropped, as every header with an underscore is).",
        type=_header_names,
        metavar="NAME,...",
        rust=True,
    ),
    Setting(
        "proxy_protocol",
        ("--proxy-protocol",),
        "off",
        "Require a PROXY protocol header (HAProxy send-proxy, nginx proxy_protocol) at the "
        "start of every connection: off, v1, v2 or auto (either; the flag alone means "
        "auto). REMOTE_ADDR/REMOTE_PORT come from it, and a v2 SSL TLV makes "
        "wsgi.url_scheme https. A connection without a valid one, or from outside "
        "--proxy-allow-from, is closed unanswered.",
        type=_proxy_protocol,
        metavar="MODE",
        rust=True,
        cli_extra={"nargs": "?", "const": "auto"},
    ),
    Setting(
        "proxy_allow_from",
        ("--proxy-allow-from",),
        "127.0.0.1,::1",
        "Comma-separated addresses or networks allowed to connect when --proxy-protocol is "
        "on; '*' allows all.",
        type=_addresses,
        metavar="ADDRESSES",
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
        "Set an environment variable for the app: KEY=VALUE. Repeat for more (in a "
        "config file, a list of KEY=VALUE strings, or a dict).",
        type=_env_item,
        append=True,
        metavar="KEY=VALUE",
    ),
    Setting(
        "preload_app",
        ("--preload",),
        False,
        "Import the app in the master before the workers are forked, so they share its "
        "memory (a HUP then does not reload the app's code).",
        flag=True,
    ),
    Setting(
        "reload",
        ("--reload",),
        False,
        "Restart workers when the app's code changes (development only): each worker "
        "checks the files of its imported modules every second and, when one changed, "
        "stops gracefully so the master starts a fresh one. If the changed code then fails "
        "to load, the error is logged and the worker answers every request with 500 while "
        "it watches (the failing files too); the next change loads the app again. A load "
        "that fails at the first start still exits 4. Ignores --preload.",
        flag=True,
        rust=True,
    ),
    Setting(
        "daemon",
        ("-D", "--daemon"),
        False,
        "Detach from the terminal and run in the background.",
        flag=True,
        rust=True,
    ),
    Setting(
        "pid",
        ("-p", "--pid"),
        None,
        "Write the process id to this file at start and remove it at exit.",
        metavar="FILE",
    ),
    Setting(
        "user",
        ("-u", "--user"),
        None,
        "Run workers as this user (name or uid; a uid need not be in the user "
        "database); unset keeps the current one. The master keeps its own.",
        metavar="USER",
    ),
    Setting(
        "group",
        ("-g", "--group"),
        None,
        "Run workers as this group (name or gid; a gid need not be in the group "
        "database). Unset: with -u, that user's primary group (gunicorn keeps the "
        "current one); else, or for a uid with no entry, the current one.",
        metavar="GROUP",
    ),
    Setting(
        "initgroups",
        ("--initgroups",),
        False,
        "With -u, give workers the user's supplementary groups (from /etc/group); "
        "otherwise a worker that switches user has none but -g's.",
        flag=True,
    ),
    Setting(
        "umask",
        ("-m", "--umask"),
        0,
        "File mode mask for the unix sockets Siesta binds (their mode is 0777 less it), "
        "as int(value, 0): 0o007, 0x7 or 7. Everything else (the app's files, the logs, "
        "the pid file) keeps the process umask.",
        type=_umask,
        metavar="INT",
    ),
    Setting(
        "name",
        ("-n", "--name"),
        None,
        "Process name shown by ps and top: 'siesta: master [NAME]', "
        "'siesta: worker [NAME]'; the app's name when unset.",
        metavar="STRING",
    ),
    Setting(
        "worker_tmp_dir",
        ("--worker-tmp-dir",),
        None,
        "Directory for the workers' heartbeat files (unlinked at once; the master reads "
        "their modification time for --timeout). Unset: the system's temporary "
        "directory; /dev/shm avoids disk writes.",
        metavar="DIR",
        rust=True,
    ),
    Setting(
        "log_level",
        ("--log-level",),
        "info",
        "Error log level: debug, info, warning, error, critical (or warn, trace, notice, fatal).",
        type=_log_level,
        metavar="LEVEL",
        rust=True,
    ),
    Setting(
        "error_logfile",
        ("--error-logfile", "--log-file"),
        "-",
        "Error log file; '-' (or /dev/stderr) is stderr; /dev/stdout is stdout itself.",
        metavar="FILE",
        rust=True,
    ),
    Setting(
        "access_logfile",
        ("--access-logfile",),
        None,
        "Access log file; '-' (or /dev/stdout) is stdout, /dev/stderr is stderr itself. "
        "No access log when unset.",
        type=_stdout_or_path,
        metavar="FILE",
        rust=True,
    ),
    Setting(
        "access_logformat",
        ("--access-logformat",),
        ACCESS_LOG_FORMAT,
        "Access log line, with gunicorn's atoms: h l u t r m U q H s B b f a T M D L p, "
        "%%({header}i)s (request header), %%({header}o)s (response header) and "
        "%%({VARIABLE}e)s (environ variable: REQUEST_METHOD, SCRIPT_NAME, PATH_INFO, "
        "QUERY_STRING, RAW_URI, REQUEST_URI, SERVER_PROTOCOL, REMOTE_ADDR, REMOTE_PORT, "
        "CONTENT_TYPE, CONTENT_LENGTH, HTTP_*); %%%% is %%. Python's conversion specs "
        "apply: %%(h)-15s, %%(a).40s, %%(D)08d. An unknown atom is logged as - and warned "
        "about at startup.",
        metavar="FORMAT",
        rust=True,
    ),
    Setting(
        "capture_output",
        ("--capture-output",),
        False,
        "Send the app's stdout and stderr to --error-logfile (when it is a file); USR1 "
        "points them at the reopened file, in the master and every worker.",
        flag=True,
        rust=True,
    ),
    Setting(
        "metrics_bind",
        ("--metrics-bind",),
        None,
        "Siesta's own observability endpoint, off when unset: HOST:PORT or unix:PATH. A "
        "process of its own (not the app) serves /metrics (Prometheus), /status (a live "
        "page of every worker and in-flight request, parked uploads with their progress), "
        "/status.json, /healthz and /readyz, aggregated over the workers and answering "
        "while every app thread is busy.",
        metavar="ADDRESS",
        rust=True,
    ),
    Setting(
        "slow_upload_rate",
        ("--slow-upload-rate",),
        1024,
        "Bytes per second under which a request body counts as a slow upload "
        "(siesta_slow_uploads_total, and flagged on /status); 0 disables.",
        type=_non_negative_int,
        metavar="BYTES",
        rust=True,
    ),
    Setting(
        "statsd_host",
        ("--statsd-host",),
        None,
        "StatsD server to send gunicorn's metrics to (gunicorn.requests, "
        "gunicorn.request.duration, gunicorn.request.status.CODE, gunicorn.workers, "
        "gunicorn.log.LEVEL, with an app's exception as gunicorn.log.exception): "
        "HOST:PORT, HOST (port 8125) or unix://PATH.",
        type=_statsd_host,
        metavar="ADDRESS",
        rust=True,
    ),
    Setting(
        "statsd_prefix",
        ("--statsd-prefix",),
        "",
        "Prefix of the StatsD metric names (a dot is added when missing).",
        metavar="PREFIX",
        rust=True,
    ),
    Setting(
        "check_config",
        ("--check-config",),
        False,
        "Check the settings and that the app loads, then exit.",
        flag=True,
        env=False,
    ),
    Setting(
        "print_config",
        ("--print-config",),
        False,
        "Print the settings in force, then exit.",
        flag=True,
        env=False,
    ),
)

BY_NAME = {s.name: s for s in SETTINGS}

# gunicorn's config-file names that differ from Siesta's, and those Siesta
# lacks. A name that is also Siesta's (bind, workers, timeout, ...) needs no
# entry. None: a gunicorn setting Siesta does not support (a config file that
# sets one gets a warning). A target missing from SETTINGS is one a build of
# Siesta may not have yet: the loader warns and ignores it.
GUNICORN_NAMES: dict[str, str | None] = {
    "wsgi_app": "app",
    "keepalive": "keep_alive",
    "accesslog": "access_logfile",
    "access_log_format": "access_logformat",
    "errorlog": "error_logfile",
    "loglevel": "log_level",
    "pidfile": "pid",
    "proc_name": "name",
    "proxy_allow_ips": "proxy_allow_from",
    "limit_request_line": "limit_request_line",
    "limit_request_fields": "limit_request_fields",
    "limit_request_field_size": "limit_request_field_size",
    # Not supported: TLS (terminate it in the proxy), other loggers, paste,
    # HTTP/2, ASGI, uWSGI protocol, gunicorn's dirty arbiters and control socket.
    **dict.fromkeys(
        (
            "reload_engine reload_extra_files spew sendfile tmp_upload_dir "
            "disable_redirect_access_to_syslog logger_class logconfig logconfig_dict "
            "logconfig_json syslog_addr syslog syslog_prefix syslog_facility "
            "enable_stdio_inheritance dogstatsd_tags enable_backlog_metric default_proc_name "
            "paste raw_paste_global_conf protocol uwsgi_allow_ips keyfile certfile ssl_version "
            "cert_reqs ca_certs suppress_ragged_eofs do_handshake_on_connect ciphers "
            "ssl_context http_protocols http2_cleartext http2_max_concurrent_streams "
            "http2_initial_window_size http2_max_frame_size http2_max_header_list_size "
            "permit_obsolete_folding strip_header_spaces permit_unconventional_http_method "
            "permit_unconventional_http_version casefold_http_method "
            "header_map asgi_loop asgi_lifespan asgi_disconnect_grace_period http_parser "
            "dirty_apps dirty_workers dirty_timeout dirty_threads dirty_graceful_timeout "
            "on_dirty_starting dirty_post_fork dirty_worker_init dirty_worker_exit "
            "control_socket control_socket_mode control_socket_disable websocket_max_message_size"
        ).split()
    ),
}


def for_rust(values: dict[str, Any]) -> dict[str, Any]:
    """The settings the Rust core reads (those marked ``rust=True``), as one dict."""
    return {s.name: values[s.name] for s in SETTINGS if s.rust}


def render(values: dict[str, Any], hooks: list[str] | tuple[str, ...] = ()) -> str:
    """``--print-config``: one ``name = value`` line per setting, sorted, then the hooks."""
    lines = [f"{'app':<24} = {values.get('app')!r}"]
    lines += [f"{s.name:<24} = {values[s.name]!r}" for s in sorted(SETTINGS, key=lambda s: s.name)]
    lines.append(f"{'hooks':<24} = {list(hooks)!r}")
    return "\n".join(lines)


def current(values: dict[str, Any], hooks: list[str] | tuple[str, ...] = ()) -> str:
    """``--log-level debug``'s start line (gunicorn's "Current configuration")."""
    lines = [f"  app: {values.get('app')}"]
    lines += [f"  {s.name}: {values[s.name]}" for s in SETTINGS]
    lines.append(f"  hooks: {', '.join(hooks)}")
    return "Current configuration:\n" + "\n".join(lines)


def _shown_default(s: Setting) -> str:
    if s.default is None or s.default is False or s.default in ([], "", {}):
        default = ""
    elif isinstance(s.default, list):
        default = f"`{','.join(s.default)}`"
    elif isinstance(s.default, dict):
        default = f"`{','.join(f'{k}={v}' for k, v in s.default.items())}`"
    else:
        default = f"`{s.default}`"
    if s.default_env:
        default = f"`{s.env_form.format('$' + s.default_env)}` or {default}"
    return default


def markdown_table() -> str:
    """The README's options table, made from the settings table (``python -m siesta.config``)."""
    rows = ["| Option | Environment | Default | What it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        flags = ", ".join(f"`{f}`" for f in s.flags)
        env = f"`{s.env_name}`" if s.env else ""
        text = s.help_text.replace("|", "\\|").replace("%%", "%")
        rows.append(f"| {flags} | {env} | {_shown_default(s)} | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
