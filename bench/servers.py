"""Every server the benchmark runs, how to start it on 127.0.0.1, and how to stop it.

One `Spec` per server: its command line for a given port and worker count, and
whether it reports its own port. Servers that take port 0 print a ready line we
read from their log file (Siesta's `Listening at: http://HOST:PORT (PID)`,
gunicorn's same line, waitress's `Serving on`); the others get a free port from
a fixed high range and we connect until they answer. Every start ends with one
`GET /` that must return `Hello, world!`. All use 1 worker and 8 app threads
unless the server has no threads (bjoern, meinheld, the gevent workers).
Stopping sends SIGTERM to the PID we started, then SIGKILL to the tree we saw.
"""

import os
import random
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

from procs import start_time, tree_pids

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PEERS_BIN = os.path.join(BENCH, ".venv-peers", "bin")
SIESTA = os.path.join(REPO, ".venv", "bin", "siesta")
HYPER = os.path.join(BENCH, "hyper-hello", "target", "release", "hyper-hello")
THREADS = 8
KEEP_ALIVE = 75  # seconds, where configurable: S8 holds idle connections for a while
READY_TIMEOUT = 30.0
PORT_RANGE = (20000, 29999)
BODY_LIMIT = 2**31 - 1  # raised where a server's default (waitress 1 GiB, meinheld 16 MiB) stops S3

LISTENING = re.compile(r"Listening at: http://[\d.]+:(\d+)")
WAITRESS_READY = re.compile(r"Serving on http://[\d.]+:(\d+)")


class ServerFailed(Exception):
    """A server did not start, or did not answer the hello check."""


@dataclass
class Spec:
    """How to run one server; `argv(port, workers)` builds its command line."""

    name: str
    argv: object
    ready: object = None  # regex on the log naming the port; None = fixed port + connect
    max_workers: int = 1
    scenarios: str = "S1 S2 S3 S4 S5 S6 S7 S8"
    note: str = ""
    needs: list = field(default_factory=list)  # files that must exist
    # Options added in one scenario only, e.g. {"S7": ["--header-timeout", "4"]}.
    scenario_args: dict = field(default_factory=dict)


def _peer(name):
    return os.path.join(PEERS_BIN, name)


# Both gevent servers get room for S6's 1000 parked uploads plus the hello
# load (the default 1000 would leave none, and new requests would wait).
GEVENT_CONNECTIONS = 2000


def _siesta(kind, metrics=False):
    def argv(port, workers):
        extra = ["--worker-connections", str(GEVENT_CONNECTIONS)] if kind == "gevent" else []
        if metrics:  # Siesta's own metrics on (its endpoint is not scraped during the run)
            extra += ["--metrics-bind", "127.0.0.1:0"]
        return [
            SIESTA,
            "-k",
            kind,
            *extra,
            "--threads",
            str(THREADS),
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--keep-alive",
            str(KEEP_ALIVE),
            "--chdir",
            BENCH,
            "app:app",
        ]

    return argv


# S7: Siesta's own defence against slowloris, set as a deployer would.
SIESTA_S7 = ["--header-timeout", "4"]


def _gunicorn(kind):
    def argv(port, workers):
        extra = (
            ["--threads", str(THREADS)]
            if kind == "gthread"
            else ["--worker-connections", str(GEVENT_CONNECTIONS)]
        )
        return [
            _peer("gunicorn"),
            "-k",
            kind,
            *extra,
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--keep-alive",
            str(KEEP_ALIVE),
            "--no-control-socket",
            "--chdir",
            BENCH,
            "app:app",
        ]

    return argv


def _granian(port, workers):
    return [
        _peer("granian"),
        "--interface",
        "wsgi",
        "--http",
        "1",
        "--no-ws",
        "--workers",
        str(workers),
        "--runtime-threads",
        "1",
        "--blocking-threads",
        str(THREADS),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--working-dir",
        BENCH,
        "app:app",
    ]


