"""Issue 13: the master/worker process model against real processes and real signals.

Each test starts a real `siesta` master (tests/siesta_process.py does the
process handling; `Master` below adds the binds, descriptors and wrappers the
process tests need), sends it gunicorn's signals, and checks what a deployer
sees: requests answered, worker pids replaced, log lines, exit codes, files.
No test asserts a timing; every wait is bounded, and every process started
here is stopped by its pid.
"""

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rawhttp
from observe import get, metrics_url, scrape, status, value
from siesta_process import (
    wait_until,
    APPS_DIR,
    READY_TIMEOUT,
    RECORD_ENV,
    SIESTA,
    LogDrain,
    SiestaServer,
    children,
    clean_env,
    refused,
    run_siesta,
    running,
)

APP = "supervisor_app:app"
READY = re.compile(r"Listening at: (\S+) \((\d+)\)")
# Bounds for the waits below: generous, because the machine is shared.
WAIT = 20.0


class Master(SiestaServer):
    """A siesta master with the test's own binds, environment, descriptors or launcher.

    `bind` replaces the harness's 127.0.0.1:0 (None: no -b at all, for
    LISTEN_FDS); `path` is where the app is imported from (empty: from `cwd`,
    with no --chdir); `launcher` is an
    argv prefix that ends by exec'ing the siesta command (its pid is then
    the master's); `cwd` is where it starts; `log_file` is where the ready line
    is looked for when it is not stderr (--error-logfile)."""

    def __init__(
        self,
        args,
        mode,
        record_dir,
        *,
        app=APP,
        bind="127.0.0.1:0",
        path=(APPS_DIR,),
        env=None,
        pass_fds=(),
        launcher=(),
        cwd=APPS_DIR,
        log_file=None,
    ):
        self.app, self.args, self.mode = app, list(args), mode
        self.record_dir = Path(record_dir)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*launcher, str(SIESTA), "-k", mode]
        if path:  # none: the app is imported from where the master starts
            cmd += ["--chdir", str(path[0]), "--pythonpath", ",".join(str(p) for p in path)]
        if bind is not None:
            cmd += ["--bind", bind]
        if mode == "thread" and not any(a.startswith("--threads") for a in self.args):
            cmd += ["--threads", "4"]
        self.cmd = cmd + self.args + [app]
        full_env = clean_env()
        full_env.update({RECORD_ENV: str(self.record_dir), "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=str(cwd),
            pass_fds=pass_fds,
        )
        self.stderr = LogDrain(self.proc.stderr, "siesta-stderr")
        self.stdout = LogDrain(self.proc.stdout, "siesta-stdout")
        if log_file is None:
            match = self.stderr.wait_for(READY.pattern, READY_TIMEOUT)
        else:
            match = wait_until(
                lambda: log_file.exists() and READY.search(log_file.read_text()),
                timeout=READY_TIMEOUT,
            )
        if match is None:
            self.stop()
            pytest.fail(f"no ready line; cmd: {self.cmd}\nstderr:\n{self.stderr.text()}")
        self.url_seen, self.pid = match.group(1), int(match.group(2))
        tcp = re.match(r"http://([\d.]+):(\d+)$", self.url_seen)
        self.host, self.port = (tcp.group(1), int(tcp.group(2))) if tcp else (None, None)
        flags = zip(self.args, self.args[1:], strict=False)
        self.workers = next((int(a) for p, a in flags if p in ("-w", "--workers")), 1)

    def signal(self, sig):
        os.kill(self.pid, sig)

    def exit_code(self, timeout=WAIT):
        """The master's exit code once it ends by itself (bounded), with its last log
        lines read (the drain thread may be behind the exit: a flake, session 30)."""
        code = self.proc.wait(timeout)
        self.stderr.thread.join(5.0)
        return code

    def boots(self):
        return self.log().count("Booting worker with pid")

    def worker_pid(self):
        """The pid of the worker that answers a request."""
        resp = self.get("/pid")
        assert resp.status == 200, resp
        return int(resp.body)


@pytest.fixture
def launch(tmp_path):
    """Factory: launch(*args, mode=..., **kw) -> Master, stopped by its pid after the test."""
    started = []

    def start(*args, mode="thread", **kw):
        srv = Master(args, mode, tmp_path / f"records-{len(started)}", **kw)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def gone(pid):
    """True when `pid` no longer runs (exited, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def stop_pid(pid):
    """Stops a process that is not our child (a USR2 master, a daemon) by its pid: TERM,
    a bounded wait, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if gone(pid):
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        if wait_until(lambda: gone(pid), timeout=15.0):
            return sig == signal.SIGTERM
    return gone(pid)


def usr2(srv):
    """Sends USR2 to `srv`'s master: the new master's pid, once it said it started."""
    mark = srv.log_mark()
    srv.signal(signal.SIGUSR2)
    started = srv.wait_log(r"Started a new master \(pid: (\d+)\)", since=mark, timeout=WAIT)
    assert started, srv.log(mark)
    return int(started.group(1))


def new_workers(srv, old, count=None):
    """The master's workers once `count` of them are up and none is in `old` (bounded)."""
    count = srv.workers if count is None else count
    return wait_until(
        lambda: (p := children(srv.pid)) and len(p) == count and not set(p) & set(old) and p
    )


class Uploader(threading.Thread):
    """One client trickling a random body to /sha256: `head` bytes at once, then waits
    for `go` (when given), then the rest in `piece`-sized chunks `pause` seconds apart."""

    def __init__(self, srv, size, go=None, head=16 * 1024, piece=16 * 1024, pause=0.005):
        super().__init__(daemon=True)
        self.srv, self.go = srv, go
        self.body = os.urandom(size)
        self.head, self.piece, self.pause = head, piece, pause
        self.result = None
        self.error = None

    def run(self):
        try:
            with self.srv.connect(timeout=60.0) as conn:
                token = rawhttp.new_token()
                conn.send(
                    rawhttp.build_request(
                        "POST",
                        f"/upload?token={token}&chunk=8192",
                        [("Content-Length", str(len(self.body)))],
                    )
                )
                conn.send(self.body[: self.head])
                if self.go is not None:
                    assert self.go.wait(60.0), "never released"
                for i in range(self.head, len(self.body), self.piece):
                    conn.send(self.body[i : i + self.piece])
                    time.sleep(self.pause)
                self.result = conn.read_response()
        except Exception as exc:  # reported by the test
            self.error = exc

    def check(self):
        assert self.error is None, repr(self.error)
        assert self.result is not None and self.result.status == 200, self.result
        got = json.loads(self.result.body)
        assert got == {"size": len(self.body), "sha256": hashlib.sha256(self.body).hexdigest()}


class Looper(threading.Thread):
    """Requests `path` on fresh connections until told to stop (at most `limit` times,
    at most `seconds`); keeps every failure and the bodies seen. Bounded by time:
    a count of 20,000 ran out before a slow machine's fifth reload (session 24)."""

    def __init__(self, host, port, path="/", limit=10**9, seconds=120.0):
        super().__init__(daemon=True)
        self.host, self.port, self.path = host, port, path
        self.limit, self.seconds = limit, seconds
        self.halt = threading.Event()
        self.ok = 0
        self.failures = []
        self.bodies = set()

    def run(self):
        deadline = time.monotonic() + self.seconds
        for _ in range(self.limit):
            if self.halt.is_set() or time.monotonic() > deadline:
                return
            try:
                resp = rawhttp.request(self.host, self.port, "GET", self.path)
            except Exception as exc:
                self.failures.append(repr(exc))
                continue
            if resp.status == 200 and resp.complete:
                self.ok += 1
                self.bodies.add(resp.body)
            else:
                self.failures.append(f"{resp.status} {resp.body[:80]!r}")

    def finish(self):
        self.halt.set()
        self.join(WAIT)
        assert not self.is_alive(), "the request loop did not stop"


# --- 1. TERM drains in-flight uploads --------------------------------------------


def test_an_int_during_the_wait_for_a_slow_close_stops_the_worker_itself(launch, mode):
    """Review 2 (session 26): waiting for an app still running after its
    response, a worker read the stop's time once; an INT or QUIT after the TERM
    did not shorten it, so the master's SIGKILL ended the worker (worker_exit
    never ran) where it used to leave within its second."""
    srv = launch("--graceful-timeout", "30", app="router_app:app", mode=mode)
    resp = srv.get("/close/slower-close?token=termint")
    assert resp.status == 200, resp
    srv.signal(signal.SIGTERM)
    time.sleep(0.3)  # the TERM's drain is done; the app is in its close()
    srv.signal(signal.SIGINT)
    assert srv.exit_code() == 0, srv.log()
    assert "SIGKILL" not in srv.log() and "did not stop in time" not in srv.log(), srv.log()


@pytest.mark.parametrize("case", ["slow-close", "204-stream"])
def test_term_lets_an_app_still_running_after_its_response_end(launch, mode, case):
    """Review (session 26): a graceful stop waited for the connections, not for
    the app: once a response was out (then a close() that takes its time, or a
    204's iterable, whose chunks are dropped), the drain closed the connection
    and the worker exited a second later, cutting the app short: close() (and
    post_request) never ran."""
    srv = launch("--graceful-timeout", "20", app="router_app:app", mode=mode)
    token = f"term{case.replace('-', '')}"
    resp = srv.get(f"/close/{case}?token={token}")
    assert resp.status == (204 if case == "204-stream" else 200), resp
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    assert srv.records(f"close-{token}")[-1:] == ["close"], srv.log()


@pytest.mark.timeout(120)
def test_term_finishes_slow_uploads_and_refuses_new_connections(launch, mode):
    """Issue 13: TERM while 20 clients are mid-upload lets all 20 finish with the right
    sha256, a new connection is refused while they drain, and the master exits 0.
    Regression: the master and each worker (its copy inherited from the master) kept the
    listening socket open, so new connections waited unanswered in the backlog until the
    master exited, then were reset."""
    threads = ("--threads", "20") if mode == "thread" else ()
    srv = launch("-w", "2", "--graceful-timeout", "60", *threads, mode=mode)
    go = threading.Event()
    uploads = [Uploader(srv, 300 * 1024, go=go) for _ in range(20)]
    for u in uploads:
        u.start()
    started = srv.wait_records("uploads", count=20, timeout=WAIT)
    assert len(started) == 20, f"{len(started)} uploads reached the app:\n{srv.log()}"
    srv.signal(signal.SIGTERM)
    try:
        assert wait_until(lambda: refused(srv)), "a new connection was still accepted after TERM"
        # The uploads are still waiting for `go`: the master is draining, not gone.
        assert srv.alive(), srv.log()
    finally:
        go.set()
    for u in uploads:
        u.join(60.0)
        u.check()
    assert srv.exit_code() == 0, srv.log()
    assert "Shutting down: Master" in srv.log()


# --- 2. HUP and USR2 under load -----------------------------------------------------

CWD_APP = '''\
"""Written by test_supervisor.py: answers its working directory."""
import os


def app(environ, start_response):
    body = os.getcwd().encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''

HUP_APP = '''\
"""Written by test_supervisor.py: answers its generation."""


def app(environ, start_response):
    body = b"generation %d"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def app_module(tmp_path, name, text):
    """`tmp_path/code/NAME.py` holding `text`: (the code directory, the module file)."""
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    module = code_dir / f"{name}.py"
    module.write_text(text)
    return code_dir, module


AT_EXIT_APP = """\
\"\"\"Registers exit functions and a buffered log handler, as Sentry or OpenTelemetry do.\"\"\"
import atexit
import logging
import logging.handlers
import os
import weakref

MARKS = %r


def mark(what):
    with open(MARKS, "a") as f:
        f.write(f"{what} {os.getpid()}\\n")


atexit.register(mark, "atexit")


class Client:
    pass


client = Client()
weakref.finalize(client, mark, "finalize")
target = logging.FileHandler(MARKS)
buffered = logging.handlers.MemoryHandler(capacity=1000, target=target)
log = logging.getLogger("buffered")
log.addHandler(buffered)
log.setLevel(logging.INFO)


def app(environ, start_response):
    log.info("logged %%s", environ["PATH_INFO"])
    environ["wsgi.errors"].write("cannot open %%s\\n" %% os.fsdecode(b"report-\\xff.csv"))
    start_response("200 OK", [])
    return [str(os.getpid()).encode()]
"""


def test_a_workers_exit_runs_what_the_app_registered_with_atexit(launch, mode, tmp_path):
    """QA (session 41): a worker ended by os._exit, so the app's atexit functions,
    weakref finalizers and logging.shutdown() never ran: what a Sentry or
    OpenTelemetry client, or a buffered log handler, held was lost at every stop
    and --max-requests recycle. They run as a worker ends, as under gunicorn's
    sys.exit. (The app also writes a lone surrogate to wsgi.errors, which failed
    the request with a 500: it is escaped, as sys.stderr escapes it.)"""
    marks = tmp_path / "marks"
    code_dir, _ = app_module(tmp_path, "atexit_app", AT_EXIT_APP % str(marks))
    srv = launch("--max-requests", "2", app="atexit_app:app", path=(code_dir, APPS_DIR), mode=mode)
    first = srv.get("/one")
    assert first.status == 200, (first, srv.log())
    assert srv.get("/two").status == 200, srv.log()
    recycled = first.body.decode()
    assert wait_until(lambda: marks.exists() and f"atexit {recycled}" in marks.read_text()), (
        marks.read_text() if marks.exists() else "",
        srv.log(),
    )
    text = marks.read_text()
    assert f"finalize {recycled}" in text and "logged /one" in text, text
    assert "cannot open report-\\udcff.csv" in srv.log(), srv.log()
    serving = srv.get("/three").body.decode()
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    assert f"atexit {serving}" in marks.read_text(), marks.read_text()


SIGNALS_AT_IMPORT_APP = """\
\"\"\"Sets its own handling of signals at import, as some libraries do.\"\"\"
import signal

signal.signal(signal.SIGCHLD, signal.SIG_IGN)
signal.signal(signal.SIGTERM, lambda signo, frame: None)
signal.signal(signal.SIGTTIN, signal.SIG_IGN)


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"""


def test_signals_a_preloaded_app_set_at_import_are_the_masters_again(launch, tmp_path):
    """Probe (session 42): the master installed its handlers before --preload's
    import, so an app that set its own there took them over: with SIGCHLD ignored a
    dead worker was never replaced and the stop never ended; with its own TERM
    handler the master never stopped; TTIN added nothing. gunicorn installs its
    handlers after the preload; so does Siesta now, with a warning."""
    code_dir, _ = app_module(tmp_path, "signals_at_import", SIGNALS_AT_IMPORT_APP)
    srv = launch("--preload", app="signals_at_import:app", path=(code_dir, APPS_DIR))
    assert srv.wait_log(
        "The preloaded app set its own handling of SIGTERM, SIGTTIN, SIGCHLD: the master "
        "puts its own back"
    ), srv.log()
    (worker,) = srv.worker_pids(1)
    os.kill(worker, signal.SIGKILL)
    assert srv.wait_log(rf"Worker \(pid:{worker}\) was sent SIGKILL"), srv.log()
    assert wait_until(lambda: srv.boots() == 2), srv.log()
    assert srv.get("/").status == 200, srv.log()
    srv.signal(signal.SIGTTIN)
    assert wait_until(lambda: srv.boots() == 3), srv.log()
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()


POOL_AT_IMPORT_APP = """\
\"\"\"A ProcessPoolExecutor made at import; a request uses it and answers its processes.\"\"\"
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

POOL = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))


def square(x):
    return x * x


def app(environ, start_response):
    assert list(POOL.map(square, range(5))) == [0, 1, 4, 9, 16]
    start_response("200 OK", [])
    return [" ".join(str(p.pid) for p in multiprocessing.active_children()).encode()]
"""


def test_a_process_pool_the_app_made_ends_with_its_worker(launch, mode, tmp_path):
    """Probe (session 42): the worker ran the atexit functions but not threading's
    (concurrent.futures ends its executors there), so multiprocessing's exit
    function waited for a ProcessPoolExecutor's processes, which waited for work:
    each stop and --max-requests recycle waited --graceful-timeout, the worker was
    killed, and its pool processes were left running."""
    code_dir, _ = app_module(tmp_path, "pool_at_import", POOL_AT_IMPORT_APP)
    srv = launch(
        "--max-requests",
        "2",
        "--graceful-timeout",
        "15",
        app="pool_at_import:app",
        path=(code_dir, APPS_DIR),
        mode=mode,
    )
    pools = [srv.get("/").body.decode().split() for _ in range(2)]
    assert all(pools) and pools[0] == pools[1], (pools, srv.log())
    assert srv.wait_log("Autorestarting worker"), srv.log()
    assert wait_until(lambda: all(gone(int(p)) for p in pools[0]), timeout=WAIT), srv.log()
    later = srv.get("/").body.decode().split()
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    assert "did not stop in time" not in srv.log(), srv.log()
    assert all(gone(int(p)) for p in later), srv.log()


HANDLERS_APP = """\
\"\"\"Sets Python signal handlers at import: USR2 marks, WINCH raises, ALRM and TERM exit.\"\"\"
import os
import signal
import sys
import threading

MARKS = %r


def mark(signo, frame):
    with open(MARKS, "a") as f:
        f.write(f"usr2 {os.getpid()}\\n")


def fail(signo, frame):
    raise RuntimeError("a handler's own bug")


signal.signal(signal.SIGUSR2, mark)
signal.signal(signal.SIGWINCH, fail)
signal.signal(signal.SIGALRM, lambda signo, frame: sys.exit(0))
signal.signal(signal.SIGTERM, lambda signo, frame: sys.exit(0))


def app(environ, start_response):
    start_response("200 OK", [])
    if environ["PATH_INFO"] == "/threads":
        return [str(sum(t.name.startswith("siesta-") for t in threading.enumerate())).encode()]
    return [str(os.getpid()).encode()]
"""


def test_the_apps_python_signal_handlers_run_while_a_thread_mode_worker_serves(launch, tmp_path):
    """Probe (session 42): in thread mode the main thread waited in Rust for the
    stop, and Python runs signal handlers on the main thread only: a handler the app
    set (USR2 to dump its state, an interval timer) ran once the worker stopped, and
    one that raised then crashed the worker. They run while it serves; one that
    raises is logged, and one that raises SystemExit stops the worker gracefully."""
    marks = tmp_path / "marks"
    code_dir, _ = app_module(tmp_path, "handlers", HANDLERS_APP % str(marks))
    srv = launch(app="handlers:app", path=(code_dir, APPS_DIR), mode="thread")
    worker = int(srv.get("/").body)
    # Once the pool's threads are started (the main thread then waits for the
    # stop): a handler that raised while it started them stopped the start.
    assert wait_until(lambda: srv.get("/threads").body == b"4"), srv.log()
    os.kill(worker, signal.SIGUSR2)
    assert wait_until(lambda: marks.exists() and f"usr2 {worker}" in marks.read_text()), srv.log()
    os.kill(worker, signal.SIGWINCH)
    assert srv.wait_log(r"Exception in a signal handler of the app \(the worker serves on\)")
    assert srv.wait_log("RuntimeError: a handler's own bug"), srv.log()
    assert int(srv.get("/").body) == worker, srv.log()
    os.kill(worker, signal.SIGALRM)
    assert srv.wait_log("A signal handler of the app raised SystemExit: the worker stops"), (
        srv.log()
    )
    assert wait_until(lambda: srv.boots() == 2), srv.log()
    assert srv.wait_log(rf"Worker exiting \(pid: {worker}\)"), srv.log()
    replacement = int(srv.get("/").body)
    assert replacement != worker, srv.log()
    # The app's own TERM handler (sys.exit) runs as the worker's stop ends: the
    # stop is the worker's, its exit line and hooks included (review, session 42).
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    assert f"Worker exiting (pid: {replacement})" in srv.log(), srv.log()
    assert "Worker crashed" not in srv.log(), srv.log()


LATE_HANDLER_APP = """\
\"\"\"A USR2 handler that raises, and a response whose close() takes 2 s.\"\"\"
import signal
import time


def fail(signo, frame):
    raise ValueError("a handler's own bug")


signal.signal(signal.SIGUSR2, fail)


class Slow:
    def __iter__(self):
        yield b"ok"

    def close(self):
        time.sleep(2)


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return Slow()
"""


def test_a_handler_that_raises_while_the_worker_stops_does_not_crash_it(launch, tmp_path):
    """Review (session 42): once the main thread's wait for the stop had ended, a
    Python signal handler of the app ran in the wait for the pool's threads, and its
    exception crashed the worker (exit 1, worker_exit skipped, close() abandoned)."""
    code_dir, _ = app_module(tmp_path, "late_handler", LATE_HANDLER_APP)
    srv = launch(app="late_handler:app", path=(code_dir, APPS_DIR), mode="thread")
    (worker,) = srv.worker_pids(1)
    assert srv.get("/").status == 200, srv.log()  # its close() holds a thread 2 s
    srv.signal(signal.SIGTERM)
    assert srv.wait_log(r"Handling signal: term"), srv.log()
    time.sleep(0.5)  # the drain is over (nothing to drain); the thread is in close()
    os.kill(worker, signal.SIGUSR2)
    assert srv.exit_code() == 0, srv.log()
    assert "ValueError: a handler's own bug" in srv.log(), srv.log()
    assert f"Worker exiting (pid: {worker})" in srv.log(), srv.log()
    assert "Worker crashed" not in srv.log(), srv.log()


EXECUTORS_AT_IMPORT_APP = """\
\"\"\"A thread pool running a task that never ends, and a Manager (with --preload: in the
master), made at import.\"\"\"
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor


def forever():
    while True:
        time.sleep(0.05)


POOL = ThreadPoolExecutor(1)
POOL.submit(forever)
MANAGER = multiprocessing.get_context("fork").Manager()
with open(%r, "w") as f:
    f.write(str(MANAGER._process.pid))


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"""


@pytest.mark.parametrize("preload", [False, True])
def test_executors_the_app_made_do_not_hold_the_exit(launch, tmp_path, preload):
    """Review and probe (session 42): a worker's exit ran concurrent.futures' exit
    callback, which waits for a task that never ends, until the master's SIGKILL at
    --graceful-timeout; a Manager() a preloaded app made outlived the master (its
    finalizer, which multiprocessing's exit runs, never ran). The callback is waited
    for 2 s at most, and the master's exit runs multiprocessing's finalizers."""
    pid_file = tmp_path / "manager.pid"
    code_dir, _ = app_module(tmp_path, "executors", EXECUTORS_AT_IMPORT_APP % str(pid_file))
    args = ["--graceful-timeout", "20"] + (["--preload"] if preload else [])
    srv = launch(*args, app="executors:app", path=(code_dir, APPS_DIR))
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text()), srv.log()
    manager = int(pid_file.read_text())
    try:
        assert srv.get("/").status == 200, srv.log()
        srv.signal(signal.SIGTERM)
        assert srv.exit_code() == 0, srv.log()
        if not preload:  # the pool's thread is the worker's (a fork copies no thread)
            assert "did not end within 2 s; the worker leaves without them" in srv.log()
        assert "did not stop in time" not in srv.log(), srv.log()
        assert wait_until(lambda: gone(manager), timeout=WAIT), "the Manager outlived the master"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(manager, signal.SIGKILL)


FAILING_AT_EXIT_APP = """\
\"\"\"An exit function that fails (a telemetry client's last flush, its collector down).\"\"\"
import atexit


def flush():
    raise RuntimeError("the collector is down")


atexit.register(flush)


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"""