def _waitress(port, _workers):
    return [
        _peer("waitress-serve"),
        "--threads",
        str(THREADS),
        f"--max-request-body-size={BODY_LIMIT}",
        "--listen",
        f"127.0.0.1:{port}",
        "app:app",
    ]


def _uwsgi(port, workers):
    return [
        _peer("uwsgi"),
        "--http11-socket",
        f"127.0.0.1:{port}",
        "--wsgi-file",
        os.path.join(BENCH, "app.py"),
        "--callable",
        "app",
        "--master",
        "--processes",
        str(workers),
        "--threads",
        str(THREADS),
        "--disable-logging",
        "--die-on-term",
    ]


def _launch(server):
    def argv(port, _workers):
        return [_peer("python"), os.path.join(BENCH, "launch.py"), server, str(port), str(THREADS)]

    return argv


def _hyper(max_buf_size=None):
    def argv(port, workers):
        bound = ["--max-buf-size", str(max_buf_size)] if max_buf_size else []
        return [HYPER, "--bind", f"127.0.0.1:{port}", "--threads", str(workers), *bound]

    return argv


SPECS = [
    Spec(
        "siesta-thread",
        _siesta("thread"),
        LISTENING,
        2,
        scenarios="S1 S2 S3 S4 S5 S6 S7 S8 S9",
        needs=[SIESTA],
        scenario_args={"S7": SIESTA_S7},
    ),
    Spec(
        "siesta-gevent",
        _siesta("gevent"),
        LISTENING,
        2,
        scenarios="S1 S2 S3 S4 S5 S6 S7 S8 S9",
        note=f"{GEVENT_CONNECTIONS} worker connections",
        needs=[SIESTA],
        scenario_args={"S7": SIESTA_S7},
    ),
    Spec(
        "siesta-thread-metrics",
        _siesta("thread", metrics=True),
        LISTENING,
        2,
        scenarios="S1 S10",
        note="--metrics-bind on: the cost of the metrics beside siesta-thread",
        needs=[SIESTA],
    ),
    Spec(
        "siesta-gevent-metrics",
        _siesta("gevent", metrics=True),
        LISTENING,
        2,
        scenarios="S1 S10",
        note="--metrics-bind on: the cost of the metrics beside siesta-gevent",
        needs=[SIESTA],
    ),
    Spec(
        "hyper-hello",
        _hyper(),
        LISTENING,
        2,
        scenarios="S1 S2 S3 S4 S8",
        note="pure Rust ceiling, hyper's defaults (reads up to about 400 KiB of a body "
        "ahead); workers = tokio threads",
        needs=[HYPER],
    ),
    Spec(
        "hyper-64k",
        _hyper(64 * 1024),
        LISTENING,
        1,
        scenarios="S2 S3 S4",
        note="pure Rust ceiling with hyper's buffer bound at Siesta's 64 KiB read-ahead",
        needs=[HYPER],
    ),
    Spec(
        "gunicorn-gthread",
        _gunicorn("gthread"),
        LISTENING,
        2,
        scenarios="S1 S2 S3 S4 S5 S6 S7 S8 S9",
        needs=[_peer("gunicorn")],
    ),
    Spec(
        "gunicorn-gevent",
        _gunicorn("gevent"),
        LISTENING,
        2,
        scenarios="S1 S2 S3 S4 S5 S6 S7 S8 S9",
        note=f"{GEVENT_CONNECTIONS} worker connections",
        needs=[_peer("gunicorn")],
    ),
    Spec(
        "granian",
        _granian,
        None,
        2,
        note="--interface wsgi, 1 runtime thread",
        needs=[_peer("granian")],
    ),
    Spec(
        "waitress",
        _waitress,
        WAITRESS_READY,
        1,
        note="single process; connection_limit 100 (default); body limit raised to 2 GiB",
        needs=[_peer("waitress-serve")],
    ),
    Spec("uwsgi", _uwsgi, None, 2, note="--http11-socket, --master", needs=[_peer("uwsgi")]),
    Spec(
        "bjoern",
        _launch("bjoern"),
        LISTENING,
        1,
        note="one thread, no thread option",
        needs=[_peer("python")],
    ),
    Spec(
        "meinheld",
        _launch("meinheld"),
        LISTENING,
        1,
        note="installed --no-deps over greenlet 3; body limit raised to 2 GiB",
        needs=[_peer("python")],
    ),
    Spec(
        "pyruvate", _launch("pyruvate"), None, 1, note="8 worker threads", needs=[_peer("python")]
    ),
]