def test_an_exit_functions_failure_is_in_the_error_log(launch, tmp_path):
    """Session 42: CPython wrote a failing exit function's traceback to fd 2, outside
    the error log's format and file (--error-logfile got nothing of it)."""
    errors = tmp_path / "errors.log"
    code_dir, _ = app_module(tmp_path, "failing_at_exit", FAILING_AT_EXIT_APP)
    srv = launch(
        "--error-logfile",
        str(errors),
        app="failing_at_exit:app",
        path=(code_dir, APPS_DIR),
        log_file=errors,
    )
    assert srv.get("/").status == 200, srv.log()
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    text = errors.read_text()
    assert re.search(r"\[ERROR\] Exception ignored in atexit callback: <function flush", text), text
    assert "RuntimeError: the collector is down" in text, text


MP_CHILD_APP = """\
\"\"\"Starts a daemonic multiprocessing helper at import (with --preload: in the master).\"\"\"
import multiprocessing
import time

helper = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,), daemon=True)
helper.start()
with open(%r, "w") as f:
    f.write(str(helper.pid))


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"""


def test_a_preloaded_apps_multiprocessing_helper_neither_dies_with_a_worker_nor_holds_the_stop(
    launch, tmp_path
):
    """Reviews (session 41): with exit functions run at a worker's exit, each
    worker's multiprocessing exit function sent SIGTERM to the master's helper; run
    at the master's own exit, it waited for ever for a helper that keeps the
    master's handlers (which ignore TERM), and the master never exited."""
    pid_file = tmp_path / "helper.pid"
    code_dir, _ = app_module(tmp_path, "mphelper", MP_CHILD_APP % str(pid_file))
    srv = launch("--preload", "--max-requests", "2", app="mphelper:app", path=(code_dir, APPS_DIR))
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text()), srv.log()
    helper = int(pid_file.read_text())
    try:
        for i in range(5):  # past --max-requests: a worker exits, another serves
            assert srv.get(f"/{i}").status == 200, srv.log()
        assert srv.wait_log("Autorestarting worker"), srv.log()
        assert wait_until(lambda: srv.boots() >= 2), srv.log()
        assert running(helper), srv.log()
        # No exit function of the worker's took the master's helper for its own.
        assert "can only join a child process" not in srv.log(), srv.log()
        srv.signal(signal.SIGTERM)
        assert srv.exit_code() == 0, srv.log()
        # The master's exit ends its daemonic children, as Python's would (probe,
        # session 42: the helper outlived it).
        assert wait_until(lambda: gone(helper), timeout=WAIT), "the helper outlived the master"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(helper, signal.SIGKILL)