def free_port():
    """A port from the fixed high range that nothing listens on right now."""
    start = random.randint(*PORT_RANGE)
    span = PORT_RANGE[1] - PORT_RANGE[0] + 1
    for step in range(200):
        port = PORT_RANGE[0] + (start - PORT_RANGE[0] + step * 7) % span
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise ServerFailed("no free port in the fixed range")


def hello_check(port, timeout=5.0):
    """One GET / on a fresh connection; raises ServerFailed unless it says hello."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"Hello, world!" in data:
                    break
    except OSError as error:
        raise ServerFailed(f"hello check: {error}") from error
    if not data.startswith(b"HTTP/1.") or b"Hello, world!" not in data:
        raise ServerFailed(f"hello check: unexpected answer {data[:120]!r}")


def _pinning():
    """CPU sets for the server and the load (wrk, client.py, this runner).

    On 2 or more cores the server gets the first half and the load the rest,
    so the two never fight over a core and per-request CPU figures are the
    server's alone; `SIESTA_BENCH_PIN=off` turns it off.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if os.environ.get("SIESTA_BENCH_PIN") == "off" or len(cpus) < 2:
        return None, None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


SERVER_CPUS, LOAD_CPUS = _pinning()


def pin_load():
    """Pins the calling process (and what it starts from now on) to the load CPUs."""
    if LOAD_CPUS:
        os.sched_setaffinity(0, LOAD_CPUS)


def _pin_server():
    if SERVER_CPUS:
        os.sched_setaffinity(0, SERVER_CPUS)


def _with_extra(argv, extra):
    """`extra` options placed before the last argument (the app)."""
    return [*argv[:-1], *extra, *argv[-1:]] if extra else argv


class Running:
    """A started server: its PID, port and log file; `stop()` is idempotent."""

    def __init__(self, spec, workers, log_path, extra=()):
        self.spec = spec
        self.workers = workers
        self.log_path = log_path
        self.port = 0 if spec.ready else free_port()
        self._log = open(log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            _with_extra(spec.argv(self.port, workers), extra),
            cwd=BENCH,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_pin_server,
        )
        self.pid = self.proc.pid
        self._seen = {}  # pid -> start time, so a recycled PID is never signalled
        try:
            self._wait_ready()
            hello_check(self.port)
        except ServerFailed:
            self.stop()
            raise
        self.remember_tree()

    def _log_tail(self):
        try:
            with open(self.log_path, "rb") as handle:
                lines = handle.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-3:])[-300:]

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"exited with {self.proc.returncode}: {self._log_tail()}")
            if self.spec.ready:
                with open(self.log_path, "rb") as handle:
                    match = self.spec.ready.search(handle.read().decode(errors="replace"))
                if match:
                    self.port = int(match.group(1))
                    return
            else:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        raise ServerFailed(f"not ready within {READY_TIMEOUT:.0f} s: {self._log_tail()}")

    def remember_tree(self):
        """Record the tree's PIDs now, so stop() can reach workers after the master exits."""
        for pid in tree_pids(self.pid):
            self._seen.setdefault(pid, start_time(pid))

    def alive(self):
        return self.proc.poll() is None

    def stop(self, grace=8.0):
        if self.proc.poll() is None:
            self.remember_tree()
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        for pid, started in sorted(self._seen.items()):
            if started is not None and start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