@pytest.mark.parametrize("stderr", ["file", "closed pipe"])
def test_a_start_that_fails_after_a_preloaded_helper_started_still_exits(tmp_path, stderr):
    """Reviews (session 41): a start refused after --preload (here by when_ready)
    left through sys.exit, whose exit functions waited for ever for the preloaded
    app's multiprocessing helper (it keeps the master's handlers, which ignore TERM);
    so did one whose error line met a stderr nobody reads any more."""
    pid_file = tmp_path / "helper.pid"
    code_dir, _ = app_module(tmp_path, "mphelper", MP_CHILD_APP % str(pid_file))
    conf = tmp_path / "conf.py"
    conf.write_text(
        '"""Refuses the start."""\n\n\ndef when_ready(server):\n    raise RuntimeError("no")\n'
    )
    err = tmp_path / "stderr"
    try:
        with open(err, "w") as handle:  # not a pipe we read: the helper keeps it open
            read_end, write_end = os.pipe()
            os.close(read_end)
            proc = subprocess.Popen(
                [str(SIESTA), "-b", "127.0.0.1:0", "--preload", "-c", str(conf)]
                + ["--chdir", str(code_dir), "mphelper:app"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=handle if stderr == "file" else write_end,
                env=clean_env(),
            )
            os.close(write_end)
        try:
            code = proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert code == 1, err.read_text()
        if stderr == "file":
            assert "the when_ready hook failed" in err.read_text(), err.read_text()
        helper = int(pid_file.read_text())
        assert wait_until(lambda: gone(helper), timeout=WAIT), "the helper outlived the master"
    finally:
        if pid_file.exists() and pid_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_hup_with_a_relative_chdir(launch, tmp_path):
    """A relative --chdir means what it meant at launch, also when a HUP rereads
    the command line after the master moved there. Regression: the reload
    failed ("Cannot change to directory 'code'") and kept the old code."""
    code_dir, module = app_module(tmp_path, "hup_app", HUP_APP % 0)
    srv = launch(
        "--chdir",
        "code",
        app="hup_app:app",
        path=(code_dir, APPS_DIR),
        cwd=tmp_path,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert srv.get("/").body == b"generation 0"
    module.write_text(HUP_APP % 1)
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    assert wait_until(lambda: srv.get("/").body == b"generation 1"), "the reload kept the old code"
    assert "Reload failed" not in srv.log(mark)


def test_a_hup_moves_the_pid_file_and_unsets_what_raw_env_dropped(launch, tmp_path):
    """QA probe (session 28), as gunicorn's reload: a HUP whose config names another
    pid file moved it (the old one stayed, and a stop then removed neither), and a
    variable taken out of raw_env stayed set in the new workers."""
    conf, first_pid, second_pid = tmp_path / "conf.py", tmp_path / "p1.pid", tmp_path / "p2.pid"
    env = "raw_env = ['SIESTA_T_A=one', 'SIESTA_T_B=two']\n"
    conf.write_text(f"{env}pidfile = {str(first_pid)!r}\n")
    srv = launch("-c", str(conf), cwd=tmp_path)
    assert first_pid.read_text().strip() == str(srv.pid)
    assert srv.get("/getenv?name=SIESTA_T_A").body == b"one"
    first = srv.worker_pids()
    conf.write_text(f"raw_env = ['SIESTA_T_B=three']\npidfile = {str(second_pid)!r}\n")
    srv.signal(signal.SIGHUP)
    assert new_workers(srv, first), srv.log()
    assert srv.get("/getenv?name=SIESTA_T_A").body == b"-", "a dropped raw_env variable stayed"
    assert srv.get("/getenv?name=SIESTA_T_B").body == b"three"
    assert second_pid.read_text().strip() == str(srv.pid)
    assert not first_pid.exists(), "the old pid file stayed"
    srv.stop()
    assert not second_pid.exists(), "the pid file the HUP named was left at the stop"


def test_a_hup_naming_the_same_pid_file_otherwise_keeps_it(launch, tmp_path):
    """Review (session 28): a HUP whose config spelled the same pid file another
    way (through a symlink, as /var/run and /run) wrote it, then removed it as
    the old one."""
    (tmp_path / "run").mkdir()
    (tmp_path / "var-run").symlink_to(tmp_path / "run")
    conf, pidfile = tmp_path / "conf.py", tmp_path / "run" / "x.pid"
    conf.write_text(f"pidfile = {str(pidfile)!r}\n")
    srv = launch("-c", str(conf), cwd=tmp_path)
    assert pidfile.read_text().strip() == str(srv.pid)
    first = srv.worker_pids()
    conf.write_text(f"pidfile = {str(tmp_path / 'var-run' / 'x.pid')!r}\n")
    srv.signal(signal.SIGHUP)
    assert new_workers(srv, first), srv.log()
    assert pidfile.exists() and pidfile.read_text().strip() == str(srv.pid)


def test_server_software_is_in_the_process_environment(launch):
    """QA (session 34): gunicorn's arbiter sets SERVER_SOFTWARE in os.environ, where
    app code (and what it starts) may look; Siesta had it in the WSGI environ only."""
    srv = launch()
    served = srv.get("/getenv?name=SERVER_SOFTWARE").body.decode()
    assert re.fullmatch(r"siesta/\d+\.\d+\.\d+\S*", served), served


def test_a_usr2_master_starts_from_the_launch_environment(launch, tmp_path):
    """Review (session 28): the new master of a USR2 was exec'd with the old one's
    environment, raw_env's variables in it, so a HUP to it could not unset one
    the config no longer set (gunicorn execs with the environment it started with)."""
    conf, pidfile = tmp_path / "conf.py", tmp_path / "pid"
    conf.write_text(f"raw_env = ['SIESTA_T_C=one']\npidfile = {str(pidfile)!r}\n")
    srv = launch("-c", str(conf), cwd=tmp_path)
    assert srv.get("/getenv?name=SIESTA_T_C").body == b"one"
    new = usr2(srv)
    try:
        assert wait_until(lambda: len(children(new)) == 1), srv.log()
        srv.signal(signal.SIGTERM)
        assert srv.exit_code() == 0, srv.log()
        served = rawhttp.request(srv.host, srv.port, "GET", "/getenv?name=SIESTA_T_C")
        assert served.body == b"one", "the new master applies the config's raw_env"
        first = children(new)
        conf.write_text(f"pidfile = {str(pidfile)!r}\n")
        os.kill(new, signal.SIGHUP)
        assert wait_until(lambda: (c := children(new)) and not set(c) & set(first)), srv.log()
        served = rawhttp.request(srv.host, srv.port, "GET", "/getenv?name=SIESTA_T_C")
        assert served.body == b"-", "a variable raw_env no longer sets stayed set"
    finally:
        assert stop_pid(new), "the new master did not stop on TERM"


def test_a_failed_hup_keeps_the_working_directory(launch, tmp_path):
    """A HUP whose config no longer reads keeps the running config, and the
    workers it starts still run in --chdir, not where siesta was launched."""
    code_dir, _ = app_module(tmp_path, "cwd_app", CWD_APP)
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 1\n")
    srv = launch(
        "-c",
        "conf.py",
        "--chdir",
        "code",
        app="cwd_app:app",
        path=(code_dir, APPS_DIR),
        cwd=tmp_path,
    )
    assert srv.get("/").body == str(code_dir).encode()
    first = srv.worker_pids()
    conf.write_text("workers = (\n")
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    assert srv.wait_log("keeping the running config", since=mark), srv.log(mark)
    assert new_workers(srv, first), "the reload did not replace the workers"
    assert srv.get("/").body == str(code_dir).encode()
    assert "Traceback" not in srv.log(mark)


@pytest.mark.parametrize(
    "line,message",
    [
        ("timeout = None", "timeout from conf.py: None is not allowed"),
        ('errorlog = "/nonexistent_zq/error.log"', "Cannot open error log"),
        ('accesslog = "/nonexistent_zq/access.log"', "Cannot open access log"),
        ('user = "nosuchuser_zq"', "no such user"),
    ],
)
def test_a_hup_with_a_bad_value_keeps_serving(launch, tmp_path, line, message):
    """Probe item 2: a HUP whose config had `timeout = None` logged "Reload failed"
    with a traceback, then the worker crashed and the master shut down; one whose
    errorlog or accesslog could not be opened kept the new value and shut down
    too. Now each logs one line and keeps the running config, serving."""
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 1\n")
    srv = launch("-c", "conf.py", cwd=tmp_path)
    first = srv.worker_pids()
    conf.write_text(f"workers = 1\n{line}\n")
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    found = srv.wait_log(f"Reload: .*{re.escape(message)}.*; keeping the running config", mark)
    assert found, srv.log(mark)
    assert new_workers(srv, first), srv.log(mark)
    for _ in range(3):
        assert srv.get("/pid").status == 200, srv.log(mark)
    assert srv.alive(), srv.log(mark)
    assert "Traceback" not in srv.log(mark) and "Reload failed" not in srv.log(mark)


def test_capture_output_follows_a_new_error_log_on_hup(launch, tmp_path):
    """Review: a HUP that moved `errorlog`, with capture_output on, left the app's
    prints in the old file (gunicorn points them at the new one)."""
    conf = tmp_path / "conf.py"
    old_log, new_log = tmp_path / "e1.log", tmp_path / "e2.log"
    conf.write_text(f"capture_output = True\nerrorlog = {str(old_log)!r}\n")
    srv = launch("-c", "conf.py", cwd=tmp_path, log_file=old_log)
    first = srv.worker_pids()
    conf.write_text(f"capture_output = True\nerrorlog = {str(new_log)!r}\n")
    srv.signal(signal.SIGHUP)
    assert new_workers(srv, first), old_log.read_text()
    assert srv.get("/print?text=moved").status == 200
    assert wait_until(lambda: new_log.exists() and "moved err" in new_log.read_text())
    assert "moved out" in new_log.read_text()
    assert "moved" not in old_log.read_text()


def test_capture_output_to_dev_stderr_sends_prints_to_stderr(launch):
    """Review (session 31): --error-logfile /dev/stderr was taken as '-' (stderr
    itself, which works where opening /dev/stderr fails: journald's socket), which
    left --capture-output nothing to point the app's stdout at: its prints stayed on
    stdout, where gunicorn sends them to stderr. With --capture-output it is a file."""
    srv = launch("--error-logfile", "/dev/stderr", "--capture-output")
    assert srv.get("/print?text=captured").status == 200
    assert srv.wait_log(r"^captured out$"), (srv.log(), srv.stdout.text())
    assert "captured out" not in srv.stdout.text()


def test_a_refused_hup_leaves_no_part_of_its_config_behind(launch, tmp_path):
    """Review: a HUP refused for its access log had already set its `raw_env` (and
    `--pythonpath`): the next workers saw the refused config's environment."""
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 1\n")
    srv = launch("-c", "conf.py", cwd=tmp_path)
    first = srv.worker_pids()
    conf.write_text(
        'workers = 1\nraw_env = ["SIESTA_LEAK_ZQ=leaked"]\n'
        'accesslog = "/nonexistent_zq/access.log"\n'
    )
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    assert srv.wait_log("keeping the running config", mark), srv.log(mark)
    assert new_workers(srv, first), srv.log(mark)
    assert srv.get("/getenv?name=SIESTA_LEAK_ZQ").body == b"-", srv.log(mark)


@pytest.mark.timeout(150)
def test_hup_reloads_changed_code_without_failing_a_request(launch, mode, tmp_path):
    """Issue 13: five HUPs while a client loops requests: every request is answered
    200, and after each reload the workers serve the rewritten module. Regression:
    about one request in a few thousand failed with the connection closed unanswered,
    when a retiring worker had accepted it but not yet read its head (hyper's graceful
    shutdown closes such a connection at once)."""
    code_dir, module = app_module(tmp_path, "hup_app", HUP_APP % 0)
    srv = launch(
        "-w",
        "2",
        app="hup_app:app",
        path=(code_dir, APPS_DIR),
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        mode=mode,
    )
    assert srv.get("/").body == b"generation 0"
    first = srv.worker_pids()
    loop = Looper(srv.host, srv.port)
    loop.start()
    try:
        for gen in range(1, 6):
            module.write_text(HUP_APP % gen)
            srv.signal(signal.SIGHUP)
            want = b"generation %d" % gen
            assert wait_until(lambda w=want: srv.get("/").body == w), f"{want!r} never served"
        assert wait_until(lambda: b"generation 5" in loop.bodies), (
            f"the loop missed the last reload ({loop.ok} requests, alive: {loop.is_alive()})"
        )
    finally:
        loop.finish()
    assert loop.failures == [], f"{len(loop.failures)} failed of {loop.ok}: {loop.failures[:5]}"
    assert srv.log().count("Handling signal: hup") == 5
    assert srv.log().count("Hang up: Master") == 5  # gunicorn's line, as a script may wait for it
    assert new_workers(srv, first), "the first workers were not all replaced"
    assert srv.alive(), srv.log()


def launch_two_loaded(launch, mode, tmp_path, name, *args):
    """Two workers serving HUP_APP generation 0 from `tmp_path/code/NAME.py`, both
    past importing it (so that a later edit breaks a reload, not the first start):
    (the server, the module file, the pids of its children)."""
    loaded = tmp_path / "loaded"
    marked = f"import os\nopen({str(loaded)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
    code_dir, module = app_module(tmp_path, name, marked + HUP_APP % 0)
    srv = launch(
        "-w",
        "2",
        *args,
        app=f"{name}:app",
        path=(code_dir, APPS_DIR),
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        mode=mode,
    )
    # With --metrics-bind, its process is a child too (in `first`).
    first = set(srv.worker_pids(count=2 + ("--metrics-bind" in args)))
    assert wait_until(lambda: loaded.exists() and len(loaded.read_text().split()) == 2)
    return srv, module, first


def test_a_hup_whose_app_fails_to_load_keeps_the_running_workers(launch, mode, tmp_path):
    """Operator probe (session 17): a HUP after a deploy broke the app's import
    stopped the whole server (exit 4, as gunicorn does): an outage for a
    `systemctl reload`. The reload is given up instead, as a HUP with a bad config
    is: the running workers serve on, alone, with their code, and a HUP once the
    code is fixed reloads it."""
    srv, module, first = launch_two_loaded(launch, mode, tmp_path, "hupfail_app")
    assert srv.get("/").body == b"generation 0"
    module.write_text("x = (\n")  # the new workers cannot import the app
    srv.signal(signal.SIGHUP)
    assert srv.wait_log(r"Reload failed: a new worker could not load the app"), srv.log()
    assert wait_until(lambda: set(children(srv.pid)) == first), "the first workers serve on, alone"
    assert [srv.get(f"/{i}").body for i in range(20)] == [b"generation 0"] * 20
    assert srv.alive(), srv.log()
    assert "App failed to load" not in srv.log()
    module.write_text(HUP_APP % 1)
    srv.signal(signal.SIGHUP)
    assert wait_until(lambda: srv.get("/").body == b"generation 1"), srv.log()
    assert new_workers(srv, first), "the first workers were not replaced"
    assert srv.alive(), srv.log()


def test_a_given_up_reload_is_counted(launch, tmp_path):
    """`siesta_reloads_total{outcome="given_up"}`: a deploy that did not take can
    be alerted on, where the log has one line. Mode-independent."""
    metrics = ("--metrics-bind", "127.0.0.1:0")
    srv, module, _ = launch_two_loaded(launch, "thread", tmp_path, "hupcount_app", *metrics)
    url = metrics_url(srv)

    def reloads(outcome, count):
        return lambda: value(scrape(url), "siesta_reloads_total", outcome=outcome) == count

    module.write_text("x = (\n")
    srv.signal(signal.SIGHUP)
    assert wait_until(reloads("given_up", 1)), scrape(url)
    assert value(scrape(url), "siesta_reloads_total", outcome="done") == 0
    assert srv.get("/").body == b"generation 0"
    module.write_text(HUP_APP % 1)
    srv.signal(signal.SIGHUP)
    assert wait_until(reloads("done", 1)), scrape(url)
    assert srv.get("/").body == b"generation 1"


RELEASE_APP = '''"""Release %d of a deploy that points the symlink `current` at it."""


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"release %d"]
'''


def serve_the_first_of_two_releases(launch, tmp_path, conf=False):
    """Releases 1 and 2 of RELEASE_APP (with `conf`, each with a conf.py naming the
    processes after it) and a `current` symlink: a master started in `current`
    (no --chdir) serves release 1, then the symlink is pointed at release 2.
    Returns (the master, the releases' directory)."""
    releases = tmp_path / "releases"
    for n in (1, 2):
        (releases / str(n)).mkdir(parents=True)
        (releases / str(n) / "release.py").write_text(RELEASE_APP % (n, n))
        (releases / str(n) / "conf.py").write_text(
            f'"""Release {n}."""\nproc_name = "release-{n}"\n'
        )
    current = tmp_path / "current"
    current.symlink_to(releases / "1")
    srv = launch(
        *(["-c", "conf.py"] if conf else []),
        app="release:app",
        path=(),
        cwd=current,
        env={"PWD": str(current), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert srv.get("/").body == b"release 1"
    swap = tmp_path / "swap"
    swap.symlink_to(releases / "2")
    os.replace(swap, current)
    return srv, releases


def test_a_symlink_pointed_at_a_new_release_is_followed_by_hup_and_usr2(launch, tmp_path):
    """QA (session 41): started in a symlinked release directory (`cd current &&
    exec siesta ...`, no --chdir), a HUP after the symlink was pointed at a new
    release kept serving the old one, and a USR2's new master started there too:
    the master took the directory as the kernel resolved it. As gunicorn, it takes
    it as the shell named it ($PWD), when that is where it is."""
    srv, releases = serve_the_first_of_two_releases(launch, tmp_path)
    srv.signal(signal.SIGHUP)
    assert wait_until(lambda: srv.get("/").body == b"release 2"), srv.log()
    new = usr2(srv)
    try:
        assert os.readlink(f"/proc/{new}/cwd") == str((releases / "2").resolve())
    finally:
        assert stop_pid(new)


def test_a_hup_after_the_old_release_was_removed_reads_the_new_one(launch, tmp_path):
    """Ops probe (session 42): the symlink pointed at a new release and the old one
    deleted (the master's working directory with it), a HUP failed in os.getcwd()
    with a traceback ("Reload failed") and the workers restarted with the old
    config. It reads the new release's."""
    srv, releases = serve_the_first_of_two_releases(launch, tmp_path, conf=True)
    subprocess.run(["rm", "-rf", str(releases / "1")], check=True)
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    assert wait_until(lambda: srv.get("/").body == b"release 2"), srv.log()
    assert srv.wait_log(r"siesta: worker \[release-2\]|Booting worker", since=mark), srv.log()
    assert "Reload failed" not in srv.log(mark) and "Traceback" not in srv.log(mark), srv.log()
    assert wait_until(
        lambda: any("release-2" in open(f"/proc/{p}/cmdline").read() for p in children(srv.pid))
    ), srv.log()


def assert_held_on_one_connection(srv, mark, body, count=30):
    """`count` requests on one connection are all answered `body`, none with
    `Connection: close`: the worker serving them is held from --max-requests."""
    with srv.connect() as conn:
        for i in range(count):
            conn.send(rawhttp.build_request("GET", f"/{i}"))
            try:
                resp = conn.read_response()
            except rawhttp.IncompleteHead as exc:
                raise AssertionError(f"request {i}: {exc}\n{srv.log(mark)}") from exc
            assert resp.body == body, (i, resp, srv.log(mark))
            assert not resp.has_token("Connection", "close"), (i, resp, srv.log(mark))


def test_a_given_up_reload_holds_max_requests(launch, mode, tmp_path):
    """Noted since session 28: after a given-up reload, the first worker restarted
    by --max-requests loaded the broken code and stopped the server (exit 4), hours
    after the HUP. The workers serving the code before are held from restarting until
    a reload succeeds; then the new workers restart at their count again."""
    srv, module, first = launch_two_loaded(
        launch, mode, tmp_path, "hold_app", "--max-requests", "5"
    )
    module.write_text("x = (\n")
    srv.signal(signal.SIGHUP)
    assert srv.wait_log(r"Reload failed: a new worker could not load the app"), srv.log()
    assert wait_until(lambda: set(children(srv.pid)) == first), "the first workers serve on, alone"
    mark = srv.log_mark()
    # On one connection: held, the worker stays, so no response that reaches
    # --max-requests closes it (one did, every 5 requests).
    assert_held_on_one_connection(srv, mark, b"generation 0")
    assert srv.wait_log("Not restarting after --max-requests", since=mark), srv.log(mark)
    assert set(children(srv.pid)) == first
    assert "Autorestarting" not in srv.log(mark)
    assert srv.alive(), srv.log()
    module.write_text(HUP_APP % 1)
    srv.signal(signal.SIGHUP)
    assert wait_until(lambda: srv.get("/").body == b"generation 1"), srv.log()
    assert new_workers(srv, first), "the first workers were not replaced"
    second = set(children(srv.pid))
    mark = srv.log_mark()
    assert all(srv.get(f"/{i}").body == b"generation 1" for i in range(30))
    assert srv.wait_log("Autorestarting worker after current request", since=mark), srv.log(mark)
    assert new_workers(srv, second), "recycling did not resume"
    assert srv.alive(), srv.log()


SLOW_APP = '''\
"""Written by test_supervisor.py: answers its pid, after ?s=N seconds."""
import os
import time


def app(environ, start_response):
    time.sleep(float(environ.get("QUERY_STRING", "").partition("s=")[2] or 0))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def launch_module(launch, mode, tmp_path, name, text, *args, **kw):
    """`text` as `tmp_path/code/NAME.py`, its `app` served by one worker, with
    `args`: (the server, the module file)."""
    code_dir, module = app_module(tmp_path, name, text)
    srv = launch("-w", "1", *args, app=f"{name}:app", path=(code_dir, APPS_DIR), mode=mode, **kw)
    return srv, module


def launch_slow_app(launch, mode, tmp_path, *args, **kw):
    """SLOW_APP on one worker, with `args`: (the server, the module file)."""
    return launch_module(launch, mode, tmp_path, "slow_app", SLOW_APP, *args, **kw)


def test_a_last_request_that_outlasts_the_graceful_timeout_is_cut_after_it(launch, mode, tmp_path):
    """Session 38 left open: the request that reached --max-requests had its own
    time, uncut, so a worker whose last request never ended (a stream, a long
    poll) stayed beside its replacement for as long as it ran, and with every
    worker's count ending on one, processes grew past -w for good. Its stop now
    begins once that request has run --graceful-timeout, and cuts it at the end of
    the stop's own --graceful-timeout, as any other request of a leaving worker."""
    srv, _ = launch_slow_app(
        launch, mode, tmp_path, "--max-requests", "1", "--graceful-timeout", "2"
    )
    (old,) = srv.worker_pids()
    mark = srv.log_mark()
    client, answer = request_in_background(srv, "/?s=300")
    assert srv.wait_log("Autorestarting worker", since=mark), srv.log(mark)
    assert srv.wait_log("still runs after --graceful-timeout", since=mark), srv.log(mark)
    assert srv.wait_log(r"1 request\(s\) still running were cut", since=mark), srv.log(mark)
    assert wait_until(lambda: gone(old), timeout=WAIT), srv.log(mark)
    client.join(30)
    assert "resp" not in answer, (answer, srv.log(mark))
    assert len(srv.worker_pids(count=1)) == 1, srv.log(mark)
    assert srv.get("/").status == 200


def test_a_last_request_that_a_given_up_reload_finds_running_holds_its_worker(
    launch, mode, tmp_path
):
    """Review (session 38): a worker told its master to replace it as its last
    request before --max-requests started, during a HUP whose new workers were
    still importing (the master passed over it: it was being reloaded). The reload
    was given up, and the worker left anyway once that request was done: its
    replacement loaded the broken code, and with -w 1 the server stopped (exit 4).
    The master now takes back a word from a worker it holds, and the worker
    stays, and accepts again at once."""
    srv, module = launch_slow_app(
        launch, mode, tmp_path, "--max-requests", "2", env={"PYTHONDONTWRITEBYTECODE": "1"}
    )
    old = int(srv.get("/").body)  # request 1
    module.write_text("import time\ntime.sleep(2)\nraise RuntimeError('broken')\n")
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    assert srv.wait_log("Handling signal: hup", since=mark), srv.log(mark)
    # Request 2, the last, runs across the reload's end (the new worker imports 2 s).
    client, answer = request_in_background(srv, "/?s=8")
    assert srv.wait_log("Reload failed", since=mark, timeout=WAIT), srv.log(mark)
    # Held, it accepts again while that request still runs (review: it stayed
    # paused until the request was done, with no replacement beside it).
    assert int(srv.get("/").body) == old, srv.log(mark)
    assert client.is_alive(), ("the last request ended first: nothing was shown", srv.log(mark))
    client.join(30)
    resp = answer.get("resp")
    assert resp is not None and resp.status == 200, (answer, srv.log(mark))
    assert int(resp.body) == old, srv.log(mark)
    assert srv.wait_log("Not restarting after --max-requests", since=mark), srv.log(mark)
    assert int(srv.get("/").body) == old, srv.log(mark)
    assert srv.alive(), srv.log()


def test_a_replacement_after_a_given_up_reload_is_tried_again(launch, mode, tmp_path):
    """... and a worker that died then (a crash, the OOM killer) was replaced with the
    broken code, whose failure stopped the server although the other worker served.
    The replacement is tried again later instead, and boots once the code is fixed."""
    srv, module, first = launch_two_loaded(launch, mode, tmp_path, "retry_app")
    module.write_text("x = (\n")
    srv.signal(signal.SIGHUP)
    assert srv.wait_log(r"Reload failed: a new worker could not load the app"), srv.log()
    assert wait_until(lambda: set(children(srv.pid)) == first), "the first workers serve on, alone"
    victim, survivor = sorted(first)
    mark = srv.log_mark()
    os.kill(victim, signal.SIGKILL)
    assert srv.wait_log(r"failed to boot \(exit code 4\).*trying again in 2 s", since=mark), (
        srv.log(mark)
    )
    assert srv.wait_log(r"trying again in 4 s", since=mark, timeout=WAIT), srv.log(mark)
    assert [srv.get(f"/{i}").body for i in range(10)] == [b"generation 0"] * 10
    assert srv.alive(), srv.log()
    assert "Reason:" not in srv.log()
    module.write_text(HUP_APP % 1)  # fixed, with no HUP: the next try boots
    assert srv.wait_log("A worker booted with the new code", since=mark, timeout=WAIT), srv.log(
        mark
    )
    assert survivor in children(srv.pid)
    served = set()
    assert wait_until(lambda: served.add(srv.get("/").body) or len(served) == 2), served
    assert served == {b"generation 0", b"generation 1"}
    assert srv.alive(), srv.log()


def test_with_no_worker_left_after_a_given_up_reload_the_server_stops(launch, tmp_path):
    """... but with no worker left serving, a replacement that cannot load the app
    stops the server (exit 4), as at a start. Mode-independent."""
    srv, module, first = launch_two_loaded(launch, "thread", tmp_path, "last_app")
    module.write_text("x = (\n")
    srv.signal(signal.SIGHUP)
    assert srv.wait_log(r"Reload failed: a new worker could not load the app"), srv.log()
    assert wait_until(lambda: set(children(srv.pid)) == first), "the first workers serve on, alone"
    for pid in first:
        os.kill(pid, signal.SIGKILL)
    assert srv.exit_code(timeout=60) == 4, srv.log()
    assert "Reason: App failed to load." in srv.log(), srv.log()


@pytest.mark.parametrize("second", ["fixed", "broken"])
def test_a_hup_before_a_failing_reload_fails_keeps_serving(launch, mode, tmp_path, second):
    """Review (session 17): a second HUP while the first reload's workers were still
    importing a broken app made their failure, once it came, stop the server (they
    were no longer the newest generation). The superseded reload is given up; the
    second goes on, and its workers take over (fixed) or are given up in turn, the
    first workers serving on (broken)."""
    importing, go = tmp_path / "importing", tmp_path / "go"
    broken = (
        "import os, time\n"
        f"open({str(importing)!r}, 'a').write('x\\n')\n"
        "for _ in range(600):\n"
        f"    if os.path.exists({str(go)!r}):\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "raise ImportError('broken deploy')\n"
    )
    srv, module, first = launch_two_loaded(launch, mode, tmp_path, "hup2_app")
    module.write_text(broken)
    srv.signal(signal.SIGHUP)
    # The first reload's workers are importing (and wait for `go` to fail).
    assert wait_until(lambda: importing.exists() and len(importing.read_text().split()) == 2)
    module.write_text(HUP_APP % 2 if second == "fixed" else broken)
    srv.signal(signal.SIGHUP)
    if second == "broken":
        assert wait_until(lambda: len(importing.read_text().split()) == 4)
    go.write_text("go")
    assert srv.wait_log(r"Reload failed: a new worker could not load the app"), srv.log()
    if second == "fixed":
        assert wait_until(lambda: srv.get("/").body == b"generation 2"), srv.log()
        assert new_workers(srv, first), "the first workers were not replaced"
    else:
        # Given up once or twice: the first reload's workers may go before they fail.
        assert wait_until(lambda: set(children(srv.pid)) == first), "the first workers serve on"
        assert [srv.get(f"/{i}").body for i in range(10)] == [b"generation 0"] * 10
    assert srv.alive(), srv.log()
    assert "App failed to load" not in srv.log()


@pytest.mark.timeout(150)
def test_usr2_then_term_hands_the_port_to_a_new_master(launch, mode, tmp_path):
    """Issue 13: USR2 starts a new master on the same socket; TERM to the old one then
    leaves the new one serving the same port, with no failed request on the way; the
    pid file follows the new master as gunicorn's does (PIDFILE.2 while the old master
    runs, PIDFILE once it is promoted) and none is left at exit."""
    pidfile = tmp_path / "siesta.pid"
    srv = launch("-w", "2", "-p", str(pidfile), mode=mode)
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text()), "no pid file"
    assert int(pidfile.read_text()) == srv.pid
    loop = Looper(srv.host, srv.port, path="/pid")
    loop.start()
    new = None
    try:
        mark = srv.log_mark()
        new = usr2(srv)
        assert srv.wait_log(rf"Listening at: http://\S+ \({new}\)", since=mark, timeout=WAIT)
        assert wait_until(lambda: len(children(new)) == 2), srv.log(mark)
        # Review 2 (session 26): the copies made out of the way before the
        # exec (fds 100 and up) stayed open in the new master and its workers.
        for pid in [new, *children(new)]:
            assert sockets_from(pid, 100) == [], (pid, sockets_from(pid, 100))
        # A deploy script written for gunicorn reads the old master's pid from
        # PIDFILE (it stops that one) and the new one's from PIDFILE.2.
        assert int(pidfile.read_text()) == srv.pid
        assert int(Path(f"{pidfile}.2").read_text()) == new
        old_workers = [p for p in children(srv.pid) if p != new]  # the new master is one too
        assert len(old_workers) == 2
        srv.signal(signal.SIGTERM)
        assert srv.exit_code() == 0, srv.log()
        assert all(wait_until(lambda p=p: gone(p)) for p in old_workers)
        assert srv.wait_log(rf"\[{new}\] \[INFO\] Master has been promoted", timeout=WAIT)
        assert wait_until(lambda: pidfile.exists() and int(pidfile.read_text()) == new)
        assert not Path(f"{pidfile}.2").exists(), "promoted: PIDFILE.2 is PIDFILE now"
        # Only the new master's workers answer now, on the same port.
        now = {int(rawhttp.request(srv.host, srv.port, "GET", "/pid").body) for _ in range(20)}
        assert now <= set(children(new)), (now, children(new))
        # QA probe (session 23): a HUP to the promoted master warned that -b had
        # changed (its sockets are fd:// binds); the config's own binds count.
        mark = srv.log_mark()
        os.kill(new, signal.SIGHUP)
        assert srv.wait_log(r"Booting worker with pid", since=mark, timeout=WAIT), srv.log(mark)
        assert "-b changes need a restart" not in srv.log(mark), srv.log(mark)
    finally:
        loop.finish()
        if new is not None:
            assert stop_pid(new), "the new master did not stop on TERM"
    assert loop.failures == [], f"{len(loop.failures)} failed of {loop.ok}: {loop.failures[:5]}"
    assert not pidfile.exists(), "the new master removes its pid file at exit"


USR2_HOOKS = """\
\"\"\"Written by test_supervisor.py: notes what each master's hooks see of USR2.\"\"\"
import os

NOTES = {notes!r}
PIDFILE = {pidfile!r}


def _note(*words):
    with open(NOTES, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")


def when_ready(server):
    _note("ready", server.pid, server.master_pid, server.master_name)


def post_fork(server, worker):
    _note("fork", server.master_pid, server.master_name)


def on_exit(server):
    _note("exit", server.pid, server.master_pid, server.master_name, server.reexec_pid,
          os.path.exists(PIDFILE))
"""


def test_usr2_names_the_masters_to_the_hooks_as_gunicorn(launch, tmp_path):
    """Review (session 32): the hook server's master_pid and reexec_pid were always 0.
    As in gunicorn 27, a master a USR2 started is "Master.2" with the old master's
    pid as master_pid while that one runs (its workers see it too), and refuses a
    USR2 of its own meanwhile; the old master keeps "Master" with the new one's pid
    as reexec_pid; once the old one is gone, the new one is "Master" again. on_exit
    runs after `Shutting down: <name>` is logged and the pid file removed."""
    notes, pidfile = tmp_path / "notes", tmp_path / "siesta.pid"
    conf = tmp_path / "usr2_hooks.py"
    conf.write_text(USR2_HOOKS.format(notes=str(notes), pidfile=str(pidfile)))
    srv = launch("-c", str(conf), "-p", str(pidfile))

    def read(kind):
        lines = notes.read_text().splitlines() if notes.exists() else []
        return [line for line in lines if line.startswith(kind)]

    assert wait_until(lambda: read("ready") and read("fork")), notes
    assert read("ready") == [f"ready {srv.pid} 0 Master"]
    assert read("fork") == ["fork 0 Master"]
    new = None
    try:
        mark = srv.log_mark()
        new = usr2(srv)
        assert srv.wait_log(rf"Listening at: http://\S+ \({new}\)", since=mark, timeout=WAIT)
        assert wait_until(lambda: len(read("ready")) == 2 and len(read("fork")) == 2), notes
        assert read("ready")[1] == f"ready {new} {srv.pid} Master.2"
        assert read("fork")[1] == f"fork {srv.pid} Master.2"  # in the new master's worker
        os.kill(new, signal.SIGUSR2)
        assert srv.wait_log(r"USR2 ignored: this master's own old master", since=mark), srv.log()
        srv.signal(signal.SIGTERM)
        assert srv.exit_code() == 0, srv.log()
        shut = f"[{srv.pid}] [INFO] Shutting down: Master"
        assert any(line.endswith(shut) for line in srv.log(mark).splitlines()), srv.log(mark)
        # The old master's own pid file is gone before on_exit, as in gunicorn; the new
        # one's PIDFILE.2 becomes PIDFILE at its promotion.
        assert read("exit") == [f"exit {srv.pid} 0 Master {new} False"]
        # The old one gone, the new master is promoted within a heartbeat.
        assert srv.wait_log(r"Master has been promoted\.", since=mark), srv.log(mark)
        assert wait_until(lambda: pidfile.exists() and int(pidfile.read_text()) == new)
        os.kill(new, signal.SIGTTIN)
        assert wait_until(lambda: len(read("fork")) == 3), notes
        assert read("fork")[2] == "fork 0 Master"
    finally:
        if new is not None:
            assert stop_pid(new), "the new master did not stop on TERM"
    assert wait_until(lambda: len(read("exit")) == 2), notes
    assert read("exit")[1] == f"exit {new} 0 Master 0 False"  # its pid file already gone


# --- 3. Workers replaced: crash, count, recycling, memory, timeout --------------------


QUICK_DEATH_APP = """\
\"\"\"Written by test_supervisor.py: serves, and its worker dies 0.3 s after the import.\"\"\"
import os, threading, time


def _die():
    time.sleep(0.3)
    os._exit(1)


threading.Thread(target=_die, daemon=True).start()


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


def test_workers_that_die_as_they_start_are_restarted_later_each_time(launch, mode, tmp_path):
    """QA (session 30): a worker that ended soon after it started (there, one that
    could start no app thread under a pids limit) was replaced at once, 55 times a
    second with a log line each, for as long as the cause lasted. From the second such
    end within a minute the next fork waits, 0.1 s and doubling (up to 10 s); the server
    serves on and does not halt (exit 1 is a crash, not a boot error)."""
    code_dir, _ = app_module(tmp_path, "quick_app", QUICK_DEATH_APP)
    srv = launch("-w", "1", app="quick_app:app", path=(code_dir, APPS_DIR), mode=mode)
    for n, pause in ((2, "0.1"), (3, "0.2"), (4, "0.4")):
        said = srv.wait_log(
            rf"{n} within a minute of each other: the next starts in {pause} s", timeout=WAIT
        )
        assert said, srv.log()
    assert srv.alive(), srv.log()
    assert "Reason:" not in srv.log()


POISON_APP = """\
\"\"\"/die kills its worker (as a fault in an extension would); the rest is served.\"\"\"
import os


def app(environ, start_response):
    if environ["PATH_INFO"] == "/die":
        os._exit(1)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


def test_a_request_that_kills_its_worker_does_not_pause_the_next_fork(launch, mode, tmp_path):
    """Ops probe (session 42): a worker that served and then died within a second
    of its start (a request that kills it, in a stream of good ones) counted as a
    crash as it begins to serve, and the next fork waited 0.1 s doubling up to 10 s:
    with a poison request now and then, the whole server was down most of the time.
    A worker that finished a request is replaced at once, as in gunicorn."""
    code_dir, _ = app_module(tmp_path, "poison", POISON_APP)
    srv = launch("-w", "1", app="poison:app", path=(code_dir, APPS_DIR), mode=mode)
    for _ in range(6):
        for _ in range(3):
            assert srv.get("/ok").status == 200, srv.log()
        with contextlib.suppress(OSError, rawhttp.IncompleteHead):
            srv.get("/die")
    assert srv.get("/ok").status == 200, srv.log()
    assert srv.log().count("exited with code 1") >= 5, srv.log()
    assert "within a minute of each other" not in srv.log(), srv.log()


def test_workers_recycled_by_max_requests_at_once_are_not_paused(launch, mode):
    """Review 2 (session 30): ends the worker chose or the master asked for are no
    quick deaths: `--max-requests 1` recycles a worker within the second, again and
    again, and the next one starts at once, with no pause line."""
    srv = launch("-w", "1", "--max-requests", "1", mode=mode)
    bodies = [srv.get("/ping").status for _ in range(8)]
    assert bodies == [200] * 8
    assert srv.wait_log("Autorestarting worker after current request")
    assert "within a minute of each other" not in srv.log(), srv.log()
    assert srv.alive(), srv.log()


def test_a_worker_that_aborts_is_said_to_have_crashed(launch):
    """QA probe (session 26): a worker that aborted itself (Rust's or CPython's
    out-of-memory abort) was logged as `was sent SIGABRT!`, as if someone had."""
    srv = launch("-w", "2")
    before = srv.worker_pids()
    with contextlib.suppress(OSError, rawhttp.IncompleteHead):
        srv.get("/abort")
    assert srv.wait_log(r"Worker \(pid:\d+\) crashed with SIGABRT"), srv.log()
    assert "was sent SIGABRT" not in srv.log()
    assert wait_until(lambda: len(children(srv.pid)) == 2 and children(srv.pid) != before)
    assert srv.get("/ping").status == 200


def test_each_worker_holds_its_own_heartbeat_file_only(launch):
    """QA probe (session 26): a worker was forked holding the heartbeat files of
    every worker started before it (one more descriptor in each: with a low
    descriptor limit, TTIN then failed a worker's boot and halted the server)."""
    srv = launch("-w", "3")
    assert len(srv.worker_pids()) == 3
    os.kill(srv.pid, signal.SIGTTIN)
    workers = srv.worker_pids(count=4)
    assert len(workers) == 4, srv.log()
    # A worker closes the others' files as it starts, after its fork: the fourth
    # may be looked at before (a CI flake under load, session 41).
    assert srv.worker_pids(count=4) and wait_until(lambda: srv.get("/").status == 200)

    def beats(pid):
        return [
            fd for fd in Path(f"/proc/{pid}/fd").iterdir() if "siesta-heartbeat" in readlink(fd)
        ]

    for pid in [srv.pid, *workers]:
        want = 4 if pid == srv.pid else 1
        assert wait_until(lambda p=pid, n=want: len(beats(p)) == n), (pid, beats(pid))


def sockets_from(pid, lowest):
    """The descriptors of `pid` numbered `lowest` or more that are sockets."""
    return sorted(
        int(fd.name)
        for fd in Path(f"/proc/{pid}/fd").iterdir()
        if int(fd.name) >= lowest and readlink(fd).startswith("socket:")
    )


def readlink(path):
    try:
        return os.readlink(path)
    except OSError:  # closed meanwhile
        return ""


def test_a_killed_worker_is_replaced(launch, mode):
    """Issue 13: SIGKILL to a worker: the master logs it, starts another, service goes on."""
    srv = launch("-w", "2", mode=mode)
    before = srv.worker_pids()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    after = wait_until(lambda: (p := children(srv.pid)) and len(p) == 2 and p != before and p)
    assert after and before[0] not in after and before[1] in after, (before, after)
    assert srv.wait_log(rf"Worker \(pid:{before[0]}\) was sent SIGKILL! Perhaps out of memory\?")
    assert all(srv.get("/ping").status == 200 for _ in range(10))


def test_ttin_and_ttou_change_the_worker_count(launch, mode):
    """Issue 13: TTIN adds a worker, TTOU removes one, and TTOU never goes below one."""
    srv = launch("-w", "1", mode=mode)
    assert len(srv.worker_pids()) == 1
    for sig, count in [
        (signal.SIGTTIN, 2),
        (signal.SIGTTIN, 3),
        (signal.SIGTTOU, 2),
        (signal.SIGTTOU, 1),
    ]:
        srv.signal(sig)
        assert len(srv.worker_pids(count)) == count, (sig, children(srv.pid), srv.log())
    mark = srv.log_mark()
    last = srv.worker_pids(1)
    srv.signal(signal.SIGTTOU)
    assert srv.wait_log("Handling signal: ttou", since=mark)
    assert srv.get("/ping").status == 200
    assert children(srv.pid) == last, "TTOU at one worker must keep it"
    # Its own line (the one the TTOU before retired may log after the mark: the
    # log is read from a pipe, behind the /proc count).
    assert f"Worker exiting (pid: {last[0]})" not in srv.log(mark)


@pytest.mark.timeout(150)
def test_a_stop_right_after_a_reload_stops_every_new_worker(launch):
    """CI (session 23): a TERM that came between a worker's fork and its own
    signal setup ran the master's handler in the child, which drops it, so that
    worker served on and the stop waited the whole --graceful-timeout. The master
    blocks its signals across a fork now. Mode-independent: the master's."""
    for _ in range(4):
        srv = launch("-w", "4", "--graceful-timeout", "60")
        srv.signal(signal.SIGHUP)
        srv.signal(signal.SIGTERM)
        assert srv.exit_code(timeout=20) == 0, srv.log()


AT_FORK_APP = """\
\"\"\"Starts a thread in an after-fork hook, as tracing exporters do.\"\"\"
import os
import threading

seen = {}


def _restart():
    def note():
        with open("/proc/thread-self/status") as f:
            seen["mask"] = next(line for line in f if line.startswith("SigBlk:")).split()[1]

    t = threading.Thread(target=note)
    t.start()
    t.join()


os.register_at_fork(after_in_child=_restart)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [seen.get("mask", "none").encode()]
"""


def test_an_apps_after_fork_thread_has_no_signal_blocked(launch, tmp_path):
    """Review (session 23): the master blocks its signals across a worker's fork;
    an app's own after-fork hook (--preload) ran before the worker let them in,
    and a thread it started kept them blocked for life (a TERM to its subprocess
    was ignored). Siesta's own hook comes first now. Mode-independent."""
    (tmp_path / "atfork_app.py").write_text(AT_FORK_APP)
    srv = launch("-w", "1", "--preload", app="atfork_app:app", path=(tmp_path,))
    resp = srv.get("/")
    assert resp.status == 200
    assert int(resp.body, 16) == 0, resp.body


def test_nworkers_changed_is_called_as_gunicorn_calls_it(launch, tmp_path):
    """QA probe (session 23): the hook was called 1->1 on a TTOU that changed nothing,
    and not at start or on HUP. As gunicorn: (1, None) at start, on every TTIN and
    TTOU that changes the count, and (n, n) on HUP, which sets it again."""
    notes = tmp_path / "counts"
    conf = tmp_path / "count.conf.py"
    conf.write_text(
        '"""Notes nworkers_changed."""\n\n\n'
        "def nworkers_changed(server, new, old):\n"
        f"    with open({str(notes)!r}, 'a') as f:\n"
        "        f.write(f'{new} {old}\\n')\n"
        "\n\n"
        "def on_starting(server):\n"
        f"    with open({str(notes)!r}, 'a') as f:\n"
        "        f.write('on_starting\\n')\n"
    )
    srv = launch("-w", "1", "-c", str(conf))
    # The first call comes before on_starting, as gunicorn's arbiter makes it
    # as it sets its count (QA, session 35: it came after when_ready).
    steps = [
        (None, ["1 None", "on_starting"]),
        (signal.SIGTTIN, ["1 None", "on_starting", "2 1"]),
        (signal.SIGTTOU, ["1 None", "on_starting", "2 1", "1 2"]),
        (signal.SIGHUP, ["1 None", "on_starting", "2 1", "1 2", "1 1"]),
    ]
    for sig, want in steps:
        if sig is not None:
            srv.signal(sig)
        assert wait_until(
            lambda w=want: notes.exists() and notes.read_text().split("\n")[:-1] == w
        ), (
            notes.read_text() if notes.exists() else None,
            want,
        )
    mark = srv.log_mark()
    srv.signal(signal.SIGTTOU)  # at one worker: no change, no call
    assert srv.wait_log("Handling signal: ttou", since=mark)
    assert srv.get("/ping").status == 200
    assert notes.read_text().split("\n")[:-1] == steps[-1][1]


def test_hup_then_ttin_sent_together_are_handled_in_that_order(launch):
    """QA probe (session 23): HUP and TTIN pending together had their handlers run
    last first (the kernel stacks them), so TTIN came before HUP, whose reload then
    set the count back from the config: 2 workers, not 3. Mode-independent: the
    master's signals."""
    srv = launch("-w", "2")
    assert len(srv.worker_pids()) == 2
    mark = srv.log_mark()
    for _ in range(3):
        os.kill(srv.pid, signal.SIGHUP)
        os.kill(srv.pid, signal.SIGTTIN)
        assert srv.wait_log("Handling signal: ttin", since=mark), srv.log(mark)
        handled = re.findall(r"Handling signal: (hup|ttin)", srv.log(mark))
        assert handled == ["hup", "ttin"], handled
        mark = srv.log_mark()
    # Each reload sets the count back to -w, and the TTIN after it adds one.
    assert wait_until(lambda: len(children(srv.pid)) == 3), (children(srv.pid), srv.log())
    assert srv.get("/ping").status == 200


def test_max_requests_recycles_the_worker(launch, mode):
    """Issue 13: --max-requests 50: after 60 requests a second worker pid has answered,
    'Autorestarting worker' is logged, and no request failed on the way."""
    srv = launch("-w", "1", "--max-requests", "50", mode=mode)
    pids = [srv.worker_pid() for _ in range(60)]
    assert len(set(pids)) == 2, sorted(set(pids))
    assert pids[:50] == [pids[0]] * 50
    assert srv.wait_log("Autorestarting worker after current request.")


def test_the_response_that_reaches_max_requests_closes_its_connection(launch, mode):
    """QA (session 35): the response that reached --max-requests kept its
    keep-alive connection, so the draining worker served one more request on it
    (on each such connection: one per upstream connection behind a proxy). As
    gunicorn's, that response says `Connection: close`."""
    srv = launch("-w", "1", "--max-requests", "3", mode=mode)
    with srv.connect() as conn:
        said = []
        for _ in range(3):
            conn.send(rawhttp.build_request("GET", "/pid"))
            resp = conn.read_response()
            assert resp.status == 200, resp
            said.append((int(resp.body), resp.has_token("Connection", "close")))
        assert conn.wait_closed(), "the connection stayed open"
    old = said[0][0]
    assert said == [(old, False), (old, False), (old, True)], said
    assert srv.wait_log("Autorestarting worker after current request."), srv.log()
    assert wait_until(lambda: _pid_other_than(srv, old)), srv.log()


def test_max_requests_starts_the_replacement_while_the_worker_drains(launch, mode):
    """Operator probe (session 17): a worker past --max-requests was replaced only
    once it had exited, so with -w 1 new connections waited in the backlog for its
    drain and a fresh worker's boot (gevent p99 696 ms under churn). The worker
    now tells the master as its last request starts (a byte in its heartbeat file),
    and the replacement serves while that request, an upload, still holds the old
    worker. Review (session 38): told only once that request was done, the master
    left a worker that accepts nothing alone for as long as it ran."""
    srv = launch("-w", "1", "--max-requests", "2", mode=mode)
    old = srv.worker_pid()  # request 1
    go = threading.Event()
    upload = Uploader(srv, 256 * 1024, go=go)  # request 2: the last
    upload.start()
    try:
        assert srv.wait_records("uploads", 1) == ["started"], srv.log()
        assert srv.wait_log("Autorestarting worker after current request."), srv.log()
        # The old worker still holds the upload; a new one answers beside it.
        assert wait_until(lambda: _pid_other_than(srv, old)), srv.log()
        assert old in children(srv.pid), "the old worker left before its upload ended"
    finally:
        go.set()
        upload.join(60)
    upload.check()
    assert upload.result.has_token("Connection", "close"), upload.result
    assert wait_until(lambda: old not in children(srv.pid)), "the old worker never left"
    assert srv.alive(), srv.log()


def test_a_response_the_leave_finds_running_closes_its_connection(launch, mode):
    """Review (session 38): whether a response closes its connection was decided
    as its request started, so one that started before the last request and
    answered while it ran kept its connection, and the leaving worker could serve
    one more request on it. gunicorn looks at `worker.alive` after the response."""
    srv = launch("-w", "1", "--max-requests", "2", mode=mode)
    go_first, go_last = threading.Event(), threading.Event()
    first = Uploader(srv, 256 * 1024, go=go_first)  # request 1, parked
    last = Uploader(srv, 256 * 1024, go=go_last)  # request 2: the last, parked
    try:
        first.start()
        assert srv.wait_records("uploads", 1) == ["started"], srv.log()
        last.start()
        assert srv.wait_records("uploads", 2) == ["started"] * 2, srv.log()
        go_first.set()
        first.join(60)
        first.check()
        # Answered while the last request still runs: the worker is leaving.
        assert first.result.has_token("Connection", "close"), first.result
    finally:
        go_first.set()
        go_last.set()
        last.join(60)
    last.check()
    assert last.result.has_token("Connection", "close"), last.result


def test_a_worker_takes_no_connection_once_its_last_request_started(launch, mode):
    """QA (session 36): the worker went on accepting while the request that reached
    --max-requests ran, and took what was queued as it stopped, so a client that
    connected meanwhile was served past the count (12 of 18 thread-mode workers
    served 6 at --max-requests 5). From that request's start it accepts no more:
    the connection waits for the replacement. The status page shows the worker
    draining from then: it takes nothing new."""
    metrics = ("--metrics-bind", "127.0.0.1:0")
    srv = launch("-w", "1", "--max-requests", "2", *metrics, mode=mode)
    url = metrics_url(srv)
    old = srv.worker_pid()  # request 1
    go = threading.Event()
    upload = Uploader(srv, 256 * 1024, go=go)  # request 2: the last, parked
    upload.start()
    answered = []
    late = threading.Thread(target=lambda: answered.append(_pid_or_error(srv)), daemon=True)
    try:
        assert srv.wait_records("uploads", 1) == ["started"], srv.log()
        phases = {w["pid"]: w["phase"] for w in status(url)["workers"]}
        assert phases[old] == "draining", phases  # beside it, its replacement may be up
        late.start()
        # The old worker would answer it at once: give it that chance.
        late.join(1.0)
    finally:
        go.set()
        upload.join(60)
    upload.check()
    late.join(30)
    assert len(answered) == 1 and isinstance(answered[0], int), (answered, srv.log())
    assert answered[0] != old, srv.log()
    assert srv.alive(), srv.log()


def test_a_leaving_worker_closes_every_keep_alive_response(launch, mode):
    """Once the request that reaches --max-requests has started, a request on
    another keep-alive connection is still answered, with `Connection: close`, as
    gunicorn's once `worker.alive` is false: its client reconnects elsewhere."""
    srv = launch("-w", "1", "--max-requests", "2", mode=mode)
    with srv.connect() as conn:
        conn.send(rawhttp.build_request("GET", "/pid"))  # request 1
        first = conn.read_response()
        assert first.status == 200 and not first.has_token("Connection", "close"), first
        go = threading.Event()
        upload = Uploader(srv, 256 * 1024, go=go)  # request 2: the last, parked
        upload.start()
        try:
            assert srv.wait_records("uploads", 1) == ["started"], srv.log()
            conn.send(rawhttp.build_request("GET", "/pid"))
            resp = conn.read_response()
        finally:
            go.set()
            upload.join(60)
        assert resp.status == 200 and resp.body == first.body, resp
        assert resp.has_token("Connection", "close"), resp
        assert conn.wait_closed(), "the connection stayed open"
    upload.check()


def test_a_request_refused_before_the_app_does_not_count_toward_max_requests(launch, mode):
    """gunicorn counts a request toward --max-requests once it is parsed, so a
    request line over --limit-request-line (414) does not count; Siesta counted
    every head, so a worker could be recycled by refusals its app never saw."""
    srv = launch("-w", "1", "--max-requests", "2", "--limit-request-line", "200", mode=mode)
    resp = srv.get("/" + "a" * 400)
    assert resp.status == 414, resp
    first = srv.worker_pid()
    assert srv.worker_pid() == first, srv.log()  # the second: the last
    assert srv.wait_log("Autorestarting worker after current request."), srv.log()


def _pid_or_error(srv):
    """The pid /pid answers, or the exception the request raised."""
    try:
        return srv.worker_pid()
    except Exception as exc:  # reported by the test
        return exc


def test_the_last_request_before_max_requests_gets_its_own_time(launch, mode):
    """Review (session 36): a version that stopped the worker as its last request
    started counted that request's own run against --graceful-timeout, and a
    stream longer than it was cut. The stop's time starts once it is done, or once
    it has run --graceful-timeout (a stream that never ends is cut at twice that:
    `test_a_last_request_that_outlasts_the_graceful_timeout_is_cut_after_it`)."""
    srv = launch(
        "-w", "1", "--max-requests", "2", "--graceful-timeout", "2", app="router_app:app", mode=mode
    )
    assert srv.get("/ping").status == 200
    # 3 s of stream (30 chunks of 10 bytes, 0.1 s apart): 1.5 times the stop's time.
    resp = srv.get("/stream?count=30&size=10&delay=0.1")
    assert resp.status == 200 and resp.complete, resp
    assert len(resp.body) == 300, resp
    assert srv.wait_log("Autorestarting worker after current request."), srv.log()
    assert "still running were cut" not in srv.log(), srv.log()


def _pid_other_than(srv, old):
    """A worker other than `old` answered /pid (None when the request failed)."""
    try:
        return srv.worker_pid() != old
    except (OSError, rawhttp.IncompleteHead):
        return None


def test_max_worker_rss_recycles_a_growing_worker(launch, mode):
    """Issue 13: --max-worker-rss: a worker whose app keeps 60 MiB more than the limit
    allows is replaced after that request."""
    srv = launch("-w", "1", "--max-worker-rss", "1000", mode=mode)
    # The limit is the booted worker's RSS plus 40 MiB, so it holds in either mode.
    with open(f"/proc/{srv.worker_pids()[0]}/statm") as f:
        base = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
    srv.stop()
    srv = launch("-w", "1", "--max-worker-rss", str(base + 40), mode=mode)
    old = srv.worker_pid()
    assert srv.get("/grow?mib=60").status == 200
    assert srv.wait_log(rf"Worker \(pid:{old}\) uses \d+ MiB, over --max-worker-rss")
    assert new_workers(srv, [old]), srv.log()
    assert srv.worker_pid() != old


def test_max_worker_rss_below_a_fresh_worker_warns_and_counts_from_its_boot(launch, mode):
    """QA (session 30): a --max-worker-rss below what a freshly booted worker holds
    replaced every worker about once a second, for ever, each replacement as fat as
    the last. Such a worker is now held to what it booted with plus the limit, and
    that is said once, as a warning (review, session 31: not exempt for good)."""
    srv = launch("-w", "2", "--max-worker-rss", "5", mode=mode)
    said = srv.wait_log(r"WARNING.*already used (\d+) MiB when it booted, over --max-worker-rss 5")
    assert said, srv.log()
    first = sorted(srv.worker_pids())
    # Three of the master's looks (one a second); the same two workers serve.
    time.sleep(3.5)
    assert sorted(srv.worker_pids()) == first, srv.log()
    assert srv.get("/ping").status == 200
    assert "replacing it" not in srv.log()
    assert len(re.findall(r"when it booted, over --max-worker-rss", srv.log())) == 1, srv.log()
    grown = int(srv.get("/pid").body)
    assert grown in first
    for _ in range(3):  # the one that answers /grow keeps 60 MiB more
        if srv.get("/grow?mib=60").status == 200 and srv.wait_log(
            r"uses \d+ MiB, over \d+ MiB \(what it booted with, plus --max-worker-rss 5 MiB\): "
            r"replacing it",
            timeout=5,
        ):
            break
    else:
        raise AssertionError(srv.log())
    assert wait_until(lambda: sorted(srv.worker_pids()) != first), srv.log()


@pytest.mark.timeout(120)
def test_timeout_kills_a_stuck_worker_and_logs_its_stack(launch, mode):
    """Issue 13: --timeout 2: a worker whose only thread (or hub) spins in Python is
    killed: 'WORKER TIMEOUT' is logged with the spinning function in the worker's
    Python stack, and a new worker serves."""
    threads = ("--threads", "1") if mode == "thread" else ()
    srv = launch("-w", "1", "--timeout", "2", *threads, mode=mode)
    old = srv.worker_pid()
    client, answer = request_in_background(srv, "/spin?seconds=30")
    assert srv.wait_log(rf"WORKER TIMEOUT \(pid:{old}\)", timeout=WAIT), srv.log()
    assert srv.wait_log(r"in spin_until_killed", timeout=WAIT), srv.log()
    assert_replaced_unanswered(srv, old, client, answer)
    # Ended by the SIGABRT itself (review, session 40: a gevent worker's boot-time
    # handler left Python's in place, which took the signal as an exception in the
    # spinning request, and the worker lived on to its SIGKILL).
    assert srv.wait_log(rf"Worker \(pid:{old}\) was sent SIGABRT", timeout=WAIT), srv.log()
    assert "ignored due to race condition" not in srv.log(), srv.log()


STUCK_TOGETHER = """\
\"\"\"Once the file FLAG exists, each worker started before it holds the GIL in C.\"\"\"
import os
import threading
import time

FLAG = %r


def stuck_on_the_flag():
    while not os.path.exists(FLAG):
        time.sleep(0.05)
    sum(range(10**12))


if not os.path.exists(FLAG):
    threading.Thread(target=stuck_on_the_flag, daemon=True).start()


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"""


@pytest.mark.timeout(120)
def test_workers_timed_out_together_write_their_stacks_one_after_the_other(launch, tmp_path):
    """Noted in session 40: workers stuck on one thing (a database that stopped
    answering) time out in the same tick, and got SIGABRT at once; each wrote its
    stacks as the others did, mixed line by line in the log. One is aborted at a
    time, the next once it has exited: each WORKER TIMEOUT line has its stacks
    below it."""
    flag = tmp_path / "flag"
    code_dir, _ = app_module(tmp_path, "stuck", STUCK_TOGETHER % str(flag))
    srv = launch("-w", "2", "--timeout", "1", app="stuck:app", path=(code_dir, APPS_DIR))
    stuck = set(srv.worker_pids())
    assert len(stuck) == 2
    mark = srv.log_mark()
    flag.touch()
    for pid in stuck:
        assert srv.wait_log(rf"Worker \(pid:{pid}\) was sent SIGABRT", since=mark), srv.log(mark)
    log = srv.log(mark)
    lines = [m.start() for m in re.finditer(r"WORKER TIMEOUT \(pid:\d+\)", log)]
    assert len(lines) == 2, log
    first, second = log[lines[0] : lines[1]], log[lines[1] :]
    for stacks in (first, second):
        assert "in stuck_on_the_flag" in stacks, log
    assert wait_until(lambda: srv.get("/").status == 200), srv.log(mark)
    assert srv.alive(), srv.log(mark)


@pytest.mark.timeout(120)
def test_a_worker_whose_gevent_hub_is_held_stops_accepting(launch, tmp_path):
    """QA probe (session 28): in gevent mode the I/O thread accepts and reads heads for
    the hub, so a worker whose hub a request held (a CPU-bound loop, a blocking call
    the patching misses) went on accepting connections it could not serve: 6 of 10
    requests waited for the hub while the other worker idled. A held hub now stops
    its worker accepting until it turns again, as a gevent worker accepting on its hub
    stops: every request goes to the other worker meanwhile.

    The held worker is the one whose app spins (its pid in `.started`). Its status
    page phase is set before the line is logged (a CI flake, session 37: a task
    watching the hold set it, which ran late on a starved CPU, so the page still
    showed the worker ready after its line; 8 of 60 runs failed so under a build).
    Both hubs have turned before the spin: a request that reached a worker whose hub
    loop had not run yet would be held for that while too, and its line taken for
    the spin's."""
    metrics = ("--metrics-bind", "127.0.0.1:0")
    srv = launch("-w", "2", "--log-level", "debug", *metrics, mode="gevent")
    url = metrics_url(srv)

    def served_by_each():
        assert srv.get("/pid").status == 200
        workers = status(url)["workers"]
        ready = [w for w in workers if w["requests"] > 0 and w["phase"] == "ready"]
        return len(workers) == len(ready) == 2

    assert wait_until(served_by_each, timeout=WAIT), status(url)
    release = tmp_path / "release"
    started = Path(f"{release}.started")
    mark = srv.log_mark()
    client, answer = request_in_background(srv, f"/spin-until?path={release}")
    try:
        assert wait_until(lambda: started.exists() and started.read_text(), timeout=WAIT)
        held = started.read_text()
        pattern = rf"\[{held}\] \[DEBUG\] The hub loop has not turned"
        assert srv.wait_log(pattern, mark, WAIT), srv.log()
        # The status page shows it held as soon as it is logged; /readyz does not
        # fail for it.
        phases = {str(w["pid"]): w["phase"] for w in status(url)["workers"]}
        assert phases[held] == "held", phases
        answers = [srv.get("/pid") for _ in range(20)]
        phases = {str(w["pid"]): w["phase"] for w in status(url)["workers"]}
        assert sorted(phases.values()) == ["held", "ready"], phases
        assert get(url + "/readyz")[0] == 200
    finally:
        released = srv.log_mark()
        release.touch()
    assert all(r.status == 200 for r in answers), answers
    others = {r.body.decode() for r in answers}
    assert held not in others and len(others) == 1, (held, others)
    client.join(WAIT)
    assert answer["resp"].status == 200 and answer["resp"].body.decode() == held, answer
    turns = rf"\[{held}\] \[DEBUG\] The hub loop turns again"
    assert srv.wait_log(turns, released), srv.log()
    assert srv.get("/pid").status == 200
    assert wait_until(lambda: all(w["phase"] == "ready" for w in status(url)["workers"]))


@pytest.mark.timeout(120)
def test_a_connection_the_stop_drains_names_an_ipv4_client_as_ipv4(launch, tmp_path):
    """Review (session 37): the connections still queued at a stop are taken by the
    drain, which named an IPv4 client of a dual-stack socket `::ffff:127.0.0.1` (in the
    environ and the log), where the accept loop names it `127.0.0.1`. A held gevent
    hub stops its worker accepting, so the connection waits in the queue until the
    TERM's drain takes it."""
    srv = launch("--log-level", "debug", mode="gevent", bind="[::]:0")
    port = int(srv.url_seen.rsplit(":", 1)[1])
    release = tmp_path / "release"

    def connect(target):
        s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return s

    def answer(s):
        data = b""
        with s:
            while chunk := s.recv(65536):
                data += chunk
        return data

    # The hub has turned before the spin: a hold logged while its loop had not run
    # yet would end, and its worker accept again, before the spin's.
    assert answer(connect("/remote")).startswith(b"HTTP/1.1 200")
    started = Path(f"{release}.started")
    mark = srv.log_mark()

    def hub_lines():
        return [line for line in srv.log(mark).splitlines() if "The hub loop" in line]

    spinner = connect(f"/spin-until?path={release}")
    try:
        assert wait_until(started.exists, timeout=WAIT)
        # The spin's hold: the last of the (alternating) hold and turn lines.
        assert wait_until(lambda: "has not turned" in (hub_lines() or [""])[-1], timeout=WAIT), (
            srv.log()
        )
        held_at = len(hub_lines())
        queued = connect("/remote")  # in the accept queue once connected (loopback)
        srv.signal(signal.SIGTERM)

        def refused():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            except ConnectionRefusedError:
                return True
            return False

        # Every copy of the socket is closed once the worker's drain took the queue.
        assert wait_until(refused, timeout=WAIT), srv.log()
        # The worker did not accept meanwhile: its hub was held throughout.
        assert len(hub_lines()) == held_at, hub_lines()
    finally:
        release.touch()
    assert answer(spinner).startswith(b"HTTP/1.1 200")
    got = answer(queued)
    assert got.startswith(b"HTTP/1.1 200"), (got, srv.log())
    assert got.split(b"\r\n\r\n", 1)[1] == b"127.0.0.1", got


@pytest.mark.timeout(120)
def test_a_gevent_hub_held_by_a_greenlet_of_the_apps_stops_accepting(launch, tmp_path):
    """QA probe (session 29): the hub counted as busy, and so was watched, only from
    the request it ran to its last one's end, so a hub held by a greenlet of the app's
    own (a background job an earlier request started) was never seen held: its worker
    went on accepting, and the requests it took waited for the hold to end. A request
    waiting for the hub makes it busy too now."""
    srv = launch("-w", "2", "--log-level", "debug", mode="gevent")
    release = tmp_path / "release"
    mark = srv.log_mark()
    started = srv.get(f"/spin-later?path={release}")
    assert started.status == 200
    held = started.body.decode()
    assert wait_until(Path(f"{release}.started").exists, timeout=WAIT)
    # Some of these land on the held worker and wait: they make it busy.
    waiting = [request_in_background(srv, "/pid") for _ in range(20)]
    try:
        line = srv.wait_log(rf"\[{held}\] \[DEBUG\] The hub loop has not turned", mark, WAIT)
        assert line, srv.log()
        answers = [srv.get("/pid") for _ in range(20)]
    finally:
        release.touch()
    assert all(r.status == 200 for r in answers), answers
    assert {r.body.decode() for r in answers}.isdisjoint({held}), (held, answers)
    for client, answer in waiting:
        client.join(WAIT)
        assert answer["resp"].status == 200, answer


def request_in_background(srv, target):
    """GETs `target` on a thread of its own (its worker may be killed under it):
    the thread, and the dict that gets its response or error."""
    answer = {}

    def get():
        try:
            answer["resp"] = srv.get(target)
        except Exception as exc:
            answer["error"] = exc

    client = threading.Thread(target=get, daemon=True)
    client.start()
    return client, answer


def assert_replaced_unanswered(srv, old, client, answer):
    """A new worker serves in place of `old`, whose request got no 200."""
    assert new_workers(srv, [old]), srv.log()
    assert srv.get("/ping").status == 200
    client.join(WAIT)
    assert "resp" not in answer or answer["resp"].status != 200, answer


@pytest.mark.timeout(120)
def test_a_timeout_after_a_rotation_writes_its_stacks_to_the_new_log(launch, tmp_path):
    """QA probe (session 23): after a rotation and USR1, a WORKER TIMEOUT's stack dump
    went to the rotated file (faulthandler kept its own descriptor of the old one).
    It writes through the error log's descriptor now, which the reopening moves."""
    errors = tmp_path / "err.log"
    srv = launch(
        "-w",
        "1",
        "--timeout",
        "2",
        "--threads",
        "1",
        "--error-logfile",
        str(errors),
        log_file=errors,
    )
    old = srv.worker_pid()
    errors.rename(tmp_path / "err.log.1")
    srv.signal(signal.SIGUSR1)
    assert wait_until(errors.exists), "USR1 made no new error log"
    client, answer = request_in_background(srv, "/spin?seconds=30")
    assert wait_until(lambda: "in spin_until_killed" in errors.read_text(), timeout=WAIT), (
        errors.read_text()
    )
    assert_replaced_unanswered(srv, old, client, answer)


@pytest.mark.timeout(120)
def test_timeout_kills_a_worker_whose_app_keeps_the_gil(launch):
    """QA probe (session 23): with 8 threads, one request in C code that keeps the
    GIL (a backtracking regular expression, here libc's sleep through ctypes.PyDLL)
    stopped every other request of the worker, and its free slots kept the
    heartbeat going, so --timeout never came. The beat now waits for the GIL too:
    'WORKER TIMEOUT', and a new worker serves."""
    srv = launch("-w", "1", "--timeout", "2", "--threads", "8", mode="thread")
    old = srv.worker_pid()
    client, answer = request_in_background(srv, "/hold-gil?seconds=60")
    assert srv.wait_log(rf"WORKER TIMEOUT \(pid:{old}\)", timeout=WAIT), srv.log()
    assert_replaced_unanswered(srv, old, client, answer)


@pytest.mark.timeout(120)
def test_timeout_spares_a_slow_uploader(launch, mode):
    """Issue 13: --timeout 1 does not kill a worker whose one thread (or hub) waits for
    a client trickling its body for several times the timeout: waiting is not stuck."""
    threads = ("--threads", "1") if mode == "thread" else ()
    srv = launch("-w", "1", "--timeout", "1", *threads, mode=mode)
    before = srv.worker_pids()
    upload = Uploader(srv, 64 * 1024, head=1024, piece=4096, pause=0.25)  # about 4 s
    upload.start()
    upload.join(60.0)
    upload.check()
    assert srv.worker_pids() == before
    assert "WORKER TIMEOUT" not in srv.log()


# --- 4. Sockets, pid file, user ---------------------------------------------------------


def unix_get(path, target="/ping"):
    """One GET over a unix socket; the parsed response."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10.0)
    sock.connect(str(path))
    conn = rawhttp.Connection.__new__(rawhttp.Connection)
    conn.sock, conn.buf, conn.eof, conn.reset = sock, bytearray(), False, False
    with conn:
        conn.send(rawhttp.build_request("GET", target))
        return conn.read_response()


def test_unix_socket_with_umask_is_served_and_removed(launch, mode, tmp_path):
    """Issue 13: -b unix:PATH --umask 0o007: the socket file has mode 0770, requests are
    served over it, and TERM removes it. QA (session 30): -m was the umask of the
    master and its workers too, so the app's files came out 0660 (0644 under
    gunicorn, whose umask applies to its sockets); they keep the launch's umask."""
    path, pidfile = tmp_path / "siesta.sock", tmp_path / "pid"
    old = os.umask(0o077)
    try:
        srv = launch(
            "-w", "2", "--umask", "0o007", "-p", str(pidfile), bind=f"unix:{path}", mode=mode
        )
    finally:
        os.umask(old)
    for pid in [srv.pid, *srv.worker_pids()]:
        with open(f"/proc/{pid}/status") as f:
            assert "Umask:\t0077\n" in f.read(), pid
    # As gunicorn's pid file, whatever the umask (review, session 31).
    assert stat.S_IMODE(pidfile.stat().st_mode) == 0o644
    assert srv.url_seen == f"unix:{path}"
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o770
    resp = unix_get(path)
    assert (resp.status, resp.body) == (200, b"pong")
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    assert not path.exists()


@pytest.mark.parametrize("outcome", ["promoted", "rolled_back"])
def test_a_promoted_usr2_master_removes_the_socket_files_at_its_stop(launch, tmp_path, outcome):
    """Noted since session 29: after USR2 and a TERM to the old master, the new
    master's own stop left the unix socket files (`-b unix:` and `--metrics-bind
    unix:`) behind, where a promoted gunicorn master removes them. A rolled-back new
    master (TERMed while the old one serves) still leaves them to the old one.
    Mode-independent."""
    sock, msock = tmp_path / "s.sock", tmp_path / "m.sock"
    srv = launch("-w", "1", "--metrics-bind", f"unix:{msock}", bind=f"unix:{sock}")
    assert unix_get(sock).status == 200
    new = usr2(srv)
    try:
        assert srv.wait_log(rf"Listening at: unix:\S+ \({new}\)", timeout=WAIT), srv.log()
        # The worker and the metrics process.
        assert wait_until(lambda: len(children(new)) == 2), srv.log()
        if outcome == "promoted":
            srv.signal(signal.SIGTERM)
            assert srv.exit_code() == 0, srv.log()
            assert sock.exists() and msock.exists(), "the old master left them to the new one"
            assert unix_get(sock).status == 200
            assert stop_pid(new), "the new master did not stop on TERM"
            assert wait_until(lambda: not sock.exists() and not msock.exists()), srv.log()
        else:
            assert stop_pid(new), "the new master did not stop on TERM"
            assert srv.wait_log(r"The new master \(pid: \d+\) exited with code 0"), srv.log()
            assert sock.exists() and msock.exists(), "the old master's files went with the new"
            assert unix_get(sock).status == 200
            srv.signal(signal.SIGTERM)
            assert srv.exit_code() == 0, srv.log()
            assert not sock.exists() and not msock.exists()
    finally:
        stop_pid(new)


def test_a_unix_socket_is_open_to_a_proxy_of_another_user(launch, tmp_path):
    """QA probe (session 23): under the usual umask 022 the socket file was 0755,
    so nginx's workers (another user) got EACCES and answered 502 to everything,
    where gunicorn's socket is 0777 (it binds under -m, default 0). Now 0777 less
    -m. Mode-independent: the master binds."""
    path = tmp_path / "siesta.sock"
    old = os.umask(0o022)
    try:
        srv = launch("-w", "1", bind=f"unix:{path}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o777
    assert srv.url_seen == f"unix:{path}"
    assert unix_get(path).status == 200


def listening_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def test_a_pid_file_of_a_running_master_is_not_taken_over(launch, tmp_path):
    """Probe (pid file): a second server with the same -p started, overwrote the file
    and deleted it at exit, leaving the first running with none. Now it refuses with
    gunicorn's line and exit 1, and a stale file (a dead pid) is simply replaced."""
    pidfile = tmp_path / "shared.pid"
    first = launch("-p", str(pidfile))
    # Written before the ready line, as gunicorn's: a script that waited for
    # `Listening at:` finds it (and, with -u/-g, the unix socket the workers').
    assert int(pidfile.read_text()) == first.pid
    second = run_siesta("-b", "127.0.0.1:0", "-p", str(pidfile), APP)
    assert second.returncode == 1, second.stderr
    assert f"Already running on PID {first.pid}" in second.stderr, second.stderr
    assert int(pidfile.read_text()) == first.pid, "the running master's file is kept"
    assert first.alive()
    first.stop()
    pidfile.write_text("999999999\n")  # no such process: a stale file
    again = launch("-p", str(pidfile))
    assert wait_until(lambda: pidfile.read_text().strip() == str(again.pid)), pidfile.read_text()


def test_fd_bind_serves_a_socket_made_by_the_caller(launch, tmp_path):
    """Issue 13: -b fd://N serves a socket the caller opened and passed, and -p writes the
    master's pid and removes it at exit. Mode-independent: the master takes the socket
    before any worker exists (the modes are covered by the other socket tests)."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    pidfile = tmp_path / "pid"
    try:
        srv = launch("-p", str(pidfile), bind=f"fd://{sock.fileno()}", pass_fds=(sock.fileno(),))
    finally:
        sock.close()  # the server holds its own copy now
    assert (srv.host, srv.port) == ("127.0.0.1", port)
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text()), "no pid file"
    assert int(pidfile.read_text()) == srv.pid
    srv.assert_serving()
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    assert not pidfile.exists()


def test_after_usr2_one_master_answers_the_metrics_port(launch, mode):
    """QA probe (session 28): after a USR2 both masters' metrics processes took
    connections on the handed-over --metrics-bind, so scrapes alternated between
    them and every counter went back and forth. The old master hands its port
    over, and takes it back when the new master is gone (a rollback)."""
    srv = launch("--metrics-bind", "127.0.0.1:0", mode=mode)
    url = metrics_url(srv)
    assert status(url)["master"]["pid"] == srv.pid
    new = usr2(srv)
    try:
        assert srv.wait_log("Metrics: handed over to the new master"), srv.log()
        assert wait_until(lambda: status(url)["master"]["pid"] == new), status(url)
        for _ in range(20):  # every scrape from the one master
            assert srv.get("/ping").status == 200
            assert status(url)["master"]["pid"] == new
    finally:
        assert stop_pid(new), "the new master did not stop on TERM"
    # Rolled back: the old master answers again.
    assert wait_until(lambda: status(url)["master"]["pid"] == srv.pid), srv.log()
    assert srv.get("/ping").status == 200


def test_a_master_started_by_usr2_holds_no_stray_copy_of_an_fd_bind(launch, tmp_path):
    """Review 3 (session 26): a -b fd://N socket, handed over inheritable, went
    through USR2's exec beside its numbered copy: the new master and its
    workers held it twice, and while the new master drained, new connections
    queued on the stray copy instead of being refused."""
    sock = listening_socket()
    high = os.dup2(sock.fileno(), 40)  # a number the new master's fds do not reach
    try:
        srv = launch(bind=f"fd://{high}", pass_fds=(high,))
    finally:
        os.close(high)
        sock.close()
    new = None
    try:
        new = usr2(srv)
        assert wait_until(lambda: len(children(new)) == 1), srv.log()
        for pid in [new, *children(new)]:
            assert sockets_from(pid, 40) == [], (pid, sockets_from(pid, 40))
    finally:
        if new is not None:
            assert stop_pid(new), "the new master did not stop on TERM"


# A systemd-style launcher: the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID naming the
# process that is exec'd (the launcher's own pid, kept across exec). Python rather than
# `sh -c 'exec ... 3<&N'`, since dash only redirects descriptors 0 to 9.
SYSTEMD = """\
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


def test_listen_fds_socket_activation(launch, tmp_path):
    """Issue 13: systemd socket activation: the socket as fd 3 with LISTEN_FDS=1 and
    LISTEN_PID = the siesta process is served, with no -b. Mode-independent: as above.
    Review (session 30): a unix --metrics-bind file such a master made itself was never
    removed (taken for one of systemd's); it goes at the stop, as without systemd."""
    msock = tmp_path / "m.sock"
    sock = listening_socket()
    port = sock.getsockname()[1]
    try:
        srv = launch(
            "-w",
            "2",
            "--metrics-bind",
            f"unix:{msock}",
            bind=None,
            pass_fds=(sock.fileno(),),
            launcher=(sys.executable, "-c", SYSTEMD, str(sock.fileno())),
        )
    finally:
        sock.close()
    assert srv.proc.pid == srv.pid, "LISTEN_PID must name the exec'd siesta"
    assert (srv.host, srv.port) == ("127.0.0.1", port)
    assert len(srv.worker_pids(count=3)) == 3  # two workers and the metrics process
    srv.assert_serving()
    assert msock.exists()
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    assert not msock.exists(), "the metrics socket file the master made was left"


def status_ids(pid):
    """(real uid, real gid) of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="-u/-g can only switch users when run as root")
def test_user_and_group_switch_the_workers_only(launch, mode):
    """Issue 13: -u nobody -g nogroup as root: the workers run as nobody, the master stays
    root, and requests are served. --preload, because nobody may not be able to read
    the Python installation (here it lives under /root): the app and every module a
    worker needs must be imported before the switch. Regression: the workers imported
    siesta._run (thread mode) and gevent's patched modules after the switch, crashed,
    and were restarted forever."""
    import grp
    import pwd

    try:
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("this system has no nobody user or nogroup group")
    srv = launch("-w", "2", "-u", "nobody", "-g", "nogroup", "--preload", mode=mode)
    workers = srv.worker_pids()
    assert len(workers) == 2
    switched = wait_until(lambda: all(status_ids(p) == (uid, gid) for p in workers))
    assert switched, ([status_ids(p) for p in workers], srv.log())
    assert status_ids(srv.pid) == (0, 0)
    srv.assert_serving()
    assert "Worker crashed" not in srv.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="-u/-g can only switch users when run as root")
def test_numeric_user_and_group_need_no_entry_in_the_databases(launch):
    """QA probe (session 29): -u 54321 -g 54322, ids with no entry in /etc/passwd or
    /etc/group (a container run under an arbitrary uid), were refused as 'no such
    user'; gunicorn uses such numbers as they are, and so does Siesta now. A uid
    without an entry keeps the master's group unless -g says otherwise."""
    import grp
    import pwd

    for lookup, n in ((pwd.getpwuid, 54321), (grp.getgrgid, 54322)):
        with contextlib.suppress(KeyError):
            lookup(n)
            pytest.skip(f"{n} has an entry here")
    srv = launch("-w", "1", "-u", "54321", "-g", "54322", "--preload")
    [worker] = srv.worker_pids()
    assert wait_until(lambda: status_ids(worker) == (54321, 54322)), status_ids(worker)
    srv.assert_serving()
    srv.stop()
    srv = launch("-w", "1", "-u", "54321", "--preload")
    [worker] = srv.worker_pids()
    assert wait_until(lambda: status_ids(worker) == (54321, 0)), status_ids(worker)
    srv.assert_serving()


def status_groups(pid):
    """The supplementary groups of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {int(g) for g in fields["Groups"].split()}


@pytest.mark.skipif(os.geteuid() != 0, reason="-u/-g can only switch users when run as root")
def test_an_fd_bind_handed_over_not_listening_is_served(launch):
    """Review (session 24): a socket passed as -b fd://N bound but not yet
    listening failed every accept; gunicorn calls listen() on it, and so does
    Siesta now (each worker's first accept failed, and the master replaced
    worker after worker)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        srv = launch("-w", "1", bind=f"fd://{sock.fileno()}", pass_fds=(sock.fileno(),))
    finally:
        sock.close()
    srv.assert_serving()
    assert "Listening socket failed" not in srv.log(), srv.log()


def test_a_unix_socket_belongs_to_the_workers_user_and_group(launch, tmp_path):
    """QA probe (session 24): with -u/-g the unix socket stayed root's, so under
    -m 007 a proxy in the workers' group (nginx in www-data) got EACCES, where
    gunicorn gives the socket to -u/-g. Mode-independent: the master binds."""
    import grp
    import pwd

    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    path = tmp_path / "owned.sock"
    tmp_path.chmod(0o755)
    srv = launch(
        *("-w", "1", "-u", "nobody", "-g", "nogroup", "-m", "007", "--preload"),
        bind=f" unix:{path}",  # spaces around a bind do not count (review, session 24)
    )
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o770)
    assert unix_get(path).status == 200, srv.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="-u/-g can only switch users when run as root")
def test_workers_get_the_users_supplementary_groups_with_initgroups_only(launch, tmp_path):
    """QA probe (session 24): a worker that switched to -u always got the user's
    supplementary groups (os.initgroups), say www-data's ssl-cert and its read
    access to private keys; gunicorn adds them with --initgroups only, which
    Siesta refused. Now none but -g's unless --initgroups. The test gives nobody
    a group of its own for the while (groupadd, then groupdel)."""
    import grp
    import pwd

    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    name = "siesta-t-" + rawhttp.new_token()[:8]
    subprocess.run(["groupadd", name], check=True)
    try:
        subprocess.run(["gpasswd", "-a", "nobody", name], check=True, capture_output=True)
        extra = grp.getgrnam(name).gr_gid
        for args, want in (((), {gid}), (("--initgroups",), {gid, extra})):
            srv = launch("-w", "1", "-u", "nobody", "-g", "nogroup", "--preload", *args)
            (worker,) = srv.worker_pids()
            assert wait_until(lambda w=worker: status_ids(w) == (uid, gid)), srv.log()
            assert status_groups(worker) == want, (args, status_groups(worker))
            srv.stop()
    finally:
        subprocess.run(["groupdel", name], check=False)


def launch_as_nobody_logging_in(launch, mode, logs, dir_mode):
    """A server whose workers run as nobody:nogroup (--preload), with both its logs in
    `logs`, given mode `dir_mode`: (server, access log, error log)."""
    logs.chmod(dir_mode)
    access, errors = logs / "acc.log", logs / "err.log"
    srv = launch(
        *("-u", "nobody", "-g", "nogroup", "--preload", "--access-logfile", str(access)),
        *("--error-logfile", str(errors)),
        mode=mode,
        log_file=errors,
    )
    return srv, access, errors


def test_log_files_in_a_root_directory_are_given_to_the_workers_user(launch, mode):
    """Probe (-u/-g and log files): as root, with --access-logfile in a directory only
    root may write, the workers (nobody) could not create it and failed to boot (exit
    3). Now the master creates both log files and gives them to nobody:nogroup, as
    gunicorn does; requests are logged, and again after a rotation and USR1."""
    import grp
    import pwd
    import shutil
    import tempfile

    assert os.getuid() == 0, "this test runs as root (as the test machine does)"
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    logs = Path(tempfile.mkdtemp(prefix="siesta-logs-"))  # under /tmp: nobody may enter
    try:
        srv, access, errors = launch_as_nobody_logging_in(launch, mode, logs, 0o755)

        def owner(path):
            try:
                st = path.stat()  # one stat: the master may be giving it away meanwhile
            except FileNotFoundError:
                return None
            return st.st_uid, st.st_gid

        # "Listening at" (where launch returns) comes before the master gives the
        # files away: CI once saw uid 0 and gid 65534 from two stat calls across it.
        for path in (access, errors):
            assert wait_until(lambda p=path: owner(p) == (uid, gid)), (path, owner(path))
        assert srv.get("/ping?first").status == 200
        assert wait_until(lambda: "/ping?first" in access.read_text()), errors.read_text()
        access.rename(logs / "acc.log.1")
        errors.rename(logs / "err.log.1")
        srv.signal(signal.SIGUSR1)

        def logged_after_rotation():
            assert srv.get("/ping?second").status == 200
            return access.exists() and "/ping?second" in access.read_text()

        assert wait_until(logged_after_rotation, interval=0.2), (logs / "err.log.1").read_text()
        assert (access.stat().st_uid, errors.stat().st_uid) == (uid, uid)
        assert "Cannot reopen" not in errors.read_text() + (logs / "err.log.1").read_text()
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def test_log_files_in_a_directory_only_root_may_enter_stay_the_workers(launch, mode):
    """QA probe (session 23): as root with -u nobody, log files in a 0700 directory
    (which nobody cannot enter) made every worker fail to boot (exit 3): each opened
    them again by path after switching user. gunicorn's workers inherit the master's
    files; Siesta's now keep the error log the master opened and open the access log
    before the switch: both are written."""
    import grp
    import pwd
    import shutil
    import tempfile

    assert os.getuid() == 0, "this test runs as root (as the test machine does)"
    try:
        pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    except KeyError:
        pytest.skip("this system has no nobody user or nogroup group")
    logs = Path(tempfile.mkdtemp(prefix="siesta-logs-"))
    try:
        srv, access, errors = launch_as_nobody_logging_in(launch, mode, logs, 0o700)
        assert srv.get("/ping?in-0700").status == 200
        assert wait_until(lambda: "/ping?in-0700" in access.read_text()), errors.read_text()
        worker = srv.worker_pids()[0]
        assert f"[{worker}] [INFO] Booting worker" in errors.read_text(), errors.read_text()
        assert "failed to boot" not in errors.read_text(), errors.read_text()
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def start_daemon(tmp_path, *args, app=APP, path=(APPS_DIR,)):
    """`siesta -D -p PID --error-logfile LOG ARGS APP` from `path[0]`, which returns at
    once: (the detached master's pid, once the pid file names it; the pid file; the
    error log)."""
    pidfile, errlog = tmp_path / "pid", tmp_path / "error.log"
    result = run_siesta(
        *("-D", "-b", "127.0.0.1:0", "-p", str(pidfile), "--error-logfile", str(errlog)),
        *("--chdir", str(path[0]), "--pythonpath", ",".join(map(str, path)), *args, app),
    )
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text()), "no pid file"
    return int(pidfile.read_text()), pidfile, errlog


def test_a_daemon_whose_on_starting_raises_says_so_in_its_error_log(tmp_path):
    """Review (session 26): with -D, an on_starting hook that raised stopped the
    start without a word: it ran before the error log was open, with stderr
    gone to /dev/null."""
    conf = tmp_path / "conf.py"
    conf.write_text("def on_starting(server):\n    raise RuntimeError('no database')\n")
    errlog = tmp_path / "error.log"
    result = run_siesta(
        *("-D", "-c", str(conf), "-b", "127.0.0.1:0", "--error-logfile", str(errlog)),
        *("--chdir", str(APPS_DIR), APP),
    )
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: errlog.exists() and "not starting" in errlog.read_text())
    text = errlog.read_text()
    assert "Exception in on_starting hook: RuntimeError: no database" in text, text
    assert "Listening at" not in text, text


def daemon_address(errlog):
    """(host, port) from the daemon's ready line in its error log."""
    ready = wait_until(
        lambda: re.search(r"Listening at: http://([\d.]+):(\d+)", errlog.read_text())
    )
    assert ready, errlog.read_text()
    return ready.group(1), int(ready.group(2))


def test_daemon_detaches_serves_and_obeys_winch(tmp_path):
    """Issue 13: -D returns at once while the detached master (its pid in -p) serves;
    WINCH then stops its workers, HUP brings them back, and TERM to the pid stops it
    and removes the pid file. Mode-independent: detaching is the master's alone."""
    pid, pidfile, errlog = start_daemon(tmp_path, "-w", "2")
    try:
        host, port = daemon_address(errlog)
        assert wait_until(lambda: len(children(pid)) == 2)
        assert rawhttp.request(host, port, "GET", "/ping").body == b"pong"
        os.kill(pid, signal.SIGWINCH)
        assert wait_until(lambda: "graceful stop of workers" in errlog.read_text())
        assert wait_until(lambda: children(pid) == []), errlog.read_text()
        os.kill(pid, signal.SIGHUP)
        assert wait_until(lambda: len(children(pid)) == 2), errlog.read_text()
        assert rawhttp.request(host, port, "GET", "/ping").body == b"pong"
    finally:
        assert stop_pid(pid), "the daemon did not stop on TERM"
    assert wait_until(lambda: not pidfile.exists())
    assert "Shutting down: Master" in errlog.read_text()


def test_log_files_that_are_devices_are_not_given_away(launch, tmp_path):
    """Review: with -u, the master gave whatever the log paths named to the workers'
    user: `--access-logfile /dev/null` as root handed /dev/null to nobody. Only
    regular files change owner now; a device stays root's and still takes the log."""
    import shutil
    import tempfile

    assert os.getuid() == 0, "this test runs as root (as the test machine does)"
    logs = Path(tempfile.mkdtemp(prefix="siesta-logs-"))  # under /tmp: nobody may enter
    try:
        logs.chmod(0o755)
        null, errors = logs / "null", logs / "err.log"
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
        null.chmod(0o666)  # past the umask, as /dev/null is
        srv = launch(
            *("-u", "nobody", "-g", "nogroup", "--preload", "--access-logfile", str(null)),
            *("--error-logfile", str(errors)),
            log_file=errors,
        )
        assert srv.get("/ping").status == 200
        assert (null.stat().st_uid, null.stat().st_gid) == (0, 0), "the device was given away"
        assert errors.stat().st_uid != 0, "the error log is still given to the workers' user"
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def test_usr2_upgrades_a_daemon(tmp_path):
    """Review: with -D -p, the master a USR2 started found the old master still alive
    when it wrote its pid file and stopped at once: no upgrade, and nothing said
    where anyone could see it. Now it writes PIDFILE.2 and serves while the old master
    keeps PIDFILE, and the old master's QUIT leaves the new one serving, promoted to
    PIDFILE."""
    old, pidfile, errlog = start_daemon(tmp_path)
    new = None
    try:
        host, port = daemon_address(errlog)
        os.kill(old, signal.SIGUSR2)

        second = tmp_path / "pid.2"

        def new_master():
            text = second.read_text() if second.exists() else ""
            return text.strip() and int(text) != old and running(int(text)) and int(text)

        new = wait_until(new_master)
        assert new, errlog.read_text()
        assert int(pidfile.read_text()) == old
        assert wait_until(lambda: len(children(new)) == 1), errlog.read_text()
        os.kill(old, signal.SIGQUIT)
        assert wait_until(lambda: not running(old)), errlog.read_text()
        assert rawhttp.request(host, port, "GET", "/ping").body == b"pong"
        assert running(new), errlog.read_text()
        assert wait_until(lambda: pidfile.exists() and int(pidfile.read_text()) == new)
        assert not second.exists(), errlog.read_text()
    finally:
        for pid in (old, new):
            if pid and running(pid):
                assert stop_pid(pid), f"{pid} did not stop on TERM"


def test_a_killed_usr2_master_leaves_no_second_pid_file(launch, tmp_path):
    """A USR2 master writes PIDFILE.2 (gunicorn's name) while its old master keeps
    PIDFILE; killed (SIGKILL) it cannot remove it, so the old master, which reaps
    it, does, and a later USR2 starts again."""
    pidfile = tmp_path / "pid"
    second = tmp_path / "pid.2"
    srv = launch("-w", "1", "-p", str(pidfile))
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text()), srv.log()
    for sig in (signal.SIGKILL, signal.SIGTERM):
        mark = srv.log_mark()
        new = usr2(srv)
        assert srv.wait_log(rf"Listening at: http://\S+ \({new}\)", since=mark, timeout=WAIT)
        assert int(second.read_text()) == new, srv.log(mark)
        assert int(pidfile.read_text()) == srv.pid
        os.kill(new, sig)
        assert srv.wait_log(rf"The new master \(pid: {new}\) exited", since=mark, timeout=WAIT)
        assert wait_until(lambda: not second.exists()), srv.log(mark)
        assert int(pidfile.read_text()) == srv.pid
        assert srv.get("/ping").body == b"pong"


EARLY_EXIT_HOOKS = """\
\"\"\"Written by test_supervisor.py: a USR2's new master, before its exec, stops its
old master and waits for it to be gone, so it starts with no old master to watch.\"\"\"
import os, signal, time


_ONCE = {once!r}


def pre_exec(server):
    if os.path.exists(_ONCE):  # the first USR2 only
        return
    open(_ONCE, "w").close()
    old = os.getppid()  # pre_exec runs in the new master's process, forked
    os.kill(old, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while os.getppid() == old and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def test_a_usr2_master_whose_old_one_is_gone_before_it_starts_is_promoted(launch, tmp_path):
    """Review (session 34): a USR2 master took its parent as its old master when it
    started; one whose old master exited before that (a deploy script that TERMs the
    old master at once) took init for it, was never promoted, and kept PIDFILE.2 with
    no PIDFILE. It is now told the old master's pid, and promoted at its loop's first
    turn."""
    pidfile, second = tmp_path / "pid", tmp_path / "pid.2"
    conf = tmp_path / "early_exit.py"
    conf.write_text(EARLY_EXIT_HOOKS.format(once=str(tmp_path / "once")))
    srv = launch("-w", "1", "-c", str(conf), "-p", str(pidfile))
    mark = srv.log_mark()
    new = usr2(srv)
    try:
        assert srv.exit_code() == 0, srv.log(mark)
        assert srv.wait_log(r"Master has been promoted\.", since=mark, timeout=WAIT), srv.log()
        assert wait_until(lambda: pidfile.exists() and int(pidfile.read_text()) == new)
        assert not second.exists()
        assert rawhttp.request(srv.host, srv.port, "GET", "/ping").body == b"pong"
        mark = srv.log_mark()
        os.kill(new, signal.SIGUSR2)  # promoted: its own USR2 is taken
        newest = srv.wait_log(r"Started a new master \(pid: (\d+)\)", since=mark, timeout=WAIT)
        assert newest, srv.log(mark)
        assert stop_pid(int(newest.group(1))), "the newest master did not stop on TERM"
    finally:
        assert stop_pid(new), "the new master did not stop on TERM"


def test_the_old_master_a_usr2_master_is_told():
    """Review (session 34): SIESTA_UPGRADE stays "1", as a Siesta of before reads it
    (a rollback's USR2 starts the older code), and the old master's pid comes beside
    it, with the new master's own; a start without SIESTA_UPGRADE=1 is no upgrade,
    whatever else is set."""
    from siesta.cli import _old_master

    me = os.getpid()
    assert _old_master("1", f"4242:{me}") == 4242
    assert _old_master("1", "") == os.getppid()  # from a Siesta that did not say
    assert _old_master("1", f"\u00b2:{me}") == os.getppid()  # digits int() refuses
    # Review 2: a value an older Siesta passed on from its own start names another
    # process as the new master: not taken (that older master is the parent).
    assert _old_master("1", f"4242:{me + 1}") == os.getppid()
    assert _old_master("1", "4242") == os.getppid()
    for told in (None, "", "0", "4242"):
        assert _old_master(told, f"4242:{me}") is None


def test_a_usr2_master_whose_second_pid_file_went_still_writes_one(launch, tmp_path):
    """Review (session 34): a PIDFILE.2 removed before the promotion (by hand, by a
    tmp cleaner) left the promoted master with no pid file. As gunicorn's, the
    promotion writes PIDFILE anew."""
    pidfile, second = tmp_path / "pid", tmp_path / "pid.2"
    srv = launch("-w", "1", "-p", str(pidfile))
    mark = srv.log_mark()
    new = usr2(srv)
    try:
        assert wait_until(lambda: second.exists() and second.read_text()), srv.log(mark)
        second.unlink()
        srv.signal(signal.SIGTERM)
        assert srv.exit_code() == 0, srv.log(mark)
        assert srv.wait_log(r"Master has been promoted\.", since=mark, timeout=WAIT), srv.log()
        assert wait_until(lambda: pidfile.exists() and int(pidfile.read_text()) == new)
        assert not second.exists()
    finally:
        assert stop_pid(new), "the new master did not stop on TERM"


def test_a_daemon_whose_usr2_master_fails_keeps_its_pid_file(tmp_path):
    """Review: under -D, the master a USR2 started detached again, so the old master
    saw only its first process exit (0) and could not tell when the new one failed.
    A USR2 master now stays the old master's child, which sees it fail (here: the app
    no longer imports); the old master's pid file stays, and no PIDFILE.2 is left."""
    code_dir, module = app_module(tmp_path, "dmn_app", "from supervisor_app import app\n")
    old, pidfile, errlog = start_daemon(tmp_path, app="dmn_app:app", path=(code_dir, APPS_DIR))
    try:
        host, port = daemon_address(errlog)
        # The worker has loaded the app before it changes ("Listening at" comes
        # before the fork, and a worker that imports the broken module stops the
        # old master as at any start).
        assert rawhttp.request(host, port, "GET", "/ping").body == b"pong"
        module.write_text("x = (\n")  # the new master cannot import the app
        os.kill(old, signal.SIGUSR2)
        assert wait_until(lambda: "The new master" in errlog.read_text()), errlog.read_text()
        assert "[ERROR] The new master" in errlog.read_text(), errlog.read_text()
        assert "exited with code 4" in errlog.read_text(), errlog.read_text()
        assert int(pidfile.read_text()) == old
        assert not (tmp_path / "pid.2").exists()
        assert running(old)
    finally:
        assert stop_pid(old), "the daemon did not stop on TERM"


def test_a_fifo_access_log_is_left_to_the_workers(launch, tmp_path):
    """Review: with -u, the master opened and closed a FIFO access log to give it
    away, which ended its reader; the worker then blocked opening it, and every
    request waited. Only regular files are opened and given away now."""
    import shutil
    import tempfile

    assert os.getuid() == 0, "this test runs as root (as the test machine does)"
    logs = Path(tempfile.mkdtemp(prefix="siesta-logs-"))  # under /tmp: nobody may enter
    got = []
    try:
        logs.chmod(0o755)
        fifo, errors = logs / "fifo", logs / "err.log"
        os.mkfifo(fifo, 0o666)
        fifo.chmod(0o666)

        def read_fifo():
            with open(fifo, "rb") as f:  # returns once a writer opens it
                got.extend(f)

        reader = threading.Thread(target=read_fifo, daemon=True)
        reader.start()
        srv = launch(
            *("-u", "nobody", "-g", "nogroup", "--preload", "--access-logfile", str(fifo)),
            *("--error-logfile", str(errors)),
            log_file=errors,
        )
        assert srv.get("/ping?fifo").status == 200
        assert wait_until(lambda: any(b"/ping?fifo" in line for line in got)), got
        assert stat.S_ISFIFO(fifo.stat().st_mode) and fifo.stat().st_uid == 0
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def test_capture_output_follows_the_error_log_on_usr1(mode, tmp_path):
    """Probe (capture output): after `mv cap.log cap.log.1` and USR1, Siesta's lines went
    to the new cap.log but the app's print()/sys.stderr kept going to cap.log.1; now
    fds 1 and 2 of master and workers follow the reopened file, as in gunicorn."""
    pidfile, cap = tmp_path / "pid", tmp_path / "cap.log"
    result = run_siesta(
        *("-D", "-b", "127.0.0.1:0", "-p", str(pidfile), "-k", mode, "--capture-output"),
        *("--log-level", "debug"),  # the worker's signal line (below)
        *("--error-logfile", str(cap), "--chdir", str(APPS_DIR), "--pythonpath", str(APPS_DIR)),
        APP,
    )
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text()), "no pid file"
    pid = int(pidfile.read_text())
    try:
        ready = wait_until(
            lambda: re.search(r"Listening at: http://([\d.]+):(\d+)", cap.read_text())
        )
        assert ready, cap.read_text()
        host, port = ready.group(1), int(ready.group(2))
        assert rawhttp.request(host, port, "GET", "/print?text=before").status == 200
        assert wait_until(lambda: "before err" in cap.read_text()), cap.read_text()
        worker = int(rawhttp.request(host, port, "GET", "/pid").body)
        cap.rename(tmp_path / "cap.log.1")
        os.kill(pid, signal.SIGUSR1)
        # The worker logs the signal once it has reopened its logs: in the new file.
        handled = rf"\[{worker}\] \[DEBUG\] Handling signal: usr1"
        assert wait_until(lambda: cap.exists() and re.search(handled, cap.read_text()))

        def printed_to_new_file():
            assert rawhttp.request(host, port, "GET", "/print?text=after").status == 200
            return cap.exists() and "after err" in cap.read_text()

        assert wait_until(printed_to_new_file, interval=0.2), cap.read_text()
        assert "after out" in cap.read_text(), cap.read_text()
    finally:
        assert stop_pid(pid), "the daemon did not stop on TERM"


# --- 5. Exit codes ----------------------------------------------------------------------


def test_app_that_cannot_be_imported_exits_4(mode):
    """Issue 13: with two workers, an app whose import fails stops the master with exit 4
    and gunicorn's 'Reason: App failed to load.'"""
    result = run_siesta("-b", "127.0.0.1:0", "-k", mode, "-w", "2", "broken_import_app:app")
    assert result.returncode == 4, result.stderr
    assert "Reason: App failed to load." in result.stderr
    assert "Worker crashed" not in result.stderr


def test_an_access_log_no_worker_can_open_is_refused_before_binding(mode, tmp_path):
    """Issue 13: a worker that cannot open its access log cannot boot: the master
    stopped with exit 3 and 'Reason: Worker failed to boot.' (regression: the worker
    crashed with a traceback and the master restarted it forever). Since session 24
    the master refuses it before binding, with exit 1, as gunicorn's master (which
    opens the log itself) does."""
    log = tmp_path / "missing-dir" / "access.log"
    result = run_siesta(
        "-b", "127.0.0.1:0", "-k", mode, "-w", "2", "--access-logfile", str(log), APP
    )
    assert result.returncode == 1, result.stderr
    assert "Cannot open access log" in result.stderr, result.stderr
    assert "Listening at" not in result.stderr and "Booting worker" not in result.stderr
    assert "Traceback" not in result.stderr


CRASHING_HOOK = """\
def post_fork(server, worker):
    raise KeyboardInterrupt  # a BaseException: hooks only catch Exception
"""


def test_worker_that_dies_before_serving_exits_3(tmp_path):
    """Issue 13: a worker that crashes before it serves (an exception hooks do not catch)
    is a boot error: exit 3, as gunicorn. Regression: it exited 1 and the master started
    it again forever. Mode-independent: the crash comes before either mode starts."""
    conf = tmp_path / "crash.conf.py"
    conf.write_text(CRASHING_HOOK)
    result = run_siesta("-b", "127.0.0.1:0", "-c", str(conf), "-w", "2", APP)
    assert result.returncode == 3, result.stderr
    assert "Reason: Worker failed to boot." in result.stderr


EXITING_APPS = {
    "sys-exit-message": (
        'import sys\nsys.exit("DATABASE_URL is not set")\n',
        "DATABASE_URL is not set",
    ),
    "sys-exit-0": ("import sys\nsys.exit(0)\n", "before it served: SystemExit(0)"),
    "os-exit": ("import os\nos._exit(7)\n", "exited with code 7 before serving"),
    "os-exit-0": ("import os\nos._exit(0)\n", "exited with code 0 before serving"),
    "segfault": ("import ctypes\nctypes.string_at(0)\n", "killed by SIGSEGV before serving"),
}


@pytest.mark.parametrize("case", sorted(EXITING_APPS))
def test_a_worker_that_exits_while_loading_the_app_stops_the_server(mode, tmp_path, case):
    """QA probe (session 23): an app that exits at import (`sys.exit("why")`,
    `os._exit`, a crash) made the master start workers in a tight loop, hundreds a
    second, forever, and `sys.exit`'s message was never shown. Before it served, a
    worker's end is a boot error: one start, exit 3, and the reason in the log."""
    source, said = EXITING_APPS[case]
    (tmp_path / "exiting_app.py").write_text(f'"""Exits at import."""\n{source}')
    result = run_siesta(
        "-b", "127.0.0.1:0", "-k", mode, "-w", "2", "--chdir", str(tmp_path), "exiting_app:app"
    )
    assert result.returncode == 3, result.stderr
    assert said in result.stderr, result.stderr
    assert "Reason: Worker failed to boot." in result.stderr
    assert result.stderr.count("Booting worker") <= 2, result.stderr


SLOW_TO_STOP = """\
\"\"\"Imports slowly, and turns SIGTERM into sys.exit(0) as some apps do.\"\"\"
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(3)


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"""


def test_a_stop_while_a_worker_boots_is_no_boot_failure(tmp_path):
    """Review (session 23): a TERM to the master while its worker imported an app
    that turns SIGTERM into sys.exit(0) ended in exit 3 and 'Worker failed to boot':
    the worker ended as asked. Exit 0, one info line. Mode-independent."""
    (tmp_path / "slow_app.py").write_text(SLOW_TO_STOP)
    proc = subprocess.Popen(
        [str(SIESTA), "-b", "127.0.0.1:0", "--chdir", str(tmp_path), "slow_app:app"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # the worker is importing
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped while booting" in err, err
    assert "failed to boot" not in err, err


SLOW_IMPORT = """\
\"\"\"Imports slowly (its worker boots for 2 s), then answers with its pid.\"\"\"
import os
import time

time.sleep(2)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def test_a_stop_while_a_replacement_boots_drains_what_waits_for_it(launch, mode, tmp_path):
    """Review (session 38): a TERM to the master while the replacement of a worker
    that left for --max-requests booted killed it with TERM's default action, and
    the connections waiting in the listen backlog for it were reset, where a
    booted worker's stop serves them. The worker keeps the TERM until it has
    booted, then drains: the waiting request is answered, and the master exits 0."""
    srv, _ = launch_module(
        launch, mode, tmp_path, "slow_import", SLOW_IMPORT, "--max-requests", "1"
    )
    mark = srv.log_mark()
    old = int(srv.get("/").body)  # its last: it leaves, and the replacement boots
    assert srv.wait_log(rf"Booting worker with pid: (?!{old}\b)\d+", since=mark), srv.log(mark)
    client, answer = request_in_background(srv, "/")
    time.sleep(0.5)  # the request waits in the backlog; the replacement imports
    assert client.is_alive(), (answer, srv.log(mark))
    srv.signal(signal.SIGTERM)
    client.join(30)
    resp = answer.get("resp")
    assert resp is not None and resp.status == 200, (answer, srv.log(mark))
    assert int(resp.body) != old, srv.log(mark)
    assert srv.exit_code() == 0, srv.log(mark)
    assert "while booting" not in srv.log(mark), srv.log(mark)


OWN_TERM_MID_IMPORT = """\
\"\"\"Imports for 2 s, and turns SIGTERM into sys.exit(0) half way, as some apps do.\"\"\"
import signal
import sys
import time

time.sleep(1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(1)


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"""


def test_a_term_kept_while_booting_does_not_reach_the_apps_own_handler(launch, mode, tmp_path):
    """Review (session 39): a worker that kept a TERM while it booted sent it to
    itself again once booted, and the handler its app installed at import ran
    (sys.exit): 'Worker failed to boot', exit 3. The kept TERM starts the
    worker's stop without a signal: exit 0."""
    code_dir, _ = app_module(tmp_path, "own_term", OWN_TERM_MID_IMPORT)
    srv = launch("-w", "1", app="own_term:app", path=(code_dir, APPS_DIR), mode=mode)
    assert srv.wait_log("Booting worker"), srv.log()
    time.sleep(0.5)  # the worker imports, before the app's handler
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    assert "failed to boot" not in srv.log(), srv.log()


HUNG_IMPORT = """\
\"\"\"An import that does not end (a module waiting on a service that is down).\"\"\"
import time

time.sleep(600)
app = None
"""


def test_a_worker_booting_when_its_master_dies_ends(launch, tmp_path):
    """Review (session 39): a booting worker kept the TERM the kernel sends it when
    its master dies (PR_SET_PDEATHSIG), and with nobody left to kill it, an
    import that hung kept the orphan, and the port, for good. A worker whose
    master is gone takes TERM's default, as before it kept TERMs."""
    code_dir, _ = app_module(tmp_path, "hung", HUNG_IMPORT)
    srv = launch("-w", "1", app="hung:app", path=(code_dir, APPS_DIR))
    booted = srv.wait_log(r"Booting worker with pid: (\d+)")
    assert booted, srv.log()
    assert_ends_with_its_master(srv, int(booted.group(1)))


def assert_ends_with_its_master(srv, worker):
    """SIGKILLs the master of `worker`, which must then end (it is killed if not)."""
    srv.proc.kill()
    srv.proc.wait(WAIT)
    try:
        assert wait_until(lambda: gone(worker), timeout=WAIT), "the orphan lives on"
    finally:
        if not gone(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="-u/-g can only switch users when run as root")
def test_a_worker_that_switched_users_ends_with_its_master(launch, mode):
    """Review (session 39): the kernel clears a process's parent-death signal when
    its user or group changes, so a worker run with -u/-g served on for good
    after its master died (SIGKILL, the OOM killer). It asks for it again."""
    srv = launch("-w", "1", "-u", "54321", "-g", "54322", "--preload", mode=mode)
    [worker] = srv.worker_pids()
    assert wait_until(lambda: status_ids(worker) == (54321, 54322)), status_ids(worker)
    srv.assert_serving()
    assert_ends_with_its_master(srv, worker)


def test_terms_that_keep_coming_do_not_put_off_the_kill_of_a_hung_boot(launch, tmp_path):
    """Review (session 39): each TERM to the master put its SIGKILL of a lingering
    worker off by --graceful-timeout again; once booting workers kept a TERM,
    one whose import hung kept the master waiting for as long as TERMs came
    (a supervisor that repeats its stop). A TERM as slow as the first keeps the
    first's deadline: the master ends while they still come."""
    code_dir, _ = app_module(tmp_path, "hung", HUNG_IMPORT)
    srv = launch("-w", "1", "--graceful-timeout", "1", app="hung:app", path=(code_dir, APPS_DIR))
    assert srv.wait_log("Booting worker"), srv.log()
    for _ in range(30):  # one TERM a second, for at most 30 s
        if srv.proc.poll() is not None:
            break
        srv.signal(signal.SIGTERM)
        time.sleep(1)
    assert srv.proc.poll() is not None, "the master still waits while TERMs come"
    assert "still booting (importing the app) when the stop's time ran out" in srv.log()


SLOW_IMPORT_6 = """\
\"\"\"Imports for 6 s, then answers with its pid after ?s=N seconds.\"\"\"
import os
import time

time.sleep(6)


def app(environ, start_response):
    time.sleep(float(environ.get("QUERY_STRING", "").partition("s=")[2] or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def test_a_term_kept_while_booting_gives_the_stop_its_time_from_the_boot(launch, mode, tmp_path):
    """Review (session 39): a worker that kept a TERM while it booted began its
    stop once booted, but the master's SIGKILL was due --graceful-timeout (and 3
    s) after the TERM: an import longer than that was killed, and the request
    waiting for it reset. The master counts the stop's time from the boot too."""
    code_dir, _ = app_module(tmp_path, "slow6", SLOW_IMPORT_6)
    srv = launch(
        "-w", "1", "--graceful-timeout", "4", app="slow6:app", path=(code_dir, APPS_DIR), mode=mode
    )
    assert srv.wait_log("Booting worker"), srv.log()
    # Booted at 6 s, answered at 8.5 s: within the stop's 4 s from the boot, and
    # past the master's kill 7 s after the TERM (4 s and 3 more), as it was.
    client, answer = request_in_background(srv, "/?s=2.5")
    time.sleep(0.2)
    srv.signal(signal.SIGTERM)
    client.join(30)
    resp = answer.get("resp")
    assert resp is not None and resp.status == 200, (answer, srv.log())
    assert srv.exit_code() == 0, srv.log()
    assert "was killed" not in srv.log(), srv.log()


SPIN_APP = '''\
"""Written by test_supervisor.py: /spin never returns (it holds the worker)."""


def app(environ, start_response):
    while environ["PATH_INFO"] == "/spin":
        pass
    start_response("200 OK", [])
    return [b"ok"]
'''


def test_timeout_holds_for_the_old_workers_while_a_reload_imports(launch, mode, tmp_path):
    """Review (session 39): a HUP marks the old workers to go once the new ones are
    up, and until then --timeout passed over them: with a reload whose import
    hangs, a worker stuck in a request stayed stuck for good. They serve on, so
    --timeout holds for them."""
    srv, module = launch_module(
        launch,
        mode,
        tmp_path,
        "spin_app",
        SPIN_APP,
        *("--threads", "1", "--timeout", "2", "--graceful-timeout", "1"),
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    (old,) = srv.worker_pids()
    assert srv.get("/").status == 200
    module.write_text(HUNG_IMPORT)
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    assert srv.wait_log("Booting worker", since=mark), srv.log(mark)
    client, _ = request_in_background(srv, "/spin")
    assert srv.wait_log(rf"WORKER TIMEOUT \(pid:{old}\)", since=mark, timeout=WAIT), srv.log(mark)
    assert wait_until(lambda: gone(old), timeout=WAIT), srv.log(mark)
    client.join(30)


FIRST_IMPORTER_FAILS = """\
\"\"\"The first worker to import this fails at once; the others import for 10 min.\"\"\"
import os
import time

try:
    os.close(os.open(%r, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
except FileExistsError:
    time.sleep(600)
else:
    raise RuntimeError("broken on the first worker")


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"v2"]
"""


def test_a_halt_does_not_wait_for_the_other_workers_imports(launch, mode, tmp_path):
    """Review (session 39): once booting workers kept a TERM until they had booted,
    a worker that could not load the app at the first start stopped the server
    only once the others had imported it (or at --graceful-timeout), and they
    served meanwhile. Booting workers get a fast stop at a halt: exit 4 at once."""
    code_dir, _ = app_module(tmp_path, "half", FIRST_IMPORTER_FAILS % str(tmp_path / "claimed"))
    srv = launch("-w", "2", app="half:app", path=(code_dir, APPS_DIR), mode=mode)
    assert srv.exit_code() == 4, srv.log()
    assert "stopped by SIGINT while booting" in srv.log(), srv.log()


def test_a_given_up_reload_stops_its_booting_workers_at_once(launch, mode, tmp_path):
    """Review (session 39): the workers of a reload given up that were still
    booting got a TERM, which they kept until they had imported the code the
    reload could not start, then drained the backlog with it. They get a fast
    stop, and the workers that serve go on with their code."""
    srv, module, _ = launch_two_loaded(launch, mode, tmp_path, "reload_half")
    mark = srv.log_mark()
    module.write_text(FIRST_IMPORTER_FAILS % str(tmp_path / "claimed"))
    srv.signal(signal.SIGHUP)
    assert srv.wait_log("Reload failed", since=mark, timeout=WAIT), srv.log(mark)
    assert srv.wait_log("stopped by SIGINT while booting", since=mark), srv.log(mark)
    assert srv.get("/").body == b"generation 0"


FORKS_AT_IMPORT = """\
\"\"\"Forks a helper process at import (as a multiprocessing pool would), and answers its pid.\"\"\"
import os
import time

helper = os.fork()
if helper == 0:
    time.sleep(600)
    os._exit(0)


def app(environ, start_response):
    start_response("200 OK", [])
    return [str(helper).encode()]
"""


def test_a_process_the_app_forks_at_import_ends_on_term(launch, mode, tmp_path):
    """Review (session 39): a process the app forked while it was imported inherited
    the booting worker's TERM hold, and a TERM (a pool's terminate) left it
    running for good. It takes TERM's default."""
    code_dir, _ = app_module(tmp_path, "forks", FORKS_AT_IMPORT)
    srv = launch("-w", "1", app="forks:app", path=(code_dir, APPS_DIR), mode=mode)
    helper = int(srv.get("/").body)
    try:
        os.kill(helper, signal.SIGTERM)
        assert wait_until(lambda: gone(helper), timeout=WAIT), "the helper ignored TERM"
    finally:
        if not gone(helper):
            os.kill(helper, signal.SIGKILL)


FORKS_PER_REQUEST = """\
\"\"\"Forks a helper per request (/fork: answers its pid), or runs multiprocessing's
Process.terminate() (/terminate: answers the helper's exit code), or runs a program
(/run: answers its pid).\"\"\"
import multiprocessing
import os
import subprocess
import time


def app(environ, start_response):
    if environ["PATH_INFO"] == "/terminate":
        helper = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,))
        helper.start()
        helper.terminate()
        helper.join(10)
        if helper.exitcode is None:
            helper.kill()
            helper.join()
            body = b"ignored"
        else:
            body = str(helper.exitcode).encode()
    elif environ["PATH_INFO"] == "/pid":
        body = str(os.getpid()).encode()
    elif environ["PATH_INFO"] == "/run":
        body = str(subprocess.Popen(["sleep", "600"]).pid).encode()
    else:
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        body = str(pid).encode()
    start_response("200 OK", [])
    return [body]
"""


def test_a_process_the_app_forks_while_serving_takes_each_signals_default(launch, mode, tmp_path):
    """Probe (session 42): a process forked by a request kept the worker's handlers:
    TERM, INT, QUIT and USR1 fed the worker's signal thread and were lost, and HUP,
    USR2, TTIN, TTOU and WINCH were ignored, so multiprocessing's terminate() never
    ended its child (join() waited for ever) and a stop under systemd waited for its
    SIGKILL. Each now has its default, and the worker serves on untouched."""
    code_dir, _ = app_module(tmp_path, "forks_per_request", FORKS_PER_REQUEST)
    srv = launch("-w", "1", app="forks_per_request:app", path=(code_dir, APPS_DIR), mode=mode)
    assert srv.get("/terminate").body == b"-15", srv.log()
    signals = [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGHUP]
    signals += [signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH]
    helpers = []
    try:
        for sig in signals:
            helper = int(srv.get("/fork").body)
            helpers.append(helper)
            if sig in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
                # Their default stops (a stop the kernel drops in an orphaned
                # process group, as under CI's setsid) or ignores: read it.
                defaulted = wait_until(lambda h=helper, s=sig: at_default(h, s), timeout=WAIT)
                assert defaulted, sig.name
                continue
            os.kill(helper, sig)
            assert wait_until(lambda h=helper: gone(h), timeout=WAIT), f"{sig.name} ignored"
        # What the app runs (subprocess execs, unlike os.fork) is hung up by HUP and
        # ended by USR2: an ignored signal stays ignored across exec, and the
        # worker ignored them (probe, session 42).
        for sig in (signal.SIGHUP, signal.SIGUSR2):
            program = int(srv.get("/run").body)
            helpers.append(program)
            os.kill(program, sig)
            assert wait_until(lambda p=program: gone(p), timeout=WAIT), f"{sig.name} ignored"
        # The worker itself still pays them no heed.
        worker = int(srv.get("/pid").body)
        for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):
            os.kill(worker, sig)
        assert srv.get("/terminate").body == b"-15", srv.log()
        assert int(srv.get("/pid").body) == worker, srv.log()
        assert "Handling signal" not in srv.log() and srv.boots() == 1, srv.log()
    finally:
        for helper in helpers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(helper, signal.SIGKILL)


def at_default(pid, signo):
    """Whether process `pid` has signal `signo` at its default (neither ignored nor
    caught, from /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return False
    bit = 1 << (signo - 1)
    return not (int(fields["SigIgn"], 16) & bit or int(fields["SigCgt"], 16) & bit)


def test_a_preloaded_apps_helper_takes_term(launch, tmp_path):
    """Probe (session 42): a helper a preloaded app starts in the master kept the
    master's handlers, which drop a signal any other process gets: TERM (systemd's
    stop of the unit's processes) never ended it. It takes TERM's default."""
    pid_file = tmp_path / "helper.pid"
    code_dir, _ = app_module(tmp_path, "mphelper", MP_CHILD_APP % str(pid_file))
    srv = launch("--preload", app="mphelper:app", path=(code_dir, APPS_DIR))
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text()), srv.log()
    helper = int(pid_file.read_text())
    try:
        assert srv.get("/").status == 200
        os.kill(helper, signal.SIGTERM)
        assert wait_until(lambda: gone(helper), timeout=WAIT), "the helper ignored TERM"
        assert srv.get("/").status == 200, srv.log()
        srv.signal(signal.SIGTERM)
        assert srv.exit_code() == 0, srv.log()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(helper, signal.SIGKILL)


def test_a_hup_after_a_rotation_writes_to_the_new_error_log(launch, tmp_path):
    """Review (session 23): the master's HUP must open --error-logfile by its path
    again (a worker keeps the file it inherits; the master does not), so that after
    a rotation and a HUP the new file gets the lines. Mode-independent."""
    errors = tmp_path / "err.log"
    srv = launch("-w", "1", "--error-logfile", str(errors), log_file=errors)
    assert srv.get("/ping").status == 200
    errors.rename(tmp_path / "err.log.1")
    srv.signal(signal.SIGHUP)
    assert wait_until(lambda: errors.exists() and "Booting worker" in errors.read_text()), (
        tmp_path / "err.log.1"
    ).read_text()


def test_a_tmpdir_that_cannot_be_used_falls_back_as_tempfile_does(launch, tmp_path):
    """Ops probe (session 42): without --worker-tmp-dir the heartbeat files went to
    $TMPDIR, and one that does not exist (left from a login session) or is read-only
    started no worker, for good, with an error every 10 s: the server listened and
    answered nothing. The next of tempfile's directories is taken, as gunicorn's
    tempfile does."""
    srv = launch("-w", "2", env={"TMPDIR": str(tmp_path / "gone")})
    assert srv.get("/ping").status == 200, srv.log()
    assert "heartbeat" not in srv.log(), srv.log()


@pytest.mark.parametrize("option", ["--access-logfile", "--error-logfile", "--name"])
def test_a_value_that_is_not_utf8_is_one_line_and_exit_1(tmp_path, option):
    """Ops probe (session 42): a path of bytes that are not UTF-8 (Python decodes them
    with surrogate escapes) reached the Rust core's settings and failed with a
    traceback of Siesta's own code; a --name so failed after the listening line."""
    value = os.fsencode(str(tmp_path)) + b"/lat\xe9.log"
    result = run_siesta("-b", "127.0.0.1:0", option, value, APP)
    assert result.returncode == 1, result.stderr
    assert f"Error: {option} " in result.stderr and "not valid UTF-8" in result.stderr
    assert "Traceback" not in result.stderr and "Listening at" not in result.stderr


def test_unusable_worker_tmp_dir_exits_1_before_serving(tmp_path):
    """Issue 13: --worker-tmp-dir that cannot hold the heartbeat files is one error line
    and exit 1. Regression: the master listened, started no worker, and logged an error
    every second forever. Mode-independent: the master checks it before any worker."""
    result = run_siesta("-b", "127.0.0.1:0", "--worker-tmp-dir", str(tmp_path / "no"), APP)
    assert result.returncode == 1, result.stderr
    assert "--worker-tmp-dir" in result.stderr and "Listening at" not in result.stderr


# --- 6. One worker and every signal -------------------------------------------------------


@pytest.mark.timeout(150)
def test_one_worker_survives_every_signal(launch, mode, tmp_path):
    """Issue 13: -w 1 under HUP, TTIN, TTOU (twice: never below one), USR1 (the access
    log reopened at its old path after a rename), USR2 (a new master, stopped again) and
    WINCH (ignored when not daemonized): none stops the server."""
    access = tmp_path / "access.log"
    pidfile = tmp_path / "pid"
    # At debug, the worker's own signal lines show when it took USR1.
    srv = launch(
        *("-w", "1", "--access-logfile", str(access), "-p", str(pidfile), "--log-level", "debug"),
        mode=mode,
    )

    def serving():
        assert srv.alive(), srv.log()
        resp = srv.get("/ping")
        assert (resp.status, resp.body) == (200, b"pong"), resp

    first = srv.worker_pids()
    srv.signal(signal.SIGHUP)
    assert new_workers(srv, first), srv.log()
    serving()

    srv.signal(signal.SIGTTIN)
    assert len(srv.worker_pids(2)) == 2
    srv.signal(signal.SIGTTOU)
    assert len(srv.worker_pids(1)) == 1
    mark = srv.log_mark()
    srv.signal(signal.SIGTTOU)
    assert srv.wait_log("Handling signal: ttou", since=mark)
    serving()
    assert len(srv.worker_pids(1)) == 1

    # USR1: a rotated access log is reopened at its old path.
    serving()
    assert wait_until(lambda: "/ping" in access.read_text())
    access.rename(tmp_path / "access.log.1")
    mark = srv.log_mark()
    srv.signal(signal.SIGUSR1)
    worker = srv.worker_pids()[0]
    assert srv.wait_log(rf"\[{worker}\] \[DEBUG\] Handling signal: usr1", since=mark), srv.log()
    assert srv.get("/ping?after-rotation").status == 200
    assert wait_until(lambda: access.exists() and "after-rotation" in access.read_text())
    assert "after-rotation" not in (tmp_path / "access.log.1").read_text()

    mark = srv.log_mark()
    srv.signal(signal.SIGWINCH)
    # At debug, as gunicorn's (QA, session 35: it was at info).
    assert srv.wait_log(r"\[DEBUG\] SIGWINCH ignored. Not daemonized", since=mark)
    serving()

    mark = srv.log_mark()
    srv.signal(signal.SIGUSR2)
    started = srv.wait_log(r"Started a new master \(pid: (\d+)\)", since=mark)
    assert started, srv.log(mark)
    new = int(started.group(1))
    try:
        assert srv.wait_log(rf"Listening at: http://\S+ \({new}\)", since=mark, timeout=WAIT)
        assert wait_until(lambda: len(children(new)) == 1)
    finally:
        assert stop_pid(new), "the new master did not stop on TERM"
    serving()
    # The old master serves on: its pid file stayed, and a later USR2 may try again.
    # Stopped on purpose: an info line, not an error (QA probe, session 28).
    assert srv.wait_log(rf"\[INFO\] The new master \(pid: {new}\) exited with code 0", since=mark)
    assert int(pidfile.read_text()) == srv.pid
    assert not Path(f"{pidfile}.2").exists()

    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    assert "Shutting down: Master" in srv.log()


# --- Review findings (issue 13) -----------------------------------------------------


def test_workers_end_with_a_killed_master(launch, mode):
    """Issue 13 review: SIGKILL to the master used to leave its workers serving as
    orphans on the port; now the kernel tells each worker to stop (PDEATHSIG)."""
    srv = launch("-w", "2", mode=mode)
    workers = srv.worker_pids()
    assert len(workers) == 2
    os.kill(srv.pid, signal.SIGKILL)
    assert all(wait_until(lambda p=p: gone(p)) for p in workers), "orphaned workers live on"


def test_usr1_while_a_worker_boots_does_not_kill_it(launch, mode, tmp_path):
    """Issue 13 review: a USR1 (logrotate) reaching a worker still importing the app
    (say during a HUP reload) killed it; now a booting worker ignores USR1."""
    slow = tmp_path / "slowimport.py"
    slow.write_text(
        '"""An app that takes a while to import."""\n'
        "import time\n\n"
        "time.sleep(1.5)\n\n\n"
        "def app(environ, start_response):\n"
        '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
        '    return [b"pong"]\n'
    )
    srv = launch("-w", "1", "--pythonpath", str(tmp_path), app="slowimport:app", mode=mode)
    booting = srv.worker_pids()
    assert len(booting) == 1
    srv.signal(signal.SIGUSR1)  # the worker is still in its 1.5 s import
    assert wait_until(lambda: srv.get("/").status == 200)
    assert srv.worker_pids() == booting, srv.log()
    assert "was sent SIGUSR1" not in srv.log()


def test_worker_int_hook_runs_on_a_fast_stop(launch, mode, tmp_path):
    """Issue 13: gunicorn's worker_int hook runs in each worker on INT/QUIT."""
    notes = tmp_path / "int.txt"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        '"""Notes worker_int."""\n\n\n'
        "def worker_int(worker):\n"
        f"    with open({str(notes)!r}, 'a') as f:\n"
        "        f.write(f'worker_int {worker.pid}\\n')\n"
    )
    srv = launch("-w", "1", "-c", str(conf), mode=mode)
    workers = srv.worker_pids()
    assert len(workers) == 1
    assert srv.get("/ping").status == 200  # the worker is up, its handlers in place
    srv.signal(signal.SIGINT)
    assert srv.exit_code() == 0, srv.log()
    seen = notes.read_text().split() if notes.exists() else []
    assert sorted(int(p) for p in seen[1::2]) == sorted(workers), (seen, workers, srv.log())


def test_the_metrics_process_has_a_title_of_its_own(launch):
    """QA probe (session 23): the --metrics-bind process kept the title the fork gave
    it, `siesta: master [NAME]`, so `pkill -HUP -f 'siesta: master'` signalled it too."""
    srv = launch("-w", "1", "-n", "shop", "--metrics-bind", "127.0.0.1:0")
    assert srv.wait_log(r"Metrics at: \S+ \(pid: \d+\)"), srv.log()
    pid = int(re.search(r"Metrics at: \S+ \(pid: (\d+)\)", srv.log()).group(1))

    def title():
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().rstrip(b"\0").decode()

    assert wait_until(lambda: title() == "siesta: metrics [shop]"), title()


def test_process_titles_and_reuse_port(launch, tmp_path):
    """Issue 13: -n names the processes in ps and top, with no package to install;
    --reuse-port lets a second server bind the same port. Mode-independent: both
    happen in the master."""
    first = launch("-w", "1", "-n", "shop", "--reuse-port")
    workers = first.worker_pids()
    assert len(workers) == 1

    def title(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()

    assert title(first.pid).startswith("siesta: master [shop]"), title(first.pid)
    assert wait_until(lambda: title(workers[0]).startswith("siesta: worker [shop]"))
    # ps shows the title alone (no run of padding after it) ...
    with open(f"/proc/{first.pid}/cmdline", "rb") as f:
        assert f.read().rstrip(b"\0") == b"siesta: master [shop]"
    # ... and the name `pgrep -x` and `killall` match is left as it was.
    with open(f"/proc/{first.pid}/comm") as f:
        assert not f.read().startswith("siesta:")
    second = launch("-w", "1", "--reuse-port", bind=f"127.0.0.1:{first.port}")
    assert second.port == first.port
    assert second.get("/ping").status == 200


def test_a_reload_keeps_the_old_workers_while_no_new_one_can_start(launch, tmp_path):
    """QA probe (session 24): a HUP whose new workers could not be started (fork
    failing, or here no heartbeat file: --worker-tmp-dir gone) still stopped the
    old ones at once, and nothing served until a new one came up. The old
    workers now serve on until the new ones do. Mode-independent: the master's."""
    beat_dir = tmp_path / "beats"
    beat_dir.mkdir()
    srv = launch("-w", "1", "--worker-tmp-dir", str(beat_dir))
    (old,) = srv.worker_pids()
    assert int(srv.get("/pid").body) == old
    beat_dir.rmdir()  # the worker's heartbeat file is unlinked: the directory is empty
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    assert srv.wait_log(r"Cannot make a worker heartbeat file", since=mark), srv.log(mark)
    # Tried again every second, logged once per 10 s with the count since (QA,
    # session 30: a line a second for as long as the condition lasted).
    again = r"Cannot make a worker heartbeat file: .*\((\d+) more failures since the last"
    assert srv.wait_log(again, since=srv.log_mark(), timeout=30), srv.log()
    assert len(re.findall("Cannot make a worker heartbeat file", srv.log(mark))) == 2
    assert int(re.findall(again, srv.log(mark))[0]) >= 3, srv.log(mark)
    for _ in range(5):
        assert int(srv.get("/pid").body) == old, srv.log(mark)
    assert running(old) and "Worker exiting" not in srv.log(mark), srv.log(mark)
    beat_dir.mkdir()
    assert wait_until(lambda: int(srv.get("/pid").body) != old), srv.log(mark)
    assert wait_until(lambda: not running(old)), "the old worker was kept after the new one"


FLAKY_BOOT = '''\
"""Crashes at import (a fault, as a flaky C extension's) while a counter file says so."""
import ctypes
import os

_COUNTER = os.environ["CRASHES_FILE"]
if os.path.exists(_COUNTER):
    _left = int(open(_COUNTER).read() or 0)
    if _left > 0:
        with open(_COUNTER, "w") as f:
            f.write(str(_left - 1))
        ctypes.string_at(0)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
'''


def launch_flaky(launch, tmp_path, mode):
    counter = tmp_path / "crashes"
    code_dir, _ = app_module(tmp_path, "flaky_boot", FLAKY_BOOT)
    srv = launch(
        "-w",
        "2",
        mode=mode,
        app="flaky_boot:app",
        path=(code_dir,),
        env={"CRASHES_FILE": str(counter)},
    )
    # Both serve (each has booted), as a long-running server's workers do.
    served = set()
    assert wait_until(lambda: served.add(int(srv.get("/").body)) or len(served) == 2), served
    return srv, counter


def test_a_replacement_that_crashes_booting_once_is_started_again(launch, tmp_path, mode):
    """QA note (session 23): a replacement worker that crashed booting (a fault
    signal) halted a server whose other workers served on; a crash may be a one-off.
    While others serve, such a crash is retried 3 times in a row at most, a line each."""
    srv, counter = launch_flaky(launch, tmp_path, mode)
    victim = srv.worker_pids()[0]
    counter.write_text("2")
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: counter.read_text() == "0" and len(children(srv.pid)) >= 2), srv.log()
    # The third replacement boots and serves beside the worker that was left.
    served = set()
    assert wait_until(lambda: served.add(int(srv.get("/").body)) or len(served - {victim}) == 2)
    assert victim not in served
    for n in (1, 2):
        assert f"starting another (retry {n} of 3)" in srv.log(), srv.log()
    assert "Reason: Worker failed to boot." not in srv.log()
    assert srv.alive()


def test_a_replacement_short_of_descriptors_is_started_again(launch, mode):
    """QA (session 30): a replacement worker that could not start for a passing
    shortage (threads under a pids limit, descriptors, memory) exited 3, a boot error,
    which stopped the whole server, healthy workers included. A shortage is a crash
    now (exit 1), retried after 1, 2 and 4 s while others serve. Here the master's
    descriptor limit leaves the replacement none to start with, until it is lifted."""
    import resource

    srv = launch("-w", "2", mode=mode)
    workers = set(srv.worker_pids())
    served = set()  # both have served: both booted, so one serves on after the kill
    assert wait_until(lambda: served.add(srv.worker_pid()) or served == workers), served
    victim = min(workers)
    soft, hard = resource.prlimit(srv.pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{srv.pid}/fd"))
    mark = srv.log_mark()
    resource.prlimit(srv.pid, resource.RLIMIT_NOFILE, (in_use + 3, hard))
    try:
        os.kill(victim, signal.SIGKILL)
        said = srv.wait_log(
            r"exited with code 1 before serving; the others serve, starting "
            r"another \(retry 1 of 3\) in 1 s",
            since=mark,
            timeout=WAIT,
        )
        assert said, srv.log(mark)
    finally:
        resource.prlimit(srv.pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert "Too many open files" in srv.log(mark)
    assert wait_until(lambda: len(children(srv.pid)) == 2 and victim not in children(srv.pid))
    assert srv.get("/ping").status == 200
    assert srv.alive(), srv.log(mark)
    assert "Reason:" not in srv.log()


def test_a_replacement_that_crashes_booting_every_time_halts(launch, tmp_path, mode):
    """... and a crash every time still stops the server (exit 3), as at a start:
    no respawn loop of a broken build."""
    srv, counter = launch_flaky(launch, tmp_path, mode)
    victim = srv.worker_pids()[0]
    counter.write_text("100")
    os.kill(victim, signal.SIGKILL)
    srv.proc.wait(timeout=60)
    assert srv.proc.returncode == 3, srv.log()
    assert "starting another (retry 3 of 3)" in srv.log(), srv.log()
    assert "Reason: Worker failed to boot." in srv.log(), srv.log()
    assert int(counter.read_text()) == 100 - 4, srv.log()


def open_files(pid):
    """What `pid`'s descriptors point at (gone ones skipped)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


def metrics_pid(srv):
    """The pid of `srv`'s --metrics-bind process, if it runs."""
    for pid in children(srv.pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == "siesta-metrics":
                return pid
    return None


def test_usr1_reopens_the_metrics_process_error_log_too(launch, tmp_path):
    """QA probe (session 25): the --metrics-bind process kept the error log it was
    forked with across USR1, so logrotate's deleted file stayed allocated on disk
    (20 MB in the probe) until a restart. It reopens it by its path now, as the
    master and the workers do. Mode-independent: the master forks it."""
    errors = tmp_path / "err.log"
    srv = launch(
        "-w", "1", "--metrics-bind", "127.0.0.1:0", "--error-logfile", str(errors), log_file=errors
    )
    assert wait_until(lambda: metrics_pid(srv) is not None), srv.log()
    pid = metrics_pid(srv)
    rotated = tmp_path / "err.log.1"
    errors.rename(rotated)
    srv.signal(signal.SIGUSR1)
    assert wait_until(lambda: str(errors) in open_files(pid)), open_files(pid)
    assert str(rotated) not in open_files(pid)
    assert metrics_pid(srv) == pid, "USR1 must not end the metrics process"


def test_a_hup_that_moves_the_error_log_moves_the_metrics_process_too(launch, tmp_path):
    """Review (session 25): after a HUP that changed errorlog, the metrics process
    kept the old file, and USR1 then made it anew. It is started again with the
    new one."""
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    conf = tmp_path / "conf.py"
    conf.write_text(f"errorlog = {str(first)!r}\n")
    srv = launch("-w", "1", "-c", str(conf), "--metrics-bind", "127.0.0.1:0", log_file=first)
    assert wait_until(lambda: metrics_pid(srv) is not None), srv.log()
    old = metrics_pid(srv)
    assert str(first) in open_files(old)
    conf.write_text(f"errorlog = {str(second)!r}\n")
    srv.signal(signal.SIGHUP)
    assert wait_until(lambda: (metrics_pid(srv) or old) != old), first.read_text()
    assert wait_until(lambda: str(second) in open_files(metrics_pid(srv) or old))
    assert str(first) not in open_files(metrics_pid(srv))


HUNG_AFTER_THE_FIRST = """\
\"\"\"The first worker to import this serves; every later import hangs (a service gone).\"\"\"
import os
import time

try:
    os.close(os.open(%r, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
except FileExistsError:
    time.sleep(600)


def app(environ, start_response):
    start_response("200 OK", [])
    return [str(os.getpid()).encode()]
"""


def test_a_first_start_whose_import_hangs_stops_with_its_stacks(launch, mode, tmp_path):
    """Session 39 left open: a worker's boot was not timed, so an import that hung
    (a database down at start) kept the server up and serving nothing for good.
    As gunicorn's, --timeout counts a boot from the fork: the worker gets SIGABRT,
    its stacks go to the error log, and with none serving the server stops (exit
    3) with one line saying what to do."""
    code_dir, _ = app_module(tmp_path, "hung", HUNG_IMPORT)
    srv = launch("-w", "2", "--timeout", "1", app="hung:app", path=(code_dir, APPS_DIR), mode=mode)
    assert srv.exit_code() == 3, srv.log()
    log = srv.log()
    # One at a time (review, session 40: the stacks of workers timed out together
    # were mixed word by word); the first's failure stops the server.
    assert len(re.findall(r"WORKER TIMEOUT \(pid:\d+\): still booting", log)) == 1, log
    assert re.search(r"hung.py\", line 4,? in <module>", log), log  # the import's frame
    assert "raise --timeout above the app's boot time" in log, log


def test_a_reload_whose_import_hangs_is_given_up(launch, mode, tmp_path):
    """Session 39 left open: a HUP whose new workers' import never ended was never
    given up: /readyz answered 503 for good and the hung worker stayed. Its boot
    times out, the reload is given up as one whose app cannot load, and the running
    workers serve on with their code; /readyz is ready again."""
    metrics = ("--metrics-bind", "127.0.0.1:0")
    srv, module, first = launch_two_loaded(
        launch, mode, tmp_path, "hupwait_app", "--timeout", "1", "--graceful-timeout", "1", *metrics
    )
    url = metrics_url(srv)
    module.write_text(HUNG_IMPORT)
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    assert wait_until(lambda: get(url + "/readyz")[0] == 503), srv.log(mark)
    pattern = r"Reload failed: a new worker could not boot within --timeout"
    assert srv.wait_log(pattern, since=mark, timeout=WAIT), srv.log(mark)
    assert wait_until(lambda: set(children(srv.pid)) == first), srv.log(mark)
    assert wait_until(lambda: get(url + "/readyz")[0] == 200), srv.log(mark)
    assert value(scrape(url), "siesta_reloads_total", outcome="given_up") == 1
    assert value(scrape(url), "siesta_worker_exits_total", reason="boot_error") >= 1
    assert value(scrape(url), "siesta_worker_exits_total", reason="timeout") == 0
    assert [srv.get(f"/{i}").body for i in range(10)] == [b"generation 0"] * 10
    # One that dies now is replaced with the new code, whose boot is timed out
    # too, and tried again later while the other serves (it hung for good).
    mark = srv.log_mark()
    serving = [w["pid"] for w in status(url)["workers"]]
    assert len(serving) == 2 and set(serving) < first, (serving, first)
    os.kill(serving[0], signal.SIGKILL)
    pattern = r"failed to boot \(still booting after --timeout \(1 s\)\): .* trying again in \d s"
    assert srv.wait_log(pattern, since=mark, timeout=WAIT), srv.log(mark)
    assert [srv.get(f"/{i}").body for i in range(10)] == [b"generation 0"] * 10
    assert srv.alive(), srv.log()


def test_a_replacement_whose_import_hangs_is_tried_again_while_others_serve(launch, mode, tmp_path):
    """Review (session 39): with a boot timeout for a reload's workers alone, a
    replacement started later with the same code hung for good, and capacity fell
    as workers died. Every boot is timed: a worker whose import hangs while another
    serves is timed out and tried again after a pause, longer each time, and no
    worker is forked while a timed-out one is being ended."""
    code_dir, _ = app_module(tmp_path, "flaky", HUNG_AFTER_THE_FIRST % str(tmp_path / "claimed"))
    srv = launch("-w", "2", "--timeout", "1", app="flaky:app", path=(code_dir, APPS_DIR), mode=mode)
    assert srv.wait_log(
        r"failed to boot: it was still booting \(importing the app, or in a boot hook\) after "
        r"--timeout \(1 s\); the others serve, starting another",
        timeout=WAIT,
    ), srv.log()
    served = {srv.get(f"/{i}").body for i in range(10)}
    assert len(served) == 1, served
    # Started again after the pause, timed out again, waiting longer each time and
    # never giving up while one serves (a crash stops the server at the third);
    # no worker was forked while one timed out was being ended (one more boot
    # than failures: the one serving).
    for wait in (2, 4, 8):
        assert srv.wait_log(f"starting another in {wait} s", timeout=WAIT), srv.log()
    log = srv.log()
    boots = log.count("Booting worker with pid")
    assert boots <= 1 + log.count("failed to boot: it was still booting ("), log
    assert srv.alive(), srv.log()


def test_a_hung_post_fork_hook_is_timed_out_with_its_stack(launch, tmp_path):
    """Review (session 40): post_fork ran before faulthandler was enabled, so a hook
    that hung got SIGABRT with no stack, where the log said one followed."""
    conf = tmp_path / "conf.py"
    conf.write_text(
        '"""Written by test_supervisor.py."""\nimport time\n\n\n'
        "def post_fork(server, worker):\n    time.sleep(600)\n"
    )
    srv = launch("-c", str(conf), "--timeout", "1", cwd=tmp_path)
    assert srv.exit_code() == 3, srv.log()
    assert re.search(r'conf.py", line 6,? in post_fork', srv.log()), srv.log()


def test_reload_mode_does_not_time_a_boot(launch, tmp_path):
    """Review (session 40): under --reload (development), an edit whose import ran
    past --timeout (a breakpoint() at import, a model that loads slowly) stopped the
    server. A boot is not timed there."""
    code_dir, _ = app_module(tmp_path, "slowload", SLOW_IMPORT)
    srv = launch(
        "--reload",
        "--timeout",
        "1",
        app="slowload:app",
        path=(code_dir, APPS_DIR),
    )
    assert wait_until(lambda: srv.get("/").status == 200, timeout=WAIT), srv.log()
    assert "WORKER TIMEOUT" not in srv.log(), srv.log()


GIL_HELD_AFTER_THE_FIRST = """\
\"\"\"The first worker to import this serves; later imports hold the GIL in C.\"\"\"
import os

try:
    os.close(os.open(%r, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
except FileExistsError:
    sum(range(10**12))


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
"""


def test_a_stop_while_a_hung_boot_is_aborted_is_a_stop(launch, tmp_path):
    """Review (session 40): a TERM in the two seconds a worker whose boot timed out
    is given to write its stacks made the master exit 3 ("Worker failed to boot"),
    though the other worker served and the operator asked for a stop. In gevent
    mode, an import holding the GIL in C keeps the worker for those two seconds."""
    code_dir, _ = app_module(tmp_path, "gil", GIL_HELD_AFTER_THE_FIRST % str(tmp_path / "claimed"))
    srv = launch(
        "-w", "2", "--timeout", "1", app="gil:app", path=(code_dir, APPS_DIR), mode="gevent"
    )
    assert srv.wait_log(r"WORKER TIMEOUT \(pid:\d+\): still booting", timeout=WAIT), srv.log()
    srv.signal(signal.SIGTERM)
    assert srv.exit_code() == 0, srv.log()
    assert "Worker failed to boot" not in srv.log(), srv.log()


@pytest.mark.timeout(120)
def test_a_reload_whose_import_hangs_is_given_up_whatever_the_timeout(launch, tmp_path):
    """Review (session 40): with --timeout at 30 s or more (the default), a reload
    one of whose new workers booted ended at its 30 s wait, before the hung one
    timed out: the old workers were retired, the reload counted done, and the hung
    code retried. The wait now waits for a boot still timed: the reload is given up,
    whatever --timeout is. Thread mode only: it takes --timeout."""
    metrics = ("--metrics-bind", "127.0.0.1:0")
    srv, module, first = launch_two_loaded(
        launch, "thread", tmp_path, "hupslow_app", "--timeout", "31", *metrics
    )
    url = metrics_url(srv)
    module.write_text(HUNG_AFTER_THE_FIRST % str(tmp_path / "claimed"))
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    pattern = r"Reload failed: a new worker could not boot within --timeout"
    assert srv.wait_log(pattern, since=mark, timeout=60), srv.log(mark)
    assert value(scrape(url), "siesta_reloads_total", outcome="done") == 0
    assert wait_until(lambda: set(children(srv.pid)) == first), srv.log(mark)
    assert srv.get("/").body == b"generation 0"


WAITS_WHILE_DOWN = """\
\"\"\"Its import waits while the file DOWN exists (a database it connects to is down).\"\"\"
import os
import time

while os.path.exists(%r):
    time.sleep(0.05)


def app(environ, start_response):
    start_response("200 OK", [])
    return [str(os.getpid()).encode()]
"""


def launch_waiting_while_down(launch, tmp_path, *args):
    """Two workers of WAITS_WHILE_DOWN, booted, --timeout 1: (the server, the DOWN file)."""
    down = tmp_path / "down"
    code_dir, _ = app_module(tmp_path, "dbwait", WAITS_WHILE_DOWN % str(down))
    srv = launch("-w", "2", "--timeout", "1", *args, app="dbwait:app", path=(code_dir, APPS_DIR))
    assert len(srv.worker_pids()) == 2
    assert srv.get("/").status == 200
    return srv, down


def test_a_hangs_wait_holds_back_only_its_own_place(launch, tmp_path):
    """Reviews (session 40): the wait before a hung boot is tried again held back
    every fork, for up to a minute: a serving worker that died (or left for
    --max-requests) was not replaced until the wait ended, and with none left the
    server had no worker meanwhile. Only the hung worker's place waits."""
    srv, down = launch_waiting_while_down(launch, tmp_path)
    down.touch()
    srv.signal(signal.SIGTTIN)
    assert srv.wait_log("starting another in 4 s", timeout=WAIT), srv.log()
    down.unlink()
    mark = srv.log_mark()
    os.kill(children(srv.pid)[0], signal.SIGKILL)
    assert srv.wait_log("was sent SIGKILL", since=mark), srv.log(mark)
    assert wait_until(lambda: srv.get("/").status == 200, timeout=WAIT), srv.log(mark)
    assert srv.wait_log("Booting worker", since=mark), srv.log(mark)
    # Forked at once, not when the 4 s were over (the log's seconds).
    stamps = re.findall(
        r"\[\S+ (\d\d:\d\d:\d\d) \S+\] \[\d+\] \[\w+\] (?:Worker .*SIGKILL|Booting)",
        srv.log(mark),
    )
    assert len(stamps) >= 2, srv.log(mark)
    seconds = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in (t.split(":") for t in stamps)]
    assert seconds[-1] - seconds[0] <= 2, srv.log(mark)


def test_a_hang_holds_max_requests_while_others_serve(launch, tmp_path):
    """Noted in session 40: while a boot that hung was tried again, the workers
    serving on still restarted at --max-requests, each replacement hung too while
    its cause lasted, and once none served the next hang stopped the server. They
    are held, as after a given-up reload, until a worker boots."""
    srv, down = launch_waiting_while_down(launch, tmp_path, "--max-requests", "5")
    down.touch()
    mark = srv.log_mark()
    serving = set(srv.worker_pids())
    killed = min(serving)
    os.kill(killed, signal.SIGKILL)
    assert srv.wait_log("the others serve, starting another", since=mark, timeout=WAIT), srv.log()
    (kept,) = serving - {killed}
    assert_held_on_one_connection(srv, mark, str(kept).encode())
    line = "Not restarting after --max-requests: a new worker's boot outlasted --timeout"
    assert srv.wait_log(line, since=mark), srv.log(mark)
    assert "Autorestarting" not in srv.log(mark), srv.log(mark)
    assert kept in children(srv.pid)
    # What the import waited on is back: the next try boots, and the worker held
    # restarts at its count again.
    down.unlink()
    assert srv.wait_log("A worker booted: recycling resumes", since=mark, timeout=WAIT), srv.log(
        mark
    )
    assert wait_until(
        lambda: srv.get("/").body != str(kept).encode() and kept not in children(srv.pid),
        timeout=WAIT,
    ), srv.log(mark)
    assert srv.wait_log("Autorestarting worker after current request", since=mark), srv.log(mark)
    assert srv.alive(), srv.log(mark)


def test_a_hang_hold_outlasts_a_ttou_that_takes_the_place_being_retried(launch, tmp_path):
    """Reviews (session 41): after a TTOU took the place a hung boot was tried again
    in, a hold released then let the last worker go at --max-requests while the
    import still hung, and the server stopped (exit 3); one kept ends with the next
    boot (here a TTIN's, once the import no longer waits)."""
    srv, down = launch_waiting_while_down(launch, tmp_path, "--max-requests", "5")
    down.touch()
    mark = srv.log_mark()
    os.kill(min(srv.worker_pids()), signal.SIGKILL)
    assert srv.wait_log("the others serve, starting another", since=mark, timeout=WAIT), srv.log()
    srv.signal(signal.SIGTTOU)
    assert srv.wait_log("Handling signal: ttou", since=mark), srv.log(mark)
    kept = int(srv.get("/").body)
    for i in range(12):  # past --max-requests: held, the same worker serves
        resp = srv.get(f"/{i}")
        assert resp.status == 200 and resp.body == str(kept).encode(), (i, resp, srv.log(mark))
    assert "Autorestarting" not in srv.log(mark), srv.log(mark)
    down.unlink()
    srv.signal(signal.SIGTTIN)
    assert srv.wait_log("A worker booted: recycling resumes", since=mark, timeout=WAIT), srv.log(
        mark
    )
    for i in range(8):
        assert srv.get(f"/again/{i}").status == 200, srv.log(mark)
    assert srv.wait_log("Autorestarting worker after current request", since=mark), srv.log(mark)
    assert srv.alive(), srv.log(mark)


SLOW_ABORT_WHILE_DOWN = """\
\"\"\"Its import waits while the file DOWN exists, and takes 1.5 s over a SIGABRT then
(as a core dump being written would).\"\"\"
import os
import signal
import time

signal.signal(signal.SIGABRT, lambda *_: time.sleep(1.5))
while os.path.exists(%r):
    time.sleep(0.05)
signal.signal(signal.SIGABRT, signal.SIG_DFL)


def app(environ, start_response):
    start_response("200 OK", [])
    return [str(os.getpid()).encode()]
"""


@pytest.mark.timeout(120)
def test_a_boot_while_a_hung_one_is_aborted_ends_the_hold_it_sets(launch, tmp_path):
    """Review (session 41): the hold a hung boot sets took the boots counted when
    it was reaped as its mark, so a worker that booted while the hung one was being
    aborted never ended it; after a TTOU, nothing did, and every worker stayed held
    from --max-requests although the service was back."""
    down = tmp_path / "down"
    code_dir, _ = app_module(tmp_path, "slowabort", SLOW_ABORT_WHILE_DOWN % str(down))
    srv = launch(
        "-w",
        "2",
        "--timeout",
        "1",
        "--max-requests",
        "5",
        app="slowabort:app",
        path=(code_dir, APPS_DIR),
    )
    assert len(srv.worker_pids()) == 2
    down.touch()
    mark = srv.log_mark()
    os.kill(min(srv.worker_pids()), signal.SIGKILL)
    assert srv.wait_log("Booting worker", since=mark), srv.log(mark)
    time.sleep(0.4)
    srv.signal(signal.SIGTTIN)  # a second boot, to come while the first is aborted
    assert srv.wait_log(r"WORKER TIMEOUT \(pid:\d+\): still booting", since=mark, timeout=WAIT)
    down.unlink()
    assert srv.wait_log("the others serve, starting another", since=mark, timeout=WAIT), srv.log(
        mark
    )
    srv.signal(signal.SIGTTOU)  # no place left to try again
    assert srv.wait_log("A worker booted: recycling resumes", since=mark, timeout=WAIT), srv.log(
        mark
    )
    for i in range(12):
        assert srv.get(f"/{i}").status == 200, srv.log(mark)
    assert srv.wait_log("Autorestarting worker after current request", since=mark), srv.log(mark)


def test_ttou_retires_a_hung_boot_before_a_serving_worker(launch, tmp_path):
    """Review (session 40): TTOU retired the oldest worker, a serving one, and kept
    the one whose import hung; once the hung one timed out with none serving, the
    server stopped (exit 3). A worker still booting goes first, with a fast stop."""
    srv, down = launch_waiting_while_down(launch, tmp_path)
    serving = set(srv.worker_pids())
    down.touch()
    mark = srv.log_mark()
    srv.signal(signal.SIGTTIN)
    assert srv.wait_log("Booting worker", since=mark), srv.log(mark)
    srv.signal(signal.SIGTTOU)
    assert srv.wait_log("stopped by SIGINT while booting", since=mark), srv.log(mark)
    assert wait_until(lambda: set(children(srv.pid)) == serving), srv.log(mark)
    assert "WORKER TIMEOUT" not in srv.log(mark)
    assert srv.alive(), srv.log(mark)


SLOW_WHILE_FLAGGED = """\
\"\"\"Its import takes 2 s while the file FLAG exists; it answers its pid.\"\"\"
import os
import time

if os.path.exists(%r):
    time.sleep(2)


def app(environ, start_response):
    start_response("200 OK", [])
    return [str(os.getpid()).encode()]
"""


def test_a_hup_applies_a_new_timeout_to_the_boots_it_starts(launch, tmp_path):
    """Review (session 40): the master kept the start's --timeout (and graceful
    timeout, --max-worker-rss) through a HUP, so the fix a boot timeout's line
    gives, a higher --timeout, needed a restart: the reload's slow import was timed
    out at the old value and the reload given up. A HUP's values are the master's."""
    flag = tmp_path / "flag"
    code_dir, _ = app_module(tmp_path, "slowflag", SLOW_WHILE_FLAGGED % str(flag))
    conf = tmp_path / "conf.py"
    conf.write_text('"""Written by test_supervisor.py."""\ntimeout = 1\n')
    srv = launch("-c", str(conf), app="slowflag:app", path=(code_dir, APPS_DIR))
    old = srv.worker_pid()
    conf.write_text('"""Written by test_supervisor.py."""\ntimeout = 20\n')
    flag.touch()
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    assert wait_until(lambda: srv.worker_pid() != old, timeout=WAIT), srv.log(mark)
    assert "WORKER TIMEOUT" not in srv.log(mark), srv.log(mark)


def test_a_hup_that_shortens_the_timeouts_holds_the_old_workers_to_their_own(launch, tmp_path):
    """Review (session 40): once a HUP's --timeout and --graceful-timeout were the
    master's, an old worker was held to them though it runs with its own: one
    beating each second was killed as silent under a --timeout of 0.5 s, and one
    draining a request for its own 30 s was killed at the new 1 s (plus the exit's
    room), its request cut. Each is held to the config it was forked with."""
    conf = tmp_path / "conf.py"
    conf.write_text('"""Written by test_supervisor.py."""\ntimeout = 30\ngraceful_timeout = 30\n')
    srv, _ = launch_slow_app(launch, "thread", tmp_path, "-c", str(conf))
    (old,) = srv.worker_pids()
    client, answer = request_in_background(srv, "/?s=6")
    time.sleep(0.5)  # the request runs
    conf.write_text('"""Written by test_supervisor.py."""\ntimeout = 0.5\ngraceful_timeout = 1\n')
    mark = srv.log_mark()
    srv.signal(signal.SIGHUP)
    client.join(30)
    resp = answer.get("resp")
    assert resp is not None and resp.status == 200, (answer, srv.log(mark))
    assert int(resp.body) == old, srv.log(mark)
    assert wait_until(lambda: gone(old), timeout=WAIT), srv.log(mark)
    log = srv.log(mark)
    assert "WORKER TIMEOUT" not in log and "SIGKILL" not in log, log
